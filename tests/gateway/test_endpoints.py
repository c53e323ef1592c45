"""The four gateway endpoints, end to end through the sandbox partner."""

from __future__ import annotations

from tests.conftest import Running, Sandbox


async def test_products_success_envelope_and_forwarding(sluice: Running, sandbox: Sandbox) -> None:
    response = await sluice.client.get(
        "/v1/products",
        params={"per_page": 5, "page": 1},
        headers=sluice.headers(**{"X-Client-ID": "shop-7", "X-Language-ID": "id"}),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["data"], list) and len(body["data"]) == 5
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    assert body["meta"]["page"] == 1 and body["meta"]["per_page"] == 5 and body["meta"]["count"] == 5
    last = (await sandbox.stats())["last_request"]
    assert last["path"].endswith("/v2/product-list")
    assert last["query"]["per_page"] == "5"
    assert last["headers"]["x-language-id"] == "id"
    assert last["headers"]["x-client-id"] == "shop-7"
    assert last["headers"]["authorization"].startswith("Bearer ")


async def test_products_filters_are_passed_on(sluice: Running, sandbox: Sandbox) -> None:
    response = await sluice.client.get(
        "/v1/products", params={"category_id": 1, "operator_id": 2}, headers=sluice.headers()
    )
    assert response.status_code == 200
    last = (await sandbox.stats())["last_request"]
    assert last["query"]["category_id"] == "1"
    assert last["query"]["operator_id"] == "2"


async def test_accept_language_is_used_when_no_x_language_id(sluice: Running, sandbox: Sandbox) -> None:
    headers = {
        "X-API-Key": sluice.headers()["X-API-Key"],
        "X-Client-ID": "c",
        "Accept-Language": "id-ID,id;q=0.9",
    }
    response = await sluice.client.get("/v1/products", headers=headers)
    assert response.status_code == 200
    assert (await sandbox.stats())["last_request"]["headers"]["x-language-id"] == "id-ID"


async def test_inquiry_purchase_and_purchase_lookup(sluice: Running, sandbox: Sandbox) -> None:
    products = (await sluice.client.get("/v1/products", headers=sluice.headers())).json()["data"]
    code = products[0]["product_code"]
    inquiry = await sluice.client.post(
        "/v1/inquiries",
        json={"product_code": code, "customer_number": "0812345678"},
        headers=sluice.headers(),
    )
    assert inquiry.status_code == 200, inquiry.text
    assert inquiry.json()["data"]["customer_number"] == "0812345678"

    purchase = await sluice.client.post(
        "/v1/purchases",
        json={"product_code": code, "customer_number": "0812345678", "ref_id": "inv-1"},
        headers=sluice.headers(),
    )
    assert purchase.status_code == 201, purchase.text
    order = purchase.json()["data"]
    assert order["ref_id"] == "inv-1"

    lookup = await sluice.client.get(f"/v1/purchases/{order['order_id']}", headers=sluice.headers())
    assert lookup.status_code == 200
    assert lookup.json()["data"]["order_id"] == order["order_id"]


async def test_unknown_purchase_is_a_partner_forbidden_code(sluice: Running, sandbox: Sandbox) -> None:
    # The sandbox answers an unknown order with P04 (a P-code: forbidden in the seed's table).
    response = await sluice.client.get("/v1/purchases/does-not-exist", headers=sluice.headers())
    assert response.status_code == 403
    assert response.json()["partner_code"] == "P04"


async def test_traceparent_is_propagated_to_the_partner(sluice: Running, sandbox: Sandbox) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await sluice.client.get(
        "/v1/products", headers=sluice.headers(traceparent=f"00-{trace_id}-00f067aa0ba902b7-01")
    )
    assert response.status_code == 200
    sent = (await sandbox.stats())["last_request"]["headers"]["traceparent"]
    assert sent.split("-")[1] == trace_id
