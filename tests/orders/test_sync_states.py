"""The seed's transition table, row by row (written out here independently of the code's table)."""

from __future__ import annotations

import pytest

from app.orders.sync_states import RETRIED, SyncState, transition

NEW, UPD, OK, DEL, DEL_SYNCED, COLLISION, ERROR, ERROR_SYNCED, SYNC = range(1, 10)

# received, was (None: "-"), becomes, "+" (push back)
SEED_ROWS = [
    (NEW, NEW, COLLISION, True),
    (NEW, OK, OK, True),
    (NEW, COLLISION, COLLISION, True),
    (NEW, None, OK, True),
    (UPD, UPD, COLLISION, True),
    (UPD, OK, OK, True),
    (UPD, DEL, COLLISION, True),
    (UPD, COLLISION, COLLISION, True),
    (OK, NEW, OK, False),
    (OK, UPD, OK, False),
    (DEL, UPD, COLLISION, True),
    (DEL, OK, DEL_SYNCED, True),
    (DEL, DEL, COLLISION, True),
    (DEL, DEL_SYNCED, DEL_SYNCED, True),
    (DEL, COLLISION, COLLISION, True),
    (DEL_SYNCED, DEL, DEL_SYNCED, False),
    (COLLISION, NEW, COLLISION, False),
    (COLLISION, UPD, COLLISION, False),
    (COLLISION, DEL, COLLISION, False),
    (COLLISION, COLLISION, COLLISION, False),
    (ERROR_SYNCED, ERROR, ERROR_SYNCED, False),
]


def test_state_codes_are_the_seeds() -> None:
    assert [(s.name, s.value) for s in SyncState] == [
        ("ST_NEW", 1),
        ("ST_UPD", 2),
        ("ST_OK", 3),
        ("ST_DEL", 4),
        ("ST_DEL_SYNCED", 5),
        ("ST_COLLISION", 6),
        ("ST_ERROR", 7),
        ("ST_ERROR_SYNCED", 8),
        ("ST_SYNC", 9),
    ]
    assert {s.value for s in RETRIED} == {NEW, UPD, DEL, ERROR}


@pytest.mark.parametrize(("received", "was", "becomes", "push"), SEED_ROWS)
def test_seed_row(received: int, was: int | None, becomes: int, push: bool) -> None:
    result = transition(SyncState(received), None if was is None else SyncState(was))
    assert (result.becomes.value, result.push) == (becomes, push)


@pytest.mark.parametrize("was", [None, *range(1, 10)])
def test_an_error_from_the_peer_is_acknowledged_whatever_the_local_state(was: int | None) -> None:
    result = transition(SyncState.ST_ERROR, None if was is None else SyncState(was))
    assert (result.becomes, result.push) == (SyncState.ST_ERROR_SYNCED, True)


def test_every_other_combination_is_an_error_sent_back() -> None:
    listed = {(r, w) for r, w, _, _ in SEED_ROWS} | {(ERROR, w) for w in [None, *range(1, 10)]}
    others = [(r, w) for r in range(1, 10) for w in [None, *range(1, 10)] if (r, w) not in listed]
    assert len(others) == 9 * 10 - len(listed)
    for received, was in others:
        result = transition(SyncState(received), None if was is None else SyncState(was))
        assert (result.becomes, result.push) == (SyncState.ST_ERROR, True), (received, was)
