"""The Airflow provider (contrib/airflow) against a live Sluice: real Airflow 3 in its own
virtualenv (`make airflow-venv`), the example DAG run with `airflow dags test` down both
branches, and the provider's own operator tests.

A Sluice process on a database of its own, with the sandbox partner on another loopback port,
`AIRLOCK_TTL=1` so that a partner failure ends its async call in CALL_ERROR at once; the
service `sluice-partner` (Sluice itself, with a `partner` key) registered in its directory.
Task states and XCom values are read back from Airflow's SQLite metadata database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, REDIS_URL, fresh_database, new_redis_prefix
from tests.support import ROOT, free_port, start_process, stop_process, wait_http

AIRFLOW_DIR = ROOT / "contrib" / "airflow"
AIRFLOW_BIN = AIRFLOW_DIR / ".venv" / "bin"
SERVICE = "sluice-partner"
HEADERS = {"X-Client-ID": "airflow-test", "X-Language-ID": "en"}


@dataclass
class Live:
    url: str
    partner_key: str
    directory_key: str
    home: Path

    def airflow_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SLUICE_"))}
        connection = {"conn_type": "http", "host": self.url, "password": self.directory_key}
        return {
            **env,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(AIRFLOW_DIR / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_SLUICE_DIRECTORY": json.dumps(connection),
            "SLUICE_URL": self.url,
            "SLUICE_PARTNER_KEY": self.partner_key,
            "SLUICE_DIRECTORY_KEY": self.directory_key,
            "SLUICE_SERVICE": SERVICE,
        }

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run(
            [str(AIRFLOW_BIN / "airflow"), *args],
            cwd=AIRFLOW_DIR,
            env=self.airflow_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        print(f"airflow {' '.join(args)}: {time.monotonic() - started:.1f} s")
        return done


def create_key(database_url: str, name: str, scopes: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "keys",
            "create",
            "--name",
            name,
            "--org",
            "default",
            "--scopes",
            scopes,
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("key:"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.fail("the Airflow virtualenv is missing: run `make airflow-venv` (make test does)")
    logs = tmp_path_factory.mktemp("airflow")
    with fresh_database("sluice_airflow") as database_url:
        sandbox_port, port = free_port(), free_port()
        sandbox = start_process(
            ["-m", "app.sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)],
            log=logs / "sandbox.log",
        )
        url = f"http://127.0.0.1:{port}"
        sluice = start_process(
            ["-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)],
            env={
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "REDIS_KEY_PREFIX": new_redis_prefix(),
                "BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                "PARTNER_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
                "SANDBOX_ENABLED": "false",
                "PUBLIC_URL": url,
                "AIRLOCK_TTL": "1",
                "DIRECTORY_SECRET_KEY": "airflow provider tests",
                "LOG_LEVEL": "WARNING",
            },
            log=logs / "sluice.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats", proc=sandbox)
            wait_http(f"{url}/health/live", proc=sluice)
            partner_key = create_key(database_url, "airflow-partner", "partner")
            directory_key = create_key(database_url, "airflow-directory", "directory,directory_credentials")
            registered = httpx.post(
                f"{url}/v1/directory/services",
                headers={"X-API-Key": ADMIN_KEY},
                json={"name": SERVICE, "base_url": url, "stage": "test", "credentials": partner_key},
            )
            assert registered.status_code == 201, registered.text
            live = Live(url, partner_key, directory_key, logs / "home")
            migrated = live.airflow("db", "migrate")
            assert migrated.returncode == 0, migrated.stderr[-3000:]
            yield live
        finally:
            stop_process(sluice)
            stop_process(sandbox)


def last_run(live: Live) -> tuple[dict[str, str], dict[tuple[str, str], Any]]:
    """Task states and XCom values of the latest run of the example DAG."""
    with sqlite3.connect(live.home / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'sluice_purchase' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)))
        xcoms = {
            # SQLite hands JSON numbers back as numbers.
            (task_id, key): json.loads(value) if isinstance(value, str) else value
            for task_id, key, value in db.execute(
                "SELECT task_id, key, value FROM xcom WHERE run_id = ?", (run_id,)
            )
        }
    return states, xcoms


def dags_test(live: Live, customer_number: str) -> str:
    done = live.airflow(
        "dags", "test", "sluice_purchase", "-c", json.dumps({"customer_number": customer_number})
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # Neither the directory's key nor the service's token (which the directory hands out) is logged.
    assert live.partner_key not in output and live.directory_key not in output
    return output


def test_example_dag_success_branch(live: Live) -> None:
    # Slow at the partner: the sensor defers, and `dags test` runs its trigger in-process.
    output = dags_test(live, "TRIGGER-SLOW-1500")
    assert "running trigger in line" in output
    states, xcoms = last_run(live)
    assert states == {
        "products": "success",
        "purchase.call": "success",
        "purchase.await": "success",
        "purchase.read": "success",
        "check_purchase": "success",
        "receipt": "success",
        "report_failure": "skipped",
    }
    assert xcoms["products", "status_code"] == 200
    first_product = xcoms["products", "return_value"]["data"][0]["product_code"]
    call_id = xcoms["purchase.call", "async_call_id"]
    assert xcoms["purchase.call", "status_code"] == 202
    assert xcoms["purchase.call", "status_url"] == f"{live.url}/v1/async-calls/{call_id}"
    assert xcoms["purchase.await", "async_status"] == "DONE"
    assert xcoms["purchase.read", "status_code"] == 201
    order = xcoms["purchase.read", "return_value"]["data"]
    assert order["product_code"] == first_product and order["customer_number"] == "TRIGGER-SLOW-1500"
    assert xcoms["check_purchase", "skipmixin_key"] == {"followed": ["receipt"]}
    receipt = xcoms["receipt", "return_value"]
    assert receipt == {"order_id": order["order_id"], "product_code": first_product, "status": "success"}

    # The purchase is real: Sluice finds it at the partner.
    found = httpx.get(
        f"{live.url}/v1/purchases/{order['order_id']}", headers={"X-API-Key": live.partner_key, **HEADERS}
    )
    assert found.status_code == 200 and found.json()["data"]["order_id"] == order["order_id"]


def test_example_dag_failure_branch(live: Live) -> None:
    # The sandbox answers 500; with AIRLOCK_TTL=1 the async call ends in CALL_ERROR.
    output = dags_test(live, "TRIGGER-500")
    assert "ended CALL_ERROR" in output and "partner_error" in output  # the sensor's error: the log
    states, xcoms = last_run(live)
    assert states == {
        "products": "success",
        "purchase.call": "success",
        "purchase.await": "failed",
        "purchase.read": "upstream_failed",
        "check_purchase": "success",
        "receipt": "skipped",
        "report_failure": "success",
    }
    call_id = xcoms["purchase.call", "async_call_id"]
    assert xcoms["check_purchase", "skipmixin_key"] == {"followed": ["report_failure"]}
    assert xcoms["report_failure", "return_value"] == {
        "async_call_id": call_id,
        "async_status": "CALL_ERROR",
        "status_code": None,
    }
    call = httpx.get(f"{live.url}/v1/async-calls/{call_id}", headers={"X-API-Key": live.partner_key})
    assert call.json()["status"] == "CALL_ERROR"


def test_provider_operator_tests(live: Live) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(AIRFLOW_BIN / "pytest"), "-q", "tests"],
        cwd=AIRFLOW_DIR,
        env={**live.airflow_env(), "AIRFLOW_HOME": str(live.home.parent / "unit-home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(f"provider tests: {time.monotonic() - started:.1f} s")
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
