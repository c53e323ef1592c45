"""The seed's acceptance, in a real browser: an order created in B's web admin and then changed
there appears, changed, on A. Headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.orders.conftest import Instance

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HEADERS = {"X-API-Key": ADMIN_KEY}

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium package is not installed (make test installs it)",
)


async def test_order_created_and_changed_in_b_admin_appears_on_a(pair: tuple[Instance, Instance]) -> None:
    from playwright.async_api import async_playwright

    a, b = pair
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page()
        try:
            await page.goto(f"{b.url}/admin/login")
            await page.fill("input[name=username]", "ops")
            await page.fill("input[name=password]", ADMIN_KEY)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{b.url}/admin/")

            # Create the order in B's admin.
            await page.goto(f"{b.url}/admin/order/create")
            await page.fill("input[name=customer_name]", "Grace Hopper")
            await page.fill("input[name=customer_email]", "grace@example.com")
            await page.fill("input[name=currency]", "EUR")
            await page.fill("textarea[name=lines]", "PLN20; Prepaid 20; 2; 10.25\nPLN50; Prepaid 50; 1; 4.50")
            await page.fill("textarea[name=notes]", "made in B's admin")
            await page.click("input[type=submit][value=Save]")
            await page.wait_for_url(f"{b.url}/admin/order/list**")

            async with httpx.AsyncClient(timeout=30) as http:
                found = (
                    await http.get(
                        f"{b.url}/v1/orders", params={"email": "grace@example.com"}, headers=HEADERS
                    )
                ).json()["items"]
                assert len(found) == 1, found
                order: dict[str, Any] = found[0]
                assert order["total"] == "25.00" and order["version"] == 1

                # Change it in B's admin.
                await page.goto(f"{b.url}/admin/order/edit/{order['id']}")
                assert await page.input_value("textarea[name=notes]") == "made in B's admin"
                await page.fill("textarea[name=notes]", "changed in B's admin")
                await page.select_option("select[name=status]", "paid")
                await page.fill("textarea[name=lines]", "PLN20; Prepaid 20; 3; 10.25")
                await page.click("input[type=submit][value=Save]")
                await page.wait_for_url(f"{b.url}/admin/order/list**")

                # Sync from B's admin page, then read A.
                await page.goto(f"{b.url}/admin/sync-status")
                await page.click("#sync-now")
                await page.wait_for_selector("#sync-result")
                assert "pushed" in (await page.text_content("#sync-result") or "")

                on_a = (await http.get(f"{a.url}/v1/orders/{order['id']}", headers=HEADERS)).json()
                assert on_a["notes"] == "changed in B's admin"
                assert on_a["status"] == "paid" and on_a["total"] == "30.75" and on_a["version"] == 2
                assert on_a["changed_by"] == "b" and on_a["sync_state"] == "ST_OK"

            # A's admin shows it too.
            await page.goto(f"{a.url}/admin/login")
            await page.fill("input[name=username]", "ops")
            await page.fill("input[name=password]", ADMIN_KEY)
            await page.click("button[type=submit]")
            await page.goto(f"{a.url}/admin/order/details/{order['id']}")
            assert (
                "changed in B&#39;s admin" in await page.content()
                or "changed in B's admin" in await page.content()
            )
        finally:
            await browser.close()
