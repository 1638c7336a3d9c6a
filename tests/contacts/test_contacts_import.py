"""POST /api/contacts.import end to end, and the pure bulk rules behind it (postroom.contacts.bulk)."""

import asyncio
import datetime as dt
import secrets

import pytest
from helpers import assert_json_error

from postroom.contacts import bulk, bulk_store, imports, model, store as contacts_store
from postroom.lists import store as lists_store

IMPORT = "/api/contacts.import"
UTC = dt.timezone.utc


async def run_import(client, ws, contacts, **extra):
    return await client.post(IMPORT, headers=ws.headers, json={"workspace_id": ws.id, "contacts": contacts, **extra})


async def stored(pool, ws_id, email):
    row = await pool.fetchrow("SELECT * FROM contacts WHERE workspace_id = $1 AND email = $2", ws_id, email)
    return None if row is None else dict(row)


async def count(pool, table, ws_id):
    return await pool.fetchval(f"SELECT count(*) FROM {table} WHERE workspace_id = $1", ws_id)


async def total_contacts(client, ws):
    r = await client.get("/api/contacts.count", headers=ws.headers, params={"workspace_id": ws.id})
    return r.json()["total_contacts"]


async def make_list(pool, ws_id, list_id):
    await pool.execute("INSERT INTO lists (workspace_id, id, name) VALUES ($1, $2, $3)", ws_id, list_id, f"List {list_id}")


# ---------------------------------------------------------------- the endpoint

async def test_bad_rows_mixed_in_get_their_email_and_real_reason(client, ws, pool):
    rows = [
        {"email": "Good.One@Example.com ", "first_name": "Ann"},
        {"email": " Not-An-Email ", "first_name": "X"},
        {"email": "typed@example.com", "orders_count": "5"},
        {"first_name": "no email"},
        "not an object",
        {"email": 42},
        {"email": "zone@example.com", "timezone": "Mars/Base"},
        {"email": "when@example.com", "custom_datetime_2": "yesterday"},
        {"email": "json@example.com", "custom_json_1": "text"},
        {"email": "good.two@example.com", "lifetime_value": 10},
    ]
    r = await run_import(client, ws, rows)
    assert r.status_code == 200, r.text
    assert r.json() == {"operations": [
        {"email": "good.one@example.com", "action": "create"},
        {"email": "not-an-email", "action": "error", "error": "invalid contact: invalid email format"},
        {"email": "typed@example.com", "action": "error",
         "error": "invalid contact: invalid type for orders_count: expected integer, got String"},
        {"email": "", "action": "error", "error": "invalid contact: email is required"},
        {"email": "", "action": "error", "error": "invalid contact: email is required"},
        {"email": "", "action": "error", "error": "invalid contact: invalid type for email: expected string, got Number"},
        {"email": "zone@example.com", "action": "error", "error": "invalid contact: invalid timezone: Mars/Base"},
        {"email": "when@example.com", "action": "error", "error": r.json()["operations"][7]["error"]},
        {"email": "json@example.com", "action": "error",
         "error": "invalid contact: invalid JSON value for custom_json_1, got String"},
        {"email": "good.two@example.com", "action": "create"},
    ]}
    assert r.json()["operations"][7]["error"].startswith("invalid contact: invalid time format for custom_datetime_2: ")
    # the same message as upsert gives for the same contact
    up = await client.post("/api/contacts.upsert", headers=ws.headers,
                           json={"workspace_id": ws.id, "contact": rows[7]})
    assert up.json()["error"] == r.json()["operations"][7]["error"]
    emails = [e["email"] for e in await pool.fetch(
        "SELECT email FROM contacts WHERE workspace_id = $1 ORDER BY email", ws.id)]
    assert emails == ["good.one@example.com", "good.two@example.com"]
    assert (await stored(pool, ws.id, "good.two@example.com"))["lifetime_value"] == 10


async def test_every_row_bad_writes_nothing(client, ws, pool):
    r = await run_import(client, ws, [{"email": "x"}, {"email": "y@example.com", "orders_count": -1}])
    assert [op["action"] for op in r.json()["operations"]] == ["error", "error"]
    assert r.json()["operations"][1]["error"] == "invalid contact: orders_count must be >= 0"
    for table in ("contacts", "contact_timeline", "events"):
        assert await count(pool, table, ws.id) == 0


@pytest.mark.parametrize("body, message", [
    ({}, "contacts must be an array"),
    ({"contacts": None}, "contacts must be an array"),
    ({"contacts": {"email": "a@example.com"}}, "contacts must be an array"),
    ({"contacts": "a@example.com"}, "contacts must be an array"),
    ({"contacts": []}, "contacts array is empty"),
    ({"contacts": [{"email": "a@example.com"}], "subscribe_to_lists": "news"},
     "subscribe_to_lists must be an array of list ids"),
    ({"contacts": [{"email": "a@example.com"}], "subscribe_to_lists": [1]},
     "subscribe_to_lists must be an array of list ids"),
    ({"contacts": [{"email": "a@example.com"}], "subscribe_to_lists": [f"l{i}" for i in range(101)]},
     "subscribe_to_lists must have at most 100 items"),
])
async def test_request_errors_change_nothing(client, ws, pool, body, message):
    r = await client.post(IMPORT, headers=ws.headers, json={"workspace_id": ws.id, **body})
    assert_json_error(r, 400, message)
    assert await count(pool, "contacts", ws.id) == 0


async def test_unknown_lists_are_named_and_nothing_is_written(client, ws, pool):
    await make_list(pool, ws.id, "news")
    r = await run_import(client, ws, [{"email": "a@example.com"}],
                         subscribe_to_lists=["news", "ghost", "nope", "ghost"])
    assert_json_error(r, 400, "list not found: ghost, nope")
    for table in ("contacts", "contact_lists", "contact_timeline", "events"):
        assert await count(pool, table, ws.id) == 0


async def test_impossible_list_ids_are_unknown_in_request_order(client, ws, pool):
    await make_list(pool, ws.id, "news")
    long_id = "x" * 200
    r = await run_import(client, ws, [{"email": "a@example.com"}],
                         subscribe_to_lists=["bad-id", "news", "ghost", long_id])
    assert_json_error(r, 400, f"list not found: bad-id, ghost, {'x' * 64}")
    for table in ("contacts", "contact_lists", "contact_timeline", "events"):
        assert await count(pool, table, ws.id) == 0


async def test_auth_and_permissions(client, ws, pool):
    r = await client.post(IMPORT, json={"workspace_id": ws.id, "contacts": [{"email": "a@example.com"}]})
    assert_json_error(r, 401, "Authorization header is required")
    token = await ws.key("contacts:r")
    r = await client.post(IMPORT, headers={"Authorization": f"Bearer {token}"},
                          json={"workspace_id": ws.id, "contacts": [{"email": "a@example.com"}]})
    assert_json_error(r, 403, "Insufficient permissions: write access to contacts required")
    r = await client.get(IMPORT, headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 405, "Method not allowed")
    assert await count(pool, "contacts", ws.id) == 0


async def test_null_keeps_the_stored_value_and_empty_string_sets_it(client, ws, pool):
    email = "keep@example.com"
    await client.post("/api/contacts.upsert", headers=ws.headers, json={"workspace_id": ws.id, "contact": {
        "email": email, "first_name": "Ann", "last_name": "Lee", "custom_json_1": {"a": 1}, "orders_count": 2}})
    r = await run_import(client, ws, [{"email": email, "first_name": None, "last_name": "", "custom_json_1": None,
                                       "orders_count": 3, "phone": None}])
    assert r.json()["operations"] == [{"email": email, "action": "update"}]
    row = await stored(pool, ws.id, email)
    assert (row["first_name"], row["last_name"], row["custom_json_1"], row["orders_count"], row["phone"]) == \
        ("Ann", "", {"a": 1}, 3, None)


async def test_duplicates_apply_in_order(client, ws, pool):
    await client.post("/api/contacts.upsert", headers=ws.headers,
                      json={"workspace_id": ws.id, "contact": {"email": "old@example.com", "first_name": "Old"}})
    rows = [
        {"email": "dup@example.com", "first_name": "A", "last_name": "One"},
        {"email": "old@example.com", "last_name": "Known"},
        {"email": "DUP@example.com", "first_name": "B", "custom_number_1": 1},
        {"email": "dup@example.com", "first_name": "bad", "orders_count": -5},  # rejected: applies nothing
        {"email": "dup@example.com", "first_name": None, "custom_number_1": 2, "job_title": "Chef"},
        {"email": "old@example.com", "last_name": "Later"},
    ]
    r = await run_import(client, ws, rows)
    assert [(op["email"], op["action"]) for op in r.json()["operations"]] == [
        ("dup@example.com", "create"), ("old@example.com", "update"), ("dup@example.com", "update"),
        ("dup@example.com", "error"), ("dup@example.com", "update"), ("old@example.com", "update")]
    dup = await stored(pool, ws.id, "dup@example.com")
    assert (dup["first_name"], dup["last_name"], dup["custom_number_1"], dup["job_title"]) == ("B", "One", 2, "Chef")
    old = await stored(pool, ws.id, "old@example.com")
    assert (old["first_name"], old["last_name"]) == ("Old", "Later")
    # one write per contact: one timeline entry each, with the net change
    timeline = await pool.fetch("SELECT email, kind, changes FROM contact_timeline WHERE workspace_id = $1 "
                                "AND kind LIKE 'contact.%' ORDER BY id", ws.id)
    assert [(t["email"], t["kind"]) for t in timeline] == [
        ("old@example.com", "contact.created"), ("dup@example.com", "contact.created"),
        ("old@example.com", "contact.updated")]
    assert timeline[2]["changes"] == {"last_name": {"old": None, "new": "Later"}}
    assert timeline[1]["changes"] is None  # a creation: the event carries the contact, no diff from empty


async def test_timestamps_follow_the_upsert_rules(client, ws, pool):
    r = await run_import(client, ws, [
        {"email": "hist@example.com", "created_at": "2020-01-02T03:04:05Z", "updated_at": "2021-01-01T00:00:00Z"},
        {"email": "fresh@example.com"},
    ])
    assert r.status_code == 200
    hist = await stored(pool, ws.id, "hist@example.com")
    assert hist["created_at"] == dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert hist["updated_at"] == dt.datetime(2021, 1, 1, tzinfo=UTC)
    fresh = await stored(pool, ws.id, "fresh@example.com")
    assert fresh["created_at"] == fresh["updated_at"] > hist["updated_at"]
    await run_import(client, ws, [{"email": "hist@example.com", "first_name": "H"}])
    again = await stored(pool, ws.id, "hist@example.com")
    assert again["created_at"] == hist["created_at"] and again["updated_at"] > hist["updated_at"]


async def test_import_stores_what_upsert_stores(client, ws, new_workspace, pool):
    contact = {"email": "Same@Example.com", "timezone": "europe/paris", "first_name": " Ann ", "lifetime_value": 42.0,
               "orders_count": 7, "last_order_at": "2023-05-15T16:30:00+02:00", "custom_json_2": [1, {"b": None}],
               "custom_datetime_1": "2023-06-01T09:00:00.1234567Z", "custom_string_3": ""}
    other = await new_workspace()
    await client.post("/api/contacts.upsert", headers=ws.headers, json={"workspace_id": ws.id, "contact": contact})
    await run_import(client, other, [contact])
    a, b = await stored(pool, ws.id, "same@example.com"), await stored(pool, other.id, "same@example.com")
    for f in model.DATA_FIELDS:
        assert a[f] == b[f], f


async def test_side_effects_per_contact(client, ws, pool):
    await run_import(client, ws, [{"email": "fx@example.com", "first_name": "A", "custom_json_1": {"k": [1]}}])
    await run_import(client, ws, [{"email": "fx@example.com", "first_name": "B", "custom_number_1": 3}])
    await run_import(client, ws, [{"email": "fx@example.com", "first_name": "B"}])  # nothing changed
    timeline = await pool.fetch("SELECT kind, entity_type, entity_id, changes FROM contact_timeline "
                                "WHERE workspace_id = $1 AND email = 'fx@example.com' ORDER BY id", ws.id)
    assert [t["kind"] for t in timeline] == ["contact.created", "contact.updated"]
    assert timeline[0]["changes"] is None  # a creation: no diff from empty (the event carries the contact)
    assert (timeline[0]["entity_type"], timeline[0]["entity_id"]) == ("contact", "fx@example.com")
    assert timeline[1]["changes"] == {"first_name": {"old": "A", "new": "B"}, "custom_number_1": {"old": None, "new": 3}}
    events = await pool.fetch("SELECT type, subject, data FROM events WHERE workspace_id = $1 ORDER BY id", ws.id)
    assert [(e["type"], e["subject"]) for e in events] == [
        ("contact.created", "fx@example.com"), ("contact.updated", "fx@example.com")]
    created = events[0]["data"]["contact"]
    assert (created["first_name"], created["custom_json_1"]) == ("A", {"k": [1]})
    row = model.to_wire(await stored(pool, ws.id, "fx@example.com"))
    # the stored contact, but for updated_at: the third import (no change, no event) set it again
    assert events[1]["data"]["contact"] == {**row, "updated_at": events[1]["data"]["contact"]["updated_at"]}
    assert model.parse_time(events[1]["data"]["contact"]["updated_at"], "updated_at") < \
        model.parse_time(row["updated_at"], "updated_at")


async def test_subscribe_to_lists_keeps_opted_out_members(client, ws, pool):
    await make_list(pool, ws.id, "news")
    await make_list(pool, ws.id, "promo")
    await pool.execute("INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at) VALUES "
                       "($1, 'news', 'gone@example.com', 'unsubscribed', now())", ws.id)
    r = await run_import(client, ws, [{"email": "new@example.com"}, {"email": "gone@example.com"}, {"email": "bad"}],
                         subscribe_to_lists=["news", "promo"])
    assert [op["action"] for op in r.json()["operations"]] == ["create", "create", "error"]
    members = await pool.fetch("SELECT list_id, email, status FROM contact_lists WHERE workspace_id = $1 "
                               "ORDER BY list_id, email", ws.id)
    assert [tuple(m) for m in members] == [
        ("news", "gone@example.com", "unsubscribed"), ("news", "new@example.com", "active"),
        ("promo", "gone@example.com", "active"), ("promo", "new@example.com", "active")]


async def test_import_changing_created_at_moves_the_memberships_copy(client, ws, pool):
    await make_list(pool, ws.id, "news")
    r = await run_import(client, ws, [{"email": "m@example.com", "created_at": "2020-01-01T00:00:00Z"},
                                      {"email": "n@example.com"}], subscribe_to_lists=["news"])
    assert [op["action"] for op in r.json()["operations"]] == ["create", "create"]
    r = await run_import(client, ws, [{"email": "m@example.com", "created_at": "2019-06-01T00:00:00Z"},
                                      {"email": "n@example.com", "first_name": "N"}])
    assert [op["action"] for op in r.json()["operations"]] == ["update", "update"]
    rows = await pool.fetch("SELECT cl.email, cl.contact_created_at = c.created_at AS same FROM contact_lists cl "
                            "JOIN contacts c USING (workspace_id, email) WHERE cl.workspace_id = $1 ORDER BY 1", ws.id)
    assert [tuple(r) for r in rows] == [("m@example.com", True), ("n@example.com", True)]
    assert (await stored(pool, ws.id, "m@example.com"))["created_at"] == dt.datetime(2019, 6, 1, tzinfo=UTC)


def test_deferred_rows_get_the_operations_of_rows_added_one_by_one():
    rows = [{"email": "A@x.com", "first_name": "A"}, {"email": "b@x.com", "orders_count": -1}, "nope",
            {"email": 5}, {"email": " a@X.com ", "last_name": "L"}, {"email": "b@x.com"}, {"email": "bad"},
            {"first_name": "no email"}, {"email": "c@x.com", "timezone": "Mars/Base"}]
    eager, deferred = bulk.Batch(), bulk.Batch()
    for raw in rows:
        eager.add(raw)
        deferred.defer(raw)
    assert deferred.keys() == ["a@x.com", "b@x.com", "bad", "c@x.com"]
    assert [e for e in deferred.keys() if deferred.validate(e)] == eager.emails() == ["a@x.com", "b@x.com"]
    assert deferred.ops == eager.ops
    assert deferred.groups == eager.groups


async def test_many_rows_across_chunks(client, ws, pool, monkeypatch):
    monkeypatch.setattr(imports, "CHUNK_SIZE", 7)
    rows = [{"email": f"user{i % 40}@example.com", "custom_number_1": i} for i in range(100)]
    rows[50] = {"email": "broken", "custom_number_1": 50}
    r = await run_import(client, ws, rows)
    ops = r.json()["operations"]
    assert len(ops) == 100
    assert [op["action"] for op in ops[:40]] == ["create"] * 40
    assert ops[50] == {"email": "broken", "action": "error", "error": "invalid contact: invalid email format"}
    assert all(op["action"] == "update" for op in ops[40:50] + ops[51:])
    assert await count(pool, "contacts", ws.id) == 40
    assert await total_contacts(client, ws) == 40
    r = await run_import(client, ws, [{"email": "user1@example.com"}, {"email": "fresh@example.com"}])
    assert await total_contacts(client, ws) == 41   # contacts.count moves by the new contacts only
    # the last row of each email wins
    assert (await stored(pool, ws.id, "user10@example.com"))["custom_number_1"] == 90
    assert (await stored(pool, ws.id, "user11@example.com"))["custom_number_1"] == 91


async def test_a_row_the_database_refuses_does_not_fail_its_neighbours(client, ws, pool, monkeypatch):
    # A rule only the database knows (a constraint added for this test) stands for any refusal
    # that validation in Python did not foresee.
    monkeypatch.setattr(imports, "CHUNK_SIZE", 50)
    name = f"import_test_{secrets.token_hex(4)}"
    await pool.execute(f"ALTER TABLE contacts ADD CONSTRAINT {name} "
                       f"CHECK (workspace_id <> '{ws.id}' OR job_title IS DISTINCT FROM 'forbidden')")
    try:
        rows = [{"email": f"n{i}@example.com", "job_title": "forbidden" if i in (13, 77) else "ok"} for i in range(100)]
        await make_list(pool, ws.id, "news")
        r = await run_import(client, ws, rows, subscribe_to_lists=["news"])
    finally:
        await pool.execute(f"ALTER TABLE contacts DROP CONSTRAINT {name}")
    ops = r.json()["operations"]
    assert r.status_code == 200
    for i in (13, 77):
        assert ops[i]["action"] == "error" and ops[i]["email"] == f"n{i}@example.com"
        assert ops[i]["error"].startswith("could not store contact: ") and name in ops[i]["error"]
    assert all(op["action"] == "create" for i, op in enumerate(ops) if i not in (13, 77))
    assert await count(pool, "contacts", ws.id) == 98
    assert await total_contacts(client, ws) == 98
    assert await count(pool, "contact_lists", ws.id) == 98
    assert await pool.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1 AND type = 'contact.created'",
                               ws.id) == 98


async def test_contact_created_concurrently_is_merged_not_overwritten(ws, pool):
    """Another transaction inserts the contact after the import looked for it: the import waits,
    retries the chunk, and merges into the contact the other one created."""
    email = "race@example.com"
    batch = bulk.Batch()
    batch.add({"email": email, "last_name": "FromImport"})
    batch.add({"email": "other@example.com"})
    async with pool.acquire() as other:
        tx = other.transaction()
        await tx.start()
        await other.execute("INSERT INTO contacts (workspace_id, email, first_name, created_at, updated_at) "
                            "VALUES ($1, $2, 'FromOther', now(), now())", ws.id, email)
        task = asyncio.create_task(bulk_store.write_batch(pool, ws.id, batch,
                                                          after_write=lists_store.sync_contact_created_at))
        # wait (bounded) until the import is blocked on the other transaction's row
        for _ in range(500):
            waiting = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND datname = current_database()")
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the import never waited for the concurrent insert"
        await tx.commit()
        await asyncio.wait_for(task, 30)
    assert batch.ops == [{"email": email, "action": "update"}, {"email": "other@example.com", "action": "create"}]
    row = await stored(pool, ws.id, email)
    assert (row["first_name"], row["last_name"]) == ("FromOther", "FromImport")
    kinds = await pool.fetch("SELECT email, kind FROM contact_timeline WHERE workspace_id = $1 ORDER BY id", ws.id)
    assert [tuple(k) for k in kinds] == [("other@example.com", "contact.created"), (email, "contact.updated")]


async def test_an_error_not_about_a_row_stops_the_batch(ws, pool, monkeypatch):
    """A failure of the write itself (here a broken statement) propagates, with the validation
    running ahead and the other writer stopped, instead of being reported per row or hanging."""
    import asyncpg

    monkeypatch.setattr(bulk_store, "APPLY", "SELECT no_such_column")
    batch = bulk.Batch()
    for i in range(50):
        batch.defer({"email": f"x{i}@example.com"})
    with pytest.raises(asyncpg.UndefinedColumnError):
        await asyncio.wait_for(bulk_store.write_batch(pool, ws.id, batch, chunk_size=5, concurrency=2,
                                                      after_write=lists_store.sync_contact_created_at), 30)
    assert await count(pool, "contacts", ws.id) == 0


async def test_concurrent_imports_of_the_same_emails(client, ws, pool):
    emails = [f"c{i}@example.com" for i in range(60)]

    async def one(k):
        order = emails[k % 3:] + emails[:k % 3]
        if k % 2:
            order.reverse()
        return await run_import(client, ws, [{"email": e, f"custom_string_{k % 5 + 1}": f"v{k}"} for e in order])

    results = await asyncio.gather(*[one(k) for k in range(6)])
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    creates = sum(op["action"] == "create" for r in results for op in r.json()["operations"])
    assert creates == 60
    assert await count(pool, "contacts", ws.id) == 60
    assert await total_contacts(client, ws) == 60
    assert await pool.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1 AND type = 'contact.created'",
                               ws.id) == 60


# ---------------------------------------------------------------- pure rules (bulk.py)

def test_fold_is_merge_row_after_row():
    now = dt.datetime(2024, 1, 1, tzinfo=UTC)
    rows = [model.parse_contact_for_import(r) for r in (
        {"email": "a@example.com", "first_name": "A", "updated_at": "2020-01-01T00:00:00Z"},
        {"email": "a@example.com", "last_name": "B", "first_name": None},
    )]
    folded = bulk.fold(None, rows, now)
    assert (folded["first_name"], folded["last_name"]) == ("A", "B")
    assert folded["updated_at"] == now  # the last row gave none: now, as upsert does
    assert folded == model.merge(model.merge(None, rows[0], now), rows[1], now)


def test_batch_operations_and_counts():
    batch = bulk.Batch()
    for raw in ({"email": "A@x.com"}, {"email": "b@x.com"}, {"email": "bad"}, {"email": "a@x.com"}, {"email": "c@x.com"}):
        batch.add(raw)
    assert batch.emails() == ["a@x.com", "b@x.com", "c@x.com"]
    batch.applied("a@x.com", existed=False)
    batch.applied("b@x.com", existed=True)
    batch.failed("c@x.com", "could not store contact: no")
    assert [op["action"] for op in batch.ops] == ["create", "update", "error", "update", "error"]
    assert batch.counts() == {"created": 1, "updated": 2, "failed": 2}


@pytest.mark.parametrize("field, text, value", [
    ("first_name", "  Ann ", "  Ann "),       # trimmed later by the model, like any string
    ("first_name", "", None),
    ("first_name", "   ", None),              # blank is absent
    ("lifetime_value", "1250.5", 1250.5),
    ("lifetime_value", "-3", -3.0),
    ("lifetime_value", "1e3", 1000.0),
    ("lifetime_value", ".5", 0.5),
    ("orders_count", "5", 5),
    ("orders_count", "5.0", 5.0),             # the model takes 5.0 as 5 and refuses 1.5
    ("orders_count", "12345678901234567890123", 12345678901234567890123),  # the model says it is too big
    ("custom_json_1", '{"a": [1, null]}', {"a": [1, None]}),
    ("custom_json_1", "7", 7),                # the model refuses a non-object/array
    ("custom_datetime_1", "2023-01-01T00:00:00Z", "2023-01-01T00:00:00Z"),
    ("email", " A@B.com", " A@B.com"),
])
def test_cell_value(field, text, value):
    assert bulk.cell_value(field, text) == value


@pytest.mark.parametrize("field, text, message", [
    ("lifetime_value", "abc", 'invalid contact: invalid number for lifetime_value: "abc"'),
    ("custom_number_3", "1,5", 'invalid contact: invalid number for custom_number_3: "1,5"'),
    ("lifetime_value", "nan", 'invalid contact: invalid number for lifetime_value: "nan"'),
    ("orders_count", "five", 'invalid contact: invalid integer for orders_count: "five"'),
])
def test_cell_value_errors(field, text, message):
    with pytest.raises(model.ContactError) as exc:
        bulk.cell_value(field, text)
    assert exc.value.message == message


def test_cell_value_bad_json_names_the_field():
    with pytest.raises(model.ContactError) as exc:
        bulk.cell_value("custom_json_4", "{nope")
    assert exc.value.message.startswith("invalid contact: invalid JSON text for custom_json_4: ")


def test_csv_columns():
    cols = bulk.CsvColumns(["email", " first_name ", "lifetime_value", "timezone", "shoe_size"])
    assert cols.unknown == ["shoe_size"]
    assert cols.contact(["a@x.com", "Ann", "", "", "44"]) == {"email": "a@x.com", "first_name": "Ann"}
    assert cols.contact(["a@x.com"]) == {"email": "a@x.com"}  # short rows: missing cells are absent
    assert cols.email([" A@X.com "]) == "a@x.com" and cols.email([]) == ""
    # the first failure in field order wins, as in upsert: timezone comes before lifetime_value
    with pytest.raises(model.ContactError) as exc:
        model.parse_contact_for_import(cols.contact(["a@x.com", "", "abc", "Mars/Base", ""]))
    assert exc.value.message == "invalid contact: invalid timezone: Mars/Base"
    with pytest.raises(model.ContactError) as exc:
        cols.contact(["bad", "", "abc", "", ""])
    assert exc.value.message == "invalid contact: invalid email format"
    with pytest.raises(model.ContactError) as exc:
        cols.contact(["a@x.com", "", "abc", "", ""])
    assert exc.value.message == 'invalid contact: invalid number for lifetime_value: "abc"'
    with pytest.raises(model.ContactError) as exc:
        cols.contact(["a@x.com", "", "", "", "", "extra"])
    assert exc.value.message == "invalid contact: the row has 6 cells but the header names 5 columns"


@pytest.mark.parametrize("header, message", [
    (["first_name"], "the header has no email column"),
    (["email", "phone", "phone "], "column appears twice in the header: phone"),
])
def test_csv_header_errors(header, message):
    with pytest.raises(ValueError) as exc:
        bulk.CsvColumns(header)
    assert str(exc.value) == message


def test_cell_text_reads_back_as_the_same_contact():
    raw = {"email": "r@example.com", "first_name": "Ann, \"the\" first", "lifetime_value": 0.1, "custom_number_1": 42.0,
           "orders_count": 3, "custom_json_1": {"a": [1, 2.5, None, "x\ny"]}, "custom_json_2": [],
           "last_order_at": "2023-05-15T14:30:00.5Z", "custom_number_2": 1e20, "custom_number_3": -2.5e-7}
    row = model.merge(None, model.parse_contact_for_import(raw), dt.datetime.now(UTC))
    wire = model.to_wire(row)
    header = list(model.FIELDS)
    cells = [bulk.cell_text(f, wire.get(f)) for f in header]
    back = model.merge(None, model.parse_contact_for_import(bulk.CsvColumns(header).contact(cells)),
                       dt.datetime.now(UTC))
    assert model.to_wire(back) == wire


def test_json_line():
    assert bulk.parse_json_line(b'{"email": "a@x.com"}\n') == {"email": "a@x.com"}
    with pytest.raises(model.ContactError) as exc:
        bulk.parse_json_line(b"not json")
    assert exc.value.message.startswith("invalid JSON line: ")


async def test_imports_refresh_the_statistics_of_the_tables_they_fill(client, ws, pool, monkeypatch):
    """A new installation's first imports are planned on fresh statistics, not on those of empty
    tables (platform.db.GrowthStats): the writers note every chunk they apply."""
    from postroom.platform import db

    growth = db.GrowthStats(("contacts",), minimum=3)
    monkeypatch.setattr(contacts_store, "GROWTH", growth)

    async def analyzes() -> int:
        await pool.execute("SELECT pg_stat_clear_snapshot()")
        return await pool.fetchval("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'contacts'")

    before = await analyzes()
    r = await run_import(client, ws, [{"email": "g1@example.com"}, {"email": "g2@example.com"}])
    assert r.status_code == 200 and growth._running is None and growth.added == 2
    r = await run_import(client, ws, [{"email": f"g{i}@example.com"} for i in range(3, 6)])
    assert r.status_code == 200 and growth._running is not None
    await growth._running
    for _ in range(200):
        if await analyzes() > before:
            break
        await asyncio.sleep(0.05)
    assert await analyzes() >= before + 1
