"""The notifier: de-duplicated, queued, sent in the background, never raising.

A failing request must not wait for Slack, and a failing Slack must not fail anything: the
caller only puts the event on a bounded queue; one worker sends it to every target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import httpx
from prometheus_client import Counter

from app.notify.events import ErrorEvent
from app.notify.targets import Message, Target, configured_targets, secrets_of
from app.settings import Settings

logger = logging.getLogger("sluice.notify")

NOTIFY_SENT = Counter(
    "sluice_notify_sent_total", "Notifications sent, by target and outcome (ok, error)", ["target", "outcome"]
)
NOTIFY_SUPPRESSED = Counter(
    "sluice_notify_suppressed_total", "Notifications not sent (duplicate, queue_full, disabled)", ["reason"]
)

# Fingerprints remembered for de-duplication; past this, the oldest are forgotten.
_DEDUP_MAX = 10_000


class Notifier:
    """Sends error events to Slack, Datadog and New Relic from a background worker."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._targets: list[Target] = configured_targets(settings)
        self._secrets = secrets_of(settings)
        self._transport = transport
        self._window = settings.notify_dedup_window
        self._queue: asyncio.Queue[tuple[ErrorEvent, int]] = asyncio.Queue(maxsize=settings.notify_queue_size)
        # fingerprint -> (monotonic time last queued, events suppressed since). Kept in the order
        # the entries were last queued, so the oldest are first when the map must shrink.
        self._seen: dict[str, tuple[float, int]] = {}
        # notify() may be called from another thread (a sync library callback); the lock keeps
        # the dedup map consistent, and events from other threads reach the queue via the loop.
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        self._dropping = False
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """True when at least one target is configured."""
        return bool(self._targets)

    @property
    def target_names(self) -> list[str]:
        """The configured targets' names (slack, datadog, newrelic)."""
        return [t.name for t in self._targets]

    async def start(self) -> None:
        """Create the HTTP client and the sending worker (no-op when no target is configured)."""
        if not self.enabled or self._worker is not None:
            return
        self._stopped = False
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=self._settings.notify_timeout, transport=self._transport)
        self._worker = asyncio.create_task(self._run(), name="sluice-notifier")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Send what is queued (for at most `drain_timeout` seconds), then close."""
        self._stopped = True
        worker, self._worker = self._worker, None
        if worker is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=drain_timeout)
            except TimeoutError:
                logger.warning(
                    "notifier stopped after %.1fs with %d notifications unsent",
                    drain_timeout,
                    self._queue.qsize(),
                )
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._loop = None

    def notify(self, event: ErrorEvent) -> bool:
        """Queue `event` for every target; False if disabled, a duplicate, or the queue is full."""
        if not self._targets or self._stopped:
            NOTIFY_SUPPRESSED.labels("disabled").inc()
            return False
        fingerprint = event.fingerprint
        with self._lock:
            now = time.monotonic()
            last = self._seen.get(fingerprint)
            if last is not None and now - last[0] < self._window:
                self._seen[fingerprint] = (last[0], last[1] + 1)
                NOTIFY_SUPPRESSED.labels("duplicate").inc()
                return False
            if not self._enqueue(event, last[1] if last is not None else 0):
                # Not remembered: the next occurrence gets another chance, with the count intact.
                return False
            self._seen.pop(fingerprint, None)  # re-insert at the end: the map stays oldest-first
            self._seen[fingerprint] = (now, 0)
            self._shrink(now)
        return True

    def _enqueue(self, event: ErrorEvent, suppressed: int) -> bool:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            return self._put(event, suppressed)
        # Another thread: asyncio.Queue is not thread-safe, so the loop does the put. The caller
        # cannot wait for the outcome; a full queue is still counted (and logged) there.
        try:
            loop.call_soon_threadsafe(self._put, event, suppressed)
        except RuntimeError:  # the loop is closed: we are shutting down
            NOTIFY_SUPPRESSED.labels("disabled").inc()
            return False
        return True

    def _put(self, event: ErrorEvent, suppressed: int) -> bool:
        try:
            self._queue.put_nowait((event, suppressed))
        except asyncio.QueueFull:
            NOTIFY_SUPPRESSED.labels("queue_full").inc()
            # One warning per overflow episode, not one per dropped event: a flood of errors
            # must not turn into a flood of log lines.
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "notification queue full (%d); dropping notifications until it drains (first: %s)",
                    self._queue.maxsize,
                    event.code,
                )
            return False
        self._dropping = False
        return True

    def _shrink(self, now: float) -> None:
        """Forget expired fingerprints (once per window) and cap the map's size."""
        if now >= self._next_sweep:
            self._next_sweep = now + max(self._window, 1.0)
            # An expired entry that counted duplicates is kept: the next occurrence reports them.
            for key in [k for k, (at, n) in self._seen.items() if n == 0 and now - at >= self._window]:
                del self._seen[key]
        excess = len(self._seen) - _DEDUP_MAX
        if excess > 0:
            for key in list(self._seen)[:excess]:  # oldest first
                del self._seen[key]

    async def _run(self) -> None:
        while True:
            event, suppressed = await self._queue.get()
            try:
                message = Message(event, suppressed, self._settings.instance_name, self._settings.environment)
                results = await asyncio.gather(
                    *(self._send(t, message) for t in self._targets), return_exceptions=True
                )
                for target, result in zip(self._targets, results, strict=True):
                    if isinstance(result, Exception):  # _send catches everything: this is a bug
                        logger.error("notification to %s crashed: %s", target.name, self._describe(result))
            except Exception as exc:
                # The worker outlives any bad event; the message is redacted like every other.
                logger.error("notification worker error: %s", self._describe(exc))
            finally:
                self._queue.task_done()

    async def _send(self, target: Target, message: Message) -> None:
        if self._client is None:
            return
        try:
            outgoing = target.build(message)
            response = await self._client.request(
                outgoing.method, outgoing.url, json=outgoing.body, headers=outgoing.headers
            )
        except Exception as exc:  # transport error, timeout, bad URL: counted and logged, never raised
            self._failed(target, message, self._describe(exc))
            return
        if response.is_success:
            NOTIFY_SENT.labels(target.name, "ok").inc()
        else:
            self._failed(target, message, f"HTTP {response.status_code}")

    def _failed(self, target: Target, message: Message, reason: str) -> None:
        NOTIFY_SENT.labels(target.name, "error").inc()
        logger.warning("notification %s to %s failed: %s", message.event.code, target.name, reason)

    def _describe(self, exc: BaseException) -> str:
        # Error messages may quote the URL (a Slack webhook URL is a credential): redact secrets.
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
