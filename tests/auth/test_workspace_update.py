"""workspaces.update: owners rename a workspace and change its settings; the delivery settings
are checked (delivery-contract 1.4) and other keys are kept."""

from __future__ import annotations

from helpers import assert_json_error

SENDERS = [{"email": "noreply@acme.test", "name": "Acme", "is_default": True}]


async def update(client, ws, headers=None, **body):
    return await client.post("/api/workspaces.update", headers=headers or ws.headers, json={"id": ws.id, **body})


async def integration(client, ws) -> str:
    r = await client.post("/api/workspaces.createIntegration", headers=ws.headers, json={
        "workspace_id": ws.id, "name": "Relay", "type": "email",
        "provider": {"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": 2525}, "senders": SENDERS,
                     "rate_limit_per_minute": 60}})
    assert r.status_code == 201, r.text
    return r.json()["integration_id"]


async def stored(pool, ws):
    return await pool.fetchrow("SELECT name, settings FROM workspaces WHERE id = $1", ws.id)


async def test_owner_sets_the_transactional_provider_and_other_settings_are_kept(client, ws, pool):
    iid = await integration(client, ws)
    await pool.execute("""UPDATE workspaces SET settings = '{"website_url": "https://acme.test"}' WHERE id = $1""",
                       ws.id)
    r = await update(client, ws, name="Acme", settings={"transactional_email_provider_id": iid,
                                                        "email_tracking_enabled": False, "template_blocks": ["x"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == ws.id and body["name"] == "Acme"  # the workspace object itself
    assert body["settings"] == {"website_url": "https://acme.test", "transactional_email_provider_id": iid,
                                "email_tracking_enabled": False}
    assert [i["id"] for i in body["integrations"]] == [iid]
    row = await stored(pool, ws)
    assert row["name"] == "Acme" and "template_blocks" not in row["settings"]
    # without settings only the name changes; "" clears the provider
    r = await update(client, ws, name="Acme 2")
    assert r.status_code == 200 and (await stored(pool, ws))["settings"]["transactional_email_provider_id"] == iid
    r = await update(client, ws, settings={"transactional_email_provider_id": ""})
    assert r.status_code == 200 and r.json()["settings"]["transactional_email_provider_id"] == ""


async def test_refusals_name_the_value_and_change_nothing(client, ws, pool, new_workspace):
    other = await new_workspace()
    foreign = await integration(client, other)
    before = await stored(pool, ws)
    assert_json_error(await update(client, ws, settings={"transactional_email_provider_id": "nope"}), 400,
                      "transactional email provider not found: nope")
    assert_json_error(await update(client, ws, settings={"marketing_email_provider_id": foreign}), 400,
                      f"marketing email provider not found: {foreign}")  # another workspace's integration
    assert_json_error(await update(client, ws, settings={"email_tracking_enabled": "yes"}), 400,
                      "settings.email_tracking_enabled must be a boolean")
    assert_json_error(await update(client, ws, settings={"custom_endpoint_url": "ftp://x"}), 400,
                      "settings.custom_endpoint_url must be an http or https URL")
    assert_json_error(await update(client, ws, settings=[1]), 400, "settings must be an object")
    assert_json_error(await update(client, ws, name=""), 400, "name is required")
    assert_json_error(await client.post("/api/workspaces.update", headers=ws.headers, json={"name": "x"}), 400,
                      "id is required")
    assert await stored(pool, ws) == before


async def test_only_owners_update(client, ws, pool):
    reader = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}
    before = await stored(pool, ws)
    r = await update(client, ws, headers=reader, name="Mine")
    assert r.status_code == 403, r.text
    assert await stored(pool, ws) == before
