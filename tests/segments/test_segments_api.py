"""segments.* over HTTP against PostgreSQL, with the build loop run one pass at a time."""

from __future__ import annotations

import pytest
from helpers import assert_json_error, make_contacts

from postroom.segments import store, worker


def fr_tree(value="FR"):
    return {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
        {"field_name": "country", "field_type": "string", "operator": "equals", "string_values": [value]}]}}}


def body(ws, seg_id="fr", **more):
    return {"workspace_id": ws.id, "id": seg_id, "name": "French", "color": "blue", "tree": fr_tree(),
            "timezone": "Europe/Paris", **more}


async def countries(pool, ws, rows: dict[str, str | None]):
    await make_contacts(pool, ws, list(rows))
    for email, country in rows.items():
        await pool.execute("UPDATE contacts SET country = $3 WHERE workspace_id = $1 AND email = $2",
                           ws.id, email, country)


async def build(pool):
    while await worker.scan_once(pool):
        pass


async def get(client, ws, seg_id="fr"):
    r = await client.get("/api/segments.get", headers=ws.headers, params={"workspace_id": ws.id, "id": seg_id})
    return r


async def seg_events(pool, ws):
    rows = await pool.fetch("SELECT type, subject, data FROM events WHERE workspace_id = $1 AND type LIKE 'segment.%'"
                            " ORDER BY id", ws.id)
    return [(r["type"], r["subject"], r["data"]) for r in rows]


async def seg_timeline(pool, ws):
    rows = await pool.fetch("SELECT kind, email, entity_type, entity_id, changes FROM contact_timeline"
                            " WHERE workspace_id = $1 AND kind LIKE 'segment.%' ORDER BY id", ws.id)
    return [tuple(r) for r in rows]


async def members(client, ws, seg_id="fr", **params):
    r = await client.get("/api/segments.contacts", headers=ws.headers,
                         params={"workspace_id": ws.id, "segment_id": seg_id, **params})
    assert r.status_code == 200, r.text
    return r.json()


async def test_create_builds_then_active(client, pool, ws):
    await countries(pool, ws, {"a@x.io": "FR", "b@x.io": "fr", "c@x.io": None, "d@x.io": "FR"})
    r = await client.post("/api/segments.create", headers=ws.headers, json=body(ws))
    assert r.status_code == 201, r.text
    seg = r.json()["segment"]
    assert (seg["status"], seg["version"], seg["users_count"]) == ("building", 1, 0)
    assert list(seg)[:7] == ["id", "name", "color", "tree", "timezone", "version", "status"]
    assert seg["tree"] == fr_tree() and "$2::text" in seg["generated_sql"] and seg["generated_args"] == [ws.id, "FR"]
    assert "recompute_after" not in seg
    await build(pool)
    seg = (await get(client, ws)).json()["segment"]
    assert (seg["status"], seg["users_count"]) == ("active", 2)
    assert sorted((await members(client, ws))["emails"]) == ["a@x.io", "d@x.io"]
    joined = await seg_events(pool, ws)
    assert sorted(e[1] for e in joined) == ["a@x.io", "d@x.io"]
    assert joined[0][0] == "segment.joined"
    assert joined[0][2] == {"email": joined[0][1], "segment_id": "fr", "segment_name": "French"}
    kind, _, entity_type, entity_id, changes = (await seg_timeline(pool, ws))[0]
    assert (kind, entity_type, entity_id) == ("segment.joined", "contact_segment", "fr")
    assert changes["segment_id"] == {"new": "fr"} and changes["version"] == {"new": 1} and "new" in changes["matched_at"]


async def test_build_in_chunks_and_a_tree_change_supersedes_it(client, pool, ws):
    await countries(pool, ws, {f"c{i:02d}@x.io": ("FR" if i % 2 else "DE") for i in range(30)})
    r = await client.post("/api/segments.create", headers=ws.headers, json=body(ws))
    assert r.status_code == 201
    step = await store.scan_step(pool, chunk=7)       # one chunk of the FR build
    assert step is not None and step[2] is False
    r = await client.post("/api/segments.update", headers=ws.headers, json=body(ws, tree=fr_tree("DE")))
    assert r.status_code == 200 and r.json()["segment"]["version"] == 2 and r.json()["segment"]["status"] == "building"
    while await store.scan_step(pool, chunk=7):
        pass
    seg = (await get(client, ws)).json()["segment"]
    assert (seg["status"], seg["version"], seg["users_count"]) == ("active", 2, 15)
    page = (await members(client, ws, limit="100"))["emails"]
    assert sorted(page) == [f"c{i:02d}@x.io" for i in range(0, 30, 2)]
    rows = await pool.fetch("SELECT DISTINCT version FROM contact_segments WHERE workspace_id = $1", ws.id)
    assert [r["version"] for r in rows] == [2]


async def test_list_get_update_rebuild_delete(client, pool, ws):
    await countries(pool, ws, {"a@x.io": "FR", "b@x.io": "DE"})
    for seg_id in ("first", "second"):
        assert (await client.post("/api/segments.create", headers=ws.headers, json=body(ws, seg_id))).status_code == 201
    await build(pool)
    for params in ({}, {"with_count": "true"}):
        r = await client.get("/api/segments.list", headers=ws.headers, params={"workspace_id": ws.id, **params})
        assert r.status_code == 200
        assert [(s["id"], s["users_count"]) for s in r.json()["segments"]] == [("second", 1), ("first", 1)]

    # name and color only: in place
    r = await client.post("/api/segments.update", headers=ws.headers,
                          json=body(ws, "first", name="Renamed", color="red"))
    assert r.status_code == 200
    seg = r.json()["segment"]
    assert (seg["name"], seg["color"], seg["version"], seg["status"], seg["users_count"]) == \
        ("Renamed", "red", 1, "active", 1)

    # a tree that matches nobody: every former member leaves
    nobody = fr_tree("XX")
    r = await client.post("/api/segments.update", headers=ws.headers, json=body(ws, "first", tree=nobody))
    assert r.json()["segment"]["version"] == 2
    await build(pool)
    seg = (await get(client, ws, "first")).json()["segment"]
    assert (seg["status"], seg["users_count"]) == ("active", 0)
    assert ("segment.left", "a@x.io", {"email": "a@x.io", "segment_id": "first", "segment_name": "French"}) in \
        await seg_events(pool, ws)

    r = await client.post("/api/segments.rebuild", headers=ws.headers, json={"workspace_id": ws.id, "segment_id": "second"})
    assert r.json() == {"success": True, "message": "Segment rebuild has been queued"}
    assert (await get(client, ws, "second")).json()["segment"]["version"] == 2
    await build(pool)
    before = len(await seg_events(pool, ws))
    assert (await get(client, ws, "second")).json()["segment"]["users_count"] == 1
    assert len(await seg_events(pool, ws)) == before  # a kept member gets nothing

    async with pool.acquire() as conn:
        assert await store.statuses(conn, ws.id, ["first", "second", "nope"]) == {"first": "active", "second": "active"}
    r = await client.post("/api/segments.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "second"})
    assert r.status_code == 200 and r.json() == {"success": True}
    async with pool.acquire() as conn:
        assert await store.statuses(conn, ws.id, ["second"]) == {}
    assert (await seg_events(pool, ws))[-1][:2] == ("segment.left", "a@x.io")
    assert (await seg_timeline(pool, ws))[-1][0] == "segment.left"
    assert_json_error(await get(client, ws, "second"), 404, "Segment not found")
    r = await client.post("/api/segments.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "second"})
    assert_json_error(r, 404, "Segment not found")
    r = await client.post("/api/segments.rebuild", headers=ws.headers, json={"workspace_id": ws.id, "segment_id": "second"})
    assert_json_error(r, 404, "Segment not found")
    r = await client.post("/api/segments.create", headers=ws.headers, json=body(ws, "second"))
    assert_json_error(r, 400, "Segment id already exists")
    r = await client.post("/api/segments.create", headers=ws.headers, json=body(ws, "first"))
    assert_json_error(r, 400, "Segment id already exists")
    r = await client.get("/api/segments.list", headers=ws.headers, params={"workspace_id": ws.id})
    assert [s["id"] for s in r.json()["segments"]] == ["first"]


async def test_relative_dates_recompute_daily_in_the_segment_zone(client, pool, ws):
    import datetime as dt

    await make_contacts(pool, ws, ["fresh@x.io", "aging@x.io"])
    await pool.execute("UPDATE contacts SET custom_datetime_1 = now() - interval '1 day' WHERE workspace_id = $1", ws.id)
    tree = {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
        {"field_name": "custom_datetime_1", "field_type": "time", "operator": "in_the_last_days",
         "string_values": ["7"]}]}}}
    r = await client.post("/api/segments.create", headers=ws.headers,
                          json=body(ws, "recent", tree=tree, timezone="Asia/Tokyo"))
    seg = r.json()["segment"]
    after = dt.datetime.fromisoformat(seg["recompute_after"])
    tokyo = after.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert (tokyo.hour, tokyo.minute) == (5, 0)
    await build(pool)
    assert (await get(client, ws, "recent")).json()["segment"]["users_count"] == 2
    # aging@ ages out without any event; nothing moves until the recompute time passes
    await pool.execute("UPDATE contacts SET custom_datetime_1 = now() - interval '8 days'"
                       " WHERE workspace_id = $1 AND email = 'aging@x.io'", ws.id)
    assert await worker.recompute_once(pool, after - dt.timedelta(seconds=1)) == 0
    assert await worker.recompute_once(pool, after + dt.timedelta(seconds=1)) >= 1
    await build(pool)
    seg = (await get(client, ws, "recent")).json()["segment"]
    assert (seg["users_count"], seg["version"], seg["status"]) == (1, 1, "active")
    assert dt.datetime.fromisoformat(seg["recompute_after"]) == after + dt.timedelta(days=1)
    assert ("segment.left", "aging@x.io") in [e[:2] for e in await seg_events(pool, ws)]
    # a timezone change moves the next recompute; no rebuild
    r = await client.post("/api/segments.update", headers=ws.headers,
                          json=body(ws, "recent", tree=tree, timezone="UTC"))
    seg = r.json()["segment"]
    assert seg["version"] == 1 and dt.datetime.fromisoformat(seg["recompute_after"]).hour == 5


async def test_preview_counts_without_saving(client, pool, ws):
    await countries(pool, ws, {f"p{i}@x.io": "FR" for i in range(15)} | {"z@x.io": "DE"})
    r = await client.post("/api/segments.preview", headers=ws.headers, json={"workspace_id": ws.id, "tree": fr_tree()})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["total_count"] == 15 and out["limit"] == 10
    assert out["emails"] == sorted(f"p{i}@x.io" for i in range(15))[:10]
    assert out["sql_args"] == [ws.id, "FR"] and "$2" in out["generated_sql"]
    r = await client.post("/api/segments.preview", headers=ws.headers,
                          json={"workspace_id": ws.id, "tree": fr_tree(), "limit": 500})
    assert r.json()["limit"] == 20 and len(r.json()["emails"]) == 15
    assert_json_error(await client.post("/api/segments.preview", headers=ws.headers, json={"workspace_id": ws.id}),
                      400, "tree is required")
    r = await client.post("/api/segments.preview", headers=ws.headers, json={"workspace_id": ws.id, "tree": {}})
    assert_json_error(r, 400, "invalid tree: tree node must have 'kind' field")
    assert await pool.fetchval("SELECT count(*) FROM segments WHERE workspace_id = $1", ws.id) == 0


async def test_contacts_pages(client, pool, ws):
    await countries(pool, ws, {f"m{i:03d}@x.io": "FR" for i in range(250)})
    assert (await client.post("/api/segments.create", headers=ws.headers, json=body(ws))).status_code == 201
    await build(pool)
    seen = []
    for offset in (0, 100, 200):
        page = await members(client, ws, limit="100", offset=str(offset))
        assert page["limit"] == 100 and page["offset"] == offset
        seen += page["emails"]
    assert len(seen) == 250 and len(set(seen)) == 250
    assert (await members(client, ws, limit="0"))["limit"] == 50
    assert (await members(client, ws, limit="1000", offset="-4"))["offset"] == 0
    r = await client.get("/api/segments.contacts", headers=ws.headers, params={"workspace_id": ws.id, "segment_id": "nope"})
    assert_json_error(r, 404, "Segment not found")


HUGE = {"kind": "branch", "branch": {"operator": "or", "leaves": [fr_tree()] * 5000}}


def _deep(levels):
    tree = fr_tree()
    for _ in range(levels):
        tree = {"kind": "branch", "branch": {"operator": "and", "leaves": [tree]}}
    return tree


P = "invalid create segment request: "
BAD = [
    ({"workspace_id": ""}, "workspace_id is required"),
    ({"id": ""}, P + "id is required"),
    ({"id": "Bad-Id"}, P + "id must contain only lowercase letters, numbers, and underscores"),
    ({"id": "a" * 33}, P + "id length must be between 1 and 32"),
    ({"name": ""}, P + "name is required"),
    ({"name": "n" * 256}, P + "name length must be between 1 and 255"),
    ({"color": None}, P + "color is required"),
    ({"color": "c" * 51}, P + "color length must be between 1 and 50"),
    ({"timezone": ""}, P + "timezone is required"),
    ({"timezone": "Mars/Base"}, P + "invalid timezone: Mars/Base"),
    ({"tree": None}, P + "tree is required"),
    ({"tree": {"kind": "branch", "branch": {"operator": "and", "leaves": [fr_tree(), {"kind": "leaf", "leaf": {
        "source": "contacts", "contact": {"filters": [{"field_name": "country", "field_type": "string"}]}}}]}}},
     P + "invalid tree: branch leaf 1: filter 0: filter must have 'operator'"),
    ({"tree": {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
        {"field_name": "shoe_size", "field_type": "string", "operator": "equals", "string_values": ["9"]}]}}}},
     P + "invalid tree: filter 0: invalid field name: shoe_size"),
    ({"tree": {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
        {"field_name": "country", "field_type": "string", "operator": "near", "string_values": ["9"]}]}}}},
     P + "invalid tree: filter 0: invalid operator: near"),
    ({"tree": {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
        {"field_name": "first_name", "field_type": "number", "operator": "equals", "number_values": [9]}]}}}},
     P + "invalid tree: filter 0: field_type number does not match field first_name (expected string)"),
    ({"tree": {"kind": "branch", "branch": {"operator": "and", "leaves": []}}},
     P + "invalid tree: branch must have at least one leaf"),
    ({"tree": _deep(11)}, P + "invalid tree: " + "branch leaf 0: " * 10 + "tree is too deep (max 10 levels)"),
    ({"tree": HUGE}, P + "invalid tree: branch leaf 199: tree has too many nodes (max 200)"),
    ({"tree": {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
        {"field_name": "custom_datetime_1", "field_type": "time", "operator": "in_date_range",
         "string_values": ["2024-02-01", "2024-01-01"]}]}}}},
     P + "invalid tree: filter 0: in_date_range ends before it starts: 2024-01-01 is before 2024-02-01"),
    ({"tree": {"kind": "leaf", "leaf": {"source": "contact_lists", "contact_list": {
        "operator": "in", "list_id": "news", "status": "gone"}}}}, P + "invalid tree: invalid contact_list status: gone"),
    ({"tree": {"kind": "leaf", "leaf": {"source": "contact_timeline", "contact_timeline": {
        "kind": "open_email", "count_operator": "at_least", "count_value": "2"}}}}, "Invalid request body"),
]


@pytest.mark.parametrize("change, message", BAD)
async def test_bad_create_stores_nothing(client, pool, ws, change, message):
    r = await client.post("/api/segments.create", headers=ws.headers, json={**body(ws), **change})
    assert_json_error(r, 400, message)
    assert await pool.fetchval("SELECT count(*) FROM segments WHERE workspace_id = $1", ws.id) == 0


async def test_ten_thousand_levels_are_refused_undecoded(client, pool, ws):
    # too deep for any JSON encoder to write as a dict: the body is written out as text
    leaf = '{"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": []}}}'
    tree = '{"kind": "branch", "branch": {"operator": "and", "leaves": [' * 10_000 + leaf + "]}}" * 10_000
    text = ('{"workspace_id": "%s", "id": "deep", "name": "n", "color": "c", "timezone": "UTC", "tree": %s}'
            % (ws.id, tree))
    r = await client.post("/api/segments.create", headers={**ws.headers, "content-type": "application/json"},
                          content=text.encode())
    assert_json_error(r, 400, "Invalid request body")
    assert await pool.fetchval("SELECT count(*) FROM segments WHERE workspace_id = $1", ws.id) == 0


async def test_bad_update_changes_nothing(client, pool, ws):
    assert (await client.post("/api/segments.create", headers=ws.headers, json=body(ws))).status_code == 201
    before = (await get(client, ws)).json()
    bad = {"kind": "leaf", "leaf": {"source": "custom_events_goals", "custom_events_goal": {
        "goal_type": "refund", "aggregate_operator": "sum", "operator": "gte", "value": 1}}}
    r = await client.post("/api/segments.update", headers=ws.headers, json=body(ws, tree=bad, name="Other"))
    assert_json_error(r, 400, "invalid update segment request: invalid tree: invalid goal_type: refund (must be one of: "
                              "purchase, subscription, lead, signup, booking, trial, other, or '*')")
    assert (await get(client, ws)).json() == before
    r = await client.post("/api/segments.update", headers=ws.headers, json=body(ws, "nope"))
    assert_json_error(r, 404, "Segment not found")


async def test_required_parameters(client, ws):
    assert_json_error(await client.get("/api/segments.list", headers=ws.headers), 400, "workspace_id is required")
    r = await client.get("/api/segments.get", headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 400, "id is required")
    assert_json_error(await get(client, ws, "unknown"), 404, "Segment not found")
    r = await client.get("/api/segments.contacts", headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 400, "segment_id is required")
    r = await client.post("/api/segments.rebuild", headers=ws.headers, json={"workspace_id": ws.id})
    assert_json_error(r, 400, "segment_id is required")
    r = await client.post("/api/segments.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "Bad"})
    assert_json_error(r, 400, "invalid delete segment request: id must contain only lowercase letters, numbers, and underscores")
    r = await client.post("/api/segments.delete", headers=ws.headers, json={"workspace_id": ws.id})
    assert_json_error(r, 400, "invalid delete segment request: id is required")
    r = await client.get("/api/segments.create", headers=ws.headers)
    assert_json_error(r, 405, "Method not allowed")


async def test_permissions(client, pool, ws, new_workspace):
    reader = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}
    nothing = {"Authorization": f"Bearer {await ws.key('lists:rw')}"}
    r = await client.post("/api/segments.create", headers=reader, json=body(ws))
    assert_json_error(r, 403, "Insufficient permissions: write access to contacts required")
    r = await client.post("/api/segments.preview", headers=reader, json={"workspace_id": ws.id, "tree": fr_tree()})
    assert r.status_code == 200
    r = await client.get("/api/segments.list", headers=nothing, params={"workspace_id": ws.id})
    assert_json_error(r, 403, "Insufficient permissions: read access to contacts required")
    other = await new_workspace()
    r = await client.post("/api/segments.create", headers=other.headers, json=body(ws))
    assert_json_error(r, 403, "user is not a member of the workspace")
    assert await pool.fetchval("SELECT count(*) FROM segments WHERE workspace_id = $1", ws.id) == 0
