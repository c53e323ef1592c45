"""Where Sluice may POST: checks of $reply and error URLs, at capture time and at delivery time.

At capture the URL's form and any literal address are checked. At delivery the host name is
resolved by `PolicyResolver`, which refuses the connection if any address it resolves to is not
allowed: the addresses checked are the addresses connected to, so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from app.errors import SluiceError
from app.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class InvalidReplyUrl(SluiceError):
    status, code, title = 422, "invalid_reply_url", "The reply URL is not allowed"


class ForbiddenAddress(OSError):
    """Raised by the resolver: the host resolves to an address Sluice must not call."""


def _hosts(value: str) -> list[str]:
    return [h.strip().lower() for h in value.split(",") if h.strip()]


class UrlPolicy:
    """The allow/deny rules of the settings, for reply and error URLs."""

    def __init__(self, settings: Settings) -> None:
        self.allow_loopback = settings.reply_url_allow_loopback
        self.allow_private = settings.reply_url_allow_private
        self.allow_hosts = _hosts(settings.reply_url_allow_hosts)
        self.deny_hosts = _hosts(settings.reply_url_deny_hosts)

    def address_allowed(self, address: IPAddress) -> bool:
        """False for loopback, private, link-local and other special addresses unless allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return self.allow_loopback
        if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved:
            # Link-local covers the cloud metadata endpoint (169.254.169.254): never allowed.
            return False
        if address.is_private or not address.is_global:
            return self.allow_private
        return True

    def _host_listed(self, host: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(host, p) for p in patterns)

    def check(self, url: str, *, what: str = "$reply") -> str:
        """`url` if Sluice may POST to it, else InvalidReplyUrl saying why."""
        if len(url) > 2000:
            raise InvalidReplyUrl(f"The {what} URL is longer than 2000 characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidReplyUrl(f"The {what} URL is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise InvalidReplyUrl(f"The {what} URL must be http or https")
        if parts.username is not None or parts.password is not None:
            raise InvalidReplyUrl(f"The {what} URL must not carry credentials")
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidReplyUrl(f"The {what} URL has no host")
        if port == 0:
            raise InvalidReplyUrl(f"The {what} URL has an invalid port")
        if self._host_listed(host, self.deny_hosts):
            raise InvalidReplyUrl(f"The host {host} is on the deny list")
        if self.allow_hosts and not self._host_listed(host, self.allow_hosts):
            raise InvalidReplyUrl(f"The host {host} is not on the allow list")
        try:
            address: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            if not self.address_allowed(address):
                raise InvalidReplyUrl(f"The address {host} is private, loopback or reserved")
        elif (host == "localhost" or host.endswith(".localhost")) and not self.allow_loopback:
            raise InvalidReplyUrl(f"The host {host} is loopback")
        return url


class PolicyResolver(AbstractResolver):
    """aiohttp resolver that drops connections to addresses the policy refuses."""

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> Any:
        results: list[ResolveResult] = await self._inner.resolve(host, port, family)
        refused = [
            r["host"] for r in results if not self._policy.address_allowed(ipaddress.ip_address(r["host"]))
        ]
        if refused:
            raise ForbiddenAddress(f"{host} resolves to a refused address ({', '.join(refused)})")
        return results

    async def close(self) -> None:
        await self._inner.close()
