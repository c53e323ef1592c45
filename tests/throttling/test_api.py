"""The throttling-configuration API against the original's document (seed 004): shapes key for
key, every error code, the lifecycle."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.clients.service import create_client
from tests.conftest import Running
from tests.throttling.conftest import BASE, EXAMPLE, ORG, create, deploy, headers

# Key sets of the document's example responses.
CREATE_KEYS = {"canDeploy", "createdElement", "uid", "uri", "resStatus"}
CREATED_ELEMENT_KEYS = {
    "name",
    "description",
    "urlPattern",
    "methods",
    "maxThroughput",
    "orgId",
    "sandboxId",
    "sandboxName",
    "uid",
    "metadata",
    "state",
    "authoringFormatVersion",
}
METADATA_KEYS = {
    "createdBy",
    "createdById",
    "lastModifiedBy",
    "lastModifiedById",
    "createdAt",
    "lastModifiedAt",
}
UPDATE_KEYS = {"updatedElement", "uid", "uri", "resStatus", "canDeploy"}
UPDATED_ELEMENT_KEYS = CREATED_ELEMENT_KEYS | {"_id", "hasBeenDeployed"}
DEPLOYED_RESULT_KEYS = UPDATED_ELEMENT_KEYS | {"version"}
DEPLOYED_METADATA_KEYS = METADATA_KEYS | {"lastDeployedBy", "lastDeployedById", "lastDeployedAt"}
ERROR_KEYS = {"status", "error", "requestId"}
ERROR_DETAIL_KEYS = {"code", "family", "message", "service", "version", "context"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["status"] == response.status_code
    assert body["requestId"]
    detail = orjson.loads(body["error"])
    assert ERROR_DETAIL_KEYS <= set(detail), detail
    return detail  # type: ignore[no-any-return]


@pytest.fixture
async def api(start_app: Any, sandbox: Any) -> Any:
    async with start_app(run_workers=False) as running:
        yield running


async def test_create_update_read_deploy_shapes_match_the_document(api: Running) -> None:
    client = api.client
    created = await create(client)
    assert set(created) == CREATE_KEYS
    assert set(created["createdElement"]) == CREATED_ELEMENT_KEYS
    assert set(created["createdElement"]["metadata"]) == METADATA_KEYS
    assert created["canDeploy"] == {"validationStatus": "ok"}
    assert created["resStatus"] == "created"
    element = created["createdElement"]
    uid = created["uid"]
    assert element["uid"] == uid and created["uri"] == f"{BASE}/throttlingConfigs/{uid}"
    assert element["state"] == "created" and element["authoringFormatVersion"] == "1.0"
    assert element["orgId"] == ORG and element["sandboxName"] == "prod"
    assert element["methods"] == ["POST", "PUT"] and element["maxThroughput"] == 4000
    # createdBy etc. come from the API client's identity.
    assert element["metadata"]["createdBy"] == "bootstrap admin"
    assert element["metadata"]["createdById"] == "bootstrap"
    assert element["metadata"]["createdAt"].endswith("Z")

    update = {
        **EXAMPLE,
        "name": "throttling-config-external -- optional",
        "methods": ["POST"],
        "maxThroughput": 5000,
    }
    response = await client.put(f"{BASE}/throttlingConfigs/{uid}", json=update, headers=headers())
    assert response.status_code == 200, response.text
    updated = response.json()
    assert set(updated) == UPDATE_KEYS
    assert set(updated["updatedElement"]) == UPDATED_ELEMENT_KEYS
    assert updated["updatedElement"]["_id"] == f"{uid}_{element['sandboxId']}"
    assert updated["updatedElement"]["state"] == "updated"
    assert updated["updatedElement"]["hasBeenDeployed"] is False
    assert updated["resStatus"] == "updated" and updated["canDeploy"] == {"validationStatus": "ok"}

    read = (await client.get(f"{BASE}/throttlingConfigs/{uid}", headers=headers())).json()
    assert set(read) == {"result"}
    assert set(read["result"]) == UPDATED_ELEMENT_KEYS
    assert read["result"]["maxThroughput"] == 5000 and read["result"]["methods"] == ["POST"]

    await deploy(client, uid)
    read = (await client.get(f"{BASE}/throttlingConfigs/{uid}", headers=headers())).json()["result"]
    assert set(read) == DEPLOYED_RESULT_KEYS
    assert set(read["metadata"]) == DEPLOYED_METADATA_KEYS
    assert read["state"] == "deployed" and read["version"] == "1.0" and read["hasBeenDeployed"] is True
    assert read["metadata"]["lastDeployedById"] == "bootstrap"

    for listing in (
        await client.get(f"{BASE}/throttlingConfigs", headers=headers()),
        await client.post(f"{BASE}/list/throttlingConfigs", headers=headers()),
    ):
        assert listing.status_code == 200
        assert [c["uid"] for c in listing.json()["results"]] == [uid]
        assert listing.json()["total"] == 1


async def test_lifecycle_update_deployed_undeploy_redeploy_delete(api: Running) -> None:
    client = api.client
    uid = (await create(client))["uid"]
    config_url = f"{BASE}/throttlingConfigs/{uid}"

    # 14468: undeploy before any deploy.
    response = await client.post(f"{config_url}/undeploy", headers=headers())
    assert response.status_code == 400 and error_of(response)["code"] == 14468

    deployed = await deploy(client, uid)
    assert deployed["resStatus"] == "deployed" and deployed["result"]["version"] == "1.0"
    assert api.state.throttle.rules[ORG][0].max_throughput == 4000

    # canDeploy on a deployed config: error; deploying again: 14466.
    for verb in ("get", "post"):
        check = (await client.request(verb.upper(), f"{config_url}/canDeploy", headers=headers())).json()
        assert check["validationStatus"] == "error" and check["errors"][0]["code"] == 14466
    response = await client.post(f"{config_url}/deploy", headers=headers())
    assert response.status_code == 400 and error_of(response)["code"] == 14466

    # Updating a deployed config takes effect at once, under the same runtime version.
    response = await client.put(config_url, json={**EXAMPLE, "maxThroughput": 300}, headers=headers())
    assert response.status_code == 200
    assert response.json()["updatedElement"]["state"] == "deployed"
    rule = api.state.throttle.rules[ORG][0]
    assert (rule.max_throughput, rule.version) == (300, 1)

    # 1456: a deployed config cannot be deleted.
    response = await client.delete(config_url, headers=headers())
    assert response.status_code == 400 and error_of(response)["code"] == 1456

    undeployed = await client.post(f"{config_url}/undeploy", headers=headers())
    assert undeployed.status_code == 200 and undeployed.json()["result"]["state"] == "undeployed"
    assert api.state.throttle.rules == {}

    # Updated and redeployed: a new runtime version.
    response = await client.put(config_url, json={**EXAMPLE, "maxThroughput": 250}, headers=headers())
    assert response.json()["updatedElement"]["state"] == "updated"
    assert (await client.get(f"{config_url}/canDeploy", headers=headers())).json() == {
        "validationStatus": "ok"
    }
    redeployed = await deploy(client, uid)
    assert redeployed["result"]["version"] == "2.0"
    assert api.state.throttle.rules[ORG][0].version == 2

    # forceDelete undeploys, then deletes.
    response = await client.delete(f"{config_url}?forceDelete=true", headers=headers())
    assert response.status_code == 200 and response.json() == {"uid": uid, "resStatus": "deleted"}
    assert api.state.throttle.rules == {}
    response = await client.get(config_url, headers=headers())
    assert response.status_code == 404 and error_of(response)["code"] == 14467


async def test_not_found_codes(api: Running) -> None:
    client = api.client
    missing = f"{BASE}/throttlingConfigs/00000000-0000-0000-0000-000000000000"
    for method, url in (
        ("GET", missing),
        ("PUT", missing),
        ("DELETE", missing),
        ("POST", f"{missing}/deploy"),
        ("POST", f"{missing}/undeploy"),
        ("GET", f"{missing}/canDeploy"),
    ):
        response = await client.request(method, url, json=EXAMPLE, headers=headers())
        assert response.status_code == 404, (method, url, response.text)
        assert error_of(response)["code"] == 14467


async def test_one_config_per_org_1465(api: Running) -> None:
    await create(api.client)
    response = await api.client.post(f"{BASE}/throttlingConfigs", json=EXAMPLE, headers=headers())
    assert response.status_code == 400
    detail = error_of(response)
    assert detail["code"] == 1465 and detail["family"] == "INPUT_OUTPUT_ERROR"
    assert detail["message"] == "Can't create throttling config: only one config allowed per org"
    assert detail["schema"] == "throttlingConfigs$prod"


async def test_sandboxes_and_headers(api: Running) -> None:
    client = api.client
    url = f"{BASE}/throttlingConfigs"
    # A sandbox that exists but is not production: 1463, as in the document's example.
    response = await client.post(url, json=EXAMPLE, headers=headers(sandbox="dev"))
    assert response.status_code == 400
    detail = error_of(response)
    assert detail["code"] == 1463 and detail["schema"] == "throttlingConfigs$dev"
    assert detail["message"] == "Operation not allowed on throttling config: non prod sandbox"
    # An unknown sandbox: the document's 4000 body, with 404 instead of its 500.
    response = await client.post(url, json=EXAMPLE, headers=headers(sandbox="nope"))
    assert response.status_code == 404
    detail = error_of(response)
    assert (detail["code"], detail["family"], detail["message"]) == (4000, "INTERNAL_ERROR", "INTERNAL ERROR")
    # The organisation header must be the key's organisation.
    response = await client.get(url, headers=headers(org="someone-else"))
    assert response.status_code == 403 and error_of(response)["code"] == 4003
    response = await client.get(url, headers={"X-API-Key": headers()["X-API-Key"]})
    assert response.status_code == 400 and error_of(response)["code"] == 4001
    # No key: the service's usual 401.
    response = await client.get(url, headers={"x-gw-ims-org-id": ORG, "x-sandbox-name": "prod"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (b"not json", "ERR_THROTTLING_CONFIG_106", "payload"),
        (b"[1, 2]", "ERR_THROTTLING_CONFIG_106", "payload"),
        ({k: v for k, v in EXAMPLE.items() if k != "urlPattern"}, "ERR_THROTTLING_CONFIG_100", "urlPattern"),
        ({k: v for k, v in EXAMPLE.items() if k != "methods"}, "ERR_THROTTLING_CONFIG_100", "methods"),
        ({**EXAMPLE, "methods": []}, "ERR_THROTTLING_CONFIG_100", "methods"),
        (
            {k: v for k, v in EXAMPLE.items() if k != "maxThroughput"},
            "ERR_THROTTLING_CONFIG_100",
            "maxThroughput",
        ),
        ({**EXAMPLE, "maxThroughput": 199}, "ERR_THROTTLING_CONFIG_101", "maxThroughput"),
        ({**EXAMPLE, "maxThroughput": 5001}, "ERR_THROTTLING_CONFIG_101", "maxThroughput"),
        ({**EXAMPLE, "maxThroughput": 250.5}, "ERR_THROTTLING_CONFIG_101", "maxThroughput"),
        ({**EXAMPLE, "maxThroughput": "300"}, "ERR_THROTTLING_CONFIG_101", "maxThroughput"),
        ({**EXAMPLE, "maxThroughput": True}, "ERR_THROTTLING_CONFIG_101", "maxThroughput"),
        ({**EXAMPLE, "urlPattern": "/data/2.5/*"}, "ERR_THROTTLING_CONFIG_104", "URL pattern"),
        ({**EXAMPLE, "urlPattern": "ftp://api.example.org/x"}, "ERR_THROTTLING_CONFIG_104", "URL pattern"),
        ({**EXAMPLE, "urlPattern": "https:///x/*"}, "ERR_THROTTLING_CONFIG_104", "URL pattern"),
        ({**EXAMPLE, "urlPattern": "https://*.example.org/data/*"}, "ERR_THROTTLING_CONFIG_105", "host"),
        ({**EXAMPLE, "urlPattern": "https://api.*/data"}, "ERR_THROTTLING_CONFIG_105", "host"),
        ({**EXAMPLE, "urlPattern": 42}, "ERR_THROTTLING_CONFIG_106", "urlPattern"),
        ({**EXAMPLE, "description": "a\u0000b"}, "ERR_THROTTLING_CONFIG_106", "NUL"),
        ({**EXAMPLE, "name": "a\u0000b"}, "ERR_THROTTLING_CONFIG_106", "NUL"),
        ({**EXAMPLE, "methods": "POST"}, "ERR_THROTTLING_CONFIG_106", "methods"),
        ({**EXAMPLE, "methods": ["FETCH"]}, "ERR_THROTTLING_CONFIG_106", "FETCH"),
        ({**EXAMPLE, "name": 7}, "ERR_THROTTLING_CONFIG_106", "name"),
    ],
)
async def test_validation_errors(api: Running, body: Any, code: str, needle: str) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    for method, url in (("POST", f"{BASE}/throttlingConfigs"), ("PUT", f"{BASE}/throttlingConfigs/any")):
        response = await api.client.request(
            method, url, content=content, headers={**headers(), "Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        detail = error_of(response)
        assert detail["code"] == code and detail["family"] == "VALIDATION_ERROR"
        assert needle in detail["message"]


async def test_update_while_runtime_version_inactive_1461(api: Running, database_url: str) -> None:
    uid = (await create(api.client))["uid"]
    await deploy(api.client, uid)
    # As if an undeploy had retired the runtime version while this update was on its way.
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("UPDATE throttling_runtime SET active = false")
    finally:
        await conn.close()
    response = await api.client.put(f"{BASE}/throttlingConfigs/{uid}", json=EXAMPLE, headers=headers())
    assert response.status_code == 400
    detail = error_of(response)
    assert detail["code"] == 1461
    assert detail["message"] == "Can't update throttling config: runtime version is not active"


async def test_unexpected_failures_of_each_operation(api: Running, database_url: str) -> None:
    client = api.client
    uid = (await create(client))["uid"]
    url = f"{BASE}/throttlingConfigs/{uid}"
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    # The table is gone from under the service: every operation fails unexpectedly.
    await conn.execute("ALTER TABLE throttling_config RENAME TO throttling_config_away")
    try:
        for method, target, code in (
            ("POST", f"{BASE}/throttlingConfigs", 1464),
            ("GET", url, 1460),
            ("POST", f"{BASE}/list/throttlingConfigs", 1460),
            ("PUT", url, 1462),
            ("DELETE", url, 1457),
            ("POST", f"{url}/deploy", 1458),
            ("POST", f"{url}/undeploy", 1459),
        ):
            response = await client.request(method, target, json=EXAMPLE, headers=headers())
            assert response.status_code == 500, (method, target, response.text)
            detail = error_of(response)
            assert detail["code"] == code and detail["family"] == "INTERNAL_ERROR"
            # Nothing about the database leaks into the answer.
            assert "throttling_config" not in response.text
    finally:
        await conn.execute("ALTER TABLE throttling_config_away RENAME TO throttling_config")
        await conn.close()


async def test_other_organisations_see_nothing(api: Running) -> None:
    uid = (await create(api.client))["uid"]
    async with api.state.sessionmaker.begin() as session:
        _, key = await create_client(session, name="other org", org_id="org-b", scopes=["throttling"])
    response = await api.client.get(f"{BASE}/throttlingConfigs/{uid}", headers=headers(org="org-b", key=key))
    assert response.status_code == 404 and error_of(response)["code"] == 14467
    listing = await api.client.get(f"{BASE}/throttlingConfigs", headers=headers(org="org-b", key=key))
    assert listing.json() == {"results": [], "total": 0}
    # Its own config is allowed: one per organisation, not one in all.
    await create(api.client, key=key, org="org-b")
