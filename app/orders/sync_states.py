"""The seed's per-record sync states and its transition table, kept as data.

The seed (a two-way order sync between instances A and B) gives each record a sync state and
says what becomes of the local record when the peer sends its copy in a given state. The table
below is the seed's, row for row; `transition()` looks a pair up, and any pair the seed does not
list is an error (ST_ERROR, sent back so that the peer learns of it).

`push` is the seed's "+": after the transition the local record's state must be sent to the peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class SyncState(IntEnum):
    ST_NEW = 1  # created here, not yet acknowledged by the peer
    ST_UPD = 2  # changed here, not yet acknowledged
    ST_OK = 3  # in step with the peer
    ST_DEL = 4  # deleted here (tombstone), not yet acknowledged
    ST_DEL_SYNCED = 5  # deletion in step with the peer
    ST_COLLISION = 6  # both sides changed it: both versions kept until resolved
    ST_ERROR = 7  # a combination the table does not allow
    ST_ERROR_SYNCED = 8  # the peer knows of the error
    ST_SYNC = 9  # error acknowledged (the seed lists the code; no row of its table reaches it)


# Retried by the sync loop when they stay in these states (the seed's note *).
RETRIED = frozenset({SyncState.ST_NEW, SyncState.ST_UPD, SyncState.ST_DEL, SyncState.ST_ERROR})


@dataclass(frozen=True, slots=True)
class Transition:
    received: SyncState
    current: SyncState | None  # None: no local record yet ("-" in the seed)
    becomes: SyncState
    push: bool
    comment: str


S = SyncState
# (received from the peer, local state before) -> local state after, push back?, the seed's comment
TABLE: tuple[Transition, ...] = (
    Transition(S.ST_NEW, S.ST_NEW, S.ST_COLLISION, True, "uuid collision"),
    Transition(S.ST_NEW, S.ST_OK, S.ST_OK, True, "repeated sync"),
    Transition(S.ST_NEW, S.ST_COLLISION, S.ST_COLLISION, True, "repeated collision"),
    Transition(S.ST_NEW, None, S.ST_OK, True, "new record arrived"),
    Transition(S.ST_UPD, S.ST_UPD, S.ST_COLLISION, True, "collision update/update"),
    Transition(S.ST_UPD, S.ST_OK, S.ST_OK, True, "changed record arrived"),
    Transition(S.ST_UPD, S.ST_DEL, S.ST_COLLISION, True, "collision update/delete"),
    Transition(S.ST_UPD, S.ST_COLLISION, S.ST_COLLISION, True, "repeated collision"),
    Transition(S.ST_OK, S.ST_NEW, S.ST_OK, False, "creation acknowledged"),
    Transition(S.ST_OK, S.ST_UPD, S.ST_OK, False, "update acknowledged"),
    Transition(S.ST_DEL, S.ST_UPD, S.ST_COLLISION, True, "collision delete/update"),
    Transition(S.ST_DEL, S.ST_OK, S.ST_DEL_SYNCED, True, "deleted record arrived"),
    Transition(S.ST_DEL, S.ST_DEL, S.ST_COLLISION, True, "collision delete/delete"),
    Transition(S.ST_DEL, S.ST_DEL_SYNCED, S.ST_DEL_SYNCED, True, "repeated sync"),
    Transition(S.ST_DEL, S.ST_COLLISION, S.ST_COLLISION, True, "repeated sync"),
    Transition(S.ST_DEL_SYNCED, S.ST_DEL, S.ST_DEL_SYNCED, False, "deletion acknowledged"),
    Transition(S.ST_COLLISION, S.ST_NEW, S.ST_COLLISION, False, "collision acknowledged"),
    Transition(S.ST_COLLISION, S.ST_UPD, S.ST_COLLISION, False, "collision acknowledged"),
    Transition(S.ST_COLLISION, S.ST_DEL, S.ST_COLLISION, False, "collision acknowledged"),
    Transition(S.ST_COLLISION, S.ST_COLLISION, S.ST_COLLISION, False, "repeated sync"),
    # "ST_ERROR, *": whatever the local state (or none).
    *(
        Transition(S.ST_ERROR, current, S.ST_ERROR_SYNCED, True, "error arrived")
        for current in (None, *SyncState)
    ),
    Transition(S.ST_ERROR_SYNCED, S.ST_ERROR, S.ST_ERROR_SYNCED, False, "error acknowledged"),
)

_BY_PAIR: dict[tuple[SyncState, SyncState | None], Transition] = {}
for _row in TABLE:
    # The explicit row wins over the "ST_ERROR, *" expansion (none overlaps today).
    _BY_PAIR.setdefault((_row.received, _row.current), _row)


def transition(received: SyncState, current: SyncState | None) -> Transition:
    """What the local record becomes when the peer sends its copy in state `received`."""
    found = _BY_PAIR.get((received, current))
    if found is not None:
        return found
    return Transition(received, current, SyncState.ST_ERROR, True, "combination not allowed")
