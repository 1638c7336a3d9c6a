"""Webhook delivery end to end: outbox -> dispatcher -> worker -> a real local HTTP receiver that
verifies every signature with the `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import secrets
import signal
import sys
import time

import pytest
from starlette.responses import Response

from fakes.webhook_receiver import WAIT, Receiver, serving

from postroom.contacts import store as contacts_store
from postroom.events import store as events_store
from postroom.lists import store as lists_store
from postroom.platform import db
from postroom.webhooks import delivery, model, store as webhooks_store

API = "/api/webhookSubscriptions."


@pytest.fixture(scope="session")
async def receiver():
    async with serving(Receiver()) as recv:
        yield recv


# ---------------------------------------------------------------- helpers

def fast(settings, **over):
    """The test settings with short retries and timeouts."""
    values = dict(webhook_retry_schedule=(0.05, 0.05), webhook_timeout=5.0, webhook_poll_interval=0.05,
                  webhook_lease_grace=0.5)
    values.update(over)
    return dataclasses.replace(settings, **values)


class Subs:
    """Creates subscriptions through the API (to a unique receiver path each) and deletes them at
    the end of the test, so no test leaves queued work for another."""

    def __init__(self, client, receiver):
        self.client, self.receiver, self.made = client, receiver, []

    async def create(self, ws, event_types=("contact.created", "contact.updated"), path=None, url=None):
        path = path or f"/hook/{secrets.token_hex(4)}"
        r = await self.client.post(API + "create", headers=ws.headers, json={
            "workspace_id": ws.id, "name": "receiver", "url": url or self.receiver.url(path),
            "event_types": list(event_types)})
        assert r.status_code == 201, r.text
        sub = r.json()["subscription"]
        self.receiver.secrets[path] = sub["secret"]
        self.made.append((ws, sub["id"]))
        return sub, path

    async def cleanup(self):
        for ws, sub_id in self.made:
            await self.client.post(API + "delete", headers=ws.headers, json={"workspace_id": ws.id, "id": sub_id})


@pytest.fixture
async def subs(client, receiver):
    made = Subs(client, receiver)
    yield made
    await made.cleanup()


async def upsert(pool, ws, email, **fields):
    return await contacts_store.upsert(pool, ws.id, {"email": email, **fields},
                                       after_write=lists_store.sync_contact_created_at)


async def deliveries(client, ws, sub_id=None, limit=100):
    params = {"workspace_id": ws.id, "limit": str(limit)}
    if sub_id:
        params["subscription_id"] = sub_id
    r = await client.get(API + "deliveries", headers=ws.headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def pump(pool, settings, until, worker=None, timeout: float = WAIT):
    """Runs dispatcher and worker passes until `until()` (an async predicate) holds."""
    worker = worker or delivery.DeliveryWorker(pool, settings)
    deadline = time.monotonic() + timeout
    try:
        while not await until():
            if time.monotonic() > deadline:
                raise AssertionError("deliveries did not reach the expected state in time")
            await delivery.dispatch_once(pool, settings)
            if not await worker.run_once():
                await asyncio.sleep(0.02)
    finally:
        await worker.sender.aclose()


def statuses(page) -> list[str]:
    return [d["status"] for d in page["deliveries"]]


# ---------------------------------------------------------------- tests

async def test_contact_event_delivered_signed(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws)
    await upsert(pool, ws, "ada@example.com", first_name="Ada")
    s = fast(settings)

    async def done():
        return statuses(await deliveries(client, ws, sub["id"])) == ["delivered"]

    await pump(pool, s, done)
    [got] = receiver.at(path)
    assert got.verified
    body = got.json
    assert set(body) == {"id", "type", "workspace_id", "timestamp", "data"}
    assert body["type"] == "contact.created" and body["workspace_id"] == ws.id
    assert body["id"] == got.headers["webhook-id"] and body["timestamp"].endswith("Z")
    assert body["data"]["contact"]["email"] == "ada@example.com"
    assert body["data"]["contact"]["first_name"] == "Ada"
    assert got.headers["webhook-signature"].startswith("v1,")
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 300
    [logged] = (await deliveries(client, ws, sub["id"]))["deliveries"]
    assert logged["id"] == body["id"] and logged["event_type"] == "contact.created"
    assert logged["attempts"] == 1 and logged["last_response_status"] == 200
    assert logged["last_response_body"] == "answer 200" and "delivered_at" in logged
    assert logged["payload"] == body["data"]
    r = await client.get(API + "get", headers=ws.headers, params={"workspace_id": ws.id, "id": sub["id"]})
    assert "last_delivery_at" in r.json()["subscription"]


async def test_only_subscribed_types_and_workspace(client, ws, new_workspace, pool, settings, receiver, subs):
    sub, path = await subs.create(ws, event_types=["contact.updated"])
    other = await new_workspace()
    await upsert(pool, other, "x@example.com")                 # another workspace
    await upsert(pool, ws, "bo@example.com")                   # contact.created: not subscribed
    await upsert(pool, ws, "bo@example.com", last_name="Bo")   # contact.updated

    async def done():
        return statuses(await deliveries(client, ws)) == ["delivered"]

    await pump(pool, fast(settings), done)
    assert [r.json["type"] for r in receiver.at(path)] == ["contact.updated"]


async def test_rolled_back_write_sends_nothing_and_late_commit_is_not_skipped(client, ws, pool, settings, subs):
    sub, _ = await subs.create(ws, event_types=["custom_event.created"])
    s = fast(settings)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await events_store.emit(conn, ws.id, "custom_event.created", "a@example.com", {"n": "rolled back"})
        await tx.rollback()
    async with pool.acquire() as late, pool.acquire() as early:
        tx = late.transaction()
        await tx.start()
        # the late transaction takes its outbox id first, and commits after a later one
        await events_store.emit(late, ws.id, "custom_event.created", "a@example.com", {"n": "late"})
        await events_store.emit(early, ws.id, "custom_event.created", "b@example.com", {"n": "early"})
        await delivery.dispatch_once(pool, s)
        page = await deliveries(client, ws)
        assert [d["payload"]["n"] for d in page["deliveries"]] == ["early"]
        await tx.commit()
    await delivery.dispatch_once(pool, s)
    page = await deliveries(client, ws)
    assert sorted(d["payload"]["n"] for d in page["deliveries"]) == ["early", "late"]
    await delivery.dispatch_once(pool, s)
    assert (await deliveries(client, ws))["total"] == 2


async def test_retries_until_success_with_same_message_id(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws)
    receiver.plans[path] = lambda item, seen: 500 if seen < 2 else 204
    await upsert(pool, ws, "retry@example.com")
    s = fast(settings, webhook_retry_schedule=(0.05, 0.05, 0.05))

    async def done():
        return statuses(await deliveries(client, ws, sub["id"])) == ["delivered"]

    await pump(pool, s, done)
    got = receiver.at(path)
    assert len(got) == 3 and all(r.verified for r in got)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1
    [logged] = (await deliveries(client, ws, sub["id"]))["deliveries"]
    assert logged["attempts"] == 3 and logged["max_attempts"] == 4 and logged["last_response_status"] == 204


async def test_gives_up_after_the_schedule(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws)
    receiver.plans[path] = lambda item, seen: 503
    await upsert(pool, ws, "never@example.com")

    async def done():
        return statuses(await deliveries(client, ws, sub["id"])) == ["failed"]

    await pump(pool, fast(settings), done)
    assert len(receiver.at(path)) == 3
    [logged] = (await deliveries(client, ws, sub["id"]))["deliveries"]
    assert logged["attempts"] == 3 and logged["last_error"] == "HTTP 503"
    assert logged["last_response_status"] == 503 and logged["last_response_body"] == "answer 503"


async def test_timeout_redirect_and_connection_error_are_failures(client, ws, pool, settings, receiver, subs):
    slow, slow_path = await subs.create(ws)
    receiver.holds[slow_path] = asyncio.Event()  # never answers in time
    moved, moved_path = await subs.create(ws)
    receiver.plans[moved_path] = lambda item, seen: Response(status_code=302, headers={"Location": "/elsewhere"})
    closed, _ = await subs.create(ws, url="http://127.0.0.1:9/closed")
    await upsert(pool, ws, "t@example.com")
    s = fast(settings, webhook_timeout=0.5, webhook_retry_schedule=(60.0,))

    async def done():
        return all(d["attempts"] == 1 and d["status"] == "pending"
                   for d in (await deliveries(client, ws))["deliveries"]) and (await deliveries(client, ws))["total"] == 3

    try:
        await pump(pool, s, done)
    finally:
        receiver.holds[slow_path].set()
    by_sub = {d["subscription_id"]: d for d in (await deliveries(client, ws))["deliveries"]}
    assert by_sub[slow["id"]]["last_error"] == "timed out after 0.5 s"
    assert by_sub[moved["id"]]["last_response_status"] == 302 and by_sub[moved["id"]]["last_error"] == "HTTP 302"
    assert by_sub[closed["id"]]["last_error"].startswith("connection failed")
    assert not any(r.path == "/elsewhere" for r in receiver.received)


async def test_disabled_subscription_receives_nothing(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws)
    receiver.plans[path] = lambda item, seen: 500
    s = fast(settings, webhook_retry_schedule=(0.05, 0.05, 0.05, 0.05))
    await upsert(pool, ws, "d1@example.com")
    worker = delivery.DeliveryWorker(pool, s)
    await delivery.dispatch_once(pool, s)
    assert await worker.run_once() == 1            # attempted once, failed, pending a retry
    r = await client.post(API + "toggle", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"],
                                                                    "enabled": False})
    assert r.status_code == 200
    await upsert(pool, ws, "d2@example.com")        # happens while disabled
    await asyncio.sleep(0.1)                        # the retry would be due by now
    for _ in range(3):
        await delivery.dispatch_once(pool, s)
        assert await worker.run_once() == 0
    await worker.sender.aclose()
    assert len(receiver.at(path)) == 1
    page = await deliveries(client, ws, sub["id"])
    assert statuses(page) == ["cancelled"]
    # switched back on: only what happens from now on
    receiver.plans[path] = lambda item, seen: 200
    await client.post(API + "toggle", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"], "enabled": True})
    await upsert(pool, ws, "d3@example.com")

    async def done():
        return statuses(await deliveries(client, ws, sub["id"])) == ["delivered", "cancelled"]

    await pump(pool, s, done)
    assert [r.json["data"]["contact"]["email"] for r in receiver.at(path)] == ["d1@example.com", "d3@example.com"]


async def test_order_per_contact_and_no_waiting_across_contacts(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws)
    failed_once = set()

    def plan(item, seen):
        contact = item.json["data"]["contact"]
        if contact["email"] == "x@example.com" and item.json["type"] == "contact.created" and not failed_once:
            failed_once.add(item.json["id"])
            return 500
        return 200

    receiver.plans[path] = plan
    await upsert(pool, ws, "x@example.com", first_name="v1")
    await upsert(pool, ws, "x@example.com", first_name="v2")
    await upsert(pool, ws, "x@example.com", first_name="v3")
    await upsert(pool, ws, "y@example.com", first_name="y")
    s = fast(settings, webhook_retry_schedule=(0.3,))

    async def done():
        page = await deliveries(client, ws, sub["id"])
        return page["total"] == 4 and set(statuses(page)) == {"delivered"}

    await pump(pool, s, done)
    got = [(r.json["data"]["contact"]["email"], r.json["data"]["contact"]["first_name"]) for r in receiver.at(path)]
    xs = [name for email, name in got if email == "x@example.com"]
    assert xs == ["v1", "v1", "v2", "v3"]            # v1 failed once; nothing of x overtook it
    assert got.index(("y@example.com", "y")) < 2      # y went out before x's retry


async def test_failing_subscription_does_not_hold_up_others(client, ws, pool, settings, receiver, subs):
    stuck, stuck_path = await subs.create(ws)
    healthy, healthy_path = await subs.create(ws)
    receiver.holds[stuck_path] = asyncio.Event()
    for i in range(20):
        await upsert(pool, ws, f"c{i}@example.com")
    s = fast(settings, webhook_timeout=60.0, webhook_subscription_concurrency=4, webhook_concurrency=16)
    stop = asyncio.Event()
    tasks = delivery.start(pool, s, stop)
    try:
        # every delivery of the healthy subscription arrives while the stuck one's requests hang
        await receiver.wait_for(lambda: len(receiver.at(stuck_path)) >= 1)
        await receiver.wait_for(lambda: len(receiver.at(healthy_path)) == 20)
        assert not receiver.holds[stuck_path].is_set()
        assert 1 <= len(receiver.at(stuck_path)) <= 4   # bounded by the per-subscription limit
    finally:
        receiver.holds[stuck_path].set()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    assert all(r.verified for r in receiver.at(healthy_path))


async def test_two_workers_never_double_deliver(client, ws, pool, dsn, settings, receiver, subs):
    sub, path = await subs.create(ws)
    n = 150
    for i in range(n):
        await upsert(pool, ws, f"p{i}@example.com")
    s = fast(settings, webhook_subscription_concurrency=16)
    pools = [await db.create_pool(dsn, min_size=1, max_size=6) for _ in range(2)]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [t for p, stop in zip(pools, stops) for t in delivery.start(p, s, stop)]
    try:
        await receiver.wait_for(lambda: len(receiver.at(path)) >= n)

        async def settled():
            page = await deliveries(client, ws, sub["id"], limit=1)
            return page["total"] == n and statuses(page) == ["delivered"]

        deadline = time.monotonic() + WAIT
        while not await settled() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        for p in pools:
            await p.close()
    ids = [r.headers["webhook-id"] for r in receiver.at(path)]
    assert len(ids) == n and len(set(ids)) == n
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT status, attempts FROM webhook_deliveries WHERE workspace_id = $1", ws.id)
    assert len(rows) == n and {(r["status"], r["attempts"]) for r in rows} == {("delivered", 1)}


async def _start_worker(dsn, settings, **env):
    environ = {**os.environ, "POSTROOM_DATABASE_URL": dsn, "POSTROOM_SECRET_KEY": settings.secret_key,
               "POSTROOM_WEBHOOK_POLL_INTERVAL": "0.05", **env}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postroom.cli", "worker", env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _read_until(stream, text: str) -> str:
    seen = ""
    async with asyncio.timeout(WAIT):
        while text not in seen:
            line = await stream.readline()
            if not line:
                break
            seen += line.decode()
    return seen


async def test_worker_killed_mid_delivery_loses_nothing(client, ws, pool, dsn, settings, receiver, subs):
    sub, path = await subs.create(ws)
    receiver.holds[path] = hold = asyncio.Event()
    proc = await _start_worker(dsn, settings, POSTROOM_WEBHOOK_TIMEOUT="2", POSTROOM_WEBHOOK_LEASE_GRACE="0.5")
    try:
        assert "running" in await _read_until(proc.stderr, "running")
        await upsert(pool, ws, "k@example.com")
        await receiver.wait_for(lambda: len(receiver.at(path)) == 1)   # the attempt is in flight
        proc.kill()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    hold.set()
    page = await deliveries(client, ws, sub["id"])
    assert statuses(page) == ["delivering"]   # claimed by the dead worker

    async def done():
        return statuses(await deliveries(client, ws, sub["id"])) == ["delivered"]

    await pump(pool, fast(settings, webhook_timeout=2.0), done)   # reclaimed once the lease ran out
    got = receiver.at(path)
    assert len(got) == 2 and got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    assert (await deliveries(client, ws, sub["id"]))["deliveries"][0]["attempts"] == 2


async def test_worker_stops_gracefully_on_sigterm(client, ws, pool, dsn, settings, receiver, subs):
    sub, path = await subs.create(ws)
    proc = await _start_worker(dsn, settings)
    try:
        assert "running" in await _read_until(proc.stderr, "running")
        await upsert(pool, ws, "g@example.com")
        await receiver.wait_for(lambda: len(receiver.at(path)) == 1)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            rest = (await proc.stderr.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0 and "stopped" in rest and "Traceback" not in rest
    assert statuses(await deliveries(client, ws, sub["id"])) == ["delivered"]


async def test_refused_destinations_at_delivery_time(client, ws, pool, settings, receiver, subs):
    sub, _ = await subs.create(ws)
    async with pool.acquire() as conn:  # a URL stored before the rule, or edited in the database
        await conn.execute("UPDATE webhook_subscriptions SET url = 'http://169.254.169.254/latest' "
                           "WHERE workspace_id = $1", ws.id)
    await upsert(pool, ws, "m@example.com")

    async def done():
        return statuses(await deliveries(client, ws, sub["id"])) == ["failed"]

    await pump(pool, fast(settings), done)
    [logged] = (await deliveries(client, ws, sub["id"]))["deliveries"]
    assert logged["attempts"] == 1
    assert logged["last_error"] == "URL must not point to a link-local or cloud metadata address: 169.254.169.254"
    r = await client.post(API + "test", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"]})
    assert r.status_code == 200
    assert r.json() == {"success": False, "status_code": 0, "response_body": "",
                        "error": "URL must not point to a link-local or cloud metadata address: 169.254.169.254"}


async def test_names_resolving_to_metadata_are_refused():
    async def resolve(host, port):  # DNS is the edge of the world: a fake zone
        return {"metadata.test": ["169.254.169.254"], "mixed.test": ["127.0.0.1", "fd00:ec2::254"]}[host]

    sender = delivery.Sender(2.0, resolve=resolve)
    try:
        out = await sender.post("http://metadata.test/x", "m1", b"k" * 32, b"{}")
        assert out.refused and out.status is None
        assert out.error == "URL host metadata.test resolves to a link-local or cloud metadata address: 169.254.169.254"
        out = await sender.post("https://mixed.test/x", "m2", b"k" * 32, b"{}")
        assert out.refused and out.error.endswith("fd00:ec2::254")
    finally:
        await sender.aclose()
    with pytest.raises(model.WebhookError) as err:
        await delivery.check_destination("http://metadata.test/", resolve=resolve)
    assert err.value.message.startswith("URL host metadata.test resolves")


async def test_test_endpoint_sends_signed_sample(client, ws, receiver, subs):
    sub, path = await subs.create(ws, event_types=["list.subscribed", "contact.created"])
    r = await client.post(API + "test", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"]})
    assert r.status_code == 200
    assert r.json() == {"success": True, "status_code": 200, "response_body": "answer 200"}
    [got] = receiver.at(path)
    assert got.verified and got.json["type"] == "list.subscribed"
    assert set(got.json["data"]) == {"email", "list_id", "list_name", "status", "previous_status"}
    receiver.plans[path] = lambda item, seen: 500
    r = await client.post(API + "test", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": sub["id"], "event_type": "email.clicked"})
    assert r.json() == {"success": False, "status_code": 500, "response_body": "answer 500", "error": "HTTP 500"}
    assert receiver.at(path)[-1].json["type"] == "email.clicked" and receiver.at(path)[-1].verified
    assert (await deliveries(client, ws, sub["id"]))["total"] == 0   # a test is not queued nor logged


async def test_list_events_carry_membership_fields(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws, event_types=["list.unsubscribed"])
    async with pool.acquire() as conn:  # the shape the lists capability writes to the outbox
        await events_store.emit(conn, ws.id, "list.unsubscribed", "l@example.com", {
            "contact_list": {"email": "l@example.com", "list_id": "news", "list_name": "News",
                             "status": "unsubscribed", "created_at": "2024-01-01T00:00:00Z",
                             "updated_at": "2024-01-02T00:00:00Z"},
            "previous_status": "active"})

    async def done():
        return statuses(await deliveries(client, ws, sub["id"])) == ["delivered"]

    await pump(pool, fast(settings), done)
    [got] = receiver.at(path)
    assert got.json["data"] == {"email": "l@example.com", "list_id": "news", "list_name": "News",
                                "status": "unsubscribed", "previous_status": "active"}


async def test_log_is_pruned_after_retention(client, ws, pool, settings, subs):
    sub, _ = await subs.create(ws, event_types=["custom_event.created"])
    async with pool.acquire() as conn:
        for n in range(3):
            await events_store.emit(conn, ws.id, "custom_event.created", None, {"n": n})
    s = fast(settings)
    await delivery.dispatch_once(pool, s)
    async with pool.acquire() as conn:
        await conn.execute("""UPDATE webhook_deliveries SET created_at = now() - interval '31 days',
                              status = CASE WHEN data->>'n' = '0' THEN 'delivered'
                                            WHEN data->>'n' = '1' THEN 'failed' ELSE 'pending' END,
                              next_attempt_at = now() + interval '1 day'
                              WHERE workspace_id = $1""", ws.id)
    assert await delivery.prune_once(pool, s) >= 2
    page = await deliveries(client, ws, sub["id"])
    assert [d["payload"]["n"] for d in page["deliveries"]] == [2]   # queued work is never pruned
    assert await delivery.prune_once(pool, dataclasses.replace(s, webhook_retention_days=60)) == 0


async def test_failing_subscription_gets_fewer_slots(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws)
    receiver.plans[path] = lambda item, seen: 500
    s = fast(settings, webhook_subscription_concurrency=8, webhook_retry_schedule=(600.0,))
    for i in range(8):
        await upsert(pool, ws, f"f{i}@example.com")
    await delivery.dispatch_once(pool, s)
    worker = delivery.DeliveryWorker(pool, s)
    assert await worker.run_once() == 8               # healthy so far: the full bound
    for i in range(8, 16):
        await upsert(pool, ws, f"f{i}@example.com")
    await delivery.dispatch_once(pool, s)
    assert await worker.run_once() == 2               # failing: two at a time
    receiver.plans[path] = lambda item, seen: 200
    assert await worker.run_once() == 2               # these succeed...
    assert await worker.run_once() == 4               # ...and the bound is back
    await worker.sender.aclose()
    assert len(receiver.at(path)) == 16


async def test_url_credentials_query_and_non_ascii_path(client, ws, receiver, subs):
    path = f"/hook/ünï-{secrets.token_hex(3)}"
    sub, _ = await subs.create(ws, path=path,
                               url=f"http://user:p%40ss@127.0.0.1:{receiver.port}{path}?source=postroom")
    r = await client.post(API + "test", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"]})
    assert r.json()["success"] is True, r.text
    [got] = receiver.at(path)
    assert got.verified
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"


async def test_list_subscription_through_the_lists_api(client, ws, pool, settings, receiver, subs):
    sub, path = await subs.create(ws, event_types=["list.subscribed", "contact.created"])
    r = await client.post("/api/lists.create", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "news", "name": "News"})
    assert r.status_code in (200, 201), r.text
    r = await client.post("/api/lists.subscribe", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "s@example.com"}, "list_ids": ["news"]})
    assert r.status_code == 200, r.text

    async def done():
        page = await deliveries(client, ws, sub["id"])
        return page["total"] == 2 and set(statuses(page)) == {"delivered"}

    await pump(pool, fast(settings), done)
    by_type = {r.json["type"]: r.json for r in receiver.at(path)}
    assert by_type["contact.created"]["data"]["contact"]["email"] == "s@example.com"
    assert by_type["list.subscribed"]["data"] == {"email": "s@example.com", "list_id": "news", "list_name": "News",
                                                  "status": "active", "previous_status": None}


async def test_statistics_of_bulk_filled_tables_are_refreshed_as_they_double(pool):
    """GrowthStats (the dispatcher's for the outbox and the queue, the import's for contacts)
    ANALYZEs its tables in the background once the rows noted reach their size (and a minimum);
    below that it leaves them to autovacuum, and one refresh runs at a time."""

    async def analyzes() -> int:
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            return await conn.fetchval(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'webhook_deliveries'")

    growth = db.GrowthStats(webhooks_store.QUEUE_TABLES, minimum=3)
    before = await analyzes()
    assert growth.note(pool, 2) is None
    refresh = growth.note(pool, 1)
    assert refresh is not None and growth.note(pool, 100) is None  # one at a time
    await refresh
    for _ in range(200):  # the statistics counters are published within a second or so
        if await analyzes() > before:
            break
        await asyncio.sleep(0.05)
    assert await analyzes() >= before + 1  # (autovacuum may have analyzed it too meanwhile)
    size = await pool.fetchval(db.TABLES_SIZE, list(webhooks_store.QUEUE_TABLES))
    # the next refresh waits for as many new rows as the largest table holds now (at least the minimum)
    assert growth.threshold == max(3, size)


async def test_worker_loops_plan_every_statement_afresh_on_a_pool_of_their_own(dsn, settings, pool):
    from types import SimpleNamespace

    from postroom import app, workers

    state = SimpleNamespace(settings=settings, dsn=dsn, pool=pool)
    tasks = await workers.start(state, app.loops())
    try:
        assert state.worker_pool is not pool
        async with state.worker_pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        async with pool.acquire() as conn:  # the API's sessions keep PostgreSQL's default
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await workers.stop(state, tasks, timeout=5.0)
    assert state.worker_pool is None
