"""templates.* and templateBlocks.* against PostgreSQL, through the app: what runs without the render
engine. Versions, the merge rule, deletion, listing, concurrency, integration ownership, the
400-before-403 order, permissions and the body limits are shown with web templates (which the
engine has no part in); every check of 2.3 that comes before the engine is asked is shown on email
templates. The contract's section 8 checks, which store email templates, are in
test_templates_contract.py."""

from __future__ import annotations

import asyncio
import time
import uuid

import fixtures_api
import pytest
from helpers import assert_json_error

from postroom.templates import store

from fixtures_api import create, get, listed, ok, web_template

C = "invalid create template request: "
fx, default_limit_client = fixtures_api.fx, fixtures_api.default_limit_client  # this module's fixtures


# ---------------------------------------------------------------- create, get, list

async def test_create_and_read_back(client, fx):
    ws = fx.ws1
    made = await create(client, ws, web_template(ws.id, test_data={"contact": {"first_name": "Ann"}},
                                                 settings={"layout": "wide"}, template_macro_id="m1"))
    assert list(made) == ["id", "name", "version", "channel", "web", "category", "template_macro_id", "test_data",
                          "settings", "created_at", "updated_at"]
    assert made["version"] == 1 and made["created_at"] == made["updated_at"]
    assert made["web"] == {"content": {"type": "doc", "content": [{"type": "paragraph"}]}, "html": "<p>Hi</p>",
                           "plain_text": "Hi"}
    assert (await ok(await get(client, ws, "post")))["template"] == made
    assert (await ok(await get(client, ws, "post", version="1")))["template"] == made
    assert await listed(client, ws) == [made]


async def test_ids_are_per_workspace_and_forever(client, fx):
    await create(client, fx.ws1, web_template(fx.ws1.id))
    r = await client.post("/api/templates.create", headers=fx.owner, json=web_template(fx.ws1.id, name="Again"))
    assert_json_error(r, 400, "Template id already exists")
    await create(client, fx.ws2, web_template(fx.ws2.id))
    r = await get(client, fx.ws2, "post", version="1")
    assert (await ok(r))["template"]["name"] == "Post"


async def test_concurrent_creates_of_one_id(client, fx):
    rs = await asyncio.gather(*[client.post("/api/templates.create", headers=fx.owner,
                                            json=web_template(fx.ws1.id, name=f"n{i}")) for i in range(10)])
    assert sorted(r.status_code for r in rs) == [201] + [400] * 9
    assert all(r.json() == {"error": "Template id already exists"} for r in rs if r.status_code == 400)


async def test_list_filters_and_order(client, fx, pool):
    ws = fx.ws1
    assert await listed(client, fx.ws2) == []
    await create(client, ws, web_template(ws.id, "b_post"))
    await create(client, ws, web_template(ws.id, "a_post", category="marketing"))
    await create(client, ws, web_template(ws.id, "c_post"))
    # one instant for two of them: the id orders them
    await pool.execute("UPDATE template_heads SET updated_at = '2025-01-01T00:00:00Z'"
                       " WHERE workspace_id = $1 AND id IN ('a_post', 'c_post')", ws.id)
    assert [t["id"] for t in await listed(client, ws)] == ["b_post", "a_post", "c_post"]
    assert [t["id"] for t in await listed(client, ws, category="marketing")] == ["a_post"]
    assert await listed(client, ws, category="newsletter") == []
    assert len(await listed(client, ws, channel="web")) == 3
    assert await listed(client, ws, channel="email") == []
    assert await listed(client, ws, channel="") == await listed(client, ws)
    assert await listed(client, fx.ws24) == []


async def test_get_errors(client, fx):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id))
    for params in ({"version": "9"}, {"version": "1", "id": "nope"}, {"version": str(2 ** 31)},
                   {"version": str(2 ** 63 - 1)}):
        r = await client.get("/api/templates.get", headers=ws.headers,
                             params={"workspace_id": ws.id, "id": "post", **params})
        assert_json_error(r, 404, "Template not found")
    r = await get(client, ws, "post", version="abc")
    assert_json_error(r, 400, "invalid get template request: version must be a valid integer")
    r = await get(client, fx.ws2, "post")
    assert_json_error(r, 404, "Template not found")
    r = await get(client, ws, "post", version="0")
    assert (await ok(r))["template"]["version"] == 1
    r = await get(client, ws, "post", version="-1")
    assert (await ok(r))["template"]["version"] == 1


# ---------------------------------------------------------------- versions and the merge rule

async def test_update_appends_a_version(client, fx):
    ws = fx.ws1
    first = await create(client, ws, web_template(ws.id, test_data={"a": 1}))
    r = await client.post("/api/templates.update", headers=ws.headers,
                          json=web_template(ws.id, name="Post 2", version=7))
    second = (await ok(r))["template"]
    assert second["version"] == 2 and second["name"] == "Post 2"
    assert second["created_at"] == first["created_at"] and second["updated_at"] > first["updated_at"]
    assert (await ok(await get(client, ws, "post", version="1")))["template"] == first
    assert (await ok(await get(client, ws, "post")))["template"] == second
    assert await listed(client, ws) == [second]


async def test_the_merge_rule(client, fx):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id, test_data={"contact": {"first_name": "Ann"}}, settings={"s": 1},
                                          template_macro_id="m1",
                                          translations={"fr": {"web": {"content": {"type": "doc"}}}}))
    kept = (await ok(await client.post("/api/templates.update", headers=ws.headers, json=web_template(ws.id))))
    kept = kept["template"]
    assert kept["test_data"]["contact"]["first_name"] == "Ann" and kept["settings"] == {"s": 1}
    assert kept["template_macro_id"] == "m1" and kept["translations"] == {"fr": {"web": {"content": {"type": "doc"}}}}
    cleared = await ok(await client.post("/api/templates.update", headers=ws.headers, json=web_template(
        ws.id, test_data=None, settings=None, template_macro_id=None, translations=None)))
    assert [k for k in ("test_data", "settings", "template_macro_id", "translations")
            if k in cleared["template"]] == []
    assert cleared["template"]["version"] == 3


async def test_a_channel_change_checks_the_new_channels_part(client, fx):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id))
    r = await client.post("/api/templates.update", headers=ws.headers, json=web_template(
        ws.id, channel="email", web=None, email={"subject": "Hi"}))
    assert_json_error(r, 400, "invalid update template request: invalid email template: visual_editor_tree must have"
                              " type 'mjml'")
    r = await client.post("/api/templates.update", headers=ws.headers, json=web_template(
        ws.id, email={"subject": "Hi"}))
    assert_json_error(r, 400, "invalid update template request: email must be nil for channel 'web'")


async def test_ten_concurrent_updates_get_consecutive_versions(client, fx):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id))
    rs = await asyncio.gather(*[client.post("/api/templates.update", headers=ws.headers,
                                            json=web_template(ws.id, name=f"v{i}")) for i in range(10)])
    assert [r.status_code for r in rs] == [200] * 10, [r.text for r in rs]
    versions = sorted(r.json()["template"]["version"] for r in rs)
    assert versions == list(range(2, 12))
    latest = (await ok(await get(client, ws, "post")))["template"]
    assert latest["version"] == 11
    by_version = {r.json()["template"]["version"]: r.json()["template"] for r in rs}
    assert latest == by_version[11]
    times = [by_version[v]["updated_at"] for v in range(2, 12)]
    assert times == sorted(times)  # written one after the other


async def test_update_of_an_unknown_template(client, fx):
    r = await client.post("/api/templates.update", headers=fx.owner, json=web_template(fx.ws1.id, "nope"))
    assert_json_error(r, 404, "Template not found")


# ---------------------------------------------------------------- deletion (1.5)

async def test_delete_is_soft_and_final(client, fx, pool):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id))
    await ok(await client.post("/api/templates.update", headers=ws.headers, json=web_template(ws.id, name="Two")))
    r = await client.post("/api/templates.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "post"})
    assert (await ok(r)) == {"success": True}
    assert_json_error(await get(client, ws, "post"), 404, "Template not found")
    assert_json_error(await get(client, ws, "post", version="0"), 404, "Template not found")
    one = (await ok(await get(client, ws, "post", version="1")))["template"]
    two = (await ok(await get(client, ws, "post", version="2")))["template"]
    assert one["name"] == "Post" and one["deleted_at"] == two["deleted_at"]
    assert list(one)[-1] == "deleted_at"
    assert await listed(client, ws) == []
    r = await client.post("/api/templates.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "post"})
    assert_json_error(r, 404, "Template not found")
    r = await client.post("/api/templates.update", headers=ws.headers, json=web_template(ws.id))
    assert_json_error(r, 404, "Template not found")
    r = await client.post("/api/templates.create", headers=ws.headers, json=web_template(ws.id))
    assert_json_error(r, 400, "Template id already exists")
    async with pool.acquire() as conn:
        assert await store.latest_live(conn, ws.id, "post") is None


async def test_delete_of_an_unknown_template(client, fx):
    r = await client.post("/api/templates.delete", headers=fx.owner, json={"workspace_id": fx.ws1.id, "id": "nope"})
    assert_json_error(r, 404, "Template not found")


async def test_integration_managed_templates(client, fx, pool):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id, "supabase_signup_123456", integration_id="mine"))
    assert "integration_id" not in (await ok(await get(client, ws, "supabase_signup_123456")))["template"]
    await pool.execute("UPDATE templates SET integration_id = 'int_supabase' WHERE workspace_id = $1", ws.id)
    r = await client.post("/api/templates.update", headers=ws.headers,
                          json=web_template(ws.id, "supabase_signup_123456", name="Restyled", integration_id=None))
    assert (await ok(r))["template"]["integration_id"] == "int_supabase"
    r = await client.post("/api/templates.delete", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "supabase_signup_123456"})
    assert_json_error(r, 400, "cannot delete integration-managed template: template is managed by integration "
                              "int_supabase")
    assert len(await listed(client, ws)) == 1


async def test_senders_read_the_latest_live_version(client, fx, pool):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id))
    await ok(await client.post("/api/templates.update", headers=ws.headers, json=web_template(ws.id, name="Two")))
    async with pool.acquire() as conn:
        row = await store.latest_live(conn, ws.id, "post")
        assert (row["version"], row["name"]) == (2, "Two")
        assert await store.latest_live(conn, fx.ws2.id, "post") is None


# ---------------------------------------------------------------- validation before permission

async def test_validation_runs_before_membership_and_permissions(client, fx, new_workspace):
    stranger = await new_workspace()
    bad = {"workspace_id": fx.ws1.id, "id": "bad id!"}
    for headers in (fx.reader, fx.none, stranger.headers):
        r = await client.post("/api/templates.create", headers=headers, json=bad)
        assert_json_error(r, 400, C + "id must contain only letters, numbers, underscores, and hyphens")
        r = await client.get("/api/templates.list", headers=headers, params={"workspace_id": "w" * 33})
        assert_json_error(r, 400, "invalid get templates request: workspace_id length must be between 1 and 32")
        r = await client.post("/api/templates.compile", headers=headers, json={"workspace_id": fx.ws1.id})
        assert_json_error(r, 400, "invalid compile template request: message_id is required")
        r = await client.post("/api/templateBlocks.create", headers=headers, json={"workspace_id": fx.ws1.id})
        assert_json_error(r, 400, "invalid create template block request: name is required")
    r = await client.post("/api/templates.create", headers=stranger.headers, json=web_template(fx.ws1.id))
    assert_json_error(r, 403, "user is not a member of the workspace")


async def test_permissions(client, fx):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id))
    write = "Insufficient permissions: write access to templates required"
    read = "Insufficient permissions: read access to templates required"
    r = await client.post("/api/templates.create", headers=fx.reader, json=web_template(ws.id, "other"))
    assert_json_error(r, 403, write)
    for path in ("templates.update", "templates.delete"):
        r = await client.post(f"/api/{path}", headers=fx.reader, json=web_template(ws.id))
        assert_json_error(r, 403, write)
    r = await client.get("/api/templates.list", headers=fx.none, params={"workspace_id": ws.id})
    assert_json_error(r, 403, read)
    r = await client.get("/api/templateBlocks.list", headers=fx.none, params={"workspace_id": ws.id})
    assert_json_error(r, 403, read)
    r = await client.post("/api/templates.compile", headers=fx.none,
                          json={"workspace_id": ws.id, "message_id": "p", "template_id": "post"})
    assert_json_error(r, 403, read)
    for r in (await client.get("/api/templates.list", headers=fx.reader, params={"workspace_id": ws.id}),
              await client.get("/api/templates.get", headers=fx.reader, params={"workspace_id": ws.id, "id": "post"}),
              await client.get("/api/templateBlocks.list", headers=fx.reader, params={"workspace_id": ws.id}),
              await client.post("/api/templates.compile", headers=fx.reader,
                                json={"workspace_id": ws.id, "message_id": "p", "template_id": "post"})):
        assert r.status_code == 200, r.text


async def test_workspace_ids_no_workspace_can_have(client, fx):
    for ws_id in ("WS1", "ws 1", "w" * 33, "é"):
        r = await client.post("/api/templates.create", headers=fx.owner, json=web_template(ws_id))
        assert_json_error(r, 403, "user is not a member of the workspace")
    r = await client.get("/api/templates.get", headers=fx.owner, params={"workspace_id": "WS1", "id": "post"})
    assert_json_error(r, 403, "user is not a member of the workspace")
    r = await client.post("/api/templates.create", headers=fx.owner, json=web_template("ws\x00"))
    assert_json_error(r, 400, C + "workspace_id contains a NUL character")


async def test_the_edge_answers(client, fx):
    r = await client.post("/api/templates.create", headers=fx.owner, content=b"not json")
    assert_json_error(r, 400, "Invalid request body")
    r = await client.get("/api/templates.create", headers=fx.owner)
    assert_json_error(r, 405, "Method not allowed")
    r = await client.post("/api/templates.create", json=web_template(fx.ws1.id))
    assert_json_error(r, 401, "Authorization header is required")


@pytest.mark.parametrize("path", ["templates.create", "templates.update", "templates.delete", "templates.compile",
                                  "templateBlocks.create", "templateBlocks.update", "templateBlocks.delete"])
async def test_bodies_nested_past_the_limit(client, fx, path):
    """128 levels, counted on the raw bytes: a deeper body is `Invalid request body`, at once."""
    prefix = b'{"workspace_id": "' + fx.ws1.id.encode() + b'", "x": '
    for depth in (127, 10_000, 400_000):
        raw = prefix + b"[" * depth + b"]" * depth + b"}"
        started = time.monotonic()
        r = await client.post(f"/api/{path}", headers=fx.owner, content=raw)
        assert time.monotonic() - started < 2
        if depth == 127:  # 128 with the body's own object: decoded, then refused by the route's own rules
            assert r.status_code == 400 and r.json() != {"error": "Invalid request body"}, r.text
        else:
            assert_json_error(r, 400, "Invalid request body")


async def test_nesting_at_the_limit_is_stored(client, fx):
    value: object = 1
    for _ in range(127):  # with the body's own object, 128 levels
        value = {"a": value}
    made = await create(client, fx.ws1, web_template(fx.ws1.id, test_data=value))
    assert made["test_data"] == value
    value = {"a": value}
    r = await client.post("/api/templates.create", headers=fx.owner, json=web_template(fx.ws1.id, "p2", test_data=value))
    assert_json_error(r, 400, "Invalid request body")


async def test_a_ten_megabyte_field(default_limit_client, fx):
    r = await default_limit_client.post("/api/templates.create", headers=fx.owner, json={
        **web_template(fx.ws1.id), "channel": "email", "web": None,
        "email": {"editor_mode": "code", "subject": "Hi", "mjml_source": "x" * 5_000_000}})
    assert_json_error(r, 400, C + "invalid email template: mjml_source exceeds 1048576 bytes")
    r = await default_limit_client.post("/api/templates.create", headers=fx.owner,
                                        json=web_template(fx.ws1.id, name="n" * 10_000_000))
    assert_json_error(r, 400, C + "name length must be between 1 and 255")


# ---------------------------------------------------------------- what is refused stores nothing

async def test_refused_requests_store_nothing(client, fx, pool):
    ws = fx.ws1
    bodies = [web_template(ws.id, name=""), web_template(ws.id, translations={"xx": {}}),
              web_template(ws.id, translations={"it": {"web": {"content": {"a": 1}}}}),
              web_template(ws.id, test_data={"k": "\x00"}), {**web_template(ws.id), "web": {"content": "x"}}]
    for body in bodies:
        r = await client.post("/api/templates.create", headers=ws.headers, json=body)
        assert r.status_code == 400, r.text
    r = await client.post("/api/templates.create", headers=ws.headers,
                          json=web_template(ws.id, translations={"it": {"web": {"content": {"a": 1}}}}))
    assert_json_error(r, 400, C + "translation language 'it' is not in workspace's configured languages")
    assert await pool.fetchval("SELECT count(*) FROM template_heads WHERE workspace_id = $1", ws.id) == 0
    assert await pool.fetchval("SELECT count(*) FROM templates WHERE workspace_id = $1", ws.id) == 0


async def test_translations_of_a_web_template(client, fx):
    ws = fx.ws1
    fr = {"web": {"content": {"type": "doc", "lang": "fr"}, "html": "<p>Salut</p>"}}
    made = await create(client, ws, web_template(ws.id, translations={"fr": fr, "de": {"web": {"content": {"x": 1}}}}))
    assert list(made["translations"]) == ["de", "fr"]
    assert made["translations"]["fr"] == fr
    r = await client.post("/api/templates.update", headers=ws.headers,
                          json=web_template(ws.id, translations={"it": fr}))
    assert_json_error(r, 400, "invalid update template request: translation language 'it' is not in workspace's "
                              "configured languages")
    # a workspace without languages accepts its default language alone (en unless set)
    made = await create(client, fx.ws2, web_template(fx.ws2.id, translations={"en": fr}))
    assert list(made["translations"]) == ["en"]
    r = await client.post("/api/templates.create", headers=fx.owner,
                          json=web_template(fx.ws2.id, "other", translations={"fr": fr}))
    assert_json_error(r, 400, C + "translation language 'fr' is not in workspace's configured languages")


# ---------------------------------------------------------------- compile without the engine

async def test_compile_of_stored_templates(client, fx):
    ws = fx.ws1
    await create(client, ws, web_template(ws.id, translations={"fr": {"web": {"content": {"a": 1}, "html": "<p>Fr</p>"}}}))
    body = {"workspace_id": ws.id, "message_id": "p", "template_id": "post"}
    assert (await ok(await client.post("/api/templates.compile", headers=ws.headers, json=body))) == \
        {"success": True, "html": "<p>Hi</p>", "text": "Hi"}
    r = await client.post("/api/templates.compile", headers=ws.headers, json={**body, "language": "fr-CA"})
    assert (await ok(r)) == {"success": True, "html": "<p>Fr</p>"}
    for change in ({"template_id": "nope"}, {"version": 5}, {"version": 2 ** 40}):
        r = await client.post("/api/templates.compile", headers=ws.headers, json={**body, **change})
        assert_json_error(r, 404, "Template not found")
    await ok(await client.post("/api/templates.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "post"}))
    for change in ({}, {"version": 1}):
        r = await client.post("/api/templates.compile", headers=ws.headers, json={**body, **change})
        assert_json_error(r, 404, "Template not found")


async def test_compile_checks(client, fx):
    ws = fx.ws1
    p = "invalid compile template request: "
    for body, message in (({"message_id": "p"}, p + "workspace_id is required"),
                          ({"workspace_id": ws.id}, p + "message_id is required"),
                          ({"workspace_id": ws.id, "message_id": "p"}, p + "visual_editor_tree must have type 'mjml'"),
                          ({"workspace_id": ws.id, "message_id": "p", "template_id": "a.b"},
                           p + "id must contain only letters, numbers, underscores, and hyphens"),
                          ({"workspace_id": ws.id, "message_id": "p", "test_data": "x"}, "Invalid request body")):
        r = await client.post("/api/templates.compile", headers=ws.headers, json=body)
        assert_json_error(r, 400, message)


# ---------------------------------------------------------------- template blocks without the engine

BLOCK = {"id": "s9", "type": "mj-section", "children": [{"id": "c9", "type": "mj-column"}]}


async def test_block_lookups(client, fx):
    ws = fx.ws1
    assert (await ok(await client.get("/api/templateBlocks.list", headers=ws.headers,
                                      params={"workspace_id": ws.id}))) == {"blocks": []}
    for block_id in ("nope", str(uuid.uuid4())):
        r = await client.get("/api/templateBlocks.get", headers=ws.headers, params={"workspace_id": ws.id, "id": block_id})
        assert_json_error(r, 404, "Template block not found")
        r = await client.post("/api/templateBlocks.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": block_id})
        assert_json_error(r, 404, "Template block not found")
    r = await client.get("/api/templateBlocks.list", headers=ws.headers)
    assert_json_error(r, 400, "invalid list template blocks request: workspace_id is required")
    r = await client.get("/api/templateBlocks.get", headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 400, "invalid get template block request: id is required")


async def test_blocks_are_shown_in_the_workspace_settings(client, fx, pool):
    ws = fx.ws1
    async with pool.acquire() as conn:  # as templateBlocks.create stores them
        first = await store.create_block(conn, ws.id, "Footer", BLOCK)
        second = await store.create_block(conn, ws.id, "Header", {"id": "h", "type": "mj-section"})
        await store.create_block(conn, fx.ws2.id, "Other", BLOCK)
    listed_blocks = (await ok(await client.get("/api/templateBlocks.list", headers=ws.headers,
                                               params={"workspace_id": ws.id})))["blocks"]
    assert [b["id"] for b in listed_blocks] == [str(first["id"]), str(second["id"])]
    assert list(listed_blocks[0]) == ["id", "name", "block", "created", "updated"]
    workspace = (await ok(await client.get("/api/workspaces.get", headers=ws.headers, params={"id": ws.id})))["workspace"]
    assert workspace["settings"]["template_blocks"] == listed_blocks
    assert workspace["settings"]["languages"] == ["en", "fr", "de"]
    everyone = await ok(await client.get("/api/workspaces.list", headers=ws.headers))
    shown = {w["id"]: w["settings"].get("template_blocks") for w in everyone}
    assert shown[ws.id] == listed_blocks and len(shown[fx.ws2.id]) == 1 and shown[fx.ws24.id] is None
    r = await client.post("/api/templateBlocks.delete", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": str(first["id"])})
    assert (await ok(r)) == {"success": True}
    r = await client.get("/api/templateBlocks.get", headers=ws.headers,
                         params={"workspace_id": ws.id, "id": str(first["id"])})
    assert_json_error(r, 404, "Template block not found")
    r = await client.get("/api/templateBlocks.get", headers=ws.headers,
                         params={"workspace_id": ws.id, "id": str(second["id"]).upper()})
    assert (await ok(r))["block"]["name"] == "Header"


async def test_a_stored_template_blocks_setting_is_not_shown(client, fx, pool):
    await pool.execute("UPDATE workspaces SET settings = settings || '{\"template_blocks\": [1]}' WHERE id = $1",
                       fx.ws2.id)
    workspace = (await ok(await client.get("/api/workspaces.get", headers=fx.owner, params={"id": fx.ws2.id})))
    assert "template_blocks" not in workspace["workspace"]["settings"]
