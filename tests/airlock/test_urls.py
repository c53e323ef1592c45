"""Reply and error URLs: refused forms and addresses, and the check again at delivery (DNS)."""

from __future__ import annotations

import pytest

from app.airlock.delivery import Sender
from app.airlock.urls import ForbiddenAddress, InvalidReplyUrl, PolicyResolver, UrlPolicy
from app.db import utcnow
from app.settings import Settings


def policy(**values: object) -> UrlPolicy:
    return UrlPolicy(Settings(_env_file=None, **values))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://localhost:8000/x",
        "http://api.localhost/x",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://172.16.5.5/x",
        "http://[fd00::1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://0.0.0.0/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://224.0.0.1/x",
        "file:///etc/passwd",
        "gopher://example.com/",
        "https://user:secret@example.com/x",
        "https://example.com:0/x",
        "https://example.com:99999/x",
        "https:///x",
    ],
)
def test_refused_by_default(url: str) -> None:
    with pytest.raises(InvalidReplyUrl):
        policy().check(url)


def test_public_urls_pass() -> None:
    assert policy().check("https://hooks.example.com/reply?x=1") == "https://hooks.example.com/reply?x=1"
    assert policy().check("http://93.184.216.34:8080/r")


def test_settings_open_loopback_and_private_but_never_link_local() -> None:
    opened = policy(reply_url_allow_loopback=True, reply_url_allow_private=True)
    opened.check("http://127.0.0.1:9000/r")
    opened.check("http://localhost/r")
    opened.check("http://10.0.0.5/r")
    with pytest.raises(InvalidReplyUrl):
        opened.check("http://169.254.169.254/")


def test_allow_and_deny_lists() -> None:
    allow = policy(reply_url_allow_hosts="hooks.example.com, *.partner.io")
    allow.check("https://hooks.example.com/r")
    allow.check("https://eu.partner.io/r")
    with pytest.raises(InvalidReplyUrl, match="allow list"):
        allow.check("https://evil.example.net/r")
    deny = policy(reply_url_deny_hosts="*.internal.example.com")
    with pytest.raises(InvalidReplyUrl, match="deny list"):
        deny.check("https://svc.internal.example.com/r")
    deny.check("https://example.com/r")


async def test_resolver_refuses_names_that_resolve_to_refused_addresses() -> None:
    resolver = PolicyResolver(policy())
    try:
        with pytest.raises(ForbiddenAddress):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    allowed = PolicyResolver(policy(reply_url_allow_loopback=True))
    try:
        assert await allowed.resolve("localhost", 80)
    finally:
        await allowed.close()


async def test_delivery_checks_again_with_the_current_settings() -> None:
    # Accepted while loopback was allowed; the settings changed before delivery.
    sender = Sender(Settings(_env_file=None), policy())  # type: ignore[call-arg]
    try:
        outcome, _ = await sender.post("http://127.0.0.1:9/r", b"{}", msg_id="m", secrets=[], now=utcnow())
    finally:
        await sender.aclose()
    assert not outcome.ok and outcome.error is not None and outcome.error.startswith("refused")
