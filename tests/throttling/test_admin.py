"""Throttling in the web admin: configs listed and filtered, deployed and undeployed by the admin
(the limiter's rules follow at once), edits checked by the API's rules, runtime versions shown."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app.clients.service import create_client
from tests.airlock.test_admin import login, page
from tests.conftest import Running
from tests.throttling.conftest import BASE, EXAMPLE, ORG, create, deploy, headers

AUTHOR = "bootstrap admin"


@pytest.fixture
async def api(start_app: Any, sandbox: Any) -> Any:
    async with start_app(run_workers=False) as running:
        yield running


async def act(sluice: Running, name: str, *uids: str, referer: str | None = None) -> httpx.Response:
    extra = {"referer": f"http://sluice.test{referer}"} if referer else {}
    return await sluice.client.get(
        f"/admin/throttling-config/action/{name}",
        params={"pks": ",".join(uids)},
        headers=extra,
        follow_redirects=False,
    )


async def read(sluice: Running, uid: str) -> dict[str, Any]:
    response = await sluice.client.get(f"{BASE}/throttlingConfigs/{uid}", headers=headers())
    assert response.status_code == 200, response.text
    return response.json()["result"]  # type: ignore[no-any-return]


def runtime_rows(listed: str) -> list[str]:
    """The ids of the runtime rows on a list page."""
    return list(dict.fromkeys(re.findall(r"/admin/throttling-runtime/details/(\d+)", listed)))


def runtime_lines(shown: str) -> list[str]:
    return re.findall(r'<tr class="runtime-version">(.*?)</tr>', shown, re.S)


async def test_list_filters_and_detail(api: Running) -> None:
    uid = (await create(api.client))["uid"]
    await login(api)

    listed = await page(api, "/admin/throttling-config/list")
    assert EXAMPLE["name"] in listed and EXAMPLE["urlPattern"] in listed
    assert "POST, PUT" in listed and "4000" in listed and "created" in listed
    assert f"/admin/throttling-config/details/{uid}" in listed
    # The filter sidebars offer what there is to filter on.
    assert "Organisation" in listed and "undeployed" in listed

    assert uid in await page(api, "/admin/throttling-config/list", state="created")
    assert uid not in await page(api, "/admin/throttling-config/list", state="deployed")
    assert uid in await page(api, "/admin/throttling-config/list", org_id=ORG)
    assert uid not in await page(api, "/admin/throttling-config/list", org_id="someone-else")
    assert uid in await page(api, "/admin/throttling-config/list", search="example.org/data")
    assert uid not in await page(api, "/admin/throttling-config/list", search="nowhere.test")
    assert uid in await page(api, "/admin/throttling-config/list", sortBy="max_throughput", sort="desc")

    shown = await page(api, f"/admin/throttling-config/details/{uid}")
    assert EXAMPLE["description"] in shown and AUTHOR in shown
    assert "Can deploy:\n    yes" in shown and "Never deployed." in shown
    assert "/admin/throttling-config/action/deploy" in shown
    assert "/admin/throttling-config/action/undeploy" in shown

    for path in (
        "/admin/throttling-config/details/no-such-config",
        "/admin/throttling-config/details/%00",
        f"/admin/throttling-config/details/{'x' * 40}",
        "/admin/throttling-config/edit/%00",
        "/admin/throttling-runtime/details/abc",
        "/admin/throttling-runtime/details/99999999999",
        "/admin/throttling-runtime/details/12345",
    ):
        assert (await api.client.get(path)).status_code == 404, path
    # Configs are created and deleted through the authoring API only.
    assert (await api.client.get("/admin/throttling-config/create")).status_code == 403


async def test_deploy_and_undeploy_from_the_admin(api: Running) -> None:
    uid = (await create(api.client))["uid"]
    await login(api)
    details = f"/admin/throttling-config/details/{uid}"
    assert api.state.throttle.rules == {}

    deployed = await act(api, "deploy", uid, referer=details)
    assert deployed.status_code == 302 and deployed.headers["location"] == details
    # This replica reloaded at once (changed() also tells the others).
    rules = api.state.throttle.rules[ORG]
    assert [(r.uid, r.version, r.max_throughput) for r in rules] == [(uid, 1, 4000)]
    config = await read(api, uid)
    assert config["state"] == "deployed" and config["version"] == "1.0" and config["hasBeenDeployed"]
    assert config["metadata"]["lastDeployedBy"] == AUTHOR
    assert config["metadata"]["lastDeployedById"] == "bootstrap"

    shown = await page(api, details)
    assert f"Deployed: {EXAMPLE['name']}." in shown
    assert "enforces:\n    version 1" in shown
    lines = runtime_lines(shown)
    assert len(lines) == 1 and "active" in lines[0] and "4000" in lines[0]
    assert "deployed" in await page(api, "/admin/throttling-config/list", state="deployed")

    # A refused action is a message on the page it came from, not an error page.
    again = await act(api, "deploy", uid, referer=details)
    assert again.status_code == 302
    shown = await page(api, details)
    assert "1 refused." in shown and "already deployed" in shown
    assert len(api.state.throttle.rules[ORG]) == 1

    listing = "/admin/throttling-config/list?state=deployed"
    undeployed = await act(api, "undeploy", uid, referer=listing)
    assert undeployed.status_code == 302 and undeployed.headers["location"] == listing
    assert api.state.throttle.rules == {}
    assert (await read(api, uid))["state"] == "undeployed"
    shown = await page(api, details)
    assert f"Undeployed: {EXAMPLE['name']}." in shown and "nothing of this configuration" in shown
    assert "draining since" in runtime_lines(shown)[0]

    refused = await act(api, "undeploy", uid)
    assert refused.headers["location"].endswith("/admin/throttling-config/list")
    assert "not deployed yet" in await page(api, "/admin/throttling-config/list")

    # Deployed again: a new runtime version; the first one drains beside it.
    await act(api, "deploy", uid)
    assert [r.version for r in api.state.throttle.rules[ORG]] == [2]
    lines = runtime_lines(await page(api, details))
    assert len(lines) == 2 and ">2</a>" in lines[0] and "active" in lines[0]
    assert ">1</a>" in lines[1] and "draining since" in lines[1]

    runtime = await page(api, "/admin/throttling-runtime/list")
    assert len(runtime_rows(runtime)) == 2
    assert "draining since" in runtime and "active" in runtime
    active_only = await page(api, "/admin/throttling-runtime/list", active="true")
    assert len(runtime_rows(active_only)) == 1 and "draining since" not in active_only
    assert len(runtime_rows(await page(api, "/admin/throttling-runtime/list", active="false"))) == 1
    assert len(runtime_rows(await page(api, "/admin/throttling-runtime/list", config=uid))) == 2
    assert runtime_rows(await page(api, "/admin/throttling-runtime/list", config="other")) == []
    assert runtime_rows(await page(api, "/admin/throttling-runtime/list", org_id="org-b")) == []
    shown = await page(api, f"/admin/throttling-runtime/details/{runtime_rows(runtime)[0]}")
    assert uid in shown and "https://api.example.org/data/2.5/*" in shown

    # Unknown ids are reported; a cross-site action is refused outright.
    unknown = await act(api, "undeploy", "nope", "bad\x00id")
    assert unknown.status_code == 302
    assert "nope: no such config" in await page(api, "/admin/throttling-config/list")
    cross_site = await api.client.get(
        "/admin/throttling-config/action/undeploy",
        params={"pks": uid},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross_site.status_code == 403
    assert (await read(api, uid))["state"] == "deployed"
    assert [r.version for r in api.state.throttle.rules[ORG]] == [2]


async def test_deploy_in_bulk_across_organisations(api: Running) -> None:
    async with api.state.sessionmaker.begin() as session:
        _, other_key = await create_client(session, name="other org", org_id="org-b", scopes=["throttling"])
    one = (await create(api.client))["uid"]
    two = (await create(api.client, org="org-b", key=other_key))["uid"]
    await login(api)
    assert (await act(api, "deploy", one, two)).status_code == 302
    assert set(api.state.throttle.rules) == {ORG, "org-b"}
    assert "org-b" in await page(api, "/admin/throttling-config/list", org_id="org-b")
    assert one not in await page(api, "/admin/throttling-config/list", org_id="org-b")
    await act(api, "undeploy", one, two)
    assert api.state.throttle.rules == {}


def form(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": EXAMPLE["name"],
        "description": EXAMPLE["description"],
        "url_pattern": EXAMPLE["urlPattern"],
        "methods": ["POST", "PUT"],
        "max_throughput": "4000",
        "save": "Save",
    }
    return {**base, **values}


async def test_edit_checks_the_api_rules_and_updates_the_deployed_rule(api: Running) -> None:
    uid = (await create(api.client))["uid"]
    await login(api)
    edit = f"/admin/throttling-config/edit/{uid}"
    shown = await page(api, edit)
    assert EXAMPLE["urlPattern"] in shown and "max_throughput" in shown

    for bad, needle in (
        (form(max_throughput="100"), "Number must be between 200 and 5000"),
        (form(max_throughput="lots"), "Not a valid integer value"),
        (form(url_pattern="https://*.example.org/data"), "holds wildcards"),
        (form(url_pattern="not a url"), "incorrect URL pattern"),
        (form(url_pattern=""), "This field is required"),
        (form(methods=[]), "This field is required"),
        (form(methods=["FETCH"]), "not a valid choice"),
    ):
        refused = await api.client.post(edit, data=bad)
        assert refused.status_code == 400, (bad, refused.status_code)
        assert needle in refused.text, (bad, needle)
    assert (await read(api, uid))["state"] == "created"

    # Not deployed: the config changes, its state becomes updated.
    saved = await api.client.post(edit, data=form(max_throughput="300"), follow_redirects=False)
    assert saved.status_code == 302, saved.text
    config = await read(api, uid)
    assert config["maxThroughput"] == 300 and config["state"] == "updated"
    assert config["metadata"]["lastModifiedBy"] == AUTHOR

    # Deployed: the active runtime version takes the new values at once, on every replica.
    await deploy(api.client, uid)
    saved = await api.client.post(
        edit,
        data=form(max_throughput="2500", methods=["GET"], url_pattern="https://api.example.org/v2/*"),
        follow_redirects=False,
    )
    assert saved.status_code == 302, saved.text
    rule = api.state.throttle.rules[ORG][0]
    assert (rule.version, rule.max_throughput, set(rule.methods)) == (1, 2500, {"GET"})
    assert rule.pattern.text == "https://api.example.org/v2/*"
    config = await read(api, uid)
    assert config["state"] == "deployed" and config["maxThroughput"] == 2500
    assert config["methods"] == ["GET"]
    shown = await page(api, f"/admin/throttling-config/details/{uid}")
    assert "the deployed rule changed at once" in shown
    lines = runtime_lines(shown)
    assert len(lines) == 1 and "2500" in lines[0] and "https://api.example.org/v2/*" in lines[0]

    # A blank name is no name (the API's read then omits it).
    await api.client.post(edit, data=form(name="  ", description=""), follow_redirects=False)
    config = await read(api, uid)
    assert "name" not in config and "description" not in config
