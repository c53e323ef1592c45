"""Figures from the partner's arrival times: rates and the busiest windows, computed exactly."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any


def worst_window(times: Sequence[float], width: float) -> tuple[int, float | None]:
    """The most arrivals in any half-open window [t, t + width), and where it starts.

    Two pointers over the sorted times. Only windows that start at an arrival are tried: any
    window can slide right to its first arrival without losing one, so none holds more.
    """
    best, best_at = 0, None
    j = 0
    n = len(times)
    for i in range(n):
        end = times[i] + width
        if j < i:
            j = i
        while j < n and times[j] < end:
            j += 1
        if j - i > best:
            best, best_at = j - i, times[i]
    return best, best_at


def windows_over(times: Sequence[float], width: float, limit: int) -> int:
    """How many of the windows [t, t + width) starting at an arrival hold more than `limit`."""
    over = 0
    j = 0
    n = len(times)
    for i in range(n):
        end = times[i] + width
        if j < i:
            j = i
        while j < n and times[j] < end:
            j += 1
        if j - i > limit:
            over += 1
    return over


def count_between(times: Sequence[float], start: float, end: float) -> int:
    return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)


def aligned_seconds(times: Sequence[float], start: float, seconds: int) -> list[int]:
    """Arrivals in each whole second [start + k, start + k + 1), k < seconds."""
    return [count_between(times, start + k, start + k + 1) for k in range(seconds)]


def arrival_figures(
    times: Sequence[float], start: float, duration: float, limit: int | None, trim: float
) -> dict[str, Any]:
    """Rate over the steady part of a phase, and the busiest windows (all arrivals counted)."""
    times = sorted(times)
    steady = max(0.0, duration - 2 * trim)
    in_steady = count_between(times, start + trim, start + duration - trim)
    rate = in_steady / steady if steady else math.nan
    worst, worst_at = worst_window(times, 1.0)
    worst_tenth, _ = worst_window(times, 0.1)
    seconds = aligned_seconds(times, start, int(duration))
    figures: dict[str, Any] = {
        "arrivals": len(times),
        "first": times[0] - start if times else None,
        "last": times[-1] - start if times else None,
        "steady_from": trim,
        "steady_to": duration - trim,
        "rate": rate,
        "worst_1s": worst,
        "worst_1s_at": None if worst_at is None else worst_at - start,
        "worst_100ms": worst_tenth,
        "aligned_seconds": seconds,
    }
    if limit:
        figures["ratio"] = rate / limit
        figures["windows_over"] = windows_over(times, 1.0, limit)
        figures["aligned_over"] = sum(1 for c in seconds if c > limit)
    return figures
