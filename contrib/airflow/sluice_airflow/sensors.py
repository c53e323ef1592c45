"""The seed's AsyncTechMicroServiceSensor: wait for an asynchronous call to finish."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from sluice_airflow import client
from sluice_airflow.client import XCOM_ASYNC_STATUS, XCOM_SERVICE, XCOM_STATUS_CODE, XCOM_STATUS_URL, Service
from sluice_airflow.operators import call_credentials
from sluice_airflow.triggers import AsyncCallTrigger


class AsyncTechMicroServiceSensor(BaseSensorOperator):
    """Wait until the async call made by ``cws_task_id`` is finished.

    DONE: succeeds, pushes ``status_code`` (the service's answer) and ``async_status`` and
    returns the call. CALL_ERROR, RESPONSE_ERROR or CANCELLED: fails (no retry) with the call's
    log. ``mode="poke"`` or ``"reschedule"`` poll from the worker; ``deferrable=True`` hands the
    polling to the triggerer (``AsyncCallTrigger``).

    :param cws_task_id: the TechMicroServiceOperator that made the call (``asynchronous=True``).
    :param token: the call's token when it was made with base_url/token and the call task is in
        another DAG (else found on the call task or through the directory).
    """

    template_fields: Sequence[str] = ("cws_task_id",)
    ui_color = "#fcf3cf"

    def __init__(
        self,
        *,
        cws_task_id: str,
        token: str | None = None,
        deferrable: bool = False,
        poke_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.cws_task_id = cws_task_id
        self.token = token
        self.deferrable = deferrable
        self._target: tuple[str, Service | None] | None = None

    def _status_url(self, context: Any) -> str | None:
        ti = context["ti"]
        status_url = ti.xcom_pull(task_ids=self.cws_task_id, key=XCOM_STATUS_URL)
        if status_url:
            return str(status_url)
        status = ti.xcom_pull(task_ids=self.cws_task_id, key=XCOM_STATUS_CODE)
        if status is None:
            raise AirflowFailException(f"Task {self.cws_task_id!r} pushed no async call to await")
        # The service answered at once instead of accepting an async call: nothing to wait for.
        self.log.info("%s was answered at once (HTTP %s): nothing to await", self.cws_task_id, status)
        ti.xcom_push(key=XCOM_STATUS_CODE, value=status)
        return None

    def _service(self, context: Any) -> Service | None:
        return call_credentials(self, context, self.cws_task_id, self.token)

    def _finish(self, context: Any, call: dict[str, Any], status_url: str, service: Service | None) -> Any:
        ti = context["ti"]
        ti.xcom_push(key=XCOM_ASYNC_STATUS, value=call.get("status"))
        if call.get("status") == client.DONE:
            status, _ = client.call_result(call)
            ti.xcom_push(key=XCOM_STATUS_CODE, value=status)
            self.log.info("Async call %s is DONE (answer HTTP %s)", call.get("$reply_id"), status)
            return call
        raise AirflowFailException(client.failure_message(call, client.get_log(status_url, service)))

    def poke(self, context: Any) -> bool | PokeReturnValue:
        status_url = self._status_url(context)
        if status_url is None:
            return PokeReturnValue(is_done=True)
        if self._target is None or self._target[0] != status_url:
            self._target = (status_url, self._service(context))
        service = self._target[1]
        call = client.get_call(status_url, service)
        if call.get("status") in client.PENDING:
            self.log.info("Async call %s: %s", call.get("$reply_id"), call.get("status"))
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, call, status_url, service))

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        status_url = self._status_url(context)
        if status_url is None:
            return None
        service = self._service(context)
        call = client.get_call(status_url, service)
        if call.get("status") not in client.PENDING:
            return self._finish(context, call, status_url, service)
        public = context["ti"].xcom_pull(task_ids=self.cws_task_id, key=XCOM_SERVICE)
        through_directory = bool(public and public.get("directory_conn_id"))
        self.defer(
            trigger=AsyncCallTrigger(
                status_url=status_url,
                service=public,
                token=None if through_directory or service is None else service.token,
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        ti = context["ti"]
        if event.get("status") == client.DONE:
            call = event["call"]
            status, _ = client.call_result(call)
            ti.xcom_push(key=XCOM_ASYNC_STATUS, value=client.DONE)
            ti.xcom_push(key=XCOM_STATUS_CODE, value=status)
            self.log.info("Async call %s is DONE (answer HTTP %s)", call.get("$reply_id"), status)
            return call
        if event.get("status") and event["status"] != "UNREADABLE":
            ti.xcom_push(key=XCOM_ASYNC_STATUS, value=event["status"])
        raise AirflowFailException(event.get("message") or f"Async call ended {event.get('status')}")
