"""The deferrable sensor's trigger: polls an async call in the triggerer until it is finished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from sluice_airflow import client


class AsyncCallTrigger(BaseTrigger):
    """Fires once the async call at `status_url` is finished: `{"status", "call", "message"}`.

    The credentials are found again here (through the directory when `service` names a
    connection), so that no token is stored with the trigger unless the call was made with an
    explicit token.
    """

    def __init__(
        self,
        status_url: str,
        service: dict[str, Any] | None = None,
        token: str | None = None,
        poll_interval: float = 5.0,
        max_read_errors: int = 10,
    ) -> None:
        super().__init__()
        self.status_url = status_url
        self.service = service
        self.token = token
        self.poll_interval = poll_interval
        self.max_read_errors = max_read_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "status_url": self.status_url,
                "service": self.service,
                "token": self.token,
                "poll_interval": self.poll_interval,
                "max_read_errors": self.max_read_errors,
            },
        )

    def __repr__(self) -> str:
        # BaseTrigger's repr prints every kwarg; the token must not reach the logs.
        return f"<AsyncCallTrigger {self.status_url} every {self.poll_interval}s>"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await client.aservice_of(self.service, self.token)
        headers = {"Accept": "application/json", **(service.auth_headers() if service else {})}
        errors = 0
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            while True:
                try:
                    response = await http.get(self.status_url)
                except httpx.HTTPError as exc:
                    errors += 1
                    self.log.warning("Reading %s failed (%d): %r", self.status_url, errors, exc)
                    if errors >= self.max_read_errors:
                        yield TriggerEvent({"status": "UNREADABLE", "message": f"{self.status_url}: {exc!r}"})
                        return
                    await asyncio.sleep(self.poll_interval)
                    continue
                if response.status_code != 200:
                    yield TriggerEvent(
                        {
                            "status": "UNREADABLE",
                            "message": f"The async call at {self.status_url} answered HTTP "
                            f"{response.status_code}",
                        }
                    )
                    return
                call = response.json()
                if call.get("status") in client.PENDING:
                    await asyncio.sleep(self.poll_interval)
                    continue
                event: dict[str, Any] = {"status": call.get("status"), "call": call}
                if call.get("status") != client.DONE:
                    log = await http.get(f"{self.status_url}/log")
                    event["message"] = client.failure_message(
                        call, log.json() if log.status_code == 200 else []
                    )
                yield TriggerEvent(event)
                return
