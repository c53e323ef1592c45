"""Encryption of the directory's stored credentials (Fernet: AES-128-CBC + HMAC-SHA256).

The key is DIRECTORY_SECRET_KEY, else derived from SECRET_KEY; on the embedded default (SQLite,
one process) a key file under var/ is created on first use. A deployment with a real database
and neither key set cannot store credentials: every replica must decrypt what another stored.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from app.errors import Conflict
from app.settings import Settings

KEY_FILE = Path("var/directory.key")


def _fernet(settings: Settings) -> Fernet:
    if settings.directory_secret_key is not None:
        raw = settings.directory_secret_key.get_secret_value().encode()
        try:
            return Fernet(raw)
        except ValueError:
            # Any passphrase: stretched to a Fernet key.
            return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"sluice-directory:" + raw).digest()))
    if settings.secret_key is not None:
        digest = hashlib.sha256(
            b"sluice-directory:" + settings.secret_key.get_secret_value().encode()
        ).digest()
        return Fernet(base64.urlsafe_b64encode(digest))
    if settings.database_url is None:
        if not KEY_FILE.exists():
            KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
        return Fernet(KEY_FILE.read_bytes().strip())
    raise Conflict("Set DIRECTORY_SECRET_KEY (or SECRET_KEY) to store service credentials")


def encrypt(settings: Settings, secret: str) -> bytes:
    return _fernet(settings).encrypt(secret.encode())


def decrypt(settings: Settings, token: bytes) -> str | None:
    """The credentials, or None when the key changed since they were stored."""
    try:
        return _fernet(settings).decrypt(token).decode()
    except InvalidToken:
        return None
