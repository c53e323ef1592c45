"""The `$reply` receiver: answers 200 to every POST and counts the `webhook-id`s it sees.

    python -m bench.airlock.receiver --port 9002

- `POST /<anything>`: 200, empty body. Records the `webhook-id` header, the wall-clock time
  (`time.time()`, comparable with the benchmark's own clock), whether a `webhook-signature` was
  sent, and the `status` field of the reply envelope.
- `GET /_bench/stats`: `total`, `distinct`, `duplicates` (total - distinct), `missing_id`,
  `unsigned`, `first_at`, `last_at` (epoch seconds, null before the first reply) and
  `statuses` (the envelopes' `status`, counted).
- `GET /_bench/health`: readiness.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from bench.common.serving import add_bench_routes, fake_server_main


def make_app() -> web.Application:
    ids: set[str] = set()
    statuses: Counter[str] = Counter()
    counts = {"total": 0, "missing_id": 0, "unsigned": 0}
    times: dict[str, float | None] = {"first_at": None, "last_at": None}

    async def reply(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        counts["total"] += 1
        if times["first_at"] is None:
            times["first_at"] = now
        times["last_at"] = now
        msg_id = request.headers.get("webhook-id")
        if msg_id is None:
            counts["missing_id"] += 1
        else:
            ids.add(msg_id)
        if not request.headers.get("webhook-signature", "").startswith("v1,"):
            counts["unsigned"] += 1
        try:
            status = orjson.loads(body).get("status")
        except (orjson.JSONDecodeError, AttributeError):
            status = "unparsable"
        statuses[str(status)] += 1
        return web.Response(status=200)

    def stats() -> dict[str, Any]:
        with_id = counts["total"] - counts["missing_id"]
        return {
            **counts,
            "distinct": len(ids),
            "duplicates": with_id - len(ids),
            **times,
            "statuses": dict(statuses),
        }

    app = web.Application(client_max_size=16 * 1024 * 1024)
    add_bench_routes(app, stats)
    app.router.add_post("/{tail:.*}", reply)
    return app


if __name__ == "__main__":
    fake_server_main(make_app, __doc__)
