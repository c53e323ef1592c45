"""The airlock's state machine (seed 001), as pure functions of a call's state and an outcome.

    CALL_RETRY ──call answered──► RESPONSE_RETRY ──reply 2xx──► DONE
        │  (no $reply) ─────────────────────────────────────────► DONE
        └─ttl runs out─► CALL_ERROR      └─ttl runs out or 410─► RESPONSE_ERROR

Every attempt decrements ttl; after a failed one next_try moves on by `delay` (with jitter)
and `delay` doubles. Entering RESPONSE_RETRY resets ttl and delay to the connector's values.
No I/O and no clock here: the worker passes `now`, so tests drive time by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.airlock.models import CallStatus


@dataclass(frozen=True, slots=True)
class Schedule:
    """A connector's retry settings."""

    ttl: int
    delay: float
    jitter: float = 0.0
    retry_after_max: float = 86_400.0


@dataclass(frozen=True, slots=True)
class CallState:
    status: CallStatus
    ttl: int
    delay: float
    next_try: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt gave.

    `final` (call phase): the operation answered for good (a 2xx, or a business error that
    retrying cannot change); else a retryable failure. `ok` (reply phase): a 2xx from the
    receiver; `gone`: it answered 410 and wants no more.
    """

    final: bool = False
    ok: bool = False
    gone: bool = False
    http_status: int | None = None
    error: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """The call's state after an attempt, and the word the log records for it."""

    state: CallState
    outcome: str


Jitter = Callable[[float], float]


def jittered(fraction: float, rng: random.Random | None = None) -> Jitter:
    """A function spreading a delay by ±fraction."""
    source = rng or random.Random()

    def apply(delay: float) -> float:
        return delay * (1 + source.uniform(-fraction, fraction)) if fraction else delay

    return apply


def _back_off(
    state: CallState,
    now: datetime,
    schedule: Schedule,
    jitter: Jitter,
    error_status: CallStatus,
    wait: float | None,
) -> Step:
    ttl = state.ttl - 1
    if ttl <= 0:
        return Step(CallState(error_status, 0, state.delay, state.next_try), "error")
    base = max(state.next_try, now)
    pause = min(wait, schedule.retry_after_max) if wait is not None else jitter(state.delay)
    next_try = (now if wait is not None else base) + timedelta(seconds=max(pause, 0.0))
    return Step(CallState(state.status, ttl, state.delay * 2, next_try), "retry")


def after_call(
    state: CallState, outcome: Outcome, *, has_reply: bool, schedule: Schedule, now: datetime, jitter: Jitter
) -> Step:
    """The state after an attempt of the partner call (status CALL_RETRY)."""
    if outcome.final:
        if has_reply:
            # The reply is due at once, with a fresh budget of attempts.
            return Step(CallState(CallStatus.RESPONSE_RETRY, schedule.ttl, schedule.delay, now), "ok")
        return Step(CallState(CallStatus.DONE, state.ttl - 1, state.delay, state.next_try), "ok")
    return _back_off(state, now, schedule, jitter, CallStatus.CALL_ERROR, None)


def after_reply(
    state: CallState, outcome: Outcome, *, schedule: Schedule, now: datetime, jitter: Jitter
) -> Step:
    """The state after an attempt to deliver the reply (status RESPONSE_RETRY)."""
    if outcome.ok:
        return Step(CallState(CallStatus.DONE, state.ttl - 1, state.delay, state.next_try), "ok")
    if outcome.gone:
        return Step(CallState(CallStatus.RESPONSE_ERROR, 0, state.delay, state.next_try), "gone")
    return _back_off(state, now, schedule, jitter, CallStatus.RESPONSE_ERROR, outcome.retry_after)
