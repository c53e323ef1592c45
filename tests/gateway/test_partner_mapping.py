"""Each partner answer maps to the documented Sluice status and code (seed 000, N1/O1)."""

from __future__ import annotations

import pytest

from tests.conftest import Running, Sandbox

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    ("trigger", "status", "code"),
    [
        ("P01", 403, "partner_forbidden"),
        ("P05", 403, "partner_forbidden"),
        ("P19", 403, "partner_forbidden"),
        ("U01", 422, "bill_not_valid"),
        ("U02", 422, "bill_not_valid"),
        ("U03", 422, "bill_not_valid"),
        ("S00", 409, "product_closed"),
        ("S02", 409, "product_closed"),
        ("S04", 409, "product_closed"),
        ("X99", 502, "partner_error"),
        ("P20", 502, "partner_error"),
        ("U04", 502, "partner_error"),
        ("S05", 502, "partner_error"),
        ("500", 502, "partner_error"),
        ("503", 502, "partner_error"),
        ("401", 502, "partner_auth_failed"),
    ],
)
async def test_partner_code_maps_to_status(
    sluice: Running, sandbox: Sandbox, trigger: str, status: int, code: str
) -> None:
    response = await sluice.client.post(
        "/v1/inquiries",
        json={"product_code": "PLN50", "customer_number": f"TRIGGER-{trigger}"},
        headers=sluice.headers(),
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    if trigger[0] in "PUSX":
        # The partner's own code and message travel in the problem details.
        assert body["partner_code"] == trigger
        assert body["partner_message"]


async def test_p08_deletes_the_token_and_answers_forbidden(sluice: Running, sandbox: Sandbox) -> None:
    headers = sluice.headers()
    assert (await sluice.client.get("/v1/products", headers=headers)).status_code == 200
    assert await sandbox.tokens_issued() == 1
    token_key = sluice.state.settings.redis_key_prefix + "token:partner"
    assert await sluice.state.redis.exists(token_key)

    response = await sluice.client.get(
        "/v1/products", params={"product_code": "TRIGGER-P08"}, headers=headers
    )
    assert response.status_code == 403
    assert response.json()["code"] == "partner_forbidden"
    assert response.json()["partner_code"] == "P08"
    assert not await sluice.state.redis.exists(token_key)

    # The next call needs (and gets) a new token.
    assert (await sluice.client.get("/v1/products", headers=headers)).status_code == 200
    assert await sandbox.tokens_issued() == 2


async def test_timeout_maps_to_504(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    async with start_app(partner_timeout=0.3) as sluice:
        response = await sluice.client.get(
            "/v1/products", params={"product_code": "TRIGGER-SLOW-1500"}, headers=sluice.headers()
        )
    assert response.status_code == 504
    assert response.json()["code"] == "partner_timeout"


async def test_unreachable_partner_maps_to_502(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    from tests.support import free_port

    async with start_app(partner_base_url=f"http://127.0.0.1:{free_port()}") as sluice:
        response = await sluice.client.get("/v1/products", headers=sluice.headers())
    assert response.status_code == 502
    assert response.json()["code"] == "partner_unreachable"
    assert "127.0.0.1" not in response.text  # no internals leaked
