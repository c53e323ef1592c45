"""`biz`, the seed's BizMicroService decorator, and everything a BizMicroService uses.

`biz` is Airflow's `dag` under another name. It is a function of its own rather than an alias
so that it can later take what a business process declares about the services it depends on,
without changing the DAGs that use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import DAG as BizMicroService
from airflow.sdk import dag

from sluice_airflow.group import TechMicroServiceAsyncGroup, TechMicroServiceTaskGroup
from sluice_airflow.operators import (
    AsyncTechServicePullOperator,
    BranchTechMicroServiceOperator,
    TechMicroServiceOperator,
)
from sluice_airflow.sensors import AsyncTechMicroServiceSensor

__all__ = [
    "AsyncTechMicroServiceSensor",
    "AsyncTechServicePullOperator",
    "BizMicroService",
    "BranchTechMicroServiceOperator",
    "TechMicroServiceAsyncGroup",
    "TechMicroServiceOperator",
    "TechMicroServiceTaskGroup",
    "biz",
]


def biz(dag_id_or_func: Any = None, /, **kwargs: Any) -> Any:
    """``@biz(...)`` or ``@biz``: define a BizMicroService (an Airflow DAG).

    The seed's ``schedule_interval`` (Airflow 2) is taken as ``schedule``.
    """
    if "schedule_interval" in kwargs:
        if "schedule" in kwargs:
            raise TypeError("give schedule or schedule_interval, not both")
        kwargs["schedule"] = kwargs.pop("schedule_interval")
    if callable(dag_id_or_func):
        decorate: Callable[..., Any] = dag(**kwargs)
        return decorate(dag_id_or_func)
    if dag_id_or_func is not None:
        kwargs["dag_id"] = dag_id_or_func
    return dag(**kwargs)
