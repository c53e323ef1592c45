"""A circuit breaker per upstream: aiobreaker, wrapped.

aiobreaker keeps the state machine; this wrapper fixes what it gets wrong for us (see
LESSONS.md): half-open admits exactly one trial call (others fail fast), the call that trips
the breaker surfaces the upstream's own error rather than CircuitBreakerError, the time left
is computed on one clock (aiobreaker mixes utcnow and local now), and state changes are logged,
counted and notified.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener, CircuitBreakerState

from app.observability import BREAKER_STATE, BREAKER_TRANSITIONS
from app.upstream.errors import CircuitOpen, UpstreamFailure

T = TypeVar("T")
logger = logging.getLogger("sluice.breaker")

_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}
StateListener = Callable[[str, str, str], None]


def _utcnow() -> datetime:
    # aiobreaker stores opened_at as naive UTC; compare on the same clock.
    return datetime.utcnow()


class _Listener(CircuitBreakerListener):  # type: ignore[misc]
    def __init__(self, owner: Breaker) -> None:
        self.owner = owner

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        old_name = old.state.name.lower() if old is not None else "closed"
        self.owner._on_state_change(old_name, new.state.name.lower())


class Breaker:
    def __init__(
        self, name: str, *, fail_max: int, reset_timeout: float, on_state_change: StateListener | None = None
    ) -> None:
        self.name = name
        self.reset_timeout = reset_timeout
        self._on_change = on_state_change
        self._trial_in_flight = False
        self._cb = CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_timeout),
            # Only UpstreamFailure is a malfunction; a business error proves the partner is up.
            exclude=[lambda exc: not isinstance(exc, UpstreamFailure)],
            listeners=[_Listener(self)],
            name=name,
        )
        BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> str:
        """closed, open or half_open (an open breaker whose timeout elapsed reports half_open)."""
        current = self._cb.current_state
        if current == CircuitBreakerState.OPEN and self.seconds_until_trial() <= 0:
            return "half_open"
        return str(current.name.lower())

    @property
    def fail_counter(self) -> int:
        return int(self._cb.fail_counter)

    def seconds_until_trial(self) -> float:
        opened_at = self._cb._state_storage.opened_at
        if opened_at is None:
            return 0.0
        return (opened_at + self._cb.timeout_duration - _utcnow()).total_seconds()

    def _retry_after(self) -> str:
        return str(max(1, math.ceil(self.seconds_until_trial())))

    def _open_error(self, detail: str) -> CircuitOpen:
        return CircuitOpen(detail, upstream=self.name, headers={"Retry-After": self._retry_after()})

    async def call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run `func` under the breaker; raise CircuitOpen without calling it when open."""
        state = self.state
        if state == "open":
            raise self._open_error(f"Calls to {self.name} are paused after repeated failures")
        if state == "half_open":
            if self._trial_in_flight:
                raise self._open_error(f"A trial call to {self.name} is in progress")
            self._trial_in_flight = True
            try:
                return await self._guarded(func)
            finally:
                self._trial_in_flight = False
        return await self._guarded(func)

    async def _guarded(self, func: Callable[[], Awaitable[T]]) -> T:
        try:
            result: T = await self._cb.call_async(func)
            return result
        except CircuitBreakerError as exc:
            cause = exc.__cause__
            if isinstance(cause, UpstreamFailure):
                raise cause.error from cause.__cause__
            raise self._open_error(f"Calls to {self.name} are paused after repeated failures") from None
        except UpstreamFailure as failure:
            raise failure.error from failure.__cause__

    def _on_state_change(self, old: str, new: str) -> None:
        BREAKER_STATE.labels(self.name).set(_STATE_VALUE.get(new, 0))
        BREAKER_TRANSITIONS.labels(self.name, new).inc()
        log = logger.warning if new == "open" else logger.info
        log(
            "circuit breaker %s: %s -> %s",
            self.name,
            old,
            new,
            extra={"upstream": self.name, "old_state": old, "new_state": new},
        )
        if self._on_change is not None:
            try:
                self._on_change(self.name, old, new)
            except Exception:
                logger.exception("breaker state listener failed")
