"""messages.list and messages.broadcastStats (delivery-contract 4.3, 4.4): every filter, every
parse error in the contract's order, cursor paging, permissions."""

from __future__ import annotations

import base64

import pytest
from helpers import assert_json_error
from sendkit import drain, enqueue, fast, make_integration, worker

from postroom.delivery.model import Source
from postroom.delivery.providers.fake import Fake, Step



async def listed(client, ws, **params):
    r = await client.get("/api/messages.list", headers=ws.headers, params={"workspace_id": ws.id, **params})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(autouse=True)
async def only_this_tests_queue(pool):
    await pool.execute("DELETE FROM email_queue")


async def test_message_object_and_filters(client, ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    sent = await enqueue(pool, s, ws.id, iid, email="jane@example.com", external_id="e1",
                         data={"code": "X1"}, metadata={"k": "v"})
    failed = await enqueue(pool, s, ws.id, iid, email="bob@example.com")
    queued = await enqueue(pool, s, ws.id, iid, email="ann@example.com", source=Source.BROADCAST, source_id="b1",
                           list_id="news")
    await pool.execute("UPDATE email_queue SET next_retry_at = now() + interval '1 hour' WHERE message_id = $1", queued)
    w = worker(pool, s, Fake([Step(), Step("recipient", "fake: 550 no such user")]))
    await w.run_once()
    body = await listed(client, ws)
    assert [m["id"] for m in body["messages"]] == [queued, failed, sent]
    assert body["has_more"] is False and "next_cursor" not in body
    m = next(m for m in body["messages"] if m["id"] == sent)
    assert list(m) == ["id", "external_id", "contact_email", "transactional_notification_id", "template_id",
                       "template_version", "channel", "message_data", "sent_at", "created_at", "updated_at",
                       "status", "attempts", "provider_message_id"]
    assert m["message_data"] == {"data": {"code": "X1"}, "metadata": {"k": "v"}}
    assert (m["status"], m["attempts"]) == ("sent", 1)
    f = next(m for m in body["messages"] if m["id"] == failed)
    assert f["status_info"] == "fake: 550 no such user" and "failed_at" in f
    q = next(m for m in body["messages"] if m["id"] == queued)
    assert (q["broadcast_id"], q["list_id"], q["status"]) == ("b1", "news", "queued")

    async def ids(**params):
        return [m["id"] for m in (await listed(client, ws, **params))["messages"]]

    assert await ids(id=sent) == [sent]
    assert await ids(external_id="e1") == [sent]
    assert await ids(broadcast_id="b1") == [queued]
    assert await ids(list_id="news") == [queued]
    assert await ids(template_id="welcome") == [queued, failed, sent]
    assert await ids(transactional_notification_id="welcome_email") == [failed, sent]
    assert await ids(status="failed") == [failed]
    assert await ids(channel="email") == [queued, failed, sent]
    assert await ids(contact_email="JANE@Example.com") == [sent]
    assert await ids(is_sent="true") == [sent]
    assert await ids(is_sent="false") == [queued, failed]
    assert await ids(is_failed="true") == [failed]
    assert await ids(is_delivered="true") == []
    assert await ids(is_opened="false") == [queued, failed, sent]
    assert await ids(sent_after="2000-01-01T00:00:00Z", sent_before="2100-01-01T00:00:00Z") == [queued, failed, sent]
    assert await ids(updated_after="2100-01-01T00:00:00Z") == []


async def test_cursor_pages_through_rows_of_one_second(client, ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    for i in range(45):
        await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com")
    await pool.execute("UPDATE message_history SET created_at = date_trunc('second', now())"
                       " + (random() * interval '0.9 s') WHERE workspace_id = $1", ws.id)
    expected = [r["id"] for r in await pool.fetch("SELECT id FROM message_history WHERE workspace_id = $1"
                                                   " ORDER BY created_at DESC, id DESC", ws.id)]
    pages, cursor = [], None
    while True:
        body = await listed(client, ws, limit="20", **({"cursor": cursor} if cursor else {}))
        pages.append([m["id"] for m in body["messages"]])
        cursor = body.get("next_cursor")
        if not body["has_more"]:
            assert cursor is None
            break
    assert [len(p) for p in pages] == [20, 20, 5]
    assert sum(pages, []) == expected
    # limits: 0 is the default, above 100 is 100
    assert len((await listed(client, ws, limit="0"))["messages"]) == 20
    assert len((await listed(client, ws, limit="500"))["messages"]) == 45
    # a Notifuse cursor (whole seconds) is read as written
    whole = base64.b64encode(b"2100-01-01T00:00:00Z~zzz").decode()
    assert len((await listed(client, ws, cursor=whole))["messages"]) == 20


@pytest.mark.parametrize("params, message", [
    ({}, "Missing workspace ID"),
    ({"limit": "abc"}, "invalid limit value: abc"),
    ({"limit": "1.5"}, "invalid limit value: 1.5"),
    ({"limit": "-1"}, "limit cannot be negative"),
    ({"is_failed": "yes"}, "invalid is_failed value: yes"),
    ({"is_unsubscribed": "1"}, "invalid is_unsubscribed value: 1"),
    ({"channel": "fax"}, "invalid channel type: fax"),
    ({"contact_email": "bad"}, "invalid contact email format"),
    ({"status": "sending"}, "invalid status value: sending"),
    ({"sent_after": "2024-02-01T00:00:00Z", "sent_before": "2024-01-01T00:00:00Z"},
     "sent_after must be before sent_before"),
    ({"updated_after": "2024-02-01T00:00:00Z", "updated_before": "2024-01-01T00:00:00Z"},
     "updated_after must be before updated_before"),
    ({"cursor": "!!!"}, "invalid cursor encoding"),
    ({"cursor": base64.b64encode(b"no-separator").decode()}, "invalid cursor format: expected timestamp~id"),
    ({"cursor": base64.b64encode(b"yesterday~abc").decode()}, "invalid cursor timestamp format"),
    # the contract's order: limit, booleans, times parsed first; then negative limit, channel, ...
    ({"limit": "-1", "is_sent": "x"}, "invalid is_sent value: x"),
    ({"limit": "-1", "channel": "fax"}, "limit cannot be negative"),
    ({"channel": "fax", "contact_email": "bad"}, "invalid channel type: fax"),
    ({"status": "x", "cursor": "!!!"}, "invalid status value: x"),
    ({"channel": "fax", "sent_after": "2024-13-01"}, None),
])
async def test_parse_errors(client, ws, params, message):
    query = {"workspace_id": ws.id, **params} if params else {}
    r = await client.get("/api/messages.list", headers=ws.headers, params=query)
    if message is None:
        assert r.status_code == 400 and r.json()["error"].startswith(
            "invalid sent_after time format, expected RFC3339"), r.text
    else:
        assert_json_error(r, 400, message)


async def test_validation_before_membership_and_permissions(client, ws, new_workspace):
    other = await new_workspace()
    r = await client.get("/api/messages.list", headers=other.headers, params={"workspace_id": ws.id, "limit": "x"})
    assert_json_error(r, 400, "invalid limit value: x")
    r = await client.get("/api/messages.list", headers=other.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 403, "user is not a member of the workspace")
    reader = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}
    r = await client.get("/api/messages.list", headers=reader, params={"workspace_id": ws.id})
    assert_json_error(r, 403, "Insufficient permissions: read access to message history required")
    r = await client.get("/api/messages.broadcastStats", headers=reader, params={"workspace_id": ws.id,
                                                                                 "broadcast_id": "b"})
    assert r.status_code == 403
    allowed = {"Authorization": f"Bearer {await ws.key('message_history:r')}"}
    r = await client.get("/api/messages.list", headers=allowed, params={"workspace_id": ws.id})
    assert r.json() == {"messages": [], "has_more": False}


async def test_broadcast_stats(client, ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    r = await client.get("/api/messages.broadcastStats", headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 400, "broadcast_id is required")
    r = await client.get("/api/messages.broadcastStats", headers=ws.headers, params={"broadcast_id": "b1"})
    assert_json_error(r, 400, "workspace_id is required")
    r = await client.get("/api/messages.broadcastStats", headers=ws.headers, params={})
    assert_json_error(r, 400, "broadcast_id is required")
    zero = await client.get("/api/messages.broadcastStats", headers=ws.headers,
                            params={"workspace_id": ws.id, "broadcast_id": "unknown"})
    assert zero.json() == {"broadcast_id": "unknown", "stats": {k: 0 for k in (
        "total_sent", "total_delivered", "total_bounced", "total_complained", "total_failed", "total_opened",
        "total_clicked", "total_unsubscribed", "total_queued")}}
    for i in range(3):
        await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com", source=Source.BROADCAST, source_id="b1")
    await drain(worker(pool, s, Fake([Step(), Step("recipient", "x")], default=Step(delay=0))))
    await enqueue(pool, s, ws.id, iid, email="late@example.com", source=Source.BROADCAST, source_id="b1")
    r = await client.get("/api/messages.broadcastStats", headers=ws.headers,
                         params={"workspace_id": ws.id, "broadcast_id": "b1"})
    stats = r.json()["stats"]
    assert (stats["total_sent"], stats["total_failed"], stats["total_queued"]) == (2, 1, 1)
