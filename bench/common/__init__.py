"""What the benchmarks share, so that each bench holds only what it measures.

- `processes`: starting, watching and stopping child processes (Sluice, fake servers, load
  generators), the Sluice environment, SIGTERM handling;
- `database`: scratch Postgres databases, migrations and Redis keys;
- `cpu`: CPU time of processes and of the machine, from /proc;
- `serving`: the child side: running an event loop, and the fake aiohttp servers' `main()`;
- `results`: the results JSON and the run's context (machine, code).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench" / "results"
