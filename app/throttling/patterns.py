"""URL patterns of throttling configurations: validation (errors 104, 105) and matching.

A pattern is an absolute http(s) URL whose path (and query, if it has one) may hold `*`
wildcards; a `*` matches any run of characters, `/` included, so `https://h/data/*` covers
everything under `/data/`. The host part may not hold wildcards: a configuration caps calls to
one endpoint host. Scheme and host compare case-insensitively, and a default port equals none.
A pattern without a query matches the URL whatever its query; one with a query matches the
query too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


class PatternError(ValueError):
    """The pattern is not usable; `code` is the seed's error number (104 or 105)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _origin(scheme: str, host: str, port: int | None) -> str:
    port = port or _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class UrlPattern:
    text: str
    origin: str
    has_query: bool
    regex: re.Pattern[str]

    def matches(self, url: str) -> bool:
        """True when the outbound URL `url` falls under this pattern."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        scheme = parts.scheme.lower()
        if _origin(scheme, (parts.hostname or "").lower(), port) != self.origin:
            return False
        target = parts.path or "/"
        if self.has_query:
            target = f"{target}?{parts.query}"
        return self.regex.fullmatch(target) is not None


def parse(text: str) -> UrlPattern:
    """The compiled pattern, or PatternError."""
    if not isinstance(text, str) or not text.strip() or any(c.isspace() for c in text):
        raise PatternError(104, "incorrect URL pattern")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise PatternError(104, "incorrect URL pattern") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise PatternError(104, "incorrect URL pattern")
    if "*" in parts.netloc:
        raise PatternError(105, "the host part of the URL pattern holds wildcards, which are not allowed")
    if parts.username is not None or parts.password is not None or not parts.hostname or parts.fragment:
        raise PatternError(104, "incorrect URL pattern")
    path = parts.path or "/"
    has_query = bool(parts.query)
    target = f"{path}?{parts.query}" if has_query else path
    regex = re.compile(".*".join(re.escape(piece) for piece in target.split("*")), re.DOTALL)
    return UrlPattern(
        text=text,
        origin=_origin(scheme, parts.hostname.lower(), port),
        has_query=has_query,
        regex=regex,
    )
