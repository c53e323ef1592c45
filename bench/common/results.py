"""What every benchmark run prints and writes besides its figures: the machine it ran on, the
code it measured, and the results file `bench/results/<bench>-<UTC>.json` (ignored by git)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, ROOT


def line_buffered_stdout() -> None:
    """Progress lines show as they are printed, also when the output goes to a file or a pipe."""
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def utc_stamp() -> str:
    """The run's timestamp, as in the results' file names: 20261123T141342Z."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def machine_line(loadavg: tuple[float, float, float]) -> str:
    """Printed first: the figures move with whatever else loads the machine."""
    return f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in loadavg)}"


def machine_info(loadavg_start: tuple[float, float, float], **extra: Any) -> dict[str, Any]:
    """The results' `machine`, at the end of the run (the load average then, too)."""
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }


def git_state(*paths: str) -> dict[str, Any]:
    """The commit measured (`head`) and which of `paths` differ from it (`changed_since_head`);
    what git could not tell is left out."""
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        info["head"] = head.stdout.strip() or None
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["changed_since_head"] = [line[3:] for line in changed.stdout.splitlines()]
    return info


def write_results(bench: str, stamp: str, report: dict[str, Any]) -> Path:
    """`bench/results/<bench>-<stamp>.json`, and its path printed. A value JSON does not know (a
    datetime, a Path) is written as text rather than losing the run's figures."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{bench}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    return out
