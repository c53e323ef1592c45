"""The airlock in the web admin: list and filters, detail with pretty JSON and the log, retry /
cancel / replay actions (one and in bulk), edits logged as diffs, connector settings."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import httpx

from app.db import utcnow
from tests.airlock.test_backoffice import PURCHASE, detail, respond_async
from tests.airlock.test_delivery import Make
from tests.conftest import ADMIN_KEY, Running
from tests.support import Receiver

AUTHOR = "bootstrap admin"


async def login(sluice: Running) -> None:
    response = await sluice.client.post(
        "/admin/login", data={"username": "ops", "password": ADMIN_KEY}, follow_redirects=False
    )
    assert response.status_code in (302, 303), response.text


async def page(sluice: Running, path: str, **params: Any) -> str:
    response = await sluice.client.get(path, params=params)
    assert response.status_code == 200, (path, params, response.status_code)
    return html.unescape(response.text)


async def act(sluice: Running, name: str, *ids: str, referer: str | None = None) -> httpx.Response:
    headers = {"referer": f"http://sluice.test{referer}"} if referer else {}
    return await sluice.client.get(
        f"/admin/async-call/action/{name}",
        params={"pks": ",".join(ids)},
        headers=headers,
        follow_redirects=False,
    )


def log_of(call: dict[str, Any]) -> list[dict[str, Any]]:
    return call["log"]  # type: ignore[no-any-return]


async def test_list_shows_calls_and_filters(airlock: Running, make_worker: Make) -> None:
    done = await respond_async(airlock)
    await make_worker(airlock.state).run_once()
    pending = await respond_async(airlock)
    await login(airlock)

    listed = await page(airlock, "/admin/async-call/list")
    assert done in listed and pending in listed
    assert "purchase" in listed.lower() and "bootstrap admin" in listed

    by_status = await page(airlock, "/admin/async-call/list", status="DONE")
    assert done in by_status and pending not in by_status
    by_connector = await page(airlock, "/admin/async-call/list", connector="partner")
    assert done in by_connector and pending in by_connector
    assert done not in await page(airlock, "/admin/async-call/list", connector="other")
    by_client = await page(airlock, "/admin/async-call/list", client="bootstrap")
    assert done in by_client and pending in by_client
    assert pending not in await page(airlock, "/admin/async-call/list", client="someone-else")
    # The filter sidebars offer what there is to filter on.
    assert "bootstrap admin (bootstrap)" in listed and "RESPONSE_ERROR" in listed

    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert pending not in await page(airlock, "/admin/async-call/list", created_op="after", created=future)
    before = await page(airlock, "/admin/async-call/list", created_op="before", created=future)
    assert done in before and pending in before
    assert pending in await page(airlock, "/admin/async-call/list", created_op="after", created="2020-01-01")
    bad = await airlock.client.get(
        "/admin/async-call/list", params={"created_op": "after", "created": "soon"}
    )
    assert bad.status_code == 400

    # Search: part of the id, or the client's name.
    found = await page(airlock, "/admin/async-call/list", search=pending[:13])
    assert pending in found and done not in found
    assert done in await page(airlock, "/admin/async-call/list", search="bootstrap")
    sorted_page = await page(airlock, "/admin/async-call/list", sortBy="status", sort="desc")
    assert done in sorted_page


async def test_detail_shows_pretty_json_and_the_log(airlock: Running, make_worker: Make) -> None:
    reply_id = await respond_async(airlock)
    await make_worker(airlock.state).run_once()
    await login(airlock)
    shown = await page(airlock, f"/admin/async-call/details/{reply_id}")
    assert '<pre class="mb-0">{\n  "customer_number": "0812345678",\n' in shown
    assert '"ref_id": "inv-9"' in shown  # the partner's answer echoes it back
    log = re.findall(r'<tr class="call-log-line">(.*?)</tr>', shown, re.S)
    assert len(log) == 2 and "capture" in log[0] and "call" in log[1]
    # Action buttons on the page.
    assert "/admin/async-call/action/retry" in shown and "/admin/async-call/action/cancel" in shown

    missing = await airlock.client.get(f"/admin/async-call/details/{'0' * 32}")
    assert missing.status_code == 404
    malformed = await airlock.client.get("/admin/async-call/details/not-a-uuid")
    assert malformed.status_code == 404


async def test_cancel_and_retry_log_the_admin(airlock: Running) -> None:
    one, two = await respond_async(airlock), await respond_async(airlock)
    await login(airlock)
    details = f"/admin/async-call/details/{one}"

    cancelled = await act(airlock, "cancel", one, referer=details)
    assert cancelled.status_code == 302 and cancelled.headers["location"] == details
    call = await detail(airlock, one)
    assert call["status"] == "CANCELLED"
    assert log_of(call)[-1]["outcome"] == "cancelled" and log_of(call)[-1]["author"] == AUTHOR
    assert "Cancelled 1 call." in await page(airlock, details)

    # A refused action is a message on the page it came from, not an error page.
    again = await act(airlock, "cancel", one, referer=details)
    assert again.status_code == 302
    shown = await page(airlock, details)
    assert "1 refused." in shown and "already finished (CANCELLED)" in shown

    # Bulk from the list: the refused one is reported, the other proceeds.
    listing = "/admin/async-call/list?status=CALL_RETRY"
    bulk = await act(airlock, "cancel", one, two, referer=listing)
    assert bulk.headers["location"] == listing
    assert (await detail(airlock, two))["status"] == "CANCELLED"

    retried = await act(airlock, "retry", one, two)
    assert retried.headers["location"].endswith("/admin/async-call/list")
    for reply_id in (one, two):
        call = await detail(airlock, reply_id)
        assert call["status"] == "CALL_RETRY" and call["ttl"] == 13
        assert log_of(call)[-1]["outcome"] == "retried" and log_of(call)[-1]["author"] == AUTHOR
    assert airlock.state.airlock_wake.is_set()

    # No stored response and no $reply URL: the reply cannot be retried.
    refused = await act(airlock, "retry-reply", one)
    assert refused.status_code == 302
    assert "no stored response" in await page(airlock, "/admin/async-call/list")
    assert (await detail(airlock, one))["status"] == "CALL_RETRY"

    unknown = await act(airlock, "cancel", "nope")
    assert unknown.status_code == 302
    assert "nope: no such call" in await page(airlock, "/admin/async-call/list")
    cross_site = await airlock.client.get(
        "/admin/async-call/action/cancel", params={"pks": one}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross_site.status_code == 403
    assert (await detail(airlock, one))["status"] == "CALL_RETRY"


async def test_retry_reply_and_replay(airlock: Running, make_worker: Make, receiver: Receiver) -> None:
    response = await airlock.client.post(
        "/v1/purchases",
        json={**PURCHASE, "$reply": f"{receiver.url}/r"},
        headers=airlock.headers(Prefer="respond-async"),
    )
    reply_id = response.json()["$reply_id"]
    worker = make_worker(airlock.state)
    await worker.run_once()
    assert (await detail(airlock, reply_id))["status"] == "DONE"
    await login(airlock)

    assert (await act(airlock, "replay", reply_id)).status_code == 302
    call = await detail(airlock, reply_id)
    assert call["status"] == "RESPONSE_RETRY"
    assert [line["outcome"] for line in log_of(call)][-2:] == ["retried", "replayed"]
    assert log_of(call)[-1]["author"] == AUTHOR
    await worker.run_once()
    assert len(receiver.requests) == 2

    assert (await act(airlock, "retry-reply", reply_id)).status_code == 302
    assert (await detail(airlock, reply_id))["status"] == "RESPONSE_RETRY"
    # Replay is for DONE calls only.
    await act(airlock, "replay", reply_id)
    assert "Only a DONE call" in await page(airlock, "/admin/async-call/list")


async def test_edit_logs_a_unified_diff(airlock: Running, make_worker: Make) -> None:
    reply_id = await respond_async(airlock)
    await login(airlock)
    edit = f"/admin/async-call/edit/{reply_id}"
    form = await page(airlock, edit)
    assert '"customer_number": "0812345678"' in form

    # Unchanged text (as the browser sends it back, CRLF) is no edit.
    unchanged = (await detail(airlock, reply_id))["request_body"].replace("\n", "\r\n")
    saved = await airlock.client.post(
        edit, data={"body": unchanged, "response_body": "", "save": "Save"}, follow_redirects=False
    )
    assert saved.status_code == 302
    assert [line["phase"] for line in log_of(await detail(airlock, reply_id))] == ["capture"]

    invalid = await airlock.client.post(edit, data={"body": "{not json", "response_body": "", "save": "Save"})
    assert invalid.status_code == 400 and "not valid JSON" in invalid.text
    no_response = await airlock.client.post(edit, data={"body": unchanged, "response_body": '{"a": 1}'})
    assert no_response.status_code == 400 and "no stored response" in no_response.text

    new_body = unchanged.replace("0812345678", "0811111111")
    saved = await airlock.client.post(
        edit, data={"body": new_body, "response_body": "", "save": "Save"}, follow_redirects=False
    )
    assert saved.status_code == 302, saved.text
    call = await detail(airlock, reply_id)
    line = log_of(call)[-1]
    assert line["phase"] == "edit" and line["author"] == AUTHOR and line["at"]
    assert line["detail"].startswith("--- body (before)\n+++ body (after)\n")
    assert '-  "customer_number": "0812345678",' in line["detail"]
    assert '+  "customer_number": "0811111111",' in line["detail"]
    assert '"customer_number": "0811111111"' in call["request_body"]
    # The diff is in the log on the call's page.
    assert '+  "customer_number": "0811111111",' in await page(
        airlock, f"/admin/async-call/details/{reply_id}"
    )

    # Once answered, the stored response can be edited too.
    await make_worker(airlock.state).run_once()
    response = (await detail(airlock, reply_id))["response_body"]
    edited = response.replace('"ref_id": "inv-9"', '"ref_id": "inv-10"')
    saved = await airlock.client.post(
        edit, data={"body": new_body, "response_body": edited, "save": "Save"}, follow_redirects=False
    )
    assert saved.status_code == 302
    line = log_of(await detail(airlock, reply_id))[-1]
    assert line["detail"].startswith("--- response (before)")
    assert '-    "ref_id": "inv-9",' in line["detail"] and '+    "ref_id": "inv-10",' in line["detail"]


async def test_connector_settings_in_the_admin(airlock: Running) -> None:
    await login(airlock)
    h = airlock.headers()
    create_form = await page(airlock, "/admin/airlock-connector/create")
    assert 'value="partner"' in create_form and "error_secret" not in create_form

    bad = await airlock.client.post(
        "/admin/airlock-connector/create",
        data={
            "name": "partner",
            "ttl": "0",
            "delay": "-1",
            "error_urls": "http://169.254.169.254/",
            "error_emails": "nope",
            "save": "Save",
        },
    )
    assert bad.status_code == 400
    text = html.unescape(bad.text)
    assert "Number must be between 1 and 100" in text and "more than 0 seconds" in text
    assert "http://169.254.169.254/: " in text and "nope: " in text
    assert (await airlock.client.get("/v1/airlock/connectors/partner", headers=h)).json()[
        "updated_by"
    ] is None

    created = await airlock.client.post(
        "/admin/airlock-connector/create",
        data={
            "name": "partner",
            "ttl": "5",
            "delay": "2.5",
            "error_urls": "http://127.0.0.1:9/errors\nhttp://127.0.0.1:9/more",
            "error_emails": "ops@example.com, oncall@example.com",
            "save": "Save",
        },
        follow_redirects=False,
    )
    assert created.status_code == 302, created.text
    got = (await airlock.client.get("/v1/airlock/connectors/partner", headers=h)).json()
    assert got["ttl"] == 5 and got["delay"] == 2.5 and got["updated_by"] == AUTHOR
    assert got["error_urls"] == ["http://127.0.0.1:9/errors", "http://127.0.0.1:9/more"]
    assert got["error_emails"] == ["ops@example.com", "oncall@example.com"]
    async with airlock.state.sessionmaker() as session:
        from app.airlock.models import AirlockConnector

        row = await session.get(AirlockConnector, "partner")
        assert row is not None and row.error_secret.startswith("whsec_")
        secret = row.error_secret

    blank = await airlock.client.post(
        "/admin/airlock-connector/create", data={"name": "   ", "ttl": "5", "delay": "1", "save": "Save"}
    )
    assert blank.status_code == 400 and "This field is required." in blank.text
    duplicate = await airlock.client.post(
        "/admin/airlock-connector/create", data={"name": "partner", "ttl": "5", "delay": "1", "save": "Save"}
    )
    assert duplicate.status_code == 400 and "exists already" in html.unescape(duplicate.text)

    edit_form = await page(airlock, "/admin/airlock-connector/edit/partner")
    assert "http://127.0.0.1:9/errors\nhttp://127.0.0.1:9/more" in edit_form
    assert 'name="name"' not in edit_form and secret not in edit_form
    edited = await airlock.client.post(
        "/admin/airlock-connector/edit/partner",
        data={"ttl": "7", "delay": "4", "error_urls": "", "error_emails": "ops@example.com", "save": "Save"},
        follow_redirects=False,
    )
    assert edited.status_code == 302, edited.text
    got = (await airlock.client.get("/v1/airlock/connectors/partner", headers=h)).json()
    assert got["ttl"] == 7 and got["delay"] == 4.0 and got["error_urls"] == []
    assert got["error_emails"] == ["ops@example.com"]

    for path in ("/admin/airlock-connector/list", "/admin/airlock-connector/details/partner"):
        shown = await page(airlock, path)
        assert "ops@example.com" in shown and secret not in shown
    # New calls take the edited settings.
    reply_id = await respond_async(airlock)
    assert (await detail(airlock, reply_id))["ttl"] == 7
