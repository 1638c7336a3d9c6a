"""workspaces.createIntegration / updateIntegration / deleteIntegration (delivery-contract 1):
the outer checks in order, senders, masking, the merge rule, 400/403/404, and secrets that never
leave in clear. The kind used is `fake` (the in-memory provider, which the test settings accept):
its settings have one secret (`api_key`) and one plain field (`label`)."""

from __future__ import annotations

import pytest
from helpers import assert_json_error

from postroom.delivery import integrations

SENDER = {"email": "noreply@acme.test", "name": "Acme", "is_default": True}


def provider(**over):
    base = {"kind": "fake", "fake": {"api_key": "key-1", "label": "one"}, "senders": [dict(SENDER)],
            "rate_limit_per_minute": 600}
    return {**base, **over}


async def create(client, ws, **body):
    payload = {"workspace_id": ws.id, "name": "Main relay", "type": "email", "provider": provider(), **body}
    return await client.post("/api/workspaces.createIntegration", headers=ws.headers, json=payload)


async def integrations_of(client, ws) -> list:
    r = await client.get("/api/workspaces.get", headers=ws.headers, params={"id": ws.id})
    assert r.status_code == 200, r.text
    return r.json()["workspace"]["integrations"]


async def sealed(pool, ws, iid, settings) -> dict:
    row = await pool.fetchrow("SELECT secrets FROM email_integrations WHERE workspace_id = $1 AND id = $2", ws.id, iid)
    return integrations.unseal(settings.key_bytes, ws.id, iid, row["secrets"])


async def test_create_masks_and_seals(client, ws, pool, settings):
    r = await create(client, ws, provider=provider(senders=[{**SENDER, "id": "not-a-uuid"}, {
        "email": "b@acme.test", "name": "B", "id": ""}], max_concurrency=3))
    assert r.status_code == 201, r.text
    iid = r.json()["integration_id"]
    assert r.json() == {"status": "success", "integration_id": iid}
    (got,) = await integrations_of(client, ws)
    assert got["id"] == iid and got["name"] == "Main relay" and got["type"] == "email"
    ep = got["email_provider"]
    assert ep["fake"] == {"api_key": "********", "label": "one"}
    assert ep["rate_limit_per_minute"] == 600 and ep["max_concurrency"] == 3
    ids = [s["id"] for s in ep["senders"]]
    assert all(len(i) == 36 and i != "not-a-uuid" for i in ids) and ids[0] != ids[1]
    assert ep["senders"][1]["is_default"] is False
    listed = await client.get("/api/workspaces.list", headers=ws.headers)
    assert "key-1" not in listed.text and "encrypted_" not in listed.text
    raw = await pool.fetchrow("SELECT settings, secrets FROM email_integrations WHERE id = $1", iid)
    assert "key-1" not in str(raw["settings"]) and b"key-1" not in bytes(raw["secrets"])
    assert await sealed(pool, ws, iid, settings) == {"api_key": "key-1"}


@pytest.mark.parametrize("change, message", [
    ({"name": ""}, "integration name is required"),
    ({"name": "x" * 256}, "integration name exceeds 255 characters"),
    ({"type": ""}, "integration type is required"),
    ({"type": "llm"}, "unsupported integration type: llm"),
    ({"provider": provider(kind="")}, "invalid provider configuration: email provider kind is required"),
    ({"provider": provider(rate_limit_per_minute=0)},
     "invalid provider configuration: rate limit per minute is required and must be greater than 0"),
    ({"provider": provider(senders=[])}, "invalid provider configuration: at least one sender is required"),
    ({"provider": provider(senders=[{"email": "bad", "name": "x"}])},
     "invalid provider configuration: invalid sender email: bad at index 0"),
    ({"provider": provider(senders=[SENDER, {"name": "x"}])},
     "invalid provider configuration: sender email is required for sender at index 1"),
    ({"provider": provider(senders=[{"email": "a@b.test"}])},
     "invalid provider configuration: sender name is required for sender at index 0"),
    ({"provider": provider(max_concurrency=65)}, "invalid provider configuration: max concurrency must be between 1 and 64"),
    ({"provider": provider(kind="smtp")},
     "invalid provider configuration: SMTP settings required when email provider kind is smtp"),
    ({"provider": provider(kind="postmark")},
     "invalid provider configuration: postmark settings required when email provider kind is postmark"),
    ({"provider": provider(kind="foo")}, "invalid provider configuration: invalid email provider kind: foo"),
    ({"provider": provider(fake={"label": "no key"})},
     "invalid provider configuration: api key is required for fake configuration"),
    ({"provider": provider(fake={"api_key": "********"})},
     "invalid provider configuration: api key is required for fake configuration"),
    # first failure wins: the rate before the senders, the senders before the kind
    ({"provider": provider(rate_limit_per_minute=-1, senders=[])},
     "invalid provider configuration: rate limit per minute is required and must be greater than 0"),
    ({"provider": provider(kind="foo", senders=[])}, "invalid provider configuration: at least one sender is required"),
])
async def test_create_checks_in_order(client, ws, pool, change, message):
    assert_json_error(await create(client, ws, **change), 400, message)
    assert await pool.fetchval("SELECT count(*) FROM email_integrations WHERE workspace_id = $1", ws.id) == 0


async def test_fake_kind_is_refused_on_a_real_server(client, ws, settings, monkeypatch):
    monkeypatch.setattr(settings, "delivery_fake_provider", False)
    assert_json_error(await create(client, ws), 400, "invalid provider configuration: invalid email provider kind: fake")


async def test_owner_only_and_validation_first(client, ws, new_workspace):
    member = {"Authorization": f"Bearer {await ws.key('workspace:rw,message_history:r')}"}
    r = await client.post("/api/workspaces.createIntegration", headers=member, json={
        "workspace_id": ws.id, "name": "x", "type": "email", "provider": provider()})
    assert_json_error(r, 403, "user is not an owner of the workspace")
    r = await client.post("/api/workspaces.createIntegration", headers=member, json={
        "workspace_id": ws.id, "name": "", "type": "email", "provider": provider()})
    assert_json_error(r, 400, "integration name is required")
    other = await new_workspace()
    r = await client.post("/api/workspaces.createIntegration", headers=other.headers, json={
        "workspace_id": ws.id, "name": "x", "type": "llm"})
    assert_json_error(r, 400, "unsupported integration type: llm")
    r = await client.post("/api/workspaces.createIntegration", headers=other.headers, json={"name": "x"})
    assert_json_error(r, 400, "workspace ID is required")


async def test_update_merge_rule(client, ws, pool, settings):
    iid = (await create(client, ws, provider=provider(max_concurrency=4))).json()["integration_id"]

    async def update(**body):
        return await client.post("/api/workspaces.updateIntegration", headers=ws.headers, json={
            "workspace_id": ws.id, "integration_id": iid, "name": "Renamed", **body})

    r = await update()                                            # no provider: only the name changes
    assert r.json() == {"status": "success", "message": "Integration updated successfully"}
    (got,) = await integrations_of(client, ws)
    assert got["name"] == "Renamed" and got["email_provider"]["fake"]["label"] == "one"
    assert await sealed(pool, ws, iid, settings) == {"api_key": "key-1"}
    # the object as read (masked secret), with a new sender name: the secret is kept
    read = dict(got["email_provider"])
    read["senders"] = [{**read["senders"][0], "name": "Acme Billing"}]
    read.pop("max_concurrency")                                  # a client that does not know it
    assert (await update(provider=read)).status_code == 200
    (got,) = await integrations_of(client, ws)
    assert got["email_provider"]["senders"][0]["name"] == "Acme Billing"
    assert got["email_provider"]["max_concurrency"] == 4       # Postroom-only: kept
    assert await sealed(pool, ws, iid, settings) == {"api_key": "key-1"}
    # an absent or empty secret is kept too; a new value replaces it
    assert (await update(provider=provider(fake={"label": "two", "api_key": ""}))).status_code == 200
    assert await sealed(pool, ws, iid, settings) == {"api_key": "key-1"}
    assert (await update(provider=provider(fake={"api_key": "key-2"}))).status_code == 200
    assert await sealed(pool, ws, iid, settings) == {"api_key": "key-2"}
    (got,) = await integrations_of(client, ws)
    assert got["email_provider"]["fake"] == {"api_key": "********", "label": ""}   # as the kind normalised it
    # clearing a required secret is refused, and nothing changes
    assert_json_error(await update(provider=provider(fake={"api_key": None})), 400,
                      "invalid provider configuration: api key is required for fake configuration")
    assert await sealed(pool, ws, iid, settings) == {"api_key": "key-2"}


async def test_update_and_delete_errors(client, ws):
    iid = (await create(client, ws)).json()["integration_id"]
    h = ws.headers
    r = await client.post("/api/workspaces.updateIntegration", headers=h, json={"workspace_id": ws.id, "name": "x"})
    assert_json_error(r, 400, "integration ID is required")
    r = await client.post("/api/workspaces.updateIntegration", headers=h, json={"workspace_id": ws.id,
                                                                                 "integration_id": iid})
    assert_json_error(r, 400, "integration name is required")
    for unknown in ("00000000-0000-4000-8000-000000000000", "nope"):
        r = await client.post("/api/workspaces.updateIntegration", headers=h, json={
            "workspace_id": ws.id, "integration_id": unknown, "name": "x"})
        assert_json_error(r, 404, "integration not found")
        r = await client.post("/api/workspaces.deleteIntegration", headers=h, json={
            "workspace_id": ws.id, "integration_id": unknown})
        assert_json_error(r, 404, "integration not found")
    r = await client.post("/api/workspaces.deleteIntegration", headers=h, json={"workspace_id": ws.id})
    assert_json_error(r, 400, "integration ID is required")
    member = {"Authorization": f"Bearer {await ws.key('workspace:rw')}"}
    r = await client.post("/api/workspaces.deleteIntegration", headers=member, json={
        "workspace_id": ws.id, "integration_id": iid})
    assert_json_error(r, 403, "user is not an owner of the workspace")


async def test_delete_clears_the_provider_ids_that_named_it(client, ws, pool):
    iid = (await create(client, ws)).json()["integration_id"]
    keep = (await create(client, ws, name="Other")).json()["integration_id"]
    await pool.execute("UPDATE workspaces SET settings = $2 WHERE id = $1", ws.id,
                       {"transactional_email_provider_id": iid, "marketing_email_provider_id": keep, "x": 1})
    r = await client.post("/api/workspaces.deleteIntegration", headers=ws.headers, json={
        "workspace_id": ws.id, "integration_id": iid})
    assert r.json() == {"status": "success", "message": "Integration deleted successfully"}
    settings = await pool.fetchval("SELECT settings FROM workspaces WHERE id = $1", ws.id)
    assert settings == {"transactional_email_provider_id": "", "marketing_email_provider_id": keep, "x": 1}
    assert [i["id"] for i in await integrations_of(client, ws)] == [keep]


# ---------------------------------------------------------------- email.testProvider

@pytest.fixture
def test_fake(app, monkeypatch):
    """The provider email.testProvider builds: the fake, so the test sees what it was given."""
    from postroom.delivery.providers.fake import Fake

    fake = Fake()
    monkeypatch.setattr(app.state, "provider_factory", fake.factory, raising=False)
    return fake


async def test_provider_sends_one_fixed_message_without_history(client, ws, pool, test_fake):
    body = {"workspace_id": ws.id, "to": "t@example.com", "provider": provider(senders=[
        {"email": "first@acme.test", "name": "First"}, {**SENDER}])}
    r = await client.post("/api/email.testProvider", headers=ws.headers, json=body)
    assert r.json() == {"success": True}, r.text
    (call,) = test_fake.calls
    m = call.message
    assert (m.to, m.subject, m.from_address, m.from_name) == ("t@example.com", "Postroom: Test Email Provider",
                                                               "noreply@acme.test", "Acme")   # the default sender
    assert call.settings.api_key == "key-1"
    assert await pool.fetchval("SELECT count(*) FROM message_history WHERE workspace_id = $1", ws.id) == 0


async def test_provider_failure_is_a_200(client, ws, test_fake):
    from postroom.delivery.providers.fake import Step

    test_fake.plan.append(Step("provider", "fake: HTTP 401: bad key"))
    r = await client.post("/api/email.testProvider", headers=ws.headers, json={
        "workspace_id": ws.id, "to": "t@example.com", "provider": provider()})
    assert r.json() == {"success": False, "error": "failed to test provider: fake: HTTP 401: bad key"}


async def test_provider_masked_secrets_come_from_the_stored_integration(client, ws, test_fake):
    iid = (await create(client, ws)).json()["integration_id"]
    (read,) = await integrations_of(client, ws)
    body = {"workspace_id": ws.id, "to": "t@example.com", "provider": read["email_provider"]}
    assert (await client.post("/api/email.testProvider", headers=ws.headers, json=body)).json() == {"success": True}
    r = await client.post("/api/email.testProvider", headers=ws.headers, json={**body, "integration_id": iid})
    assert r.json() == {"success": True}
    assert [c.settings.api_key for c in test_fake.calls] == ["key-1", "key-1"]
    # plain settings that match no integration: the masked secret cannot be resolved
    other = {**read["email_provider"], "fake": {"api_key": "********", "label": "changed"}}
    r = await client.post("/api/email.testProvider", headers=ws.headers, json={**body, "provider": other})
    assert_json_error(r, 400, "provider secret is masked: pass integration_id")
    r = await client.post("/api/email.testProvider", headers=ws.headers, json={
        **body, "integration_id": "00000000-0000-4000-8000-000000000000"})
    assert_json_error(r, 404, "integration not found")


@pytest.mark.parametrize("change, status, message", [
    ({"to": ""}, 400, "Missing recipient email (to)"),
    ({"workspace_id": ""}, 400, "Missing workspace ID"),
    ({"to": "nope"}, 400, "Invalid recipient email (to)"),
    ({"workspace_id": "", "to": ""}, 400, "Missing recipient email (to)"),
    ({"provider": provider(senders=[])}, 400, "invalid provider configuration: at least one sender is required"),
])
async def test_provider_checks(client, ws, test_fake, change, status, message):
    body = {"workspace_id": ws.id, "to": "t@example.com", "provider": provider(), **change}
    assert_json_error(await client.post("/api/email.testProvider", headers=ws.headers, json=body), status, message)
    assert test_fake.calls == []


async def test_provider_needs_workspace_write(client, ws, test_fake):
    reader = {"Authorization": f"Bearer {await ws.key('workspace:r')}"}
    r = await client.post("/api/email.testProvider", headers=reader, json={
        "workspace_id": ws.id, "to": "t@example.com", "provider": provider()})
    assert_json_error(r, 403, "Insufficient permissions: write access to workspace required")
