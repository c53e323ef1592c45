"""Deterministic failure triggers: how tests make the sandbox partner misbehave on demand.

A trigger is any value `TRIGGER-<X>` in a URL path segment, a query parameter value or a
top-level string value of the JSON body. Values flow through Sluice unchanged, so a test that
sends e.g. `customer_number=TRIGGER-P08` to the gateway provokes exactly that partner answer.

  TRIGGER-401          401, whatever the token
  TRIGGER-<nnn>        HTTP nnn (400-599) with an empty error_code (500/502/503/504 typical)
  TRIGGER-P01..P19     HTTP 403 with that error_code
  TRIGGER-<code>       any other code (U01, S00, X99, ...): HTTP 400 with that error_code
  TRIGGER-SLOW-<ms>    sleep that many milliseconds, then answer normally
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "TRIGGER-"
# A runaway SLOW value must not pin a connection for ever.
MAX_SLOW_MS = 120_000

_STATUS = re.compile(r"^[45]\d\d$")
_SLOW = re.compile(r"^SLOW-(\d{1,9})$")
_CODE = re.compile(r"^[A-Z]{1,4}\d{1,4}$")
_FORBIDDEN_CODE = re.compile(r"^P(0[1-9]|1[0-9])$")

_MESSAGES = {
    "P": "The partner refused the request",
    "U": "The bill is not valid",
    "S": "The product is closed or unavailable",
}


@dataclass(slots=True)
class Triggers:
    unauthorized: bool = False
    slow_ms: int = 0
    # The first error trigger found; None when the request should succeed.
    status: int | None = None
    code: str = ""
    name: str = ""

    @property
    def message(self) -> str:
        if self.status is not None and self.status >= 500:
            return "sandbox upstream failure"
        if self.code:
            return _MESSAGES.get(self.code[0], "The partner answered with an error")
        return "sandbox triggered error"


def _apply(found: Triggers, name: str) -> None:
    if name == "401":
        found.unauthorized = True
        return
    slow = _SLOW.match(name)
    if slow:
        found.slow_ms = max(found.slow_ms, min(int(slow.group(1)), MAX_SLOW_MS))
        return
    if found.status is not None:
        return
    if _STATUS.match(name):
        found.status, found.name = int(name), name
    elif _CODE.match(name):
        found.status = 403 if _FORBIDDEN_CODE.match(name) else 400
        found.code, found.name = name, name


def find_triggers(values: Iterable[object]) -> Triggers | None:
    """The triggers among `values` (non-strings ignored), or None when there are none."""
    found: Triggers | None = None
    for value in values:
        if isinstance(value, str) and value.startswith(PREFIX):
            if found is None:
                found = Triggers()
            _apply(found, value[len(PREFIX) :])
    return found
