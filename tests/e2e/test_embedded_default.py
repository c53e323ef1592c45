"""Smoke test of the embedded default: no DATABASE_URL, no REDIS_URL, the sandbox mounted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import ROOT, free_port, start_process, stop_process, wait_http


def test_embedded_default_serves_the_gateway(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PARTNER_BASE_URL")}
    env.update(VAR_DIR=str(tmp_path / "var"), PUBLIC_URL=f"http://127.0.0.1:{port}", LOG_LEVEL="WARNING")
    for step in (["-m", "app", "migrate"], ["-m", "app", "dev-key"]):
        done = subprocess.run([sys.executable, *step], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("sk_")
    assert (tmp_path / "var" / "sluice.db").exists()

    proc = start_process(
        ["-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log=tmp_path / "server.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health/live", proc=proc)
        headers = {"X-API-Key": key, "X-Client-ID": "smoke", "X-Language-ID": "en"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            products = http.get("/v1/products", headers=headers)
            assert products.status_code == 200, products.text
            assert products.json()["data"]
            assert http.get("/health/ready").json()["status"] == "ok"
            assert http.get("/docs").status_code == 200
            assert http.get("/v1/products").status_code == 401
            # The airlock's delivery loop runs on SQLite too (no LISTEN/NOTIFY: an in-process wake-up).
            accepted = http.post(
                "/v1/purchases",
                json={"product_code": "PLN50", "customer_number": "0812345678"},
                headers={**headers, "Prefer": "respond-async"},
            )
            assert accepted.status_code == 202, accepted.text
            deadline = time.monotonic() + 10
            while (call := http.get(accepted.headers["location"], headers=headers).json())[
                "status"
            ] != "DONE":
                assert time.monotonic() < deadline, call
                time.sleep(0.1)
            assert call["response"]["status"] == 201
        # The same key is printed again on the next `make run`.
        again = subprocess.run(
            [sys.executable, "-m", "app", "dev-key"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert again.stdout.strip() == key
    finally:
        stop_process(proc)
    assert "Traceback" not in (tmp_path / "server.log").read_text()
