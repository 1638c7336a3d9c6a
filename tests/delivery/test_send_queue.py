"""The send queue against a real PostgreSQL with the fake provider (delivery-contract 4.5, 5):
states, retries and backoff, throttling, expiry, the shared breaker and token bucket, crashes,
outbox events and timeline entries."""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid

import pytest
from sendkit import (drain, email_events, enqueue, fast, make_integration, message, queue_row, timeline_of,
                     worker)

from postroom.delivery import model, store
from postroom.delivery.model import QueuedAttachment, Source
from postroom.delivery.providers.fake import Fake, Step


@pytest.fixture(autouse=True)
async def only_this_tests_queue(pool):
    """The loops claim across workspaces: each test starts with an empty queue."""
    await pool.execute("DELETE FROM email_queue")


async def test_enqueue_records_a_queued_message_its_timeline_entry_and_a_queue_row(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    mid = await enqueue(pool, s, ws.id, iid, data={"code": "SECRET-X1"}, external_id="e1")
    uuid.UUID(mid)
    m = await message(pool, ws.id, mid)
    assert (m["status"], m["attempts"], m["template_version"], m["transactional_notification_id"]) == \
        ("queued", 0, 3, "welcome_email")
    assert b"SECRET-X1" not in bytes(m["message_data"])          # sealed at rest
    q = await queue_row(pool, ws.id, mid)
    assert (q["status"], q["priority"], q["attempts"], q["max_attempts"]) == ("pending", 1, 0, 8)
    assert "SECRET-X1" not in str(q["payload"])                   # no template data in the queue
    assert (q["expires_at"] - q["created_at"]).total_seconds() == pytest.approx(24 * 3600, abs=5)
    (kind, changes), = await timeline_of(pool, ws.id, mid)
    assert kind == "insert_message_history"
    assert changes["template_id"] == {"new": "welcome"} and changes["channel"] == {"new": "email"}
    assert await email_events(pool, ws.id) == []                 # email.sent only on acceptance
    # the same external id again: nothing written, the same message
    assert await enqueue(pool, s, ws.id, iid, external_id="e1") == mid
    assert await pool.fetchval("SELECT count(*) FROM email_queue WHERE workspace_id = $1", ws.id) == 1


async def test_broadcast_rows_wait_behind_transactional_and_expire_later(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id, concurrency=1)
    b = await enqueue(pool, s, ws.id, iid, source=Source.BROADCAST, source_id="b1")
    t = await enqueue(pool, s, ws.id, iid)
    q = await queue_row(pool, ws.id, b)
    assert q["priority"] == 5
    assert (q["expires_at"] - q["created_at"]).total_seconds() == pytest.approx(72 * 3600, abs=5)
    fake = Fake()
    w = worker(pool, s, fake)
    assert await w.run_once() == 1
    assert fake.calls[0].message.message_id == t                 # priority 1 first
    assert (await message(pool, ws.id, b))["broadcast_id"] == "b1"


async def test_sent_message_events_timeline_and_provider_call(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    content = b"%PDF-1.4 hello"
    mid = await enqueue(pool, s, ws.id, iid, email_options={"cc": ["c@example.com"], "reply_to": "r@acme.test"},
                        attachments=(QueuedAttachment(store.checksum(content), "invoice.pdf", "", "attachment",
                                                      content),))
    fake = Fake()
    w = worker(pool, s, fake)
    assert await w.run_once() == 1
    (call,) = fake.calls
    msg = call.message
    assert (msg.to, msg.from_address, msg.subject, msg.cc, msg.reply_to) == \
        ("jane@example.com", "noreply@acme.test", "Hi Jane", ("c@example.com",), "r@acme.test")
    assert msg.attachments[0].content == content and msg.attachments[0].mime_type == "application/pdf"
    assert call.settings.api_key == "k-secret"                   # secrets unsealed for the call
    m = await message(pool, ws.id, mid)
    assert (m["status"], m["attempts"], m["status_info"], m["failed_at"]) == ("sent", 1, None, None)
    assert m["provider_message_id"].startswith("fake-") and m["sent_at"] >= m["created_at"]
    assert await queue_row(pool, ws.id, mid) is None
    (event,) = await email_events(pool, ws.id)
    assert event[0] == "email.sent" and event[1] == "jane@example.com"
    assert event[2]["message_id"] == mid and event[2]["transactional_notification_id"] == "welcome_email"
    kinds = [k for k, _ in await timeline_of(pool, ws.id, mid)]
    assert kinds == ["insert_message_history", "update_message_history"]


async def test_retries_back_off_then_send(ws, pool, settings):
    s = fast(settings, delivery_retry_base=0.5)   # long enough to see "not due yet" on a loaded machine
    iid = await make_integration(pool, s, ws.id)
    mid = await enqueue(pool, s, ws.id, iid)
    fake = Fake([Step("provider", "fake: HTTP 503"), Step("deferred", "fake: 451 busy")])
    w = worker(pool, s, fake)
    assert await w.run_once() == 1
    q = await queue_row(pool, ws.id, mid)
    m = await message(pool, ws.id, mid)
    assert (q["status"], q["attempts"], q["last_error"]) == ("failed", 1, "fake: HTTP 503")
    assert q["next_retry_at"] > q["updated_at"] - __import__("datetime").timedelta(seconds=1)
    assert (m["status"], m["status_info"], m["failed_at"]) == ("queued", "fake: HTTP 503", None)
    assert await w.run_once() == 0                                # not due yet
    await drain(w)
    m = await message(pool, ws.id, mid)
    assert (m["status"], m["attempts"], m["status_info"], m["failed_at"]) == ("sent", 3, None, None)
    assert len({c.message.message_id for c in fake.calls}) == 1 and len(fake.calls) == 3


def test_backoff_ladder():
    rules = model.Rules()
    mid = [model.backoff(n, rules, rand=lambda: 0.5) for n in range(1, 9)]
    assert mid == [30, 60, 120, 240, 480, 960, 1800, 1800]
    assert model.backoff(1, rules, rand=lambda: 0.0) == pytest.approx(24)
    assert model.backoff(1, rules, rand=lambda: 1.0) == pytest.approx(36)
    assert model.after_failure("provider", "x", None, 8, 0, rules).kind == "failed"
    assert model.after_failure("provider", "x", None, 8, 1, rules).kind == "retry"     # one was throttled
    assert model.after_failure("throttled", "x", None, 50, 49, rules).delay == 30.0
    assert model.after_failure("recipient", "x", None, 1, 0, rules).kind == "failed"


async def test_final_failures(ws, pool, settings):
    s = fast(settings, delivery_max_attempts=3)
    iid = await make_integration(pool, s, ws.id)
    rejected = await enqueue(pool, s, ws.id, iid, email="gone@example.com")
    fake = Fake([Step("recipient", "fake: HTTP 422 406: inactive")], default=Step("provider", "fake: HTTP 500"))
    w = worker(pool, s, fake)
    await w.run_once()
    m = await message(pool, ws.id, rejected)
    assert (m["status"], m["attempts"], m["status_info"]) == ("failed", 1, "fake: HTTP 422 406: inactive")
    assert m["failed_at"] is not None and await queue_row(pool, ws.id, rejected) is None
    assert [e[0] for e in await email_events(pool, ws.id)] == ["email.failed"]
    assert (await email_events(pool, ws.id))[0][2]["status_info"] == "fake: HTTP 422 406: inactive"
    exhausted = await enqueue(pool, s, ws.id, iid)
    await drain(w)
    m = await message(pool, ws.id, exhausted)
    assert (m["status"], m["attempts"]) == ("failed", 3)
    assert [k for k, _ in await timeline_of(pool, ws.id, exhausted)] == ["insert_message_history",
                                                                          "update_message_history"]


async def test_throttled_answers_are_not_counted_and_pause_the_integration(ws, pool, settings):
    s = fast(settings, delivery_max_attempts=1)
    iid = await make_integration(pool, s, ws.id)
    mid = await enqueue(pool, s, ws.id, iid)
    other = await enqueue(pool, s, ws.id, iid, email="other@example.com")
    fake = Fake([Step("throttled", "fake: HTTP 429", retry_after=0.3), Step("throttled", "fake: HTTP 429",
                                                                             retry_after=0.05)])
    w = worker(pool, s, fake)
    w.concurrency = 1
    assert await w.run_once() == 1
    budget = await pool.fetchrow("SELECT throttled_until FROM delivery_budget WHERE workspace_id = $1", ws.id)
    assert budget["throttled_until"] is not None
    assert await w.run_once() == 0                                 # the other row waits too
    await drain(w)
    rows = [await message(pool, ws.id, x) for x in (mid, other)]
    assert all(r["status"] == "sent" for r in rows)
    assert sum(r["attempts"] for r in rows) == 4                  # 2 throttled + 2 sent, max_attempts 1


async def test_expired_and_orphaned_rows_fail_without_a_call(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    old = await enqueue(pool, s, ws.id, iid)
    await pool.execute("UPDATE email_queue SET expires_at = now() - interval '1 s', last_error = 'fake: HTTP 503'"
                       " WHERE message_id = $1", old)
    fake = Fake()
    w = worker(pool, s, fake)
    await drain(w)
    m = await message(pool, ws.id, old)
    assert (m["status"], m["status_info"]) == ("failed", "expired: fake: HTTP 503") and fake.calls == []
    orphan = await enqueue(pool, s, ws.id, iid)
    async with pool.acquire() as conn:
        assert await store.delete_integration(conn, ws.id, iid)
    await drain(w)
    m = await message(pool, ws.id, orphan)
    assert (m["status"], m["status_info"]) == ("failed", f"integration not found: {iid}") and fake.calls == []


async def test_breaker_is_shared_opens_probes_and_closes(ws, pool, settings):
    s = fast(settings, delivery_breaker_threshold=2, delivery_breaker_cooldown=0.3)
    iid = await make_integration(pool, s, ws.id, concurrency=1)
    ids = [await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com") for i in range(4)]
    fake = Fake(default=Step("provider", "fake: HTTP 500"))
    a, b = worker(pool, s, fake), worker(pool, s, fake)
    assert await a.run_once() == 1 and await b.run_once() == 1   # two failures in two processes: open
    await pool.execute("UPDATE email_queue SET next_retry_at = now() WHERE workspace_id = $1", ws.id)
    assert await a.run_once() == 0 and await b.run_once() == 0   # open: nothing claimed, no attempt spent
    row = await pool.fetchrow("SELECT * FROM delivery_budget WHERE workspace_id = $1", ws.id)
    assert (row["breaker"], row["opened_count"]) == ("open", 1)
    await asyncio.sleep(0.35)
    await pool.execute("UPDATE email_queue SET next_retry_at = now() WHERE workspace_id = $1", ws.id)
    probe = asyncio.create_task(a.run_once())
    await asyncio.sleep(0)
    results = await asyncio.gather(probe, b.run_once())
    assert sorted(results) == [0, 1]                               # half-open: exactly one probe
    row = await pool.fetchrow("SELECT * FROM delivery_budget WHERE workspace_id = $1", ws.id)
    assert (row["breaker"], row["opened_count"]) == ("open", 2)   # the probe failed: reopened, longer
    assert (row["open_until"] - (await pool.fetchval("SELECT now()"))).total_seconds() > 0.35
    fake.default = Step()
    await asyncio.sleep(0.65)
    await pool.execute("UPDATE email_queue SET next_retry_at = now() WHERE workspace_id = $1", ws.id)
    await drain(a)
    row = await pool.fetchrow("SELECT * FROM delivery_budget WHERE workspace_id = $1", ws.id)
    assert (row["breaker"], row["consecutive_failures"], row["opened_count"]) == ("closed", 0, 0)
    assert [(await message(pool, ws.id, i))["status"] for i in ids] == ["sent"] * 4
    assert len(fake.calls) == 3 + 4


async def test_token_bucket_is_shared_by_two_workers(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id, rate=60)          # one a second, burst of one
    for i in range(5):
        await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com")
    fake = Fake()
    a, b = worker(pool, s, fake), worker(pool, s, fake)
    taken = await asyncio.gather(a.run_once(), b.run_once())
    taken += await asyncio.gather(a.run_once(), b.run_once())
    assert sum(taken) == 1
    await asyncio.sleep(1.05)
    assert await a.run_once() + await b.run_once() == 1           # refilled by one token in a second


def test_bucket_and_breaker_rules():
    import datetime as dt

    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    rules = model.Rules(breaker_threshold=2, breaker_cooldown=60)
    b = model.Budget(tokens=0.0, refilled_at=t0)
    assert model.plan_claim(b, t0 + dt.timedelta(seconds=1), 600, 99) == 10    # capacity 10, full
    assert model.plan_claim(b, t0 + dt.timedelta(seconds=1), 600, 3) == 3      # free slots bound it
    assert model.plan_claim(b, t0 + dt.timedelta(milliseconds=50), 600, 99) == 0
    assert model.capacity(30) == 1.0
    failure = model.Outcome("retry", cls="provider")
    opened = model.after_outcomes(b, [failure, failure], t0, rules)
    assert (opened.breaker, opened.opened_count, opened.open_until) == ("open", 1, t0 + dt.timedelta(seconds=60))
    assert model.plan_claim(opened, t0 + dt.timedelta(seconds=59), 600, 9) == 0
    assert model.plan_claim(opened, t0 + dt.timedelta(seconds=61), 600, 9) == 1
    probing = model.after_claim(opened, t0 + dt.timedelta(seconds=61), 600, 1, rules)
    assert probing.breaker == "half_open"
    again = model.after_outcomes(probing, [failure], t0 + dt.timedelta(seconds=62), rules)
    assert again.open_until == t0 + dt.timedelta(seconds=62 + 120)
    assert model.cooldown(10, rules) == 900
    closed = model.after_outcomes(again, [model.Outcome("sent")], t0, rules)
    assert (closed.breaker, closed.opened_count) == ("closed", 0)
    # other classes neither count nor reset
    mixed = model.after_outcomes(b, [failure, model.Outcome("failed", cls="recipient"), failure], t0, rules)
    assert mixed.breaker == "open"
    # a probe answered by throttling waits for Retry-After, then probes again (not a lease later)
    throttled = model.Outcome("retry", cls="throttled", retry_after=5.0)
    after = model.after_outcomes(probing, [throttled], t0 + dt.timedelta(seconds=62), rules)
    assert (after.breaker, after.throttled_until) == ("open", t0 + dt.timedelta(seconds=67))
    assert model.plan_claim(after, t0 + dt.timedelta(seconds=66), 600, 9) == 0
    assert model.plan_claim(after, t0 + dt.timedelta(seconds=68), 600, 9) == 1


async def test_lease_expiry_reclaims_and_a_late_outcome_changes_nothing(ws, pool, settings):
    s = fast(settings, delivery_lease=0.2)
    iid = await make_integration(pool, s, ws.id)
    mid = await enqueue(pool, s, ws.id, iid)
    dead = worker(pool, s, Fake())
    (job,) = await dead.claim(10)                                  # claimed, then the process "dies"
    assert (await queue_row(pool, ws.id, mid))["status"] == "processing"
    fake = Fake()
    alive = worker(pool, s, fake)
    assert await alive.run_once() == 0                             # leased: not taken
    await asyncio.sleep(0.3)
    assert await alive.run_once() == 1                             # reclaimed, sent once more
    m = await message(pool, ws.id, mid)
    assert (m["status"], m["attempts"]) == ("sent", 2)              # the lost call counts as an attempt
    late = store.Result(ws.id, job.row["id"], job.row["claim_id"], iid, model.Outcome("failed", "late"))
    await store.complete(pool, [late], dead.rules)
    assert (await message(pool, ws.id, mid))["status"] == "sent"
    assert [e[0] for e in await email_events(pool, ws.id)] == ["email.sent"]


async def test_concurrency_per_integration_and_graceful_stop(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id, concurrency=2)
    ids = [await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com") for i in range(6)]
    fake = Fake(default=Step(delay=0.1))
    w = worker(pool, s, fake)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.sleep(0.15)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert fake.most_in_flight == 2
    statuses = [(await message(pool, ws.id, i))["status"] for i in ids]
    sent = statuses.count("sent")
    assert sent == len(fake.calls) and statuses.count("queued") == 6 - sent   # every finished call recorded
    assert await pool.fetchval("SELECT count(*) FROM email_queue WHERE workspace_id = $1 AND status = 'processing'",
                               ws.id) == 0


async def test_notify_wakes_a_running_loop(ws, pool, dsn, settings):
    s = fast(settings, delivery_poll_interval=30.0)
    iid = await make_integration(pool, s, ws.id)
    fake = Fake()
    w = worker(pool, s, fake)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.sleep(0.3)
    mid = await enqueue(pool, s, ws.id, iid)
    for _ in range(100):
        if (await message(pool, ws.id, mid))["status"] == "sent":
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert (await message(pool, ws.id, mid))["status"] == "sent"


async def test_outcomes_are_committed_in_groups(ws, pool, settings, monkeypatch):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    for i in range(5):
        await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com")
    w = worker(pool, s, Fake())
    batches = []
    original = store.complete

    async def counting(pool_, results, rules):
        batches.append(len(results))
        await original(pool_, results, rules)

    monkeypatch.setattr(store, "complete", counting)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    for _ in range(100):
        if not await pool.fetchval("SELECT count(*) FROM email_queue WHERE workspace_id = $1", ws.id):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sum(batches) == 5 and len(batches) == 1        # all five within 100 ms: one transaction


async def test_a_source_pauses_resumes_and_cancels(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    ids = [await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com", source=Source.BROADCAST, source_id="b1")
           for i in range(3)]
    other = await enqueue(pool, s, ws.id, iid, email="t@example.com")
    fake = Fake()
    w = worker(pool, s, fake)
    async with pool.acquire() as conn:
        assert await store.pause_source(conn, ws.id, Source.BROADCAST, "b1") == 3
    await w.run_once()
    assert [c.message.message_id for c in fake.calls] == [other]   # paused rows are not claimed
    async with pool.acquire() as conn:
        assert await store.source_counts(conn, ws.id, Source.BROADCAST, "b1") == {"queued": 3, "sent": 0, "failed": 0}
        assert await store.resume_source(conn, ws.id, Source.BROADCAST, "b1") == 3
    fake.plan.append(Step(delay=0.0))
    w.concurrency = 1
    assert await w.run_once() == 1
    async with pool.acquire() as conn:
        assert await store.cancel_source(conn, ws.id, Source.BROADCAST, "b1") == 2
        assert await store.source_counts(conn, ws.id, Source.BROADCAST, "b1") == {"queued": 0, "sent": 1, "failed": 0}
    assert sum([await message(pool, ws.id, i) is None for i in ids]) == 2


async def test_an_outage_costs_five_calls_then_probes_and_loses_nothing(ws, pool, settings):
    """Contract check 50, scaled down: one call at a time, the provider down for a while."""
    s = fast(settings, delivery_retry_base=0.02, delivery_breaker_cooldown=0.3, delivery_max_attempts=8)
    iid = await make_integration(pool, s, ws.id, concurrency=1)
    ids = [await enqueue(pool, s, ws.id, iid, email=f"u{i}@example.com") for i in range(10)]
    fake = Fake(default=Step("provider", "fake: HTTP 500"))
    w = worker(pool, s, fake)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.sleep(1.2)
    fake.default = Step()                                          # the provider recovers
    recovered = time.monotonic()
    for _ in range(300):
        if not await pool.fetchval("SELECT count(*) FROM email_queue WHERE workspace_id = $1", ws.id):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    during = [c.at for c in fake.calls if c.at < recovered]
    gaps = [b - a for a, b in zip(during[4:], during[5:])]
    assert len(during) >= 6 and gaps and all(g >= 0.29 for g in gaps), gaps  # five calls, then one probe a cooldown
    assert gaps == sorted(gaps) or len(gaps) == 1                 # growing gaps: the cooldown doubles
    assert [(await message(pool, ws.id, i))["status"] for i in ids] == ["sent"] * 10


async def test_an_engagement_timestamp_is_set_once_with_one_timeline_entry(ws, pool, settings):
    s = fast(settings)
    iid = await make_integration(pool, s, ws.id)
    mid = await enqueue(pool, s, ws.id, iid)
    first = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.timezone.utc)
    async with pool.acquire() as conn:
        row = await store.mark_message(conn, ws.id, mid, "opened_at", first)
        assert row is not None and row["opened_at"] == first and row["id"] == mid
        # a second report, later: the first one stands and nothing more is written
        assert await store.mark_message(conn, ws.id, mid, "opened_at", first + datetime.timedelta(hours=1)) is None
        assert await store.mark_message(conn, ws.id, "no-such-message", "opened_at", first) is None
        with pytest.raises(KeyError):
            await store.mark_message(conn, ws.id, mid, "status", first)
    assert (await message(pool, ws.id, mid))["opened_at"] == first
    entries = await timeline_of(pool, ws.id, mid)
    assert [k for k, _ in entries].count("update_message_history") == 1
    assert entries[-1][1]["opened_at"]["new"].startswith("2026-12-01T10:00:00")
