"""Talking to Sluice: resolve a service name through the directory, read an async call.

Kept free of operator code so that the operators (in a worker) and the trigger (in the
triggerer's event loop) share it: every function has a sync and an async form.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException, AirflowFailException

DEFAULT_CONN_ID = "sluice_directory"
DIRECTORY_PATH = "/v1/directory/services/"
PENDING = frozenset({"CALL_RETRY", "RESPONSE_RETRY"})
DONE = "DONE"
# XCom keys, the seed's where it has one (status_code, cws_name).
XCOM_STATUS_CODE = "status_code"
XCOM_CWS_NAME = "cws_name"
XCOM_SERVICE = "service"
XCOM_ASYNC_CALL_ID = "async_call_id"
XCOM_STATUS_URL = "status_url"
XCOM_ASYNC_STATUS = "async_status"


def mask(secret: str | None) -> None:
    """Tell Airflow's log masker about a secret that did not come from a connection."""
    if secret:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)


@dataclass(frozen=True)
class Service:
    """Where a service is and how to call it. `token` never goes to XCom or the logs."""

    name: str
    base_url: str
    stage: str | None = None
    token: str | None = field(default=None, repr=False)
    directory_conn_id: str | None = None

    def url(self, entry: str) -> str:
        return f"{self.base_url.rstrip('/')}/{entry.lstrip('/')}" if entry else self.base_url

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def public(self) -> dict[str, Any]:
        """What downstream tasks may know (they re-resolve the token themselves)."""
        return {
            "cws_name": self.name,
            "base_url": self.base_url,
            "stage": self.stage,
            "directory_conn_id": self.directory_conn_id,
        }


@dataclass(frozen=True)
class Directory:
    """The directory endpoint an Airflow connection points at."""

    conn_id: str
    url: str
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_connection(cls, conn: Any) -> Directory:
        extra = conn.extra_dejson or {}
        host = extra.get("base_url") or conn.host or ""
        if not host:
            raise AirflowFailException(f"Connection {conn.conn_id!r} has no host: set it to Sluice's URL")
        if "://" not in host:
            scheme = conn.schema or "http"
            host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        elif conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        return cls(conn.conn_id, host.rstrip("/"), conn.password or extra.get("api_key"))

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Accept": "application/json"} if self.api_key else {}

    def service_url(self, name: str) -> str:
        return f"{self.url}{DIRECTORY_PATH}{quote(name, safe='')}"

    def to_service(self, name: str, response: httpx.Response, stage: str | None) -> Service:
        if response.status_code == 404:
            raise AirflowFailException(
                f"Service {name!r} is not in the directory at {self.url} (connection {self.conn_id!r})"
            )
        if response.status_code in (401, 403):
            raise AirflowFailException(
                f"The directory at {self.url} refused the key of connection {self.conn_id!r} "
                f"(HTTP {response.status_code}): it needs the directory scope"
            )
        if response.status_code != 200:
            raise AirflowException(
                f"The directory at {self.url} answered HTTP {response.status_code} for {name!r}: "
                f"{response.text[:500]}"
            )
        found = response.json()
        if found.get("has_credentials") and found.get("credentials") is None:
            raise AirflowFailException(
                f"The directory holds credentials for {name!r} but does not show them to the key of "
                f"connection {self.conn_id!r}: give that API client the directory_credentials scope"
            )
        if stage and found.get("stage") != stage:
            raise AirflowFailException(
                f"Service {name!r} is registered on stage {found.get('stage')!r}, not {stage!r}"
            )
        mask(found.get("credentials"))
        return Service(
            name=name,
            base_url=found["base_url"],
            stage=found.get("stage"),
            token=found.get("credentials"),
            directory_conn_id=self.conn_id,
        )


def resolve(
    name: str, conn_id: str = DEFAULT_CONN_ID, stage: str | None = None, timeout: float = 30
) -> Service:
    """The service registered under `name` in the directory the connection points at."""
    directory = Directory.from_connection(BaseHook.get_connection(conn_id))
    try:
        response = httpx.get(directory.service_url(name), headers=directory.headers(), timeout=timeout)
    except httpx.HTTPError as exc:
        raise AirflowException(f"The directory at {directory.url} could not be reached: {exc!r}") from exc
    return directory.to_service(name, response, stage)


async def aresolve(
    name: str, conn_id: str = DEFAULT_CONN_ID, stage: str | None = None, timeout: float = 30
) -> Service:
    directory = Directory.from_connection(await BaseHook.aget_connection(conn_id))
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.get(directory.service_url(name), headers=directory.headers())
    except httpx.HTTPError as exc:
        raise AirflowException(f"The directory at {directory.url} could not be reached: {exc!r}") from exc
    return directory.to_service(name, response, stage)


def service_of(public: dict[str, Any] | None, token: str | None = None) -> Service | None:
    """The service a call task published in XCom, with its token found again."""
    if not public:
        return None
    if public.get("directory_conn_id"):
        return resolve(public["cws_name"], public["directory_conn_id"])
    return Service(public["cws_name"], public["base_url"], public.get("stage"), token)


async def aservice_of(public: dict[str, Any] | None, token: str | None = None) -> Service | None:
    if not public:
        return None
    if public.get("directory_conn_id"):
        return await aresolve(public["cws_name"], public["directory_conn_id"])
    return Service(public["cws_name"], public["base_url"], public.get("stage"), token)


# --- Async calls --------------------------------------------------------------------------


def body_of(response: httpx.Response) -> Any:
    """JSON when the body is JSON, else its text (the seed's fallback)."""
    if not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def _check_call_answer(response: httpx.Response, url: str) -> dict[str, Any]:
    if response.status_code in (401, 403, 404):
        raise AirflowFailException(
            f"The async call at {url} answered HTTP {response.status_code}: it can only be read with the "
            "credentials that made it (through the directory, or the same token)"
        )
    if response.status_code != 200:
        raise AirflowException(f"The async call at {url} answered HTTP {response.status_code}")
    return response.json()  # type: ignore[no-any-return]


def get_call(status_url: str, service: Service | None, timeout: float = 30) -> dict[str, Any]:
    """The async call as Sluice shows it (AsyncCallOut)."""
    headers = {"Accept": "application/json", **(service.auth_headers() if service else {})}
    try:
        response = httpx.get(status_url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise AirflowException(f"The async call at {status_url} could not be read: {exc!r}") from exc
    return _check_call_answer(response, status_url)


def get_log(status_url: str, service: Service | None, timeout: float = 30) -> list[dict[str, Any]]:
    headers = {"Accept": "application/json", **(service.auth_headers() if service else {})}
    try:
        response = httpx.get(f"{status_url}/log", headers=headers, timeout=timeout)
        return response.json() if response.status_code == 200 else []  # type: ignore[no-any-return]
    except (httpx.HTTPError, ValueError):
        return []


def call_result(call: dict[str, Any]) -> tuple[int | None, Any]:
    """The final response of a call: its HTTP status and its body (JSON, else text)."""
    response = call.get("response") or {}
    if "data" in response:
        return response.get("status"), response["data"]
    raw = base64.b64decode(response.get("b64_body") or "")
    try:
        return response.get("status"), raw.decode()
    except UnicodeDecodeError:
        return response.get("status"), response.get("b64_body")


def succeeded(call: dict[str, Any]) -> bool:
    """DONE with a 2xx answer: a DONE call whose service said 409 did not succeed."""
    status, _ = call_result(call)
    return call.get("status") == DONE and status is not None and 200 <= status < 300


def failure_message(call: dict[str, Any], log: list[dict[str, Any]]) -> str:
    """What a failed call says, with its log, for the task's error."""
    lines = [
        f"Async call {call.get('$reply_id')} ended {call.get('status')} after {call.get('attempts')} "
        f"attempt(s): {call.get('last_error') or 'no error recorded'}",
        "Log:",
    ]
    for line in log:
        parts = [str(line.get("at")), str(line.get("phase")), str(line.get("outcome"))]
        if line.get("http_status") is not None:
            parts.append(f"HTTP {line['http_status']}")
        for key in ("error", "detail"):
            if line.get(key):
                parts.append(str(line[key]))
        lines.append("  " + " ".join(parts))
    return "\n".join(lines)
