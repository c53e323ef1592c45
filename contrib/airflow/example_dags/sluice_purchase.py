"""A BizMicroService that buys a product through Sluice, asynchronously.

products (a synchronous call: the partner's catalogue) >> purchase (a task group: call with
`Prefer: respond-async`, await the async call, read its result) >> check_purchase (branch) >>
receipt on success, report_failure otherwise.

Needs the Airflow connection `sluice_directory` (Sluice's URL and an API key with the
`directory` and `directory_credentials` scopes), and the service `sluice-partner` registered in
Sluice's directory with Sluice's own URL as base_url and a key with the `partner` scope as
credentials. Run it with:

    airflow dags test sluice_purchase -c '{"customer_number": "0812345678"}'
    airflow dags test sluice_purchase -c '{"customer_number": "TRIGGER-500"}'   # the failure branch
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import task

from sluice_airflow.biz import (
    BranchTechMicroServiceOperator,
    TechMicroServiceAsyncGroup,
    TechMicroServiceOperator,
    biz,
)

SERVICE = "sluice-partner"
# Sluice's gateway wants to know the calling client and its language.
HEADERS = {"X-Client-ID": "airflow-sluice-purchase", "X-Language-ID": "en"}


@biz(
    dag_id="sluice_purchase",
    default_args={"retries": 0},
    tags=["sluice", "sample"],
    start_date=datetime(2026, 1, 1),
    schedule_interval=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={"customer_number": "0812345678", "product": 0},
)
def sluice_purchase() -> None:
    products = TechMicroServiceOperator(
        task_id="products",
        cws_name=SERVICE,
        method="GET",
        entry="/v1/products",
        data={"per_page": 5},
        headers=HEADERS,
    )
    purchase = TechMicroServiceAsyncGroup(
        "purchase",
        cws_name=SERVICE,
        method="POST",
        entry="/v1/purchases",
        json={
            "product_code": "{{ ti.xcom_pull(task_ids='products')['data'][params.product]['product_code'] }}",
            "customer_number": "{{ params.customer_number }}",
            "ref_id": "airflow-{{ ts_nodash }}",
        },
        headers=HEADERS,
        deferrable=True,
        poke_interval=0.5,
        timeout=120,
        raise_errors=False,
    )
    check = BranchTechMicroServiceOperator(
        task_id="check_purchase",
        cws_task_id="purchase",
        on_success="receipt",
        on_failure="report_failure",
    )

    @task
    def receipt(ti: Any = None) -> dict[str, Any]:
        # The seed's second form. `receipt(purchase.output)` would also work, but would make the
        # read task an upstream of receipt: a failed purchase would then fail the run instead of
        # being handled by report_failure.
        order = ti.xcom_pull(task_ids="purchase.read")["data"]
        return {
            "order_id": order["order_id"],
            "product_code": order["product_code"],
            "status": order["status"],
        }

    @task
    def report_failure(ti: Any = None) -> dict[str, Any]:
        return {
            "async_call_id": ti.xcom_pull(task_ids="purchase.call", key="async_call_id"),
            "async_status": ti.xcom_pull(task_ids="purchase.await", key="async_status"),
            "status_code": ti.xcom_pull(task_ids="purchase.read", key="status_code"),
        }

    products >> purchase >> check >> [receipt(), report_failure()]


sluice_purchase()
