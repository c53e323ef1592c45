"""The operators, sensor, trigger and task group against a live Sluice and its sandbox partner."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    TaskDeferred,
)

from sluice_airflow.biz import (
    AsyncTechMicroServiceSensor,
    AsyncTechServicePullOperator,
    BizMicroService,
    BranchTechMicroServiceOperator,
    TechMicroServiceAsyncGroup,
    TechMicroServiceOperator,
    biz,
)
from sluice_airflow.triggers import AsyncCallTrigger
from tests.conftest import FakeTI, Live, run


def purchase(live: Live, customer: str, task_id: str = "call", **extra: Any) -> TechMicroServiceOperator:
    return TechMicroServiceOperator(
        task_id=task_id,
        cws_name=live.service,
        method="POST",
        entry="/v1/purchases",
        json={"product_code": "PLN20", "customer_number": customer, **extra},
        headers=live.headers,
        asynchronous=True,
    )


def sensor(**kwargs: Any) -> AsyncTechMicroServiceSensor:
    return AsyncTechMicroServiceSensor(
        task_id="await", cws_task_id="call", poke_interval=0.2, timeout=30, **kwargs
    )


def wait_finished(live: Live, ti: FakeTI, timeout: float = 15) -> dict[str, Any]:
    url = ti.xcom_pull("call", "status_url")
    deadline = time.monotonic() + timeout
    while True:
        call = httpx.get(url, headers={"X-API-Key": live.partner_key}).json()
        if call["status"] not in ("CALL_RETRY", "RESPONSE_RETRY") or time.monotonic() > deadline:
            return call  # type: ignore[no-any-return]
        time.sleep(0.1)


def test_sync_call_through_the_directory(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ti = FakeTI()
    products = TechMicroServiceOperator(
        task_id="products",
        cws_name=live.service,
        method="GET",
        entry="/v1/products",
        data={"per_page": 2},
        headers=live.headers,
    )
    result = run(products, ti)
    assert ti.xcom_pull("products", "status_code") == 200
    assert len(result["data"]) == 2 and result["meta"]["per_page"] == 2
    assert ti.xcom_pull("products", "cws_name") == live.service
    service = ti.xcom_pull("products", "service")
    assert service == {
        "cws_name": live.service,
        "base_url": live.url,
        "stage": "test",
        "directory_conn_id": "sluice_directory",
    }
    # Neither the service's token (from the directory) nor the directory's key is logged.
    assert live.partner_key not in caplog.text and live.directory_key not in caplog.text


def test_unknown_service_name(live: Live) -> None:
    ti = FakeTI()
    op = TechMicroServiceOperator(task_id="x", cws_name="no-such-service", entry="/v1/products")
    with pytest.raises(AirflowFailException, match="'no-such-service' is not in the directory"):
        run(op, ti)


def test_stage_must_match(live: Live) -> None:
    op = TechMicroServiceOperator(task_id="x", cws_name=live.service, stage="prod", entry="/v1/products")
    with pytest.raises(AirflowFailException, match="registered on stage 'test', not 'prod'"):
        run(op, FakeTI())


def test_bad_arguments() -> None:
    with pytest.raises(AirflowException, match=r"either cws_name .* or base_url"):
        TechMicroServiceOperator(task_id="x", entry="/")
    with pytest.raises(AirflowException, match=r"either cws_name .* or base_url"):
        TechMicroServiceOperator(task_id="x", cws_name="a", base_url="http://b", entry="/")
    with pytest.raises(AirflowException, match="token goes with base_url"):
        TechMicroServiceOperator(task_id="x", cws_name="a", token="t", entry="/")
    with pytest.raises(AirflowException, match="unknown HTTP method 'fetch'"):
        TechMicroServiceOperator(task_id="x", cws_name="a", method="fetch", entry="/")


def test_text_answer_is_pushed_as_text(live: Live) -> None:
    ti = FakeTI()
    docs = TechMicroServiceOperator(task_id="docs", base_url=live.url, entry="/docs")
    result = run(docs, ti)
    assert ti.xcom_pull("docs", "status_code") == 200
    assert isinstance(result, str) and "<html" in result.lower()


def test_base_url_and_token_without_the_directory(live: Live) -> None:
    ti = FakeTI()
    ok = TechMicroServiceOperator(
        task_id="ok", base_url=live.url, token=live.partner_key, entry="/v1/products", headers=live.headers
    )
    run(ok, ti)
    assert ti.xcom_pull("ok", "status_code") == 200
    assert ti.xcom_pull("ok", "service")["directory_conn_id"] is None
    # A refusal is pushed, not raised: the branch decides. With raise_errors it fails the task.
    wrong = TechMicroServiceOperator(
        task_id="wrong", base_url=live.url, token="sk_wrong", entry="/v1/products", headers=live.headers
    )
    body = run(wrong, ti)
    assert ti.xcom_pull("wrong", "status_code") == 401 and body["status"] == 401
    strict = TechMicroServiceOperator(
        task_id="strict",
        base_url=live.url,
        token="sk_wrong",
        entry="/v1/products",
        headers=live.headers,
        raise_errors=True,
    )
    with pytest.raises(AirflowFailException, match="answered HTTP 401"):
        run(strict, ti)
    assert ti.xcom_pull("strict", "status_code") == 401


def test_templates_render_as_native_objects(live: Live) -> None:
    with BizMicroService(
        "native", schedule=None, start_date=datetime(2026, 1, 1), render_template_as_native_obj=True
    ):
        op = TechMicroServiceOperator(
            task_id="inquiry",
            cws_name="{{ dag_run.conf['service'] }}",
            method="POST",
            entry="{{ dag_run.conf['entry'] }}",
            json="{{ dag_run.conf['data'] }}",
            asynchronous="{{ dag_run.conf['later'] }}",
            headers=live.headers,
        )
    conf = {
        "service": live.service,
        "entry": "/v1/inquiries",
        "data": {"product_code": "PLN20", "customer_number": "0812345678"},
        "later": False,
    }
    ti = FakeTI()
    # The parts of an Airflow Context the templates use.
    context: Any = {"ti": ti, "dag_run": type("DagRun", (), {"conf": conf})(), "params": {}}
    op.render_template_fields(context)
    assert op.json == conf["data"] and op.asynchronous is False and op.cws_name == live.service
    run(op, ti)
    assert ti.xcom_pull("inquiry", "status_code") == 200


def test_json_string_without_native_rendering(live: Live) -> None:
    ti = FakeTI()
    # What a dict renders to without render_template_as_native_obj: its Python repr.
    op = TechMicroServiceOperator(
        task_id="inquiry",
        cws_name=live.service,
        method="POST",
        entry="/v1/inquiries",
        json="{'product_code': 'PLN20', 'customer_number': '0812345678'}",
        headers=live.headers,
    )
    run(op, ti)
    assert ti.xcom_pull("inquiry", "status_code") == 200
    broken = TechMicroServiceOperator(
        task_id="broken", cws_name=live.service, method="POST", entry="/v1/inquiries", json="{not json"
    )
    with pytest.raises(AirflowFailException, match="render_template_as_native_obj"):
        run(broken, ti)


def test_async_call_poke_read_and_branch(live: Live) -> None:
    ti = FakeTI()
    body = run(purchase(live, "0812345678"), ti)
    call_id = ti.xcom_pull("call", "async_call_id")
    assert ti.xcom_pull("call", "status_code") == 202 and body == {"$reply_id": call_id}
    assert ti.xcom_pull("call", "status_url") == f"{live.url}/v1/async-calls/{call_id}"

    done = run(sensor(), ti)
    assert done["status"] == "DONE" and done["$reply_id"] == call_id
    assert ti.xcom_pull("await", "status_code") == 201 and ti.xcom_pull("await", "async_status") == "DONE"

    read = run(AsyncTechServicePullOperator(task_id="read", cws_task_id="call"), ti)
    assert read["data"]["customer_number"] == "0812345678" and read["data"]["status"] == "success"
    assert ti.xcom_pull("read", "status_code") == 201

    branch = BranchTechMicroServiceOperator(task_id="b", cws_task_id="call", on_success="ok", on_failure="ko")
    assert branch.choose_branch({"ti": ti}) == "ok"
    on_read = BranchTechMicroServiceOperator(
        task_id="b2", cws_task_id="read", on_success="ok", on_failure="ko"
    )
    assert on_read.choose_branch({"ti": ti}) == "ok"


def test_sensor_fails_with_the_calls_log(live: Live) -> None:
    ti = FakeTI()
    run(purchase(live, "TRIGGER-500"), ti)
    with pytest.raises(AirflowFailException) as failed:
        run(sensor(), ti)
    message = str(failed.value)
    assert "ended CALL_ERROR" in message and "partner_error" in message
    assert "Log:" in message and "capture accepted" in message and "HTTP 502" in message
    assert ti.xcom_pull("await", "async_status") == "CALL_ERROR"
    branch = BranchTechMicroServiceOperator(task_id="b", cws_task_id="call", on_success="ok", on_failure="ko")
    assert branch.choose_branch({"ti": ti}) == "ko"
    with pytest.raises(AirflowFailException, match="ended CALL_ERROR"):
        run(AsyncTechServicePullOperator(task_id="read", cws_task_id="call"), ti)


def test_done_with_a_business_error_is_a_failure(live: Live) -> None:
    ti = FakeTI()
    run(purchase(live, "TRIGGER-S01"), ti)
    done = run(sensor(), ti)  # the call finished: the sensor's job is done
    assert done["status"] == "DONE" and ti.xcom_pull("await", "status_code") == 409
    with pytest.raises(AirflowFailException, match="ended DONE but the service answered HTTP 409"):
        run(AsyncTechServicePullOperator(task_id="read", cws_task_id="call"), ti)
    lenient = run(AsyncTechServicePullOperator(task_id="read", cws_task_id="call", raise_errors=False), ti)
    assert lenient["code"] == "product_closed" and ti.xcom_pull("read", "status_code") == 409
    branch = BranchTechMicroServiceOperator(task_id="b", cws_task_id="call", on_success="ok", on_failure="ko")
    assert branch.choose_branch({"ti": ti}) == "ko"


def test_branch_on_synchronous_status_codes(live: Live) -> None:
    ti = FakeTI()
    for task_id, customer in (("fine", "0812345678"), ("closed", "TRIGGER-S01")):
        op = TechMicroServiceOperator(
            task_id=task_id,
            cws_name=live.service,
            method="POST",
            entry="/v1/purchases",
            json={"product_code": "PLN20", "customer_number": customer},
            headers=live.headers,
        )
        run(op, ti)
    assert ti.xcom_pull("fine", "status_code") == 201 and ti.xcom_pull("closed", "status_code") == 409

    def branch(task_id: str) -> Any:
        op = BranchTechMicroServiceOperator(
            task_id="b", cws_task_id=task_id, on_success=["ok", "also"], on_failure="ko"
        )
        return op.choose_branch({"ti": ti})

    assert branch("fine") == ["ok", "also"]
    assert branch("closed") == "ko"
    assert branch("never-ran") == "ko"


def test_sensor_reschedule_mode(live: Live) -> None:
    ti = FakeTI()
    run(purchase(live, "TRIGGER-SLOW-1500"), ti)
    with pytest.raises(AirflowRescheduleException):
        run(sensor(mode="reschedule"), ti)
    wait_finished(live, ti)
    done = run(sensor(mode="reschedule"), ti)
    assert done["status"] == "DONE" and ti.xcom_pull("await", "status_code") == 201


async def first_event(trigger: AsyncCallTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload  # type: ignore[no-any-return]
    raise AssertionError("the trigger fired nothing")


def test_deferrable_sensor_and_trigger(live: Live) -> None:
    ti = FakeTI()
    run(purchase(live, "TRIGGER-SLOW-1500"), ti)
    await_task = sensor(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        run(await_task, ti)
    trigger = deferred.value.trigger
    assert isinstance(trigger, AsyncCallTrigger) and deferred.value.method_name == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == "sluice_airflow.triggers.AsyncCallTrigger"
    # Through the directory the trigger finds the token again: none is stored with it.
    assert kwargs["token"] is None and kwargs["service"]["directory_conn_id"] == "sluice_directory"
    event = asyncio.run(first_event(AsyncCallTrigger(**kwargs)))
    assert event["status"] == "DONE"
    ti.task_id = "await"
    done = await_task.execute_complete({"ti": ti}, event)
    assert done["status"] == "DONE" and ti.xcom_pull("await", "status_code") == 201


def test_trigger_reports_a_failed_call_with_its_log(live: Live) -> None:
    ti = FakeTI()
    # Slow, then a partner 500: the call is still pending when the sensor defers.
    run(purchase(live, "TRIGGER-500", ref_id="TRIGGER-SLOW-1500"), ti)
    await_task = sensor(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        run(await_task, ti)
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "CALL_ERROR" and "Log:" in event["message"]
    ti.task_id = "await"
    with pytest.raises(AirflowFailException, match="ended CALL_ERROR"):
        await_task.execute_complete({"ti": ti}, event)


def test_explicit_token_reaches_sensor_read_and_trigger_but_not_logs(live: Live) -> None:
    with BizMicroService("explicit", schedule=None, start_date=datetime(2026, 1, 1)):
        call = TechMicroServiceOperator(
            task_id="call",
            base_url=live.url,
            token=live.partner_key,
            method="POST",
            entry="/v1/purchases",
            json={"product_code": "PLN20", "customer_number": "TRIGGER-SLOW-1500"},
            headers=live.headers,
            asynchronous=True,
        )
        await_task = sensor(deferrable=True)
        read = AsyncTechServicePullOperator(task_id="read", cws_task_id="call")
    ti = FakeTI()
    run(call, ti)
    with pytest.raises(TaskDeferred) as deferred:
        run(await_task, ti)
    trigger = deferred.value.trigger
    assert trigger.serialize()[1]["token"] == live.partner_key  # found on the call task
    assert live.partner_key not in repr(trigger)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "DONE"
    assert run(read, ti)["data"]["status"] == "success"


def test_task_group(live: Live) -> None:
    with BizMicroService("grouped", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        invoice = TechMicroServiceAsyncGroup(
            "invoice",
            cws_name=live.service,
            method="POST",
            entry="/v1/purchases",
            json="{{ dag_run.conf['data'] }}",
            headers=live.headers,
            poke_interval=0.2,
        )
        check = BranchTechMicroServiceOperator(
            task_id="check", cws_task_id="invoice", on_success="a", on_failure="b"
        )
        invoice >> check
    assert dag.schedule is None
    assert set(dag.task_ids) == {"invoice.call", "invoice.await", "invoice.read", "check"}
    assert invoice.output.operator is dag.get_task("invoice.read")
    assert dag.get_task("invoice.call").asynchronous is True
    assert dag.get_task("invoice.await").downstream_task_ids == {"invoice.read"}
    assert dag.get_task("invoice.read").downstream_task_ids == {"check"}
    assert check._call_task_id() == "invoice.call"

    # The three tasks, run in order against the live service.
    ti = FakeTI()
    data = {"product_code": "PLN20", "customer_number": "0812345678", "ref_id": uuid.uuid4().hex[:20]}
    context = {"ti": ti, "dag_run": type("DagRun", (), {"conf": {"data": data}})(), "params": {}}
    for task_id in ("invoice.call", "invoice.await", "invoice.read"):
        task = dag.get_task(task_id)
        task.render_template_fields(context)
        run(task, ti)
    assert ti.xcom_pull("invoice.read")["data"]["ref_id"] == data["ref_id"]
    assert check.choose_branch({"ti": ti}) == "a"


def test_biz_is_dag() -> None:
    @biz(schedule_interval=None, start_date=datetime(2026, 1, 1), tags=["sample"])
    def my_first_biz() -> None:
        TechMicroServiceOperator(task_id="t", base_url="http://127.0.0.1:9", entry="/")

    made = my_first_biz()
    assert isinstance(made, BizMicroService) and made.dag_id == "my_first_biz" and made.tags == {"sample"}

    @biz
    def bare() -> None:
        pass

    assert bare().dag_id == "bare"
    with pytest.raises(TypeError, match="schedule or schedule_interval"):
        biz(schedule=None, schedule_interval=None)
