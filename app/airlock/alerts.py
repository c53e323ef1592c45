"""When a call gives up (CALL_ERROR or RESPONSE_ERROR): tell people, with everything.

The seed's goodie: the connector's error URLs get a signed POST and its error e-mail addresses
a detailed message (the log, the request and the response), and the gateway's notifiers
(Slack, Datadog, New Relic) a notice. Each channel fails on its own without stopping others.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import aiosmtplib
import orjson

from app.airlock import service as airlock_service
from app.airlock.models import AsyncCall, AsyncCallLog
from app.db import utcnow
from app.notify import ErrorEvent
from app.settings import Settings

if TYPE_CHECKING:
    from app.airlock.delivery import Sender
    from app.state import AppState

logger = logging.getLogger("sluice.airlock.alerts")
_TASKS: set[asyncio.Task[None]] = set()


def report_soon(state: AppState, sender: Sender, call_id: uuid.UUID) -> None:
    """Send the failure report in the background (the delivery loop does not wait for it)."""
    task = asyncio.create_task(report(state, sender, call_id), name=f"airlock-report-{call_id}")
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def drain(timeout: float = 10.0) -> None:
    """Wait for reports still being sent (shutdown, tests)."""
    if _TASKS:
        await asyncio.wait(set(_TASKS), timeout=timeout)


def failure_report(call: AsyncCall, log: list[AsyncCallLog]) -> dict[str, Any]:
    """Everything about the call, as JSON-able data."""
    return {
        "event": "async_call.failed",
        "$reply_id": str(call.id),
        "status": call.status,
        "connector": call.connector,
        "operation": call.view_name,
        "request": {
            "method": call.method,
            "path": call.path,
            "query": call.query_string,
            "headers": call.request_headers,
            "content_type": call.content_type,
            "body": airlock_service.pretty(call.body, call.content_type),
        },
        "response": {
            "status": call.response_status,
            "content_type": call.response_content_type,
            "body": airlock_service.pretty(call.response_body, call.response_content_type),
        },
        "reply_url": call.reply_url,
        "api_client": {"id": call.api_client_id, "name": call.api_client_name, "org_id": call.org_id},
        "attempts": call.attempts,
        "last_error": call.last_error,
        "created_at": call.created_at.isoformat(),
        "log": [
            {
                "at": line.at.isoformat(),
                "phase": line.phase,
                "outcome": line.outcome,
                "http_status": line.http_status,
                "error": line.error,
                "latency_ms": line.latency_ms,
                "next_try": line.next_try.isoformat() if line.next_try else None,
                "author": line.author,
                "detail": line.detail,
            }
            for line in log
        ],
    }


def email_text(report: dict[str, Any]) -> str:
    request, response = report["request"], report["response"]
    lines = [
        f"The async call {report['$reply_id']} gave up with status {report['status']}.",
        "",
        f"Connector:   {report['connector']}",
        f"Operation:   {report['operation']} ({request['method']} {request['path']}"
        + (f"?{request['query']}" if request["query"] else "")
        + ")",
        f"Client:      {report['api_client']['name']} ({report['api_client']['id']})",
        f"Reply URL:   {report['reply_url'] or '-'}",
        f"Attempts:    {report['attempts']}",
        f"Last error:  {report['last_error'] or '-'}",
        f"Created at:  {report['created_at']}",
        "",
        "Log:",
    ]
    for line in report["log"]:
        status = f" HTTP {line['http_status']}" if line["http_status"] else ""
        error = f" {line['error']}" if line["error"] else ""
        lines.append(f"  {line['at']}  {line['phase']:<7} {line['outcome']:<9}{status}{error}")
        if line["detail"] and line["phase"] == "edit":
            lines.extend("      " + d for d in line["detail"].splitlines())
    lines += ["", "Request body:", request["body"] or "(empty)", "", f"Response (HTTP {response['status']}):"]
    lines.append(response["body"] or "(none)")
    return "\n".join(lines) + "\n"


async def send_email(settings: Settings, recipients: list[str], subject: str, body: str) -> None:
    """Send a plain-text e-mail through the configured SMTP server."""
    if not settings.smtp_host or not recipients:
        return
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(body)
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        use_tls=settings.smtp_security == "tls",
        start_tls=True if settings.smtp_security == "starttls" else False,
        timeout=settings.smtp_timeout,
    )


async def report(state: AppState, sender: Sender, call_id: uuid.UUID) -> None:
    """Send the failure of `call_id` to its connector's error URLs and e-mails, and the notifiers."""
    settings = state.settings
    async with state.sessionmaker() as session:
        call = await session.get(AsyncCall, call_id)
        if call is None:
            return
        log = list(await airlock_service.call_log(session, call_id))
        connector = await airlock_service.get_connector(session, call.connector, settings)
    data = failure_report(call, log)
    body = orjson.dumps(data)
    for url in connector.error_urls:
        outcome, _ = await sender.post(
            url,
            body,
            msg_id=f"{call.id}.failed",
            secrets=[connector.error_secret] if connector.error_secret else [],
            now=utcnow(),
        )
        if not outcome.ok:
            logger.warning("error report for call %s to an error URL failed: %s", call.id, outcome.error)
    if connector.error_emails:
        if not settings.smtp_host:
            logger.warning("connector %s lists error e-mails but SMTP_HOST is not set", call.connector)
        else:
            try:
                await send_email(
                    settings,
                    connector.error_emails,
                    f"[sluice] async call {call.status}: {call.view_name} {call.id}",
                    email_text(data),
                )
            except Exception as exc:
                logger.warning("error e-mail for call %s failed: %s", call.id, type(exc).__name__)
    state.notifier.notify(
        ErrorEvent(
            code="async_call_failed",
            status=call.response_status or 0,
            title=f"Async call gave up: {call.status}",
            detail=f"{call.view_name} {call.id}: {call.last_error or 'no detail'}",
            method=call.method,
            path=call.path,
            request_id=call.request_id,
            upstream=call.connector,
        )
    )
