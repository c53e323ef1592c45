"""The state machine of seed 001, transition by transition, with time passed in by hand."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.airlock.machine import CallState, Outcome, Schedule, after_call, after_reply, jittered
from app.airlock.models import CallStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE = Schedule(ttl=13, delay=30.0)


def no_jitter(delay: float) -> float:
    return delay


def call(
    status: CallStatus = CallStatus.CALL_RETRY, ttl: int = 13, delay: float = 30.0, at: datetime = T0
) -> CallState:
    return CallState(status, ttl, delay, at)


def test_call_success_with_reply_enters_response_retry_due_now_with_ttl_and_delay_reset() -> None:
    step = after_call(
        call(ttl=3, delay=240),
        Outcome(final=True, http_status=200),
        has_reply=True,
        schedule=SCHEDULE,
        now=T0,
        jitter=no_jitter,
    )
    assert step.outcome == "ok"
    assert step.state == CallState(CallStatus.RESPONSE_RETRY, 13, 30.0, T0)


def test_call_success_without_reply_is_done() -> None:
    step = after_call(
        call(),
        Outcome(final=True, http_status=201),
        has_reply=False,
        schedule=SCHEDULE,
        now=T0,
        jitter=no_jitter,
    )
    assert step.state.status == CallStatus.DONE


def test_business_error_is_a_final_answer_not_a_retry() -> None:
    step = after_call(
        call(),
        Outcome(final=True, http_status=422),
        has_reply=True,
        schedule=SCHEDULE,
        now=T0,
        jitter=no_jitter,
    )
    assert step.state.status == CallStatus.RESPONSE_RETRY


def test_call_failure_moves_next_try_by_delay_and_doubles_it() -> None:
    state = call()
    step = after_call(
        state, Outcome(error="partner_timeout"), has_reply=True, schedule=SCHEDULE, now=T0, jitter=no_jitter
    )
    assert step.outcome == "retry"
    assert step.state == CallState(CallStatus.CALL_RETRY, 12, 60.0, T0 + timedelta(seconds=30))


def test_late_attempt_backs_off_from_now_not_from_the_missed_slot() -> None:
    late = T0 + timedelta(hours=5)
    step = after_call(call(at=T0), Outcome(), has_reply=False, schedule=SCHEDULE, now=late, jitter=no_jitter)
    assert step.state.next_try == late + timedelta(seconds=30)


def test_call_ttl_exhaustion_is_call_error() -> None:
    step = after_call(
        call(ttl=1), Outcome(error="boom"), has_reply=True, schedule=SCHEDULE, now=T0, jitter=no_jitter
    )
    assert step.outcome == "error"
    assert step.state.status == CallStatus.CALL_ERROR
    assert step.state.ttl == 0


def test_default_schedule_retries_for_about_two_point_eight_days() -> None:
    state, now = call(), T0
    attempts = 0
    while state.status == CallStatus.CALL_RETRY:
        now = state.next_try
        state = after_call(
            state, Outcome(), has_reply=True, schedule=SCHEDULE, now=now, jitter=no_jitter
        ).state
        attempts += 1
    assert attempts == 13
    # 12 waits between 13 attempts: 30 s × (2^12 − 1); the seed's 30 × (2^13 − 1) s ≈ 2.8 days
    # counts the wait after the first (synchronous) failure as well.
    assert (now - T0).total_seconds() == 30 * (2**12 - 1)
    assert 30 * (2**13 - 1) / 86_400 == pytest.approx(2.84, abs=0.01)


def test_reply_delivered_is_done() -> None:
    step = after_reply(
        call(CallStatus.RESPONSE_RETRY),
        Outcome(ok=True, http_status=204),
        schedule=SCHEDULE,
        now=T0,
        jitter=no_jitter,
    )
    assert step.state.status == CallStatus.DONE


def test_reply_gone_stops_at_once() -> None:
    step = after_reply(
        call(CallStatus.RESPONSE_RETRY, ttl=13),
        Outcome(gone=True, http_status=410),
        schedule=SCHEDULE,
        now=T0,
        jitter=no_jitter,
    )
    assert step.outcome == "gone"
    assert step.state.status == CallStatus.RESPONSE_ERROR


def test_reply_failure_backs_off_and_ttl_exhaustion_is_response_error() -> None:
    state = call(CallStatus.RESPONSE_RETRY, ttl=2, delay=10)
    step = after_reply(state, Outcome(http_status=500), schedule=SCHEDULE, now=T0, jitter=no_jitter)
    assert step.state == CallState(CallStatus.RESPONSE_RETRY, 1, 20.0, T0 + timedelta(seconds=10))
    step = after_reply(step.state, Outcome(http_status=500), schedule=SCHEDULE, now=T0, jitter=no_jitter)
    assert step.state.status == CallStatus.RESPONSE_ERROR


def test_retry_after_sets_the_next_try_and_is_capped() -> None:
    state = call(CallStatus.RESPONSE_RETRY, delay=10)
    step = after_reply(
        state, Outcome(http_status=429, retry_after=120), schedule=SCHEDULE, now=T0, jitter=no_jitter
    )
    assert step.state.next_try == T0 + timedelta(seconds=120)
    capped = Schedule(ttl=13, delay=30, retry_after_max=60)
    step = after_reply(
        state, Outcome(http_status=503, retry_after=10**9), schedule=capped, now=T0, jitter=no_jitter
    )
    assert step.state.next_try == T0 + timedelta(seconds=60)


def test_jitter_stays_within_its_fraction() -> None:
    spread = jittered(0.1, random.Random(7))
    values = [spread(100.0) for _ in range(1000)]
    assert min(values) >= 90 and max(values) <= 110
    assert len({round(v, 3) for v in values}) > 100


def test_envelope_carries_json_as_data_and_anything_else_base64() -> None:
    import base64
    import uuid

    import orjson

    from app.airlock.delivery import envelope, retry_after
    from app.airlock.models import AsyncCall

    call_id = uuid.uuid4()
    as_json = AsyncCall(
        id=call_id,
        response_status=200,
        response_content_type="application/json",
        response_body=b'{"a": [1, 2]}',
    )
    assert orjson.loads(envelope(as_json)) == {
        "$reply_id": str(call_id),
        "status": 200,
        "content_type": "application/json",
        "data": {"a": [1, 2]},
    }
    as_bytes = AsyncCall(
        id=call_id, response_status=200, response_content_type="application/pdf", response_body=b"%PDF\x00"
    )
    decoded = orjson.loads(envelope(as_bytes))
    assert "data" not in decoded and base64.b64decode(decoded["b64_body"]) == b"%PDF\x00"
    broken = AsyncCall(
        id=call_id, response_status=502, response_content_type="application/json", response_body=b"<html>"
    )
    assert base64.b64decode(orjson.loads(envelope(broken))["b64_body"]) == b"<html>"
    assert retry_after("120", T0) == 120
    assert retry_after("Thu, 01 Jan 2026 00:02:00 GMT", T0) == 120
    assert retry_after("soon", T0) is None and retry_after(None, T0) is None
