"""Root sign-in, workspaces and API keys."""

import time

from conftest import ROOT_EMAIL, SECRET
from helpers import assert_json_error

from postroom.auth import model as auth_model


def signin_body(email=ROOT_EMAIL, ts=None, secret=SECRET):
    ts = int(time.time()) if ts is None else ts
    return {"email": email, "timestamp": ts, "signature": auth_model.root_signature(secret, email, ts)}


async def root_headers(client):
    r = await client.post("/api/user.rootSignin", json=signin_body())
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_root_signin(client):
    r = await client.post("/api/user.rootSignin", json=signin_body())
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"token", "user"}
    assert data["user"]["email"] == ROOT_EMAIL and data["user"]["type"] == "user"
    claims = auth_model.decode_token(data["token"], auth_model_key())
    assert claims.type == "user" and claims.session_id


def auth_model_key():
    from postroom.platform.config import signing_key

    return signing_key(SECRET)


async def test_root_signin_refusals(client):
    now = int(time.time())
    bad_sig = signin_body()
    bad_sig["signature"] = "00" * 32
    assert_json_error(await client.post("/api/user.rootSignin", json=bad_sig), 401, "invalid email or signature")
    assert_json_error(await client.post("/api/user.rootSignin", json=signin_body(email="other@example.com")),
                      401, "invalid email or signature")
    assert_json_error(await client.post("/api/user.rootSignin", json=signin_body(ts=now - 120)),
                      401, "timestamp is more than 60 seconds away from the server's clock")
    assert_json_error(await client.post("/api/user.rootSignin", json={"email": ROOT_EMAIL, "timestamp": "x",
                                                                      "signature": "ab"}),
                      400, "timestamp must be an integer (unix seconds)")
    assert_json_error(await client.post("/api/user.rootSignin", json={"timestamp": now, "signature": "ab"}),
                      400, "email is required")


async def test_workspace_create_list_get(client, pool):
    headers = await root_headers(client)
    r = await client.post("/api/workspaces.create", headers=headers,
                          json={"id": "acme_corp-1", "name": " Acme ", "settings": {"timezone": "UTC"}})
    assert r.status_code == 200, r.text
    ws = r.json()["workspace"]
    assert ws["id"] == "acme_corp-1" and ws["name"] == "Acme" and ws["settings"] == {"timezone": "UTC"}
    assert ws["created_at"].endswith("Z")

    r = await client.get("/api/workspaces.list", headers=headers)
    assert r.status_code == 200
    listed = r.json()
    assert isinstance(listed, list)  # a bare array, as the Zapier connection test reads it
    assert "acme_corp-1" in [w["id"] for w in listed]
    # integrations[]: the email providers, secrets masked (delivery-contract 1.1, 1.3)
    assert set(listed[0]) == {"id", "name", "settings", "created_at", "updated_at", "integrations"}

    r = await client.get("/api/workspaces.get", headers=headers, params={"id": "acme_corp-1"})
    assert r.status_code == 200 and r.json()["workspace"]["name"] == "Acme"

    r = await client.post("/api/workspaces.create", headers=headers, json={"id": "acme_corp-1", "name": "Again"})
    assert_json_error(r, 409, "workspace already exists: acme_corp-1")
    assert await pool.fetchval("SELECT name FROM workspaces WHERE id = 'acme_corp-1'") == "Acme"


async def test_workspace_create_validation(client, pool):
    headers = await root_headers(client)
    for payload, message in [
        ({"name": "x"}, "id is required"),
        ({"id": "UPPER", "name": "x"}, "invalid id: must be 1-32 characters of a-z, 0-9, _ and -"),
        ({"id": "a" * 33, "name": "x"}, "invalid id: must be 1-32 characters of a-z, 0-9, _ and -"),
        ({"id": "okid", "name": "  "}, "name is required"),
        ({"id": "okid", "name": 5}, "name must be a string"),
        ({"id": "okid", "name": "x", "settings": []}, "settings must be an object"),
    ]:
        assert_json_error(await client.post("/api/workspaces.create", headers=headers, json=payload), 400, message)
    assert await pool.fetchval("SELECT count(*) FROM workspaces WHERE id = 'okid'") == 0


async def test_only_root_creates_workspaces(client, ws, pool):
    r = await client.post("/api/workspaces.create", headers=ws.headers, json={"id": "sneaky", "name": "x"})
    assert_json_error(r, 403, "only the root user can create workspaces")
    assert await pool.fetchval("SELECT count(*) FROM workspaces WHERE id = 'sneaky'") == 0


async def test_api_key_lists_only_its_workspace(client, ws, new_workspace):
    await new_workspace()
    r = await client.get("/api/workspaces.list", headers=ws.headers)
    assert [w["id"] for w in r.json()] == [ws.id]


async def test_workspaces_get_foreign_is_403(client, ws, new_workspace):
    other = await new_workspace()
    for target in (other.id, "nope"):
        r = await client.get("/api/workspaces.get", headers=ws.headers, params={"id": target})
        assert_json_error(r, 403, "user is not a member of the workspace")
    assert_json_error(await client.get("/api/workspaces.get", headers=ws.headers), 400, "id is required")


async def test_create_api_key_by_owner(client, ws):
    r = await client.post("/api/workspaces.createAPIKey", headers=ws.headers,
                          json={"workspace_id": ws.id, "email_prefix": "zapier"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["email"] == f"zapier@{ws.id}.api.postroom"
    new_headers = {"Authorization": f"Bearer {data['token']}"}
    r = await client.post("/api/contacts.upsert", headers=new_headers,
                          json={"workspace_id": ws.id, "contact": {"email": "k@example.com"}})
    assert r.status_code == 200


async def test_create_api_key_refusals(client, ws, pool):
    member_key = await ws.key("contacts:rw")
    r = await client.post("/api/workspaces.createAPIKey", headers={"Authorization": f"Bearer {member_key}"},
                          json={"workspace_id": ws.id, "email_prefix": "x"})
    assert_json_error(r, 403, "only an owner of the workspace can create API keys")
    r = await client.post("/api/workspaces.createAPIKey", headers=ws.headers, json={"workspace_id": ws.id})
    assert_json_error(r, 400, "email_prefix is required")
    r = await client.post("/api/workspaces.createAPIKey", headers=ws.headers,
                          json={"workspace_id": ws.id, "email_prefix": "has space"})
    assert r.status_code == 400 and "email_prefix" in r.json()["error"]
    assert await pool.fetchval("SELECT count(*) FROM users WHERE email LIKE 'x@%'") == 0


def test_permission_spec_parsing():
    perms = auth_model.parse_permissions("contacts:r,lists:rw")
    assert perms["contacts"] == {"read": True, "write": False}
    assert perms["lists"] == {"read": True, "write": True}
    assert perms["webhooks"] == {"read": False, "write": False}
    assert auth_model.parse_permissions(None) == auth_model.full_permissions()
    for bad in ("contact:r", "contacts:x", "contacts"):
        try:
            auth_model.parse_permissions(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")
