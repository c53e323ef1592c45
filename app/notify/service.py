"""The notifier: de-duplicated, queued, sent in the background, never raising.

A failing request must not wait for Slack, and a failing Slack must not fail anything: the
caller only puts the event on a bounded queue; one worker sends it to every target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
from prometheus_client import Counter

from app.notify.events import ErrorEvent
from app.notify.targets import Message, Target, configured_targets
from app.settings import Settings

logger = logging.getLogger("sluice.notify")

NOTIFY_SENT = Counter(
    "sluice_notify_sent_total", "Notifications sent, by target and outcome", ["target", "outcome"]
)
NOTIFY_SUPPRESSED = Counter(
    "sluice_notify_suppressed_total", "Notifications not sent (duplicate, queue_full, disabled)", ["reason"]
)

_DEDUP_MAX = 10_000


class Notifier:
    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._targets: list[Target] = configured_targets(settings)
        self._transport = transport
        self._window = settings.notify_dedup_window
        self._queue: asyncio.Queue[tuple[ErrorEvent, int]] = asyncio.Queue(maxsize=settings.notify_queue_size)
        # fingerprint -> (time last sent, events suppressed since)
        self._seen: dict[str, tuple[float, int]] = {}
        self._client: httpx.AsyncClient | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._targets)

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self._targets]

    async def start(self) -> None:
        """Create the HTTP client and the sending worker (no-op when no target is configured)."""
        if not self.enabled or self._worker is not None:
            return
        self._client = httpx.AsyncClient(timeout=self._settings.notify_timeout, transport=self._transport)
        self._worker = asyncio.create_task(self._run(), name="notifier")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Send what is queued (for at most `drain_timeout` seconds), then close."""
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=drain_timeout)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def notify(self, event: ErrorEvent) -> bool:
        """Queue `event` for every target; False if disabled, a duplicate, or the queue is full."""
        if not self.enabled:
            NOTIFY_SUPPRESSED.labels("disabled").inc()
            return False
        now = time.monotonic()
        fingerprint = event.fingerprint
        last = self._seen.get(fingerprint)
        if last is not None and now - last[0] < self._window:
            self._seen[fingerprint] = (last[0], last[1] + 1)
            NOTIFY_SUPPRESSED.labels("duplicate").inc()
            return False
        suppressed = last[1] if last is not None else 0
        try:
            self._queue.put_nowait((event, suppressed))
        except asyncio.QueueFull:
            NOTIFY_SUPPRESSED.labels("queue_full").inc()
            logger.warning("notification queue full; %s dropped", event.code)
            return False
        self._remember(fingerprint, now)
        return True

    def _remember(self, fingerprint: str, now: float) -> None:
        if len(self._seen) >= _DEDUP_MAX:
            expired = [k for k, (at, _) in self._seen.items() if now - at >= self._window]
            for key in expired:
                del self._seen[key]
            if len(self._seen) >= _DEDUP_MAX:
                self._seen.clear()
        self._seen[fingerprint] = (now, 0)

    async def _run(self) -> None:
        while True:
            event, suppressed = await self._queue.get()
            try:
                message = Message(event, suppressed, self._settings.instance_name, self._settings.environment)
                await asyncio.gather(*(self._send(t, message) for t in self._targets))
            except Exception:
                logger.exception("notification worker error")
            finally:
                self._queue.task_done()

    async def _send(self, target: Target, message: Message) -> None:
        assert self._client is not None
        outgoing = target.build(message)
        try:
            response = await self._client.post(outgoing.url, json=outgoing.body, headers=outgoing.headers)
        except httpx.HTTPError as exc:
            NOTIFY_SENT.labels(target.name, "error").inc()
            logger.warning("notification to %s failed: %s", target.name, type(exc).__name__)
            return
        if response.is_success:
            NOTIFY_SENT.labels(target.name, "ok").inc()
        else:
            NOTIFY_SENT.labels(target.name, "error").inc()
            logger.warning("notification to %s answered HTTP %s", target.name, response.status_code)
