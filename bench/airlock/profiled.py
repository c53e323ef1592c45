"""Run uvicorn under cProfile and write the profile when it stops.

    python -m bench.airlock.profiled OUT.prof app.main:create_app --factory --port 8000 ...

`python -m cProfile -m uvicorn` writes nothing on SIGTERM: uvicorn re-raises the signal it caught
once it has shut down, and the default action kills the process before cProfile dumps. Here a
SIGTERM handler installed before uvicorn starts (uvicorn restores it when it stops) turns that
re-raised signal into SystemExit, and the profile is written on the way out.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    out, *uvicorn_args = sys.argv[1:]
    from uvicorn.main import main as uvicorn_main

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    profile = cProfile.Profile()
    try:
        profile.runcall(uvicorn_main, uvicorn_args, prog_name="uvicorn")
    except SystemExit:
        pass
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
