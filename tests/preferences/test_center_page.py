"""The notification-center page in a real browser (Debian's chromium driven by Playwright, never
a downloaded browser), with JavaScript disabled: the lists shown, subscribe, unsubscribe, the
confirm link of a double opt-in mail, language and timezone saved. One screenshot per page state
goes to test-artifacts/ (kept by CI as artefacts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes.asgi_server import serve
from helpers import add, make_list
import prefkit
from prefkit import ANA, E, H

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "preferences"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it)")


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_the_page_without_javascript(app, client, pool, settings, ws, browser):
    fx = await prefkit.make(client, pool, settings, ws)
    await make_list(client, ws, "tips", name="Weekly tips", is_public=True)
    await make_list(client, ws, "hidden", name="Staff only", is_public=False)
    await add(pool, ws, "vip", ANA, "pending")
    data = prefkit.links(fx, list_id="vip", list_name="VIP")

    async with serve(app) as server:
        base = f"http://127.0.0.1:{server.port}"
        context = await browser.new_context(java_script_enabled=False, locale="en-US", viewport={"width": 800, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(10_000)

        # The lists: every membership (the private VIP included), then the public lists she is not on.
        r = await page.goto(data["notification_center_url"].replace(E, base))
        assert r.status == 200 and r.headers["content-type"].startswith("text/html")
        assert "set-cookie" not in r.headers and r.headers["referrer-policy"] == "no-referrer"
        assert await page.locator("script").count() == 0
        await shot(page, "01-lists")
        assert await page.get_by_role("heading", level=1).inner_text() == "Email subscriptions"
        assert "Welcome, Ana" in await page.inner_text("main")
        names = await page.locator("ul.lists h3").all_inner_texts()
        assert names == ["Newsletter", "VIP", "Weekly tips"]  # never the private list she is not on
        assert await page.locator("[data-list=news] .status").text_content() == "Status: Subscribed"
        assert await page.locator("[data-list=vip] .status").text_content() == "Status: Waiting for your confirmation"
        assert await page.get_by_label("Language").count() == 1 and await page.get_by_label("Time zone").count() == 1

        # Subscribe to a public list.
        await page.get_by_role("button", name="Subscribe Weekly tips").click()
        await page.wait_for_url("**notice=subscribed**")
        await shot(page, "02-subscribed")
        assert await page.get_by_role("status").inner_text() == "You are subscribed."
        assert await prefkit.status_of(pool, ws.id, "tips") == "active"

        # Unsubscribe from the newsletter.
        await page.get_by_role("button", name="Unsubscribe Newsletter").click()
        await page.wait_for_url("**notice=unsubscribed**")
        await shot(page, "03-unsubscribed")
        assert await page.get_by_role("status").inner_text() == "You are unsubscribed."
        assert await prefkit.status_of(pool, ws.id, "news") == "unsubscribed"
        assert await page.locator("[data-list=news] button").text_content() == "Subscribe Newsletter"

        # The confirm link of the double opt-in mail asks; the button confirms.
        await page.goto(data["confirm_subscription_url"].replace(E, base))
        await shot(page, "04-confirm-asked")
        assert await prefkit.status_of(pool, ws.id, "vip") == "pending"  # opening the link changes nothing
        assert await page.get_by_role("heading", name="Confirm your subscription to VIP").count() == 1
        await page.locator("section.ask").get_by_role("button", name="Confirm VIP").click()
        await page.wait_for_url("**notice=confirmed**")
        await shot(page, "05-confirmed")
        assert await page.get_by_role("status").inner_text() == "Your subscription is confirmed."
        assert await prefkit.status_of(pool, ws.id, "vip") == "active"

        # The unsubscribe link of a mail asks too, and marks the message it came from.
        await page.goto(data["unsubscribe_url"].replace(E, base))
        await shot(page, "06-unsubscribe-asked")
        assert await prefkit.status_of(pool, ws.id, "vip") == "active"
        await page.locator("section.ask").get_by_role("button", name="Unsubscribe VIP").click()
        await page.wait_for_url("**notice=unsubscribed**")
        assert await prefkit.status_of(pool, ws.id, "vip") == "unsubscribed"
        assert await prefkit.unsubscribed_at(pool, ws.id, fx.m1) is not None

        # Language and timezone: saved on the contact, and the page speaks French from then on.
        await page.get_by_label("Language").select_option("fr")
        await page.get_by_label("Time zone").select_option("Europe/Paris")
        await page.get_by_role("button", name="Save preferences").click()
        await page.wait_for_url("**notice=saved**")
        await shot(page, "07-saved-french")
        row = await pool.fetchrow("SELECT language, timezone FROM contacts WHERE workspace_id = $1 AND email = $2",
                                  ws.id, ANA)
        assert (row["language"], row["timezone"]) == ("fr", "Europe/Paris")
        assert await page.get_by_role("heading", level=1).inner_text() == "Abonnements e-mail"
        assert await page.get_by_role("status").inner_text() == "Vos préférences sont enregistrées."
        assert await page.get_by_label("Fuseau horaire").input_value() == "Europe/Paris"
        assert "contact.updated" in await prefkit.outbox(pool, ws.id)

        # A link that is not ana's.
        r = await page.goto(data["notification_center_url"].replace(E, base).replace(H, "0" * 64))
        assert r.status == 401
        await shot(page, "08-invalid-link")
        assert await page.get_by_role("heading", level=1).inner_text() == "This link is not valid"

        # The console's preview values.
        r = await page.goto(f"{base}/notification-center?wid={ws.id}&email=john.doe%40example.com&email_hmac=abc123")
        assert r.status == 200
        await shot(page, "09-preview")
        assert await page.get_by_role("heading", level=1).inner_text() == "Preview of the notification center"
        await context.close()


async def test_the_page_follows_the_browser_language_and_is_405_for_post(app, client, pool, settings, ws, browser):
    fx = await prefkit.make(client, pool, settings, ws)
    async with serve(app) as server:
        base = f"http://127.0.0.1:{server.port}"
        context = await browser.new_context(java_script_enabled=False, locale="de-DE")
        page = await context.new_page()
        page.set_default_timeout(10_000)
        await page.goto(prefkit.links(fx)["notification_center_url"].replace(E, base))
        await shot(page, "10-german-browser")
        assert await page.get_by_role("heading", level=1).inner_text() == "E-Mail-Abonnements"
        await context.close()
    r = await client.post(f"/notification-center?wid={ws.id}&email=ana%40example.com&email_hmac={H}")
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}
