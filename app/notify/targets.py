"""One small class per vendor, each building its exact request (method, URL, headers, JSON body).

Building is pure (no I/O) so that the vendor shapes are easy to read and to test; the notifier
does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from app.notify.events import ErrorEvent
from app.settings import Settings

_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One HTTP request to a vendor."""

    method: str
    url: str
    # Headers carry API keys: keep them out of any repr that might end up in a log line.
    headers: dict[str, str] = field(repr=False)
    body: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class Message:
    """What every vendor's request is built from: the event plus where it happened."""

    event: ErrorEvent
    suppressed: int
    instance: str
    environment: str

    @property
    def title(self) -> str:
        """`[sluice/<instance>/<env>] <status> <code> on <method> <path>`, parts left out when unknown."""
        e = self.event
        head = f"[sluice/{self.instance}/{self.environment}]"
        status = str(e.status) if e.status else None
        where = " ".join(p for p in (e.method, e.path) if p)
        return " ".join(p for p in (head, status, e.code, f"on {where}" if where else None) if p)

    @property
    def suppressed_note(self) -> str | None:
        """The "… and N similar errors suppressed" line, if any were."""
        if not self.suppressed:
            return None
        noun = "error" if self.suppressed == 1 else "errors"
        return f"… and {self.suppressed} similar {noun} suppressed since the last notification"

    def rows(self) -> list[tuple[str, str]]:
        """The event's details as (label, value) pairs, empty values left out."""
        e = self.event
        rows = [
            ("Title", e.title),
            ("Detail", e.detail),
            ("Partner code", e.partner_code),
            ("Partner message", e.partner_message),
            ("Upstream", e.upstream),
            ("Client", e.client_id),
            ("Request id", e.request_id),
            ("Trace id", e.trace_id),
            ("Time", e.occurred_at.isoformat()),
        ]
        return [(label, value) for label, value in rows if value]

    def text(self) -> str:
        """Plain multi-line text: one `label: value` line per row, then the suppressed note."""
        lines = [f"{label}: {value}" for label, value in self.rows()]
        if note := self.suppressed_note:
            lines.append(note)
        return "\n".join(lines)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Target(Protocol):
    name: str

    def build(self, message: Message) -> Outgoing:
        """The request that delivers `message` to this vendor."""
        ...


class SlackTarget:
    """Slack incoming webhook: `{"text": summary, "blocks": [section blocks]}`."""

    name = "slack"

    def __init__(self, url: str) -> None:
        self._url = url  # the webhook URL is itself a credential: never logged

    def build(self, message: Message) -> Outgoing:
        """A one-line `text` (the notification fallback) and mrkdwn section blocks."""
        summary = message.title
        if note := message.suppressed_note:
            summary = f"{summary} {note}"
        # Slack limits: section text 3000 chars, 10 fields of 2000 chars each.
        fields = [
            {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_slack_escape(value)}", 2000)}
            for label, value in message.rows()
        ][:10]
        blocks: list[dict[str, Any]] = [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"*{_slack_escape(message.title)}*", 3000)},
            },
            {"type": "section", "fields": fields},
        ]
        if note:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": note}})
        return Outgoing("POST", self._url, dict(_JSON), {"text": _cut(summary, 3000), "blocks": blocks})


class DatadogTarget:
    """Datadog Events API v1: `POST /api/v1/events` with `DD-API-KEY`."""

    name = "datadog"

    def __init__(self, url: str, api_key: str) -> None:
        self._url = url
        self._api_key = api_key

    def build(self, message: Message) -> Outgoing:
        """An error event; `aggregation_key` groups repeats of the same fingerprint in Datadog."""
        e = message.event
        tags = [
            "service:sluice",
            f"env:{message.environment}",
            f"instance:{message.instance}",
            f"code:{e.code}",
            f"status:{e.status}",
        ]
        for name, value in (("method", e.method), ("upstream", e.upstream), ("partner_code", e.partner_code)):
            if value:
                tags.append(f"{name}:{value}")
        body = {
            "title": _cut(message.title, 100),
            "text": _cut(message.text(), 4000),
            "alert_type": "error",
            "priority": "normal",
            "source_type_name": "sluice",
            "aggregation_key": e.fingerprint,
            "tags": tags,
        }
        return Outgoing("POST", self._url, {"DD-API-KEY": self._api_key, **_JSON}, body)


class NewRelicTarget:
    """New Relic Event API: `POST /v1/accounts/{id}/events` with `Api-Key`, a JSON array of events."""

    name = "newrelic"
    # New Relic drops string attributes past 4096 characters.
    _MAX_VALUE = 4096

    def __init__(self, url: str, api_key: str) -> None:
        self._url = url
        self._api_key = api_key

    def build(self, message: Message) -> Outgoing:
        """One flat `SluiceError` event (scalars only, None values left out)."""
        e = message.event
        event: dict[str, Any] = {
            "eventType": "SluiceError",
            "code": e.code,
            "status": e.status,
            "title": e.title,
            "detail": e.detail,
            "method": e.method,
            "path": e.path,
            "clientId": e.client_id,
            "requestId": e.request_id,
            "traceId": e.trace_id,
            "partnerCode": e.partner_code,
            "partnerMessage": e.partner_message,
            "upstream": e.upstream,
            "instance": message.instance,
            "environment": message.environment,
            "fingerprint": e.fingerprint,
            "suppressed": message.suppressed,
            "timestamp": int(e.occurred_at.timestamp()),
        }
        flat = {
            k: _cut(v, self._MAX_VALUE) if isinstance(v, str) else v
            for k, v in event.items()
            if v is not None
        }
        return Outgoing("POST", self._url, {"Api-Key": self._api_key, **_JSON}, [flat])


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


def configured_targets(settings: Settings) -> list[Target]:
    """Every target whose URL and credentials are all set."""
    targets: list[Target] = []
    if settings.notify_slack_webhook_url:
        targets.append(SlackTarget(settings.notify_slack_webhook_url))
    dd_key = _secret(settings.notify_datadog_api_key)
    if settings.notify_datadog_url and dd_key:
        targets.append(DatadogTarget(settings.notify_datadog_url, dd_key))
    nr_key, nr_account = _secret(settings.notify_newrelic_api_key), settings.notify_newrelic_account_id
    if settings.notify_newrelic_url and nr_key and nr_account:
        url = settings.notify_newrelic_url.replace("{account_id}", nr_account)
        targets.append(NewRelicTarget(url, nr_key))
    return targets


def secrets_of(settings: Settings) -> list[str]:
    """Values that must never reach a log line: the API keys and the Slack webhook URL."""
    slack = settings.notify_slack_webhook_url or ""
    # The token of a Slack webhook is its path; an error message may quote the path alone.
    slack_path = urlsplit(slack).path if slack else ""
    values = [
        _secret(settings.notify_datadog_api_key),
        _secret(settings.notify_newrelic_api_key),
        slack,
        slack_path if len(slack_path) > 1 else "",
    ]
    # Longest first, so that the URL is replaced whole before its path is.
    return sorted({v for v in values if v}, key=len, reverse=True)
