"""The edge every endpoint shares: 401 strings, 403, 404, 405, 413, CORS and the JSON envelope."""

import time

import asyncpg
import httpx
import jwt
import pytest

from helpers import assert_json_error

from postroom.auth import model as auth_model
from postroom.platform.http import Edge

UPSERT = "/api/contacts.upsert"


def body(ws_id, email="edge@example.com"):
    return {"workspace_id": ws_id, "contact": {"email": email}}


async def count_contacts(pool, ws_id):
    return await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws_id)


@pytest.mark.parametrize("header, message", [
    (None, "Authorization header is required"),
    ("", "Authorization header is required"),
    ("Basic abc", "Invalid authorization header format"),
    ("Bearer", "Invalid authorization header format"),
    ("Bearer a b", "Invalid authorization header format"),
])
async def test_401_header_shapes(client, ws, pool, header, message):
    headers = {} if header is None else {"Authorization": header}
    r = await client.post(UPSERT, json=body(ws.id), headers=headers)
    assert_json_error(r, 401, message)
    assert await count_contacts(pool, ws.id) == 0


async def test_bearer_scheme_is_case_insensitive(client, ws):
    r = await client.post(UPSERT, json=body(ws.id), headers={"Authorization": f"bEaReR {ws.token}"})
    assert r.status_code == 200, r.text


def token(settings, **claims):
    now = int(time.time())
    base = {"iat": now, "exp": now + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, settings.key_bytes, algorithm="HS256")


async def test_401_token_problems(client, ws, settings):
    user_id = "6f1c3a1e-0000-4000-8000-000000000001"
    cases = [
        ("not-a-jwt", "Invalid token: Not enough segments"),
        (jwt.encode({"user_id": user_id, "type": "api_key"}, b"another key of enough length 1234", algorithm="HS256"),
         "Invalid token: Signature verification failed"),
        (token(settings, user_id=user_id, type="api_key", exp=int(time.time()) - 10),
         "Invalid token: Signature has expired"),
        (token(settings, type="api_key"), "User ID not found in token"),
        (token(settings, user_id=user_id), "User type not found in token"),
    ]
    for tok, message in cases:
        r = await client.post(UPSERT, json=body(ws.id), headers={"Authorization": f"Bearer {tok}"})
        assert_json_error(r, 401, message)


async def test_auth_is_checked_before_method(client):
    r = await client.get(UPSERT)
    assert_json_error(r, 401, "Authorization header is required")


async def test_405_with_valid_token(client, ws):
    r = await client.get(UPSERT, headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 405, "Method not allowed")


async def test_unknown_api_path_is_json_404(client, ws):
    r = await client.post("/api/contacts.nope", headers=ws.headers, json={})
    assert_json_error(r, 404, "not found")
    r = await client.get("/nowhere")
    assert_json_error(r, 404, "not found")


async def test_403_foreign_and_missing_workspace(client, ws, new_workspace, pool):
    other = await new_workspace()
    for target in (other.id, "does-not-exist"):
        r = await client.post(UPSERT, json=body(target), headers=ws.headers)
        assert_json_error(r, 403, "user is not a member of the workspace")
    assert await count_contacts(pool, other.id) == 0


async def test_403_read_only_key(client, ws, pool):
    key = await ws.key("contacts:r")
    r = await client.post(UPSERT, json=body(ws.id), headers={"Authorization": f"Bearer {key}"})
    assert_json_error(r, 403, "Insufficient permissions: write access to contacts required")
    assert await count_contacts(pool, ws.id) == 0


async def test_write_key_of_other_resource_is_refused(client, ws):
    key = await ws.key("lists:rw")
    r = await client.post(UPSERT, json=body(ws.id), headers={"Authorization": f"Bearer {key}"})
    assert_json_error(r, 403, "Insufficient permissions: write access to contacts required")


async def test_key_with_write_access_works(client, ws):
    key = await ws.key("contacts:rw")
    r = await client.post(UPSERT, json=body(ws.id), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200


async def test_workspace_id_rules(client, ws):
    r = await client.post(UPSERT, json={"contact": {"email": "a@example.com"}}, headers=ws.headers)
    assert_json_error(r, 400, "workspace_id is required")
    r = await client.post(UPSERT, json={"workspace_id": 42, "contact": {}}, headers=ws.headers)
    assert_json_error(r, 400, "workspace_id must be a string")
    r = await client.post(UPSERT, json={"workspace_id": "Bad Id!", "contact": {}}, headers=ws.headers)
    assert r.status_code == 400 and "workspace_id" in r.json()["error"]


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'{"workspace_id": "x"', b"", b"\xff\xfe"])
async def test_invalid_body(client, ws, raw):
    r = await client.post(UPSERT, content=raw, headers={**ws.headers, "Content-Type": "application/json"})
    assert_json_error(r, 400, "Invalid request body")


async def test_413_over_the_limit(client, ws, pool, settings):
    big = {"workspace_id": ws.id, "contact": {"email": "big@example.com", "custom_string_1": "x" * settings.max_body_bytes}}
    r = await client.post(UPSERT, json=big, headers=ws.headers)
    assert r.status_code == 413
    assert r.json()["error"] == f"request body exceeds the limit of {settings.max_body_bytes} bytes"
    assert await count_contacts(pool, ws.id) == 0


async def test_413_when_streamed_without_length(client, ws, settings):
    async def chunks():
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    r = await client.post(UPSERT, content=chunks(), headers=ws.headers)
    assert r.status_code == 413


@pytest.mark.parametrize("headers", [
    {},
    {"Origin": "https://app.example.com"},
    {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
     "Access-Control-Request-Headers": "authorization,content-type"},
])
async def test_options_anywhere(client, headers):
    for path in (UPSERT, "/api/whatever", "/healthz", "/"):
        r = await client.options(path, headers=headers)
        assert r.status_code == 200 and r.content == b""
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE, OPTIONS"
        assert "Authorization" in r.headers["access-control-allow-headers"]


async def test_cors_on_errors_and_successes(client, ws):
    r = await client.post(UPSERT, json=body(ws.id))
    assert r.headers["access-control-allow-origin"] == "*"
    r = await client.post(UPSERT, json=body(ws.id), headers=ws.headers)
    assert r.headers["access-control-allow-origin"] == "*"


async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await client.post("/healthz")
    assert_json_error(r, 405, "Method not allowed")


async def test_user_token_needs_live_session(client, settings, pool, ws):
    user_id = await pool.fetchval("INSERT INTO users (email, type) VALUES ('sess@example.com', 'user') RETURNING id::text")
    tok = auth_model.issue_token(settings.key_bytes, user_id, "user", "6f1c3a1e-0000-4000-8000-0000000000ff")
    r = await client.post(UPSERT, json=body(ws.id), headers={"Authorization": f"Bearer {tok}"})
    assert_json_error(r, 401, "Invalid token: session expired or signed out")


@pytest.mark.parametrize("error, status, message", [
    # the connection is gone: an outage, answered 503 so that clients retry
    (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
     503, "database unavailable"),
    (ConnectionResetError("reset by peer"), 503, "database unavailable"),
    # the driver refused a value we sent: our bug, not an outage, so 500 and a logged traceback
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), 500, "internal server error"),
    (RuntimeError("a bug"), 500, "internal server error"),
])
async def test_edge_tells_outages_from_bugs(error, status, message, caplog):
    async def fails(scope, receive, send):
        raise error

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=Edge(fails, state=None)),
                                 base_url="http://postroom.test") as c:
        r = await c.get("/anything")
    assert r.status_code == status and r.json() == {"error": message}
    assert ("Retry-After" in r.headers) == (status == 503)
    assert "Traceback" not in r.text
    logged = [rec for rec in caplog.records if rec.name == "postroom.http"]
    assert len(logged) == 1 and bool(logged[0].exc_info) == (status == 500)


async def test_an_outage_is_logged_once_a_second_with_a_count(caplog):
    from postroom.platform import http

    clock = [1000.0]

    async def fails(scope, receive, send):
        raise ConnectionRefusedError("refused")

    edge = Edge(fails, state=None)
    edge.clock = lambda: clock[0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://postroom.test") as c:
        for _ in range(5):
            assert (await c.get("/api/contacts.count")).status_code == 503
        clock[0] += http.OUTAGE_LOG_EVERY
        assert (await c.get("/api/contacts.count")).status_code == 503
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "postroom.http"]
    assert len(lines) == 2
    assert "more since" not in lines[0] and lines[1].endswith("(4 more since the last line)")
