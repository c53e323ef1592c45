"""The seed's TechMicroServiceAsyncGroup: call >> await >> read, as one task group."""

from __future__ import annotations

from typing import Any

import attrs
from airflow.sdk import BaseOperator, TaskGroup

from sluice_airflow.operators import AsyncTechServicePullOperator, TechMicroServiceOperator
from sluice_airflow.sensors import AsyncTechMicroServiceSensor


@attrs.define(repr=False)
class TechMicroServiceTaskGroup(TaskGroup):
    """A task group that knows its call, await and read tasks; `.output` is the read task's."""

    call_task: BaseOperator | None = attrs.field(default=None, init=False)
    await_task: BaseOperator | None = attrs.field(default=None, init=False)
    read_task: BaseOperator | None = attrs.field(default=None, init=False)

    @property
    def output(self) -> Any:
        if self.read_task is None:
            raise AttributeError(f"Task group {self.group_id!r} has no read task")
        return self.read_task.output


def TechMicroServiceAsyncGroup(
    group_id: str,
    *,
    method: str = "GET",
    raise_errors: bool = True,
    timeout: float = 900,
    poke_interval: float = 5.0,
    mode: str = "poke",
    deferrable: bool = False,
    tooltip: str = "",
    **tech_kwargs: Any,
) -> TechMicroServiceTaskGroup:
    """Call a service asynchronously, wait for the call to finish, read its result.

    Tasks ``{group_id}.call`` (TechMicroServiceOperator, ``asynchronous=True``),
    ``{group_id}.await`` (AsyncTechMicroServiceSensor: ``timeout``, ``poke_interval``, ``mode``,
    ``deferrable``) and ``{group_id}.read`` (AsyncTechServicePullOperator: ``raise_errors``).
    ``tech_kwargs`` go to the call (``cws_name`` or ``base_url``/``token``, ``entry``, ``json``...).
    """
    group = TechMicroServiceTaskGroup(group_id=group_id, tooltip=tooltip)
    with group:
        call = TechMicroServiceOperator(task_id="call", method=method, asynchronous=True, **tech_kwargs)
        wait = AsyncTechMicroServiceSensor(
            task_id="await",
            cws_task_id=call.task_id,
            timeout=timeout,
            poke_interval=poke_interval,
            mode=mode,
            deferrable=deferrable,
        )
        read = AsyncTechServicePullOperator(
            task_id="read", cws_task_id=call.task_id, raise_errors=raise_errors
        )
        call >> wait >> read
    group.call_task, group.await_task, group.read_task = call, wait, read
    return group
