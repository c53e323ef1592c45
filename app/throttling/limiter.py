"""Enforcement of deployed throttling configurations on outbound partner calls.

Every replica keeps the deployed rules in memory (`ThrottleGate.rules`), so a call that no
rule covers costs a dictionary lookup and no Redis round trip. A covered call takes a slot from
a GCRA limiter: one Lua script that reads Redis's clock (`TIME`, so replicas' clocks do not
matter), computes the call's slot as max(now, theoretical arrival time), and either reserves it
(advancing the arrival time by one emission interval, 1/maxThroughput s) or refuses it when it
lies beyond the caller's horizon. Slots are spaced, never bursty: no second holds more than
maxThroughput of them.

The caller then sleeps until its slot when that is at most `THROTTLE_MAX_WAIT` away. A call
that may go asynchronous (a `$reply` was given, or the airlock runs it) may reserve a slot up to
`THROTTLE_QUEUE_HORIZON` (6 h) ahead: it is stored with that slot and run then, without taking
another. Anything else beyond the wait gets 429 `throttled` with Retry-After.

Deploy, update and undeploy bump a version key and publish on a channel; each replica reloads
its rules on the message, and polls the version key every `THROTTLE_REFRESH_INTERVAL` in case a
message was missed (pub/sub does not keep messages), so changes reach every replica within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.redis import Redis, key
from app.settings import Settings
from app.throttling import patterns
from app.throttling.models import ThrottlingRuntime
from app.upstream.errors import Throttled, ThrottleQueued

if TYPE_CHECKING:
    from app.upstream.client import UpstreamExchange

logger = logging.getLogger("sluice.throttling")

THROTTLED = Counter(
    "sluice_throttle_calls_total",
    "Outbound calls covered by a throttling configuration, by outcome "
    "(immediate, waited, queued, rejected, late: slot given up, sent_late: late for every slot taken, "
    "unenforced: Redis failed)",
    ["config", "outcome"],
)
THROTTLE_WAIT = Histogram(
    "sluice_throttle_wait_seconds",
    "Time a throttled outbound call waited for its slot",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)
THROTTLE_LATENESS = Histogram(
    "sluice_throttle_lateness_seconds",
    "How long after its slot a throttled call resumed (event-loop lag; beyond half the safety margin "
    "in seconds the slot is given up)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
THROTTLE_QUEUED = Gauge(
    "sluice_throttle_queued_calls", "Async calls waiting for a reserved throttling slot", ["config"]
)

# KEYS[1]: the config's arrival-time key. ARGV[1]: emission interval in µs (may be fractional);
# ARGV[2]: the furthest slot, in µs from now, the callers accept; ARGV[3]: how many consecutive
# slots are wanted (the concurrent callers of one process, coalesced into one call). Returns
# {slots reserved, wait µs until the first, Redis's now in µs}: slot i is now + wait + i x interval.
# Numbers are written with string.format: Redis would turn a Lua number into "%.14g", which
# loses the microseconds of a Unix time.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3] or '1')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
local fit = 0
if wait <= horizon then fit = math.floor((horizon - wait) / interval) + 1 end
local n = math.min(wanted, fit)
if n > 0 then
  local new_tat = tat + n * interval
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 60000)
end
return {n, string.format('%.0f', wait), string.format('%.0f', now)}
"""

FULL_RELOAD_INTERVAL = 30.0
# A call that leaves later than its slot (a busy event loop, a descheduled process) could land
# in the same second as the slots after it. Slots are spaced so that maxThroughput of them span
# 1 + margin seconds: that margin absorbs the jitter between a slot and the call's arrival at
# the partner. This share of it goes to the lateness of this process; the rest is left for the
# trip to the partner. A call later than that gives its slot up and takes a new one.
LATENESS_SHARE = 0.5
# With no margin, a queued call this late for its reserved slot (its worker was busy or down,
# not merely slow to wake) still takes a new one.
PAST_SLOT = 1.0
# A call late for its slot takes a new one, at most this many times.
MAX_RESERVATIONS = 4
# Clock samples kept (one per rules refresh, every THROTTLE_REFRESH_INTERVAL): ~10 s.
CLOCK_SAMPLES = 20
# Most slots one script call reserves for the waiting callers of a process.
MAX_BATCH = 256
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Rule:
    """A deployed runtime version, as the limiter enforces it."""

    uid: str
    version: int
    org_id: str
    pattern: patterns.UrlPattern
    methods: frozenset[str]
    max_throughput: int
    # Microseconds between two slots; a little over 1/maxThroughput (THROTTLE_SAFETY_MARGIN),
    # so that scheduling jitter between slot and send does not put N+1 calls in one second.
    interval_us: float

    def covers(self, method: str, url: str) -> bool:
        return method in self.methods and self.pattern.matches(url)


def make_rule(row: ThrottlingRuntime, margin: float) -> Rule:
    return Rule(
        uid=row.config_uid,
        version=row.version,
        org_id=row.org_id,
        pattern=patterns.parse(row.url_pattern),
        methods=frozenset(m.upper() for m in row.methods) & _METHODS,
        max_throughput=row.max_throughput,
        interval_us=1_000_000 / (row.max_throughput * (1 - margin)),
    )


@dataclass(slots=True)
class _Wanted:
    horizon_us: int
    answer: asyncio.Future[tuple[bool, int, int]]


class _SlotCoalescer:
    """One script call at a time per (key, horizon class) in this process; the callers that come
    while it runs wait and are served together by the next one. Under load the Redis round
    trips per call fall well below one (and the CPU with them); alone, a call goes at once."""

    def __init__(self, script: Any, slot_key: str, interval_us: float) -> None:
        self.script = script
        self.slot_key = slot_key
        self.interval_us = interval_us
        self.waiting: list[_Wanted] = []
        self.draining: asyncio.Task[None] | None = None

    async def reserve(self, horizon_us: int) -> tuple[bool, int, int]:
        """(reserved, wait µs, Redis's now µs) for one slot within `horizon_us`."""
        answer: asyncio.Future[tuple[bool, int, int]] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Wanted(horizon_us, answer))
        if self.draining is None:
            self.draining = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
                horizon = min(w.horizon_us for w in batch)
                try:
                    reserved, wait_us, now_us = await self.script(
                        keys=[self.slot_key], args=[f"{self.interval_us:.3f}", horizon, len(batch)]
                    )
                except BaseException as exc:
                    for wanted in batch:
                        if not wanted.answer.done():
                            failure = exc if isinstance(exc, Exception) else RedisError(repr(exc))
                            wanted.answer.set_exception(failure)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                reserved, first, now = int(reserved), int(wait_us), int(now_us)
                for i, wanted in enumerate(batch):
                    wait = round(first + i * self.interval_us)
                    if i < reserved:
                        outcome = (True, wait, now)
                    elif wanted.horizon_us > horizon:
                        # Refused only because another caller of the batch accepted less.
                        self.waiting.append(wanted)
                        continue
                    else:
                        outcome = (False, wait, now)
                    if not wanted.answer.done():
                        wanted.answer.set_result(outcome)
        finally:
            self.draining = None


class ThrottleGate:
    """The process's view of the deployed rules, and the admission of outbound calls."""

    def __init__(
        self, settings: Settings, redis: Redis, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.sessionmaker = sessionmaker
        self.rules: dict[str, tuple[Rule, ...]] = {}
        self.version_key = key(settings, "throttling", "version")
        self.channel = key(settings, "throttling", "changed")
        self._seen_version: bytes | str | None = None
        self._script: Any = redis.register_script(GCRA_SCRIPT)
        self._coalescers: dict[tuple[str, float, bool], _SlotCoalescer] = {}
        self._reload_lock = asyncio.Lock()
        self._loaded_at = 0.0
        # Redis's clock minus this process's, in seconds. Queued calls keep their slot on
        # Redis's clock (the one the limiter counts on), so any replica can run them on time
        # whatever its own clock says.
        self.clock_offset = 0.0
        # (round trip, offset) of the last CLOCK_SAMPLES measurements.
        self._clock_samples: deque[tuple[float, float]] = deque(maxlen=CLOCK_SAMPLES)

    @property
    def seen_version(self) -> int:
        """The rules' version this process last loaded (0 before any change)."""
        raw = self._seen_version
        return int(raw) if raw else 0

    def slot_key(self, rule: Rule) -> str:
        return key(self.settings, "throttle", rule.org_id, rule.uid)

    # ------------------------------------------------------------------ rules

    async def sync_clock(self) -> None:
        """Measure the offset of Redis's clock from this process's.

        One TIME call gives the offset within half its round trip. The estimate kept is the
        sample with the shortest round trip among the recent ones, so a call slowed by a busy
        moment does not shift every slot of this replica against the other replicas' slots.
        """
        before = time.time()
        seconds, micros = await self.redis.time()
        after = time.time()
        self._clock_samples.append((after - before, seconds + micros / 1_000_000 - (before + after) / 2))
        self.clock_offset = min(self._clock_samples)[1]

    def redis_now(self) -> float:
        """The time on Redis's clock, estimated locally."""
        return time.time() + self.clock_offset

    def local_time(self, redis_time: float) -> float:
        """A Redis-clock time on this process's clock."""
        return redis_time - self.clock_offset

    async def reload(self) -> None:
        """Read the active runtime versions from the database."""
        await self.sync_clock()
        async with self._reload_lock:
            version = await self.redis.get(self.version_key)
            async with self.sessionmaker() as session:
                rows = (
                    await session.scalars(select(ThrottlingRuntime).where(ThrottlingRuntime.active.is_(True)))
                ).all()
            self.rules = _by_org(make_rule(row, self.settings.throttle_safety_margin) for row in rows)
            current = {(r.uid, r.interval_us) for rules in self.rules.values() for r in rules}
            self._coalescers = {
                ident: c
                for ident, c in self._coalescers.items()
                if ident[:2] in current or c.draining is not None
            }
            self._seen_version = version
            self._loaded_at = time.monotonic()

    async def changed(self) -> None:
        """Tell every replica (this one first) that the deployed rules changed."""
        await self.redis.incr(self.version_key)
        await self.reload()
        await self.redis.publish(self.channel, b"changed")

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the rules current: reload on a published change, or when the version key moved."""
        interval = self.settings.throttle_refresh_interval
        while not stop.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while not stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=interval)
                    await self.sync_clock()
                    if (
                        message is not None
                        or await self.redis.get(self.version_key) != self._seen_version
                        # A change whose announcement failed (Redis was down) is still found.
                        or time.monotonic() - self._loaded_at > FULL_RELOAD_INTERVAL
                    ):
                        await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("throttling rules refresh failed (%r); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # ------------------------------------------------------------------ admission

    def match(self, org_id: str | None, method: str, url: str) -> Rule | None:
        rules = self.rules.get(org_id) if org_id is not None else None
        if not rules:
            return None
        for rule in rules:
            if rule.covers(method, url):
                return rule
        return None

    async def admit(self, method: str, url: str, exchange: UpstreamExchange | None) -> None:
        """Return when the call may go; raise Throttled or ThrottleQueued otherwise."""
        margin = self.settings.throttle_safety_margin
        # No margin, no jitter budget: every resumption would count as late, and giving slots up
        # would only waste them (each call would burn MAX_RESERVATIONS and go late anyway, and a
        # queued call would be queued again and again). A margin of 0 therefore means: go at the
        # slot however late the loop resumes; only a queued call whose slot passed long ago (the
        # workers were down) still takes a new one, so that a backlog does not go all at once.
        allowed_lateness = margin * LATENESS_SHARE if margin > 0 else math.inf
        if exchange is not None and exchange.prepaid_slot is not None:
            # An async call run at the slot reserved for it when it was queued.
            slot, exchange.prepaid_slot = exchange.prepaid_slot, None
            if await self._wait_for(slot) <= min(allowed_lateness, PAST_SLOT):
                return
            # Past (the workers were busy or down): taking it now could bunch calls with the
            # slots after it; take a new one.
        rule = self.match(exchange.org_id if exchange is not None else None, method, url)
        if rule is None:
            return
        max_wait = self.settings.throttle_max_wait
        may_queue = exchange is not None and exchange.may_defer
        started = time.monotonic()
        for _ in range(MAX_RESERVATIONS):
            waited = time.monotonic() - started
            horizon = self.settings.throttle_queue_horizon if may_queue else max(max_wait - waited, 0.0)
            try:
                reserved, wait_us, redis_now_us = await self._coalescer(rule, may_queue).reserve(
                    int(horizon * 1_000_000)
                )
            except RedisError as exc:
                # Without Redis there is no shared count: the call goes (fail open) rather than
                # every partner call of the organisation failing; the metric and log say so.
                THROTTLED.labels(rule.uid, "unenforced").inc()
                logger.warning("throttling not enforced for config %s: Redis failed (%r)", rule.uid, exc)
                return
            wait = int(wait_us) / 1_000_000
            if not int(reserved):
                THROTTLED.labels(rule.uid, "rejected").inc()
                raise Throttled(
                    f"The throttling limit of {rule.max_throughput} calls/s has no slot within "
                    f"{max(horizon, 0.0):g} s for this call (next in {wait:.1f} s)",
                    wait=wait,
                    config_uid=rule.uid,
                )
            # The slot on Redis's clock: the time the script ran plus the wait. Sleeping until
            # it on the local clock (not for `wait` from when the answer arrived) keeps a slow
            # answer from Redis out of the call's timing.
            slot = (int(redis_now_us) + int(wait_us)) / 1_000_000
            if waited + wait > max_wait:
                THROTTLED.labels(rule.uid, "queued").inc()
                raise ThrottleQueued(
                    f"Throttled: queued for the slot reserved in {wait:.1f} s",
                    wait=wait,
                    config_uid=rule.uid,
                    version=rule.version,
                    slot=slot,
                )
            if await self._wait_for(slot) <= allowed_lateness:
                THROTTLE_WAIT.observe(time.monotonic() - started)
                THROTTLED.labels(rule.uid, "waited" if wait > 0 else "immediate").inc()
                return
            THROTTLED.labels(rule.uid, "late").inc()
        # Late for every slot taken: this process cannot keep time (overloaded). Refusing the
        # call would turn an overloaded replica into a stream of errors; it goes, late, and the
        # metric says so (sluice_throttle_calls_total{outcome="sent_late"}).
        THROTTLED.labels(rule.uid, "sent_late").inc()
        THROTTLE_WAIT.observe(time.monotonic() - started)

    def _coalescer(self, rule: Rule, may_queue: bool) -> _SlotCoalescer:
        # Queueable callers accept hours, the others seconds: batched apart, so that one kind
        # does not narrow the other's horizon.
        ident = (rule.uid, rule.interval_us, may_queue)
        coalescer = self._coalescers.get(ident)
        if coalescer is None:
            coalescer = _SlotCoalescer(self._script, self.slot_key(rule), rule.interval_us)
            self._coalescers[ident] = coalescer
        return coalescer

    async def _wait_for(self, slot: float) -> float:
        """Sleep until `slot` (Redis's clock); return how late the call resumed, in seconds."""
        local_slot = self.local_time(slot)
        early = local_slot - time.time()
        if early > 0:
            await asyncio.sleep(early)
        lateness = max(time.time() - local_slot, 0.0)
        THROTTLE_LATENESS.observe(lateness)
        return lateness


def _by_org(rules: Iterable[Rule]) -> dict[str, tuple[Rule, ...]]:
    grouped: dict[str, list[Rule]] = {}
    for rule in rules:
        grouped.setdefault(rule.org_id, []).append(rule)
    return {org: tuple(items) for org, items in grouped.items()}
