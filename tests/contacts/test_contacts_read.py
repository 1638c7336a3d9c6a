"""contacts.getByEmail, contacts.getByExternalID, contacts.count and contacts.list, against PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re

import pytest
from helpers import assert_json_error

from postroom.contacts import query, store
from postroom.platform import paging

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


# ---------------------------------------------------------------- helpers

def stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def upsert(client, ws, **contact):
    r = await client.post("/api/contacts.upsert", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": contact})
    assert r.status_code == 200, r.text
    return r.json()["contact"]


async def get(client, ws, path, headers=None, **params):
    return await client.get(f"/api/{path}", headers=headers or ws.headers, params={"workspace_id": ws.id, **params})


async def make_list(pool, ws, list_id, name=None, deleted=False):
    await pool.execute("INSERT INTO lists (workspace_id, id, name, deleted_at) VALUES ($1, $2, $3, $4)",
                       ws.id, list_id, name or f"List {list_id}", dt.datetime.now(UTC) if deleted else None)


async def member(pool, ws, list_id, email, status="active", removed=False):
    # as the application writes it: contact_created_at from the contact
    await pool.execute("INSERT INTO contact_lists"
                       " (workspace_id, list_id, email, status, deleted_at, contact_created_at)"
                       " SELECT $1, $2, $3, $4, $5, c.created_at FROM contacts c"
                       "  WHERE c.workspace_id = $1 AND c.email = $3", ws.id, list_id, email, status,
                       dt.datetime.now(UTC) if removed else None)


async def in_segment(pool, ws, segment_id, email):
    await pool.execute("INSERT INTO contact_segments (workspace_id, segment_id, email) VALUES ($1, $2, $3)",
                       ws.id, segment_id, email)


async def list_all(client, ws, limit=100, **filters):
    """Every page of contacts.list: the emails in order, and the pages' sizes."""
    emails, sizes, cursor = [], [], None
    for _ in range(1000):
        params = {"limit": limit, **filters}
        if cursor:
            params["cursor"] = cursor
        r = await get(client, ws, "contacts.list", **params)
        assert r.status_code == 200, r.text
        body = r.json()
        emails += [c["email"] for c in body["contacts"]]
        sizes.append(len(body["contacts"]))
        cursor = body.get("next_cursor")
        if cursor is None:
            return emails, sizes
    raise AssertionError("paging did not end")


async def contacts_rows(pool, ws):
    return [tuple(r) for r in await pool.fetch(
        "SELECT email, first_name, updated_at FROM contacts WHERE workspace_id = $1 ORDER BY email", ws.id)]


# ---------------------------------------------------------------- contacts.getByEmail

async def test_get_by_email_returns_contact_with_lists_and_segments(client, pool, ws):
    created = await upsert(client, ws, email="ann@example.com", first_name="Ann", custom_json_1={"a": [1, 2.5]},
                           created_at=stamp(0))
    await make_list(pool, ws, "news", "Newsletter")
    await make_list(pool, ws, "promo")
    await make_list(pool, ws, "gone", deleted=True)
    await make_list(pool, ws, "left")
    await member(pool, ws, "news", "ann@example.com", "active")
    await member(pool, ws, "promo", "ann@example.com", "unsubscribed")
    await member(pool, ws, "gone", "ann@example.com", "active")          # list deleted: not shown
    await member(pool, ws, "left", "ann@example.com", "active", removed=True)  # removed: not shown
    await in_segment(pool, ws, "vip", "ann@example.com")
    await in_segment(pool, ws, "eu", "ann@example.com")

    r = await get(client, ws, "contacts.getByEmail", email="ann@example.com")
    assert r.status_code == 200, r.text
    contact = r.json()["contact"]
    lists = contact.pop("contact_lists")
    segments = contact.pop("contact_segments")
    assert [(m["email"], m["segment_id"], m["version"]) for m in segments] == \
        [("ann@example.com", "eu", 1), ("ann@example.com", "vip", 1)]
    assert all(m["matched_at"].endswith("Z") and m["computed_at"].endswith("Z") for m in segments)
    assert contact == created
    assert [(m["list_id"], m["list_name"], m["status"], m["email"]) for m in sorted(lists, key=lambda m: m["list_id"])] == [
        ("news", "Newsletter", "active", "ann@example.com"), ("promo", "List promo", "unsubscribed", "ann@example.com")]
    assert all(m["created_at"].endswith("Z") and m["updated_at"].endswith("Z") for m in lists)


async def test_get_by_email_without_memberships_has_empty_arrays(client, ws):
    await upsert(client, ws, email="bob@example.com")
    r = await get(client, ws, "contacts.getByEmail", email="bob@example.com")
    assert r.status_code == 200
    contact = r.json()["contact"]
    assert contact["contact_lists"] == [] and contact["contact_segments"] == []
    assert list(contact)[:1] == ["email"] and list(contact)[-2:] == ["contact_lists", "contact_segments"]


async def test_get_by_email_normalises_the_email(client, ws):
    await upsert(client, ws, email="carl@example.com", first_name="Carl")
    r = await get(client, ws, "contacts.getByEmail", email="  CARL@Example.COM ")
    assert r.status_code == 200
    assert r.json()["contact"]["first_name"] == "Carl"


async def test_get_by_email_errors(client, ws, new_workspace):
    await upsert(client, ws, email="dan@example.com")
    assert_json_error(await get(client, ws, "contacts.getByEmail", email="nobody@example.com"), 404, "Contact not found")
    assert_json_error(await get(client, ws, "contacts.getByEmail"), 400, "Missing email")
    assert_json_error(await get(client, ws, "contacts.getByEmail", email="   "), 400, "Missing email")
    assert_json_error(await get(client, ws, "contacts.getByEmail", email="a\x00@example.com"), 400,
                      "invalid email: contains a NUL character")
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers, params={"email": "dan@example.com"})
    assert_json_error(r, 400, "Missing workspace ID")
    # another workspace's contact is not found there
    other = await new_workspace()
    assert_json_error(await get(client, other, "contacts.getByEmail", email="dan@example.com"), 404, "Contact not found")


async def test_reads_need_contacts_read_permission(client, ws):
    await upsert(client, ws, email="eve@example.com")
    reader = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}
    nothing = {"Authorization": f"Bearer {await ws.key('lists:r')}"}
    for path, params in (("contacts.getByEmail", {"email": "eve@example.com"}),
                         ("contacts.getByExternalID", {"external_id": "x"}),
                         ("contacts.count", {}), ("contacts.list", {})):
        r = await get(client, ws, path, headers=reader, **params)
        assert r.status_code in (200, 404), r.text
        assert_json_error(await get(client, ws, path, headers=nothing, **params), 403,
                          "Insufficient permissions: read access to contacts required")


# ---------------------------------------------------------------- contacts.getByExternalID

async def test_get_by_external_id_picks_most_recently_updated(client, pool, ws):
    await upsert(client, ws, email="old@example.com", external_id="crm-1", updated_at=stamp(10))
    await upsert(client, ws, email="new@example.com", external_id="crm-1", updated_at=stamp(20))
    await upsert(client, ws, email="mid@example.com", external_id="crm-1", updated_at=stamp(15))
    await upsert(client, ws, email="other@example.com", external_id="crm-2", updated_at=stamp(30))
    await make_list(pool, ws, "news")
    await member(pool, ws, "news", "new@example.com")
    r = await get(client, ws, "contacts.getByExternalID", external_id="crm-1")
    assert r.status_code == 200, r.text
    contact = r.json()["contact"]
    assert contact["email"] == "new@example.com"
    assert [m["list_id"] for m in contact["contact_lists"]] == ["news"]
    assert contact["contact_segments"] == []
    # the stored value is trimmed, so is the lookup
    r = await get(client, ws, "contacts.getByExternalID", external_id=" crm-2 ")
    assert r.json()["contact"]["email"] == "other@example.com"


async def test_get_by_external_id_errors(client, ws):
    await upsert(client, ws, email="fay@example.com", external_id="CRM-9")
    assert_json_error(await get(client, ws, "contacts.getByExternalID", external_id="crm-9"), 404, "Contact not found")
    assert_json_error(await get(client, ws, "contacts.getByExternalID"), 400, "Missing external ID")
    assert_json_error(await get(client, ws, "contacts.getByExternalID", external_id="  "), 400, "Missing external ID")
    r = await client.get("/api/contacts.getByExternalID", headers=ws.headers, params={"external_id": "CRM-9"})
    assert_json_error(r, 400, "Missing workspace ID")


# ---------------------------------------------------------------- contacts.count

async def test_count_follows_creates_and_deletes_per_workspace(client, ws, new_workspace):
    other = await new_workspace()
    assert (await get(client, ws, "contacts.count")).json() == {"total_contacts": 0}
    for i in range(5):
        await upsert(client, ws, email=f"c{i}@example.com")
    await upsert(client, other, email="c0@example.com")
    await upsert(client, ws, email="c0@example.com", first_name="again")  # an update: no change in count
    assert (await get(client, ws, "contacts.count")).json() == {"total_contacts": 5}
    assert (await get(client, other, "contacts.count")).json() == {"total_contacts": 1}
    r = await client.post("/api/contacts.delete", headers=ws.headers, json={"workspace_id": ws.id, "email": "c3@example.com"})
    assert r.status_code == 200
    assert (await get(client, ws, "contacts.count")).json() == {"total_contacts": 4}
    assert_json_error(await client.get("/api/contacts.count", headers=ws.headers), 400, "workspace_id is required")


async def test_count_includes_contacts_created_by_create_if_absent(client, pool, ws):
    """The other creation path (public subscribe) keeps the count too."""
    from postroom.contacts import model

    async with pool.acquire() as conn:
        created, _ = await store.create_if_absent(conn, ws.id, model.parse_contact({"email": "form@example.com"}))
        again, _ = await store.create_if_absent(conn, ws.id, model.parse_contact({"email": "form@example.com"}))
    assert (created, again) == (True, False)
    assert (await get(client, ws, "contacts.count")).json() == {"total_contacts": 1}


async def test_count_stays_exact_under_concurrent_writes(client, pool, ws):
    """Creates, updates and deletes racing each other, with enough writes to go through folds."""
    import asyncio

    async def create(i):
        await upsert(client, ws, email=f"r{i}@example.com")

    await asyncio.gather(*(create(i) for i in range(120)))
    deletes = [client.post("/api/contacts.delete", headers=ws.headers,
                           json={"workspace_id": ws.id, "email": f"r{i}@example.com"}) for i in range(0, 120, 3)]
    recreates = [create(i) for i in range(0, 120, 6)] + [create(i) for i in range(120, 160)]
    await asyncio.gather(*deletes, *recreates)
    actual = await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id)
    assert (await get(client, ws, "contacts.count")).json() == {"total_contacts": actual}
    rows = await pool.fetchval("SELECT count(*) FROM contact_counts WHERE workspace_id = $1", ws.id)
    assert rows < 200  # folded along the way: far fewer rows than writes
    async with pool.acquire() as conn:
        assert await store.recount(conn, ws.id) == actual


# ---------------------------------------------------------------- contacts.list: shape, order, paging

async def test_list_empty_workspace(client, ws):
    r = await get(client, ws, "contacts.list")
    assert r.status_code == 200
    assert r.json() == {"contacts": []}


async def test_list_order_shape_and_last_page(client, ws):
    # two contacts share created_at: email ascending breaks the tie
    await upsert(client, ws, email="b@example.com", created_at=stamp(10), first_name="B")
    await upsert(client, ws, email="a@example.com", created_at=stamp(10))
    await upsert(client, ws, email="z@example.com", created_at=stamp(5))
    newest = await upsert(client, ws, email="y@example.com", created_at=stamp(20.123456))
    r = await get(client, ws, "contacts.list")
    body = r.json()
    assert list(body) == ["contacts"]  # no next_cursor on the last page
    assert [c["email"] for c in body["contacts"]] == ["y@example.com", "a@example.com", "b@example.com", "z@example.com"]
    assert body["contacts"][0] == newest  # the contact as stored, without contact_lists unless asked
    r = await get(client, ws, "contacts.list", limit=3)
    body = r.json()
    assert [c["email"] for c in body["contacts"]] == ["y@example.com", "a@example.com", "b@example.com"]
    decoded = base64.b64decode(body["next_cursor"]).decode()
    assert decoded == "2024-03-01T12:00:10Z~b@example.com"
    r = await get(client, ws, "contacts.list", limit=3, cursor=body["next_cursor"])
    assert r.json() == {"contacts": [await one(client, ws, "z@example.com")]}


async def one(client, ws, email):
    r = await get(client, ws, "contacts.getByEmail", email=email)
    contact = r.json()["contact"]
    del contact["contact_lists"], contact["contact_segments"]
    return contact


async def test_list_cursor_keeps_microseconds_and_tildes(client, ws):
    await upsert(client, ws, email="x~1@example.com", created_at="2024-03-01T12:00:00.000001Z")
    await upsert(client, ws, email="x~2@example.com", created_at="2024-03-01T12:00:00.000001Z")
    await upsert(client, ws, email="x~0@example.com", created_at="2024-03-01T12:00:00Z")
    r = await get(client, ws, "contacts.list", limit=1)
    cursor = r.json()["next_cursor"]
    assert base64.b64decode(cursor).decode() == "2024-03-01T12:00:00.000001Z~x~1@example.com"
    emails, sizes = await list_all(client, ws, limit=1)
    assert emails == ["x~1@example.com", "x~2@example.com", "x~0@example.com"]
    # URL-safe / unpadded / "+" sent as a space: the same cursor
    raw = base64.b64decode(cursor)
    for variant in (base64.urlsafe_b64encode(raw).decode().rstrip("="), cursor.replace("+", " ")):
        r = await get(client, ws, "contacts.list", limit=1, cursor=variant)
        assert [c["email"] for c in r.json()["contacts"]] == ["x~2@example.com"]


async def test_paging_with_insertions_between_pages_has_no_duplicate_or_gap(client, ws, pool):
    # 57 contacts, several sharing a created_at, then pages of 10 while contacts keep arriving:
    # newer ones (now) and older ones (history imports) on both sides of the cursor.
    for i in range(57):
        await upsert(client, ws, email=f"p{i:02d}@example.com", created_at=stamp(100 + i // 3))
    original = {f"p{i:02d}@example.com" for i in range(57)}
    seen: list[str] = []
    cursor = None
    inserted_before_cursor = []
    for page in range(100):
        params = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        body = (await get(client, ws, "contacts.list", **params)).json()
        seen += [c["email"] for c in body["contacts"]]
        # between pages: a brand new contact, one imported far in the past, and one landing
        # exactly on the cursor's created_at (sorting before and after the cursor's email)
        await upsert(client, ws, email=f"new{page}@example.com")
        await upsert(client, ws, email=f"hist{page}@example.com", created_at=stamp(page))
        if body["contacts"]:
            last = body["contacts"][-1]
            await upsert(client, ws, email=f"a-tie{page}@example.com", created_at=last["created_at"])
            await upsert(client, ws, email=f"zz-tie{page}@example.com", created_at=last["created_at"])
            inserted_before_cursor.append(f"a-tie{page}@example.com")
        cursor = body.get("next_cursor")
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a contact came twice"
    assert original <= set(seen), f"skipped: {sorted(original - set(seen))}"
    # what was inserted in front of the cursor is not on later pages; what was inserted after it is
    assert not set(inserted_before_cursor) & set(seen)
    assert {e for e in seen if e.startswith("zz-tie")}
    rows = await pool.fetch("SELECT email FROM contacts WHERE workspace_id = $1 ORDER BY created_at DESC, email", ws.id)
    order = {r["email"]: i for i, r in enumerate(rows)}
    assert [order[e] for e in seen] == sorted(order[e] for e in seen)  # pages follow the list order


async def test_limit_and_cursor_errors(client, ws):
    await upsert(client, ws, email="lim@example.com")
    assert (await get(client, ws, "contacts.list", limit="")).status_code == 200  # empty counts as absent
    for bad in ("0", "101", "-1", "abc", "1.5", " ", "1e2", "99999999999999", "٣"):
        assert_json_error(await get(client, ws, "contacts.list", limit=bad), 400, "limit must be between 1 and 100")
    for good in ("1", "100", " 7 "):
        assert (await get(client, ws, "contacts.list", limit=good)).status_code == 200
    encode = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    for bad in ("not base64!", "%%%", encode("no separator"), encode("yesterday~a@example.com"),
                encode("2024-03-01T12:00:00Z~"), encode("2024-13-01T12:00:00Z~a@example.com"),
                base64.b64encode(b"\xff\xfe~a").decode(), encode("2024-03-01T12:00:00Z~a\x00b")):
        assert_json_error(await get(client, ws, "contacts.list", cursor=bad), 400, "invalid cursor encoding")


async def test_with_contact_lists(client, pool, ws):
    await upsert(client, ws, email="m1@example.com", created_at=stamp(2))
    await upsert(client, ws, email="m2@example.com", created_at=stamp(1))
    await make_list(pool, ws, "news")
    await member(pool, ws, "news", "m1@example.com", "pending")
    for flag in ("true", "1", "TRUE"):
        contacts = (await get(client, ws, "contacts.list", with_contact_lists=flag)).json()["contacts"]
        assert [(m["list_id"], m["status"]) for m in contacts[0]["contact_lists"]] == [("news", "pending")]
        assert contacts[1]["contact_lists"] == []
    for flag in ("false", "0"):
        contacts = (await get(client, ws, "contacts.list", with_contact_lists=flag)).json()["contacts"]
        assert all("contact_lists" not in c for c in contacts)
    for bad in ("yes", "2", "truthy"):
        assert_json_error(await get(client, ws, "contacts.list", with_contact_lists=bad), 400,
                          "invalid with_contact_lists: must be true, false, 1 or 0")


# ---------------------------------------------------------------- contacts.list: filters

async def test_substring_filters(client, ws, new_workspace):
    await upsert(client, ws, email="john.doe@example.com", first_name="John", last_name="Doe", full_name="John Doe",
                 external_id="CRM-100", phone="+1 555 0100", country="US", language="en-US", created_at=stamp(3))
    await upsert(client, ws, email="jane@sample.org", first_name="Jane", last_name="DOE-Smith", full_name="Jane Doe",
                 external_id="crm-200", phone="+44 20 7946", country="GB", language="en-GB", created_at=stamp(2))
    await upsert(client, ws, email="pierre@exemple.fr", first_name="Pierre", last_name="Dupont", country="FR",
                 language="fr", created_at=stamp(1))
    other = await new_workspace()
    await upsert(client, other, email="john.doe@example.com", first_name="John")

    async def emails(**f):
        r = await get(client, ws, "contacts.list", **f)
        assert r.status_code == 200, r.text
        return [c["email"] for c in r.json()["contacts"]]

    assert await emails(email="DOE@EX") == ["john.doe@example.com"]
    assert await emails(email="e") == ["john.doe@example.com", "jane@sample.org", "pierre@exemple.fr"]
    assert await emails(first_name="jAn") == ["jane@sample.org"]
    assert await emails(last_name="doe") == ["john.doe@example.com", "jane@sample.org"]
    assert await emails(full_name="n do") == ["john.doe@example.com"]
    assert await emails(full_name=" DO") == ["john.doe@example.com", "jane@sample.org"]
    assert await emails(external_id="crm-") == ["john.doe@example.com", "jane@sample.org"]
    assert await emails(phone="555") == ["john.doe@example.com"]
    assert await emails(country="gb") == ["jane@sample.org"]
    assert await emails(language="EN") == ["john.doe@example.com", "jane@sample.org"]
    assert await emails(language="en", last_name="smith") == ["jane@sample.org"]  # filters combine with AND
    assert await emails(first_name="nobody") == []
    assert await emails(email="") == ["john.doe@example.com", "jane@sample.org", "pierre@exemple.fr"]  # empty: absent
    assert_json_error(await get(client, ws, "contacts.list", first_name="a\x00"), 400,
                      "invalid first_name: contains a NUL character")


async def test_like_wildcards_match_literally(client, ws):
    await upsert(client, ws, email="percent@example.com", first_name="100% real", created_at=stamp(4))
    await upsert(client, ws, email="plain@example.com", first_name="100 real", created_at=stamp(3))
    await upsert(client, ws, email="under_score@example.com", first_name="a_b", created_at=stamp(2))
    await upsert(client, ws, email="underxscore@example.com", first_name="axb", last_name="back\\slash", created_at=stamp(1))

    async def emails(**f):
        return [c["email"] for c in (await get(client, ws, "contacts.list", **f)).json()["contacts"]]

    assert await emails(first_name="100%") == ["percent@example.com"]
    assert await emails(first_name="%") == ["percent@example.com"]
    assert await emails(first_name="_") == ["under_score@example.com"]
    assert await emails(email="r_s") == ["under_score@example.com"]
    assert await emails(last_name="k\\s") == ["underxscore@example.com"]
    assert await emails(last_name="\\") == ["underxscore@example.com"]


async def test_trigram_indexes_cannot_serve_an_email_equality(pool):
    """pg_trgm answers equality too: an index on the bare email column would be a candidate for
    every lookup of one contact (migration 0007). Each trigram index is on an expression."""
    defs = [r["indexdef"] for r in await pool.fetch(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'contacts' AND indexdef LIKE '%gin_trgm_ops%'")]
    if not defs:
        pytest.skip("this PostgreSQL has no pg_trgm/btree_gin: substring filters are not indexed")
    assert any("lower(email)" in d for d in defs), defs
    for d in defs:
        assert re.search(r"\(workspace_id, lower\(\w+\) gin_trgm_ops\)", d), d


async def test_list_id_and_status_filters(client, pool, ws):
    for i in range(6):
        await upsert(client, ws, email=f"l{i}@example.com", created_at=stamp(10 - i))
    await make_list(pool, ws, "news")
    await make_list(pool, ws, "promo")
    await make_list(pool, ws, "old", deleted=True)
    await member(pool, ws, "news", "l0@example.com", "active")
    await member(pool, ws, "news", "l1@example.com", "unsubscribed")
    await member(pool, ws, "news", "l2@example.com", "active", removed=True)
    await member(pool, ws, "promo", "l3@example.com", "unsubscribed")
    await member(pool, ws, "old", "l4@example.com", "unsubscribed")

    async def emails(**f):
        r = await get(client, ws, "contacts.list", **f)
        assert r.status_code == 200, r.text
        return [c["email"] for c in r.json()["contacts"]]

    assert await emails(list_id="news") == ["l0@example.com", "l1@example.com"]
    assert await emails(list_id="news", contact_list_status="active") == ["l0@example.com"]
    assert await emails(list_id="news", contact_list_status="unsubscribed") == ["l1@example.com"]
    assert await emails(contact_list_status="unsubscribed") == ["l1@example.com", "l3@example.com"]  # any live list
    assert await emails(list_id="old") == []       # a deleted list has no members
    assert await emails(list_id="missing") == []
    assert await emails(list_id="news", email="l1") == ["l1@example.com"]
    assert_json_error(await get(client, ws, "contacts.list", contact_list_status="gone"), 400,
                      "invalid contact_list_status: must be one of active, pending, unsubscribed, bounced, complained")


async def test_segments_filter(client, pool, ws):
    for i in range(4):
        await upsert(client, ws, email=f"s{i}@example.com", created_at=stamp(10 - i))
    await in_segment(pool, ws, "vip", "s0@example.com")
    await in_segment(pool, ws, "vip", "s2@example.com")
    await in_segment(pool, ws, "eu", "s3@example.com")

    async def emails(params):
        r = await client.get("/api/contacts.list", headers=ws.headers, params=[("workspace_id", ws.id), *params])
        assert r.status_code == 200, r.text
        return [c["email"] for c in r.json()["contacts"]]

    assert await emails([("segments[]", "vip")]) == ["s0@example.com", "s2@example.com"]
    assert await emails([("segments", "vip")]) == ["s0@example.com", "s2@example.com"]
    assert await emails([("segments[]", "vip"), ("segments[]", "eu")]) == ["s0@example.com", "s2@example.com", "s3@example.com"]
    assert await emails([("segments", "eu"), ("segments[]", "none")]) == ["s3@example.com"]
    assert await emails([("segments[]", "none")]) == []
    assert await emails([("segments[]", "vip"), ("email", "s2")]) == ["s2@example.com"]


async def test_filtered_paging_matches_sql_at_every_page(client, pool, ws):
    """Paging a filter whose matches are unevenly spread: every match once, in list order."""
    await make_list(pool, ws, "news")
    expected = []
    for i in range(80):
        email = f"f{i:02d}@example.com"
        await upsert(client, ws, email=email, first_name="Match" if i % 7 == 0 or i > 70 else "Other",
                     created_at=stamp(1000 - i // 2))
        if i % 7 == 0 or i > 70:
            expected.append(email)
            await member(pool, ws, "news", email)
    emails, sizes = await list_all(client, ws, limit=3, first_name="match", list_id="news")
    assert emails == expected
    assert all(s == 3 for s in sizes[:-1])


async def test_every_list_strategy_answers_the_rows_the_filters_define(pool, ws, client):
    """list_contacts may answer from a window in list order, from the matches, or (list_id) from
    the list's members in list order: each statement it may run answers exactly the rows the
    filters define (computed here in Python from the tables), for filters and cursors, limit + 1 at most."""
    await make_list(pool, ws, "news")
    for i in range(40):
        email = f"w{i:02d}@example.com"
        await upsert(client, ws, email=email, first_name="Ann" if i % 3 else "Bob", last_name=f"L{i % 5}",
                     created_at=stamp(500 - i // 4))
        if i % 2:
            await member(pool, ws, "news", email, "active" if i % 4 == 1 else "bounced", removed=i % 10 == 9)
        if i % 5 == 0:
            await in_segment(pool, ws, "seg", email)
    contacts = await pool.fetch("SELECT email, first_name, last_name, created_at FROM contacts WHERE workspace_id = $1",
                                ws.id)
    memberships = {(r["list_id"], r["email"]): r["status"] for r in await pool.fetch(
        "SELECT list_id, email, status FROM contact_lists WHERE workspace_id = $1 AND deleted_at IS NULL", ws.id)}
    segment = {r["email"] for r in await pool.fetch(
        "SELECT email FROM contact_segments WHERE workspace_id = $1 AND segment_id = 'seg'", ws.id)}

    def expected(q):
        rows = sorted(contacts, key=lambda c: (-c["created_at"].timestamp(), c["email"]))
        if q.after:
            at, key = q.after
            rows = [c for c in rows if c["created_at"] < at or (c["created_at"] == at and c["email"] > key)]
        for name, value in q.substrings:
            rows = [c for c in rows if value.lower() in c[name].lower()]
        if q.list_id:
            rows = [c for c in rows if memberships.get((q.list_id, c["email"])) in
                    ((q.list_status,) if q.list_status else query.LIST_STATUSES)]
        elif q.list_status:
            rows = [c for c in rows if q.list_status in {s for (_, e), s in memberships.items() if e == c["email"]}]
        if q.segments:
            rows = [c for c in rows if c["email"] in segment]
        return [c["email"] for c in rows][:q.limit + 1]

    cursor = query.encode_cursor(T0 + dt.timedelta(seconds=495), "w20@example.com")
    cases = [  # (parameters, statements list_contacts may run)
        ([("first_name", "ann")], 2),
        ([("first_name", "ann"), ("cursor", cursor)], 2),
        ([("list_id", "news"), ("contact_list_status", "active"), ("limit", "4")], 1),
        ([("list_id", "news"), ("contact_list_status", "bounced"), ("cursor", cursor), ("limit", "2")], 1),
        ([("list_id", "news"), ("limit", "5")], 1),
        ([("list_id", "news"), ("cursor", cursor)], 1),
        ([("list_id", "news"), ("first_name", "bob"), ("limit", "2")], 2),
        ([("list_id", "news"), ("contact_list_status", "active"), ("segments[]", "seg"), ("cursor", cursor)], 2),
        ([("contact_list_status", "bounced"), ("cursor", cursor)], 2),
        ([("segments[]", "seg"), ("last_name", "l0")], 2),
        ([("email", "w3"), ("limit", "3"), ("cursor", cursor)], 2),
    ]
    for params, count in cases:
        q = query.parse_list_query(params)
        statements = store.list_statements(ws.id, q)
        assert len(statements) == count, params
        want = expected(q)
        assert want, params
        for sql, args in statements:
            assert [r["email"] for r in await pool.fetch(sql, *args)] == want, params


async def test_bad_filters_leave_data_untouched(client, pool, ws):
    await upsert(client, ws, email="keep@example.com", first_name="Keep")
    before = await contacts_rows(pool, ws)
    for params in ({"limit": "0"}, {"cursor": "!!"}, {"with_contact_lists": "maybe"}, {"contact_list_status": "x"}):
        assert (await get(client, ws, "contacts.list", **params)).status_code == 400
    assert await contacts_rows(pool, ws) == before


# ---------------------------------------------------------------- contacts.list: a list's members in list order

async def subscribe(client, ws, list_id, **contact):
    r = await client.post("/api/lists.subscribe", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": contact, "list_ids": [list_id]})
    assert r.status_code == 200, r.text


async def stale_memberships(pool, ws):
    """Memberships whose contact_created_at is not their contact's created_at (removed ones included)."""
    return [tuple(r) for r in await pool.fetch(
        "SELECT cl.list_id, cl.email FROM contact_lists cl JOIN contacts c"
        "    ON c.workspace_id = cl.workspace_id AND c.email = cl.email"
        " WHERE cl.workspace_id = $1 AND cl.contact_created_at <> c.created_at", ws.id)]


async def test_paging_a_list_of_the_oldest_contacts_with_insertions_between_pages(client, ws, pool):
    # 60 contacts, two per second; the list holds the oldest 21 (some unsubscribed, one removed):
    # its members all sit below every non-member, the case a walk of the contacts is slow for.
    for i in range(60):
        await upsert(client, ws, email=f"c{i:02d}@example.com", created_at=stamp(100 + i // 2))
    await make_list(pool, ws, "old")
    original = []
    for i in range(21):
        email = f"c{i:02d}@example.com"
        await member(pool, ws, "old", email, "unsubscribed" if i % 4 == 0 else "active", removed=i == 7)
        if i != 7:
            original.append(email)
    seen, before_cursor, after_cursor, cursor = [], [], [], None
    for page in range(100):
        params = {"list_id": "old", "limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = (await get(client, ws, "contacts.list", **params)).json()
        seen += [c["email"] for c in body["contacts"]]
        cursor = body.get("next_cursor")
        if cursor is None:
            break
        # between pages: a new contact joins the list (above the cursor), an imported one older
        # than all joins (below it), a non-member arrives, and two members land on the cursor's
        # created_at, one sorting before the cursor's email and one after it
        await subscribe(client, ws, "old", email=f"new{page}@example.com")
        await subscribe(client, ws, "old", email=f"hist{page}@example.com", created_at=stamp(-page))
        await upsert(client, ws, email=f"other{page}@example.com", created_at=stamp(-page))
        last = body["contacts"][-1]
        await subscribe(client, ws, "old", email=f"a-tie{page}@example.com", created_at=last["created_at"])
        await subscribe(client, ws, "old", email=f"zz-tie{page}@example.com", created_at=last["created_at"])
        before_cursor += [f"new{page}@example.com", f"a-tie{page}@example.com"]
        after_cursor += [f"hist{page}@example.com", f"zz-tie{page}@example.com"]
    assert len(seen) == len(set(seen)), "a contact came twice"
    assert set(original) <= set(seen), f"skipped: {sorted(set(original) - set(seen))}"
    assert not set(before_cursor) & set(seen)
    assert after_cursor and set(after_cursor) <= set(seen)  # all landed below the cursor of their page
    assert not [e for e in seen if e.startswith("other") or e == "c07@example.com"]
    rows = await pool.fetch("SELECT email FROM contacts WHERE workspace_id = $1 ORDER BY created_at DESC, email", ws.id)
    order = {r["email"]: i for i, r in enumerate(rows)}
    assert [order[e] for e in seen] == sorted(order[e] for e in seen)  # pages follow the list order
    # the same list, of one status, in one go: what the pages of that status would give
    everyone, _ = await list_all(client, ws, list_id="old")
    active, _ = await list_all(client, ws, limit=3, list_id="old", contact_list_status="active")
    assert active == [e for e in everyone if e not in {f"c{i:02d}@example.com" for i in range(0, 21, 4)}]
    assert await stale_memberships(pool, ws) == []


async def test_list_order_follows_a_change_of_created_at(client, ws, pool):
    await make_list(pool, ws, "news")
    await make_list(pool, ws, "promo")
    for i in range(5):
        await upsert(client, ws, email=f"m{i}@example.com", created_at=stamp(10 + i))
        await member(pool, ws, "news", f"m{i}@example.com", "active" if i % 2 else "pending")
    await member(pool, ws, "promo", "m0@example.com", removed=True)

    async def news(**f):
        r = await get(client, ws, "contacts.list", list_id="news", **f)
        assert r.status_code == 200, r.text
        return [c["email"] for c in r.json()["contacts"]]

    assert await news() == ["m4@example.com", "m3@example.com", "m2@example.com", "m1@example.com", "m0@example.com"]
    # the oldest becomes the newest, the newest the oldest; one is given its own created_at again
    moved = await upsert(client, ws, email="m0@example.com", created_at=stamp(100), first_name="Zero")
    assert moved["created_at"] == stamp(100) and moved["first_name"] == "Zero"
    await upsert(client, ws, email="m4@example.com", created_at=stamp(1))
    await upsert(client, ws, email="m2@example.com", created_at=stamp(12), first_name="Two")
    assert await news() == ["m0@example.com", "m3@example.com", "m2@example.com", "m1@example.com", "m4@example.com"]
    assert await news(contact_list_status="pending") == ["m0@example.com", "m2@example.com", "m4@example.com"]
    assert await news(limit=2, cursor=query.encode_cursor(T0 + dt.timedelta(seconds=13), "m3@example.com")) == \
        ["m2@example.com", "m1@example.com"]
    assert await stale_memberships(pool, ws) == []  # the removed promo membership followed too
    # only the field changes are on the timeline, as for any upsert (created_at is not diffed)
    kinds = [r["changes"] for r in await pool.fetch(
        "SELECT changes FROM contact_timeline WHERE workspace_id = $1 AND email = 'm4@example.com'"
        " AND kind = 'contact.updated'", ws.id)]
    assert kinds == []
    # moves racing new subscriptions and other moves of the same contacts: every copy ends right
    await asyncio.gather(*(
        [upsert(client, ws, email=f"m{i % 5}@example.com", created_at=stamp(200 + i)) for i in range(10)] +
        [subscribe(client, ws, "promo", email=f"m{i}@example.com") for i in range(1, 5)]))
    assert await stale_memberships(pool, ws) == []
    emails = await news()
    created = {r["email"]: r["created_at"] for r in await pool.fetch(
        "SELECT email, created_at FROM contacts WHERE workspace_id = $1", ws.id)}
    assert emails == sorted(emails, key=lambda e: (-created[e].timestamp(), e))


# ---------------------------------------------------------------- pure parsing

def test_parse_list_query_defaults_and_order_of_checks():
    q = query.parse_list_query([])
    assert (q.limit, q.after, q.filtered, q.with_contact_lists) == (20, None, False, False)
    q = query.parse_list_query([("segments[]", "a"), ("segments", "b"), ("segments[]", "a"), ("phone", "1")])
    assert q.segments == ("a", "b") and q.substrings == (("phone", "1"),) and q.filtered
    with pytest.raises(query.QueryError) as e:  # the filter is checked before the limit
        query.parse_list_query([("limit", "0"), ("email", "\x00")])
    assert e.value.message == "invalid email: contains a NUL character"


def test_like_pattern_escapes_wildcards():
    assert query.like_pattern("a%b_c\\d") == "%a\\%b\\_c\\\\d%"


def test_cursor_round_trip():
    t = dt.datetime(2024, 1, 2, 3, 4, 5, 600, tzinfo=UTC)
    assert query.decode_cursor(query.encode_cursor(t, "a~b@example.com")) == (t, "a~b@example.com")
    assert paging.decode_cursor(paging.encode_cursor(t, "17", "|"), "|") == (t, "17")
