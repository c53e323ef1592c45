"""The provider's tests run against a live Sluice (with its sandbox partner) that has the
service SLUICE_SERVICE registered in its directory. Sluice's own suite starts one and runs these
(tests/airflow); by hand, point SLUICE_URL, SLUICE_PARTNER_KEY and SLUICE_DIRECTORY_KEY at yours.
The service's async calls must end in CALL_ERROR after one failed attempt (AIRLOCK_TTL=1)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# Before anything imports Airflow: never touch ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="sluice-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@dataclass(frozen=True)
class Live:
    url: str
    partner_key: str = field(repr=False)
    directory_key: str = field(repr=False)
    service: str
    headers: dict[str, str]


@pytest.fixture(scope="session")
def live() -> Live:
    url = os.environ.get("SLUICE_URL")
    if not url:
        pytest.skip("SLUICE_URL is not set: these tests need a live Sluice")
    return Live(
        url=url.rstrip("/"),
        partner_key=os.environ["SLUICE_PARTNER_KEY"],
        directory_key=os.environ["SLUICE_DIRECTORY_KEY"],
        service=os.environ.get("SLUICE_SERVICE", "sluice-partner"),
        headers={"X-Client-ID": "airflow-provider-tests", "X-Language-ID": "en"},
    )


@pytest.fixture(autouse=True)
def directory_connection(live: Live, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    conn = {"conn_type": "http", "host": live.url, "password": live.directory_key}
    monkeypatch.setenv("AIRFLOW_CONN_SLUICE_DIRECTORY", json.dumps(conn))
    yield


class FakeTI:
    """What the operators use of a task instance: XCom, keyed by task id."""

    def __init__(self) -> None:
        self.xcoms: dict[tuple[str, str], Any] = {}
        self.task_id = ""

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids or self.task_id, key))

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def run(operator: Any, ti: FakeTI, **context: Any) -> Any:
    """Execute an operator as a worker would, its return value pushed."""
    ti.task_id = operator.task_id
    result = operator.execute({"ti": ti, **context})
    if result is not None:
        ti.xcom_push("return_value", result)
    return result
