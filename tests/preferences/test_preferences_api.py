"""GET and POST /preferences (engagement contract 2.5, 2.6; checks 28-32)."""

from __future__ import annotations

import pytest
from postroom.templates.render.context import email_hmac

from helpers import assert_json_error
import prefkit
from prefkit import ANA, H


@pytest.fixture
async def fx(client, pool, settings, ws):
    return await prefkit.make(client, pool, settings, ws)


def query(fx, **over) -> dict:
    return {"workspace_id": fx.id, "email": ANA, "email_hmac": H, **over}


async def test_get_shows_six_fields_public_lists_and_memberships(client, fx):
    r = await client.get("/preferences", params=query(fx))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["contact"] == {"email": ANA, "first_name": "Ana"}  # no phone
    assert [lst["id"] for lst in body["public_lists"]] == ["news"]
    assert [(m["list_id"], m["status"], m["list_name"]) for m in body["contact_lists"]] == [
        ("news", "active", "Newsletter")]
    assert body["logo_url"] == "https://acme.example/logo.png" and body["website_url"] == "https://acme.example/"
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize("drop, message", [
    ("email", "email is required"), ("email_hmac", "email_hmac is required"),
    ("workspace_id", "workspace_id is required")])
async def test_get_names_what_is_missing(client, fx, drop, message):
    params = query(fx)
    del params[drop]
    assert_json_error(await client.get("/preferences", params=params), 400, message)


async def test_get_refuses_a_wrong_hmac_an_unknown_workspace_and_an_unknown_contact(client, fx):
    assert_json_error(await client.get("/preferences", params=query(fx, email_hmac="0" * 64)), 401,
                      "Unauthorized: invalid verification")
    assert_json_error(await client.get("/preferences", params=query(fx, workspace_id="nope")), 401,
                      "Unauthorized: invalid verification")
    nobody = "nobody@example.com"
    r = await client.get("/preferences", params=query(fx, email=nobody, email_hmac=email_hmac(nobody, prefkit.SECRET_HEX)))
    assert_json_error(r, 404, "Contact not found")


async def test_post_sets_language_and_timezone_with_contact_updated(client, pool, fx):
    r = await client.post("/preferences", json={**query(fx), "language": "fr"})
    assert r.status_code == 200 and r.json() == {"success": True}
    r = await client.post("/preferences", json={**query(fx), "timezone": "europe/paris"})
    assert r.status_code == 200
    row = await pool.fetchrow("SELECT language, timezone FROM contacts WHERE workspace_id = $1 AND email = $2",
                              fx.id, ANA)
    assert (row["language"], row["timezone"]) == ("fr", "Europe/Paris")
    assert (await prefkit.outbox(pool, fx.id)).count("contact.updated") == 2


@pytest.mark.parametrize("extra, message", [
    ({"language": "FR"}, "language must be a 2-letter lowercase code"),
    ({}, "at least one of language or timezone must be provided"),
    ({"language": "", "timezone": ""}, "at least one of language or timezone must be provided"),
    ({"timezone": "Mars/Base"}, "invalid timezone: Mars/Base"),
    ({"timezone": "X"}, "timezone must be between 2 and 50 characters"),
    ({"timezone": 7}, "timezone must be a string"),
])
async def test_post_refuses_bad_values_and_changes_nothing(client, pool, fx, extra, message):
    before = await prefkit.stored(pool, fx.id)
    assert_json_error(await client.post("/preferences", json={**query(fx), **extra}), 400, message)
    assert await prefkit.stored(pool, fx.id) == before


async def test_post_needs_an_object_and_the_identity(client, pool, fx):
    assert_json_error(await client.post("/preferences", content=b"[1]", headers={"Content-Type": "application/json"}),
                      400, "Invalid request body")
    assert_json_error(await client.post("/preferences", json={"email": ANA, "email_hmac": H, "language": "fr"}),
                      400, "workspace_id is required")
    assert_json_error(await client.post("/preferences", json={**query(fx, email_hmac="a" * 64), "language": "fr"}),
                      401, "Unauthorized: invalid verification")


async def test_post_never_creates_a_contact(client, pool, fx):
    nobody = "nobody@example.com"
    r = await client.post("/preferences", json={**query(fx, email=nobody, email_hmac=email_hmac(nobody, prefkit.SECRET_HEX)),
                                                "language": "fr"})
    assert_json_error(r, 404, "Contact not found")
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1 AND email = $2", fx.id, nobody) == 0


async def test_post_limit_is_20_a_minute_per_email(client, fx):
    for _ in range(20):
        assert (await client.post("/preferences", json={**query(fx), "language": "de"})).status_code == 200
    r = await client.post("/preferences", json={**query(fx), "language": "de"})
    assert_json_error(r, 429, "Too many requests. Please try again later.")
    assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_get_limit_is_100_a_minute_per_address(client, fx):
    for _ in range(100):
        assert (await client.get("/preferences", params=query(fx))).status_code == 200
    r = await client.get("/preferences", params=query(fx))
    assert_json_error(r, 429, "Too many requests. Please try again later.")
    assert "retry-after" in r.headers


async def test_other_methods_are_405(client, fx):
    assert_json_error(await client.delete("/preferences"), 405, "Method not allowed")
