"""What the gateway route needs from the airlock on the way in: `$reply` and `Prefer: respond-async`.

`$reply` is taken out of the JSON body (or the query of a GET) before anything else reads the
request, so the operation and the partner never see it. The route then runs as usual; if it
must be stored (asked to run asynchronously, or failed in a way that may succeed later), the
request as the operation saw it is turned into an AsyncCall by `app.airlock.service`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import Request, Response
from prometheus_client import Counter

from app.airlock import service as airlock_service
from app.airlock.machine import jittered
from app.airlock.urls import InvalidReplyUrl, UrlPolicy
from app.clients.service import Principal
from app.db import utcnow
from app.errors import SluiceError
from app.upstream.errors import ThrottleQueued

if TYPE_CHECKING:
    from app.state import AppState

AIRLOCK_ACCEPTED = Counter(
    "sluice_airlock_accepted_total",
    "Calls stored for later execution, by connector and reason",
    ["connector", "reason"],
)

REPLY_FIELD = "$reply"
_REPLY_BYTES = b'"$reply"'
# Headers never stored with a call: Sluice's own credentials, and what the replay sets itself.
_NOT_STORED = frozenset(
    {
        "authorization",
        "x-api-key",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "prefer",
        "expect",
        "traceparent",
        "tracestate",
        "x-request-id",
    }
)


class PayloadTooLarge(SluiceError):
    status, code, title = 413, "payload_too_large", "The request is too large to be stored"


@dataclass(slots=True)
class Capture:
    """The airlock's view of a gateway request."""

    reply_url: str | None
    respond_async: bool

    @property
    def wanted(self) -> bool:
        return self.respond_async or self.reply_url is not None


def prefers_async(request: Request) -> bool:
    """True if the request carries `Prefer: respond-async` (RFC 7240)."""
    prefer = request.headers.get("prefer")
    if not prefer:
        return False
    return any(p.split(";")[0].split("=")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def _reply_from_query(request: Request) -> str | None:
    query = request.scope.get("query_string", b"")
    if b"reply" not in query:
        return None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    replies = [v for k, v in pairs if k == REPLY_FIELD]
    if not replies:
        return None
    request.scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != REPLY_FIELD]).encode()
    # Starlette caches the parsed query and URL on the request object: forget them.
    for cached in ("_query_params", "_url"):
        request.__dict__.pop(cached, None)
    return replies[-1]


async def _reply_from_body(request: Request) -> str | None:
    body = await request.body()
    if _REPLY_BYTES not in body:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # the operation's own validation reports the bad JSON
    if not isinstance(document, dict) or REPLY_FIELD not in document:
        return None
    reply = document.pop(REPLY_FIELD)
    if not isinstance(reply, str):
        raise InvalidReplyUrl("$reply must be a string holding a URL")
    # What the operation (and the communication log) will read from now on.
    request._body = orjson.dumps(document)
    request._json = document
    return reply


async def inspect(request: Request, policy: UrlPolicy, max_body: int) -> Capture:
    """Take `$reply` out of the request and read `Prefer`; 422 on a refused reply URL."""
    respond_async = prefers_async(request)
    reply: str | None = None
    if request.method in ("POST", "PUT", "PATCH"):
        reply = await _reply_from_body(request)
    if reply is None:
        reply = _reply_from_query(request)
    if reply is not None:
        policy.check(reply)
    capture = Capture(reply_url=reply, respond_async=respond_async)
    if respond_async and len(await request.body()) > max_body:
        raise PayloadTooLarge(f"A call to run asynchronously may carry at most {max_body} bytes")
    return capture


def stored_headers(request: Request) -> dict[str, str]:
    """The request's headers as they are kept with a call (credentials left out)."""
    return {k: v for k, v in request.headers.items() if k not in _NOT_STORED}


async def accept(
    state: AppState, request: Request, capture: Capture, *, view_name: str, failure: Exception | None
) -> Response:
    """Store the request as an AsyncCall (committed before answering) and answer 202."""
    settings = state.settings
    principal: Principal = request.state.principal
    body = await request.body()
    if len(body) > settings.airlock_max_body:
        raise PayloadTooLarge(
            f"A call to run asynchronously may carry at most {settings.airlock_max_body} bytes"
        )
    now = utcnow()
    async with state.sessionmaker.begin() as session:
        connector = await airlock_service.get_connector(session, state.partner.name, settings)
        schedule = connector.schedule(settings)
        next_try, delay = now, schedule.delay
        slot: datetime | None = None
        if isinstance(failure, ThrottleQueued):
            # Not a failure: the call holds a throttling slot. The workers take it a little
            # early and wait for the slot in memory, so the partner sees the calls spaced.
            slot = datetime.fromtimestamp(failure.slot, UTC)
            local_slot = datetime.fromtimestamp(state.throttle.local_time(failure.slot), UTC)
            next_try = local_slot - timedelta(seconds=settings.throttle_queue_lookahead)
        elif failure is not None:
            # The synchronous attempt was the first failure: back off from it (seed: next_try
            # += delay, delay doubles); the ttl counts the background attempts.
            next_try = now + timedelta(seconds=jittered(schedule.jitter)(delay))
            delay *= 2
        call = airlock_service.new_call(
            connector=state.partner.name,
            view_name=view_name,
            method=request.method,
            path=request.url.path,
            path_params=dict(request.path_params),
            query_string=request.scope.get("query_string", b"").decode("latin-1"),
            headers=stored_headers(request),
            body=body,
            principal=principal,
            request_id=getattr(request.state, "request_id", None),
            reply_url=capture.reply_url,
            respond_async=capture.respond_async,
            schedule=schedule,
            next_try=next_try,
            now=now,
        )
        call.delay = delay
        if isinstance(failure, ThrottleQueued):
            call.throttle_slot = slot
            call.throttle_uid = failure.config_uid
            call.throttle_version = failure.version
        session.add(call)
        await session.flush()
        session.add(
            airlock_service.log_line(
                call.id,
                "capture",
                "accepted",
                at=now,
                http_status=getattr(failure, "status", None),
                error=_describe(failure),
                next_try=next_try,
                ttl=call.ttl,
                author=principal.name[:200],
            )
        )
        if failure is None:
            await airlock_service.wake_workers(session)
    if failure is None:
        state.airlock_wake.set()
    reason = "respond_async" if failure is None else "throttled" if slot is not None else "failure"
    AIRLOCK_ACCEPTED.labels(call.connector, reason).inc()
    headers = {"Location": f"/v1/async-calls/{call.id}"}
    if capture.respond_async:
        headers["Preference-Applied"] = "respond-async"
    return Response(
        orjson.dumps({"$reply_id": str(call.id)}), 202, headers=headers, media_type="application/json"
    )


def _describe(failure: Exception | None) -> str | None:
    if failure is None:
        return None
    code = getattr(failure, "code", type(failure).__name__)
    return f"{code}: {failure}"[:1000]
