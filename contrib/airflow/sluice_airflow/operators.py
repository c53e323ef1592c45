"""Operators that call a TechMicroService (the seed's names), found by name in the Sluice
directory or given by base URL and token."""

from __future__ import annotations

import ast
import json as jsonlib
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urljoin

import httpx
from airflow.sdk import BaseBranchOperator, BaseOperator, TriggerRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from sluice_airflow import client
from sluice_airflow.client import (
    DEFAULT_CONN_ID,
    XCOM_ASYNC_CALL_ID,
    XCOM_ASYNC_STATUS,
    XCOM_CWS_NAME,
    XCOM_SERVICE,
    XCOM_STATUS_CODE,
    XCOM_STATUS_URL,
    Service,
)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Methods whose `data` goes to the query string rather than the body.
QUERY_METHODS = frozenset({"GET", "DELETE", "HEAD", "OPTIONS"})


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _as_json(value: Any, task_id: str) -> Any:
    """A rendered `json`: native objects as they are; a string must hold JSON (or a Python literal,
    which is what a dict renders to without render_template_as_native_obj)."""
    if not isinstance(value, str):
        return value
    try:
        return jsonlib.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise AirflowFailException(
            f"Task {task_id!r}: json rendered to a string that is neither JSON nor a Python literal "
            f"({value[:100]!r}); give a dict, or render_template_as_native_obj=True on the biz"
        ) from None


class TechMicroServiceOperator(BaseOperator):
    """Call a TechMicroService and push its status code and response to XCom.

    :param cws_name: the service's name in the directory (or give ``base_url``).
    :param base_url: the service's URL, without the directory (the seed's ``api_id``).
    :param stage: with ``cws_name``, the stage the service must be on; else only recorded.
    :param token: with ``base_url``, sent as ``Authorization: Bearer``.
    :param method: HTTP method.
    :param entry: the route, appended to the service's URL.
    :param data: query parameters for GET (and DELETE), the body otherwise.
    :param json: the JSON body.
    :param headers: extra request headers (e.g. Sluice's X-Client-ID and X-Language-ID).
    :param asynchronous: send ``Prefer: respond-async`` and push the async call's id and status URL.
    :param directory_conn_id: the Airflow connection holding the directory's URL and API key.
    :param raise_errors: fail the task on a non-2xx answer (after pushing it); by default the
        answer is pushed and a BranchTechMicroServiceOperator decides.
    :param timeout: seconds for the HTTP call.

    ``cws_name``, ``entry``, ``data``, ``json``, ``asynchronous`` and ``headers`` are templated.
    """

    template_fields: Sequence[str] = ("cws_name", "entry", "data", "json", "asynchronous", "headers")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        cws_name: str | None = None,
        base_url: str | None = None,
        stage: str | None = None,
        token: str | None = None,
        method: str = "GET",
        entry: str = "",
        data: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        asynchronous: bool | str = False,
        directory_conn_id: str = DEFAULT_CONN_ID,
        raise_errors: bool = False,
        timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if bool(cws_name) == bool(base_url):
            raise AirflowException(
                f"Task {self.task_id!r}: give either cws_name (through the directory) or base_url, not both"
            )
        if token and not base_url:
            raise AirflowException(
                f"Task {self.task_id!r}: token goes with base_url; the directory gives a name's token"
            )
        if method.upper() not in METHODS:
            raise AirflowException(f"Task {self.task_id!r}: unknown HTTP method {method!r}")
        self.cws_name = cws_name
        self.base_url = base_url
        self.stage = stage
        self.token = token
        self.method = method.upper()
        self.entry = entry
        self.data = data
        self.json = json
        self.headers = dict(headers or {})
        self.asynchronous = asynchronous
        self.directory_conn_id = directory_conn_id
        self.raise_errors = raise_errors
        self.timeout = timeout

    def service(self) -> Service:
        if self.cws_name:
            return client.resolve(self.cws_name, self.directory_conn_id, self.stage, self.timeout)
        client.mask(self.token)
        return Service(str(self.base_url), str(self.base_url), self.stage, self.token)

    def _request(self, service: Service, asynchronous: bool) -> httpx.Response:
        headers = {"Accept": "application/json", **self.headers, **service.auth_headers()}
        if asynchronous:
            headers["Prefer"] = "respond-async"
        params = body = None
        if self.data is not None:
            if self.method in QUERY_METHODS:
                params = self.data
            else:
                body = self.data
        payload = _as_json(self.json, self.task_id) if self.json is not None else None
        url = service.url(self.entry or "")
        self.log.info(
            "Calling %s %s (%s)%s", self.method, url, service.name, " async" if asynchronous else ""
        )
        try:
            return httpx.request(
                self.method,
                url,
                headers=headers,
                params=params,
                data=body if isinstance(body, dict) else None,
                content=body if isinstance(body, str | bytes) else None,
                json=payload,
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise AirflowException(f"{self.method} {url} ({service.name}) failed: {exc!r}") from exc

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        service = self.service()
        asynchronous = _as_bool(self.asynchronous)
        response = self._request(service, asynchronous)
        result = client.body_of(response)
        self.log.info("%s answered HTTP %s", service.name, response.status_code)
        if isinstance(result, str) and response.content:
            self.log.info("The answer is not JSON (%s): pushed as text", response.headers.get("content-type"))
        ti.xcom_push(key=XCOM_CWS_NAME, value=service.name)
        ti.xcom_push(key=XCOM_SERVICE, value=service.public())
        ti.xcom_push(key=XCOM_STATUS_CODE, value=response.status_code)
        location = response.headers.get("location")
        if asynchronous and response.status_code == 202 and location:
            status_url = urljoin(str(response.url), location)
            call_id = result.get("$reply_id") if isinstance(result, dict) else None
            call_id = call_id or status_url.rstrip("/").rsplit("/", 1)[-1]
            ti.xcom_push(key=XCOM_ASYNC_CALL_ID, value=call_id)
            ti.xcom_push(key=XCOM_STATUS_URL, value=status_url)
            self.log.info("Async call %s: %s", call_id, status_url)
        elif asynchronous and 200 <= response.status_code < 300:
            self.log.info("The service answered at once: nothing to await")
        if not 200 <= response.status_code < 300:
            self.log.warning(
                "%s answered HTTP %s: %s", service.name, response.status_code, str(result)[:2000]
            )
            if self.raise_errors:
                raise AirflowFailException(
                    f"{self.method} {self.entry} of {service.name} answered HTTP {response.status_code}"
                )
        return result


def call_credentials(
    operator: BaseOperator, context: Any, cws_task_id: str, token: str | None
) -> Service | None:
    """The service the call task called, its token found again (directory), or the call task's own
    token, or the one given to this task."""
    public = context["ti"].xcom_pull(task_ids=cws_task_id, key=XCOM_SERVICE)
    if token is None and public and not public.get("directory_conn_id"):
        dag = operator.get_dag()
        if dag is not None and dag.has_task(cws_task_id):
            token = getattr(dag.get_task(cws_task_id), "token", None)
    client.mask(token)
    return client.service_of(public, token)


class AsyncTechServicePullOperator(BaseOperator):
    """Read the result of an asynchronous call once it is finished (the seed's read task).

    Pushes ``status_code`` (the service's final answer) and returns its body.

    :param cws_task_id: the TechMicroServiceOperator that made the call.
    :param raise_errors: fail when the call did not end DONE with a 2xx answer.
    :param token: the call's token when it was made with base_url/token and the call task is in
        another DAG (else found on the call task).
    """

    template_fields: Sequence[str] = ("cws_task_id",)
    ui_color = "#d5f5e3"

    def __init__(
        self, *, cws_task_id: str, raise_errors: bool = True, token: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.cws_task_id = cws_task_id
        self.raise_errors = raise_errors
        self.token = token

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        status_url = ti.xcom_pull(task_ids=self.cws_task_id, key=XCOM_STATUS_URL)
        if not status_url:
            # Answered at once (or not async at all): the call task holds the result.
            status = ti.xcom_pull(task_ids=self.cws_task_id, key=XCOM_STATUS_CODE)
            if status is None:
                raise AirflowFailException(f"Task {self.cws_task_id!r} pushed no call to read")
            ti.xcom_push(key=XCOM_STATUS_CODE, value=status)
            return ti.xcom_pull(task_ids=self.cws_task_id)
        service = call_credentials(self, context, self.cws_task_id, self.token)
        call = client.get_call(status_url, service)
        status, body = client.call_result(call)
        ti.xcom_push(key=XCOM_ASYNC_STATUS, value=call.get("status"))
        if status is not None:
            ti.xcom_push(key=XCOM_STATUS_CODE, value=status)
        if self.raise_errors and not client.succeeded(call):
            if call.get("status") in client.PENDING:
                raise AirflowException(f"Async call {call.get('$reply_id')} is not finished yet")
            if call.get("status") == client.DONE:
                raise AirflowFailException(
                    f"Async call {call.get('$reply_id')} ended DONE but the service answered HTTP {status}: "
                    f"{str(body)[:2000]}"
                )
            raise AirflowFailException(client.failure_message(call, client.get_log(status_url, service)))
        return body


class BranchTechMicroServiceOperator(BaseBranchOperator):
    """Follow ``on_success`` when the called service answered 2xx, else ``on_failure``.

    For an asynchronous call the call's end is what counts: DONE with a 2xx answer is a success,
    an *_ERROR, CANCELLED or unfinished call or a non-2xx answer is a failure. ``cws_task_id`` may
    name the call task, the read task, or a TechMicroServiceAsyncGroup.

    It runs whatever the upstream tasks' states (trigger rule ``all_done``): a failed call or a
    failed sensor is exactly what ``on_failure`` is for.
    """

    template_fields: Sequence[str] = ("cws_task_id",)
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        cws_task_id: str,
        on_success: str | Iterable[str],
        on_failure: str | Iterable[str],
        token: str | None = None,
        trigger_rule: str = TriggerRule.ALL_DONE,
        **kwargs: Any,
    ) -> None:
        super().__init__(trigger_rule=trigger_rule, **kwargs)
        self.cws_task_id = cws_task_id
        self.on_success = on_success
        self.on_failure = on_failure
        self.token = token

    def _call_task_id(self) -> str:
        dag = self.get_dag()
        group = dag.task_group_dict.get(self.cws_task_id) if dag is not None else None
        call_task = getattr(group, "call_task", None)
        return call_task.task_id if call_task is not None else self.cws_task_id

    def choose_branch(self, context: Any) -> str | Iterable[str]:
        ti = context["ti"]
        task_id = self._call_task_id()
        status_url = ti.xcom_pull(task_ids=task_id, key=XCOM_STATUS_URL)
        if status_url:
            service = call_credentials(self, context, task_id, self.token)
            call = client.get_call(status_url, service)
            status, _ = client.call_result(call)
            self.log.info("Async call of %s: %s, answer HTTP %s", task_id, call.get("status"), status)
            return self.on_success if client.succeeded(call) else self.on_failure
        status = ti.xcom_pull(task_ids=task_id, key=XCOM_STATUS_CODE)
        self.log.info("%s answered HTTP %s", task_id, status)
        if status is None:
            self.log.warning("Task %s pushed no status code (it failed or did not run)", task_id)
            return self.on_failure
        return self.on_success if 200 <= int(status) < 300 else self.on_failure
