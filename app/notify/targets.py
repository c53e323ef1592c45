"""One small class per vendor, each building its exact request (URL, headers, JSON body)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.notify.events import ErrorEvent
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Outgoing:
    url: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class Message:
    """What every vendor's request is built from."""

    event: ErrorEvent
    suppressed: int
    instance: str
    environment: str

    @property
    def title(self) -> str:
        where = f" on {self.event.method} {self.event.path}" if self.event.path else ""
        status = f"{self.event.status} " if self.event.status else ""
        return f"[sluice/{self.instance}/{self.environment}] {status}{self.event.code}{where}"

    def lines(self) -> list[str]:
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
        text = [f"{name}: {value}" for name, value in rows if value]
        if self.suppressed:
            text.append(f"… and {self.suppressed} similar errors suppressed since the last notification")
        return text


class SlackTarget:
    name = "slack"

    def __init__(self, url: str) -> None:
        self.url = url

    def build(self, message: Message) -> Outgoing:
        fields = [
            {"type": "mrkdwn", "text": f"*{line.split(': ', 1)[0]}*\n{line.split(': ', 1)[-1]}"}
            for line in message.lines()
        ]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
            {"type": "section", "fields": fields[:10]},
        ]
        return Outgoing(
            self.url, {"Content-Type": "application/json"}, {"text": message.title, "blocks": blocks}
        )


class DatadogTarget:
    name = "datadog"

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self._api_key = api_key

    def build(self, message: Message) -> Outgoing:
        e = message.event
        tags = [
            "service:sluice",
            f"env:{message.environment}",
            f"instance:{message.instance}",
            f"code:{e.code}",
            f"status:{e.status}",
        ]
        if e.upstream:
            tags.append(f"upstream:{e.upstream}")
        if e.partner_code:
            tags.append(f"partner_code:{e.partner_code}")
        body = {
            "title": message.title[:100],
            "text": "\n".join(message.lines())[:4000],
            "alert_type": "error",
            "priority": "normal",
            "source_type_name": "sluice",
            "aggregation_key": e.fingerprint,
            "tags": tags,
        }
        return Outgoing(self.url, {"DD-API-KEY": self._api_key, "Content-Type": "application/json"}, body)


class NewRelicTarget:
    name = "newrelic"

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self._api_key = api_key

    def build(self, message: Message) -> Outgoing:
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
        body = [{k: v for k, v in event.items() if v is not None}]
        return Outgoing(self.url, {"Api-Key": self._api_key, "Content-Type": "application/json"}, body)


Target = SlackTarget | DatadogTarget | NewRelicTarget


def configured_targets(settings: Settings) -> list[Target]:
    """Every target whose URL and credentials are all set."""
    targets: list[Target] = []
    if settings.notify_slack_webhook_url:
        targets.append(SlackTarget(settings.notify_slack_webhook_url))
    if settings.notify_datadog_api_key is not None and settings.notify_datadog_api_key.get_secret_value():
        targets.append(
            DatadogTarget(settings.notify_datadog_url, settings.notify_datadog_api_key.get_secret_value())
        )
    if (
        settings.notify_newrelic_account_id
        and settings.notify_newrelic_api_key is not None
        and settings.notify_newrelic_api_key.get_secret_value()
    ):
        url = settings.notify_newrelic_url.replace("{account_id}", settings.notify_newrelic_account_id)
        targets.append(NewRelicTarget(url, settings.notify_newrelic_api_key.get_secret_value()))
    return targets
