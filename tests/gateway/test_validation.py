"""Handler validation (seed 000, G1–G3): method, content type, mandatory headers, parameters."""

from __future__ import annotations

import pytest

from tests.conftest import Running, Sandbox

PROBLEM = "application/problem+json"


async def test_wrong_method_is_405(sluice: Running) -> None:
    response = await sluice.client.delete("/v1/products", headers=sluice.headers())
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_body_must_be_json(sluice: Running, sandbox: Sandbox, content_type: str | None) -> None:
    headers = sluice.headers()
    if content_type:
        headers["Content-Type"] = content_type
    response = await sluice.client.post(
        "/v1/inquiries", content=b'{"product_code": "A", "customer_number": "1"}', headers=headers
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "unsupported_media_type"
    assert (await sandbox.stats())["requests"] == {}


async def test_json_with_charset_is_accepted(sluice: Running, sandbox: Sandbox) -> None:
    response = await sluice.client.post(
        "/v1/inquiries",
        content=b'{"product_code": "PLN50", "customer_number": "1"}',
        headers=sluice.headers(**{"Content-Type": "application/json; charset=utf-8"}),
    )
    assert response.status_code != 415


async def test_missing_client_id_is_400_naming_it(sluice: Running) -> None:
    headers = sluice.headers()
    del headers["X-Client-ID"]
    response = await sluice.client.get("/v1/products", headers=headers)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "missing_header"
    assert body["header"] == "X-Client-ID"
    assert "X-Client-ID" in body["detail"]


async def test_missing_language_is_400_naming_it(sluice: Running) -> None:
    headers = sluice.headers()
    del headers["X-Language-ID"]
    response = await sluice.client.get("/v1/products", headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "missing_header"
    assert response.json()["header"] == "X-Language-ID"


async def test_invalid_header_value_is_400(sluice: Running) -> None:
    response = await sluice.client.get("/v1/products", headers=sluice.headers(**{"X-Language-ID": "en us!"}))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_header"


@pytest.mark.parametrize(
    "params",
    [{"per_page": 1000}, {"page": 0}, {"category_id": "abc"}, {"unknown": "x"}, {"product_code": "a b"}],
)
async def test_invalid_query_is_422(sluice: Running, sandbox: Sandbox, params: dict[str, object]) -> None:
    response = await sluice.client.get("/v1/products", params=params, headers=sluice.headers())
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["errors"]
    assert (await sandbox.stats())["requests"] == {}


async def test_invalid_json_is_400(sluice: Running) -> None:
    response = await sluice.client.post(
        "/v1/purchases", content=b"{not json", headers=sluice.headers(**{"Content-Type": "application/json"})
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


@pytest.mark.parametrize(
    "body",
    [
        {"product_code": "A"},
        {"customer_number": "1"},
        {"product_code": "A", "customer_number": "1", "x": 1},
        [1, 2],
    ],
)
async def test_invalid_body_is_422(sluice: Running, body: object) -> None:
    response = await sluice.client.post("/v1/inquiries", json=body, headers=sluice.headers())
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_invalid_purchase_id_is_422(sluice: Running) -> None:
    response = await sluice.client.get("/v1/purchases/" + "x" * 65, headers=sluice.headers())
    assert response.status_code == 422
