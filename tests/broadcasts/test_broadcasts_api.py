"""Broadcasts end to end (broadcasts-contract checks 1-3, 8-12, 14, 16-30, 33-35, 37, 43): through the
API, the broadcast loop (sending.run_once) and the send worker, to the SMTP sink."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import pytest
from fakes.smtp_sink import Sink, serving
from helpers import assert_json_error
from sendkit import drain, fast
from txkit import ok, setup, welcome

from postroom.broadcasts import model, sending
from postroom.delivery.worker import SendWorker


@pytest.fixture(autouse=True)
async def only_this_tests_queue(pool):
    await pool.execute("DELETE FROM email_queue")


@pytest.fixture
async def sink():
    async with serving(Sink()) as s:
        yield s


async def post(client, ws, route, **body):
    return await client.post(f"/api/broadcasts.{route}", headers=ws.headers, json={"workspace_id": ws.id, **body})


async def get(client, ws, route, **params):
    return await client.get(f"/api/broadcasts.{route}", headers=ws.headers, params={"workspace_id": ws.id, **params})


async def broadcast(client, ws, bid) -> dict:
    return (await ok(await get(client, ws, "get", id=bid)))["broadcast"]


async def marketing(client, ws, sink, pool) -> str:
    iid = await setup(client, ws, smtp_port=sink.port)
    await pool.execute("UPDATE workspaces SET settings = settings || jsonb_build_object('marketing_email_provider_id',"
                       " $2::text) WHERE id = $1", ws.id, iid)
    await ok(await client.post("/api/templates.create", headers=ws.headers,
                               json={**welcome(ws.id), "id": "second", "name": "Second",
                                     "email": {**welcome(ws.id)["email"], "subject": "Second {{ contact.email }}"}}),
             201)
    return iid


async def members(client, ws, list_id: str, statuses: dict[str, str]) -> None:
    """`statuses` email -> active | unsubscribed | pending | bounced | complained | removed."""
    lists = await client.get("/api/lists.get", headers=ws.headers, params={"workspace_id": ws.id, "id": list_id})
    if lists.status_code == 404:
        await ok(await client.post("/api/lists.create", headers=ws.headers,
                                   json={"workspace_id": ws.id, "id": list_id, "name": list_id.title()}), 201)
    for email, status in statuses.items():
        await ok(await client.post("/api/lists.subscribe", headers=ws.headers, json={
            "workspace_id": ws.id, "contact": {"email": email, "first_name": email.split("@")[0]},
            "list_ids": [list_id]}))
        if status == "removed":
            await ok(await client.post("/api/contactLists.removeContact", headers=ws.headers,
                                       json={"workspace_id": ws.id, "email": email, "list_id": list_id}))
        elif status != "active":
            await ok(await client.post("/api/contactLists.updateStatus", headers=ws.headers,
                                       json={"workspace_id": ws.id, "email": email, "list_id": list_id,
                                             "status": status}))


async def run(pool, settings, passes: int = 200, **values) -> None:
    """The broadcast loop and the send worker, until neither has work left (retries included)."""
    s = fast(settings, **values)
    worker = SendWorker(pool, s)
    try:
        for _ in range(passes):
            steps = await sending.run_once(pool, s)
            await drain(worker)
            if not steps:
                if not await pool.fetchval("SELECT count(*) FROM email_queue WHERE status <> 'paused'"):
                    return
                await asyncio.sleep(0.05)
    finally:
        await worker.aclose()


async def create(client, ws, **body) -> str:
    r = await ok(await post(client, ws, "create", **{"name": "Spring", "audience": {"list": "news"},
                                                     "test_settings": {"variations": [{"template_id": "welcome"}]},
                                                     **body}), 201)
    return r["broadcast"]["id"]


# ---------------------------------------------------------------- the object and the reads

async def test_create_answers_a_draft(client, ws):
    r = await ok(await post(client, ws, "create", name="Spring", audience={"list": "news"}, id="mine",
                            schedule={"is_scheduled": True}, status="processing"), 201)
    b = r["broadcast"]
    assert len(b["id"]) == 32 and b["id"] != "mine" and int(b["id"], 16) >= 0
    assert (b["status"], b["channel_type"], b["enqueued_count"]) == ("draft", "email", 0)
    assert b["schedule"] == {"is_scheduled": False, "use_recipient_timezone": False}
    assert b["test_settings"]["variations"] == [] and b["delivery"]["status"] == "pending"
    assert b["audience"] == {"list": "news", "exclude_unsubscribed": False}
    assert list(b)[:6] == ["id", "workspace_id", "name", "channel_type", "status", "audience"]
    assert list(b)[-1] == "delivery"


async def test_bad_creates_store_nothing(client, ws, pool):
    for body, message in [({"audience": {"list": "news"}}, "name is required"),
                          ({"name": "n" * 256, "audience": {"list": "news"}}, "name must be less than 255 characters"),
                          ({"name": "x"}, "list is required"),
                          ({"name": 5, "audience": {"list": "news"}}, "Invalid request body"),
                          ({"name": "x", "audience": {"list": "n"}, "test_settings": {
                              "enabled": True, "sample_percentage": 10,
                              "variations": [{"template_id": str(i)} for i in range(9)]}},
                           "maximum 8 variations are allowed for A/B testing")]:
        assert_json_error(await post(client, ws, "create", **body), 400, message)
    r = await client.post("/api/broadcasts.create", headers=ws.headers, content=b"{not json")
    assert_json_error(r, 400, "Invalid request body")
    assert await pool.fetchval("SELECT count(*) FROM broadcasts WHERE workspace_id = $1", ws.id) == 0


async def test_list_get_and_the_other_workspace(client, ws, new_workspace):
    assert await ok(await get(client, ws, "list")) == {"broadcasts": [], "total_count": 0}
    ids = [await create(client, ws, name=f"B{i}") for i in range(3)]
    page = await ok(await get(client, ws, "list", limit="500"))
    assert [b["id"] for b in page["broadcasts"]] == ids[::-1] and page["total_count"] == 3
    assert (await ok(await get(client, ws, "list", limit="1abc", offset="1")))["broadcasts"][0]["id"] == ids[1]
    assert (await ok(await get(client, ws, "list", status="scheduled"))) == {"broadcasts": [], "total_count": 0}
    assert_json_error(await get(client, ws, "list", limit="abc"), 400, "invalid limit parameter: expected integer")
    assert_json_error(await get(client, ws, "list", with_templates="maybe"), 400,
                            "invalid with_templates parameter: syntax error scanning boolean")
    assert_json_error(await get(client, ws, "get"), 400, "id is required")
    assert_json_error(await get(client, ws, "get", id="0" * 32), 404, "Broadcast not found")
    other = await new_workspace()
    r = await client.get("/api/broadcasts.get", headers=other.headers, params={"workspace_id": other.id, "id": ids[0]})
    assert_json_error(r, 404, "Broadcast not found")


async def test_with_templates_fills_each_variation(client, ws, sink, pool):
    await marketing(client, ws, sink, pool)
    bid = await create(client, ws, test_settings={"variations": [{"template_id": "welcome"}, {"template_id": "gone"}]})
    plain = (await broadcast(client, ws, bid))["test_settings"]["variations"]
    assert all("template" not in v for v in plain)
    full = (await ok(await get(client, ws, "get", id=bid, with_templates="true")))["broadcast"]
    welcome_v, gone_v = full["test_settings"]["variations"]
    assert welcome_v["template"]["id"] == "welcome" and "template" not in gone_v   # unloadable: left out
    listed = (await ok(await get(client, ws, "list", with_templates="1")))["broadcasts"][0]
    assert listed["test_settings"]["variations"][0]["template"]["name"] == "Welcome"


async def test_update_merge_rule_and_refusal(client, ws, sink, pool, settings):
    bid = await create(client, ws, utm_parameters={"source": "news"},
                       data_feed={"global_feed": {"enabled": False, "url": ""}})
    r = await ok(await post(client, ws, "update", id=bid, name="Renamed", audience={"list": "news"},
                            test_settings={"variations": [{"template_id": "welcome"}]}))
    b = r["broadcast"]
    assert b["name"] == "Renamed" and "utm_parameters" not in b and b["data_feed"]["global_feed"]["enabled"] is False
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active"})
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    assert_json_error(await post(client, ws, "update", id=bid, name="x", audience={"list": "news"}), 400,
                            "cannot update broadcast with status: processing")


# ---------------------------------------------------------------- schedule

async def test_schedule_refusals(client, ws, sink, pool):
    bid = await create(client, ws)
    assert_json_error(await post(client, ws, "schedule", id=bid, scheduled_date="2024-02-30",
                                       scheduled_time="10:00"), 400, "scheduled date must be in YYYY-MM-DD format")
    assert_json_error(await post(client, ws, "schedule", id=bid, send_now=True), 400,
                            "no marketing email provider configured for this workspace")
    await marketing(client, ws, sink, pool)
    assert_json_error(await post(client, ws, "schedule", id=bid, send_now=True), 400, "list not found: news")
    await members(client, ws, "news", {"a@example.com": "active"})
    empty = await create(client, ws, test_settings={})
    assert_json_error(await post(client, ws, "schedule", id=empty, send_now=True), 400,
                            "broadcast has no variations")
    missing = await create(client, ws, test_settings={"variations": [{"template_id": "gone"}]})
    assert_json_error(await post(client, ws, "schedule", id=missing, send_now=True), 400,
                            "template not found: gone")
    assert_json_error(await post(client, ws, "schedule", id="f" * 32, send_now=True), 404, "Broadcast not found")
    for b in (bid, empty, missing):
        assert (await broadcast(client, ws, b))["status"] == "draft"
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    await ok(await post(client, ws, "schedule", id=bid, scheduled_date=future.strftime("%Y-%m-%d"),
                        scheduled_time="10:00", timezone="Europe/Paris"))
    b = await broadcast(client, ws, bid)
    assert b["status"] == "scheduled" and b["schedule"]["is_scheduled"] and b["schedule"]["timezone"] == "Europe/Paris"
    assert_json_error(await post(client, ws, "schedule", id=bid, send_now=True), 400,
                            "only broadcasts with draft status can be scheduled, current status: scheduled")


async def test_a_schedule_in_the_past_starts_at_once_and_the_future_waits(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active", "b@example.com": "active"})
    past, later = await create(client, ws), await create(client, ws)
    await ok(await post(client, ws, "schedule", id=past, scheduled_date="2020-01-01", scheduled_time="10:00"))
    await ok(await post(client, ws, "schedule", id=later, scheduled_date="2099-01-01", scheduled_time="10:00"))
    await run(pool, settings)
    b = await broadcast(client, ws, past)
    assert b["status"] == "processed" and b["started_at"] and b["completed_at"] and b["enqueued_count"] == 2
    assert b["delivery"]["status"] == "sent" and b["delivery"]["sent"] == 2
    assert (await broadcast(client, ws, later))["status"] == "scheduled"
    assert sorted(m.rcpt_tos[0] for m in sink.received) == ["a@example.com", "b@example.com"]


# ---------------------------------------------------------------- audience (checks 21, 23)

@pytest.mark.parametrize("exclude, expected", [(True, 3), (False, 4)])
async def test_the_audience_rule(client, ws, sink, pool, settings, exclude, expected):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a1@example.com": "active", "a2@example.com": "active",
                                       "a3@example.com": "active", "u@example.com": "unsubscribed",
                                       "p@example.com": "pending", "b@example.com": "bounced",
                                       "c@example.com": "complained", "r@example.com": "removed"})
    bid = await create(client, ws, audience={"list": "news", "exclude_unsubscribed": exclude})
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await run(pool, settings)
    got = Counter(m.rcpt_tos[0] for m in sink.received)
    assert len(got) == expected and set(got.values()) == {1}
    assert ("u@example.com" in got) is (not exclude)
    b = await broadcast(client, ws, bid)
    d = b["delivery"]
    assert (d["recipients"], d["sent"], d["status"]) == (expected, expected, "sent")
    assert sum(d[k] for k in ("held", "waiting", "queued", "sent", "failed", "skipped", "cancelled")) == d["recipients"]
    mail = sink.received[0]
    assert mail.header("Subject").startswith("Hi ")


async def test_no_eligible_recipient_goes_straight_to_processed(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"p@example.com": "pending"})
    bid = await create(client, ws)
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await run(pool, settings)
    b = await broadcast(client, ws, bid)
    assert (b["status"], b["enqueued_count"], b["delivery"]["status"]) == ("processed", 0, "sent")
    assert b["completed_at"] and not sink.received


async def test_a_contact_unsubscribed_after_the_start_is_skipped(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active", "b@example.com": "active"})
    bid = await create(client, ws, audience={"list": "news", "exclude_unsubscribed": True})
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await sending.run_once(pool, fast(settings))            # the audience is frozen: both
    await ok(await client.post("/api/contactLists.updateStatus", headers=ws.headers, json={
        "workspace_id": ws.id, "email": "b@example.com", "list_id": "news", "status": "unsubscribed"}))
    await run(pool, settings)
    assert [m.rcpt_tos[0] for m in sink.received] == ["a@example.com"]
    d = (await broadcast(client, ws, bid))["delivery"]
    assert (d["recipients"], d["sent"], d["skipped"]) == (2, 1, 1)


# ---------------------------------------------------------------- pause, resume, cancel, delete

async def test_transitions_refused_with_the_contracts_messages(client, ws, sink, pool, settings):
    bid = await create(client, ws)
    assert_json_error(await post(client, ws, "pause", id=bid), 400,
                            "only broadcasts with processing, testing, winner_selected or processed status can be "
                            "paused, current status: draft")
    assert_json_error(await post(client, ws, "cancel", id=bid), 400,
                            "only broadcasts with scheduled, paused, processing, testing, test_completed, "
                            "winner_selected or processed status can be cancelled, current status: draft")
    assert_json_error(await post(client, ws, "resume", id=bid), 400,
                            "only broadcasts with paused status can be resumed, current status: draft")
    assert_json_error(await post(client, ws, "pause"), 400, "broadcast id is required")
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active"})
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    assert_json_error(await post(client, ws, "delete", id=bid), 400,
                            "broadcasts in 'sending' status cannot be deleted")
    await run(pool, settings)
    assert_json_error(await post(client, ws, "pause", id=bid), 400, "broadcast has already finished sending")


async def test_pause_holds_everything_and_resume_sends_each_once(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    emails = {f"r{i}@example.com": "active" for i in range(6)}
    await members(client, ws, "news", emails)
    bid = await create(client, ws)
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await sending.run_once(pool, fast(settings))           # resolved
    await ok(await post(client, ws, "pause", id=bid))
    b = await broadcast(client, ws, bid)
    assert b["status"] == "paused" and b["paused_at"] and "pause_reason" not in b
    await run(pool, settings)
    assert not sink.received
    await ok(await post(client, ws, "resume", id=bid))
    b = await broadcast(client, ws, bid)
    assert b["status"] == "processing" and "paused_at" not in b
    await run(pool, settings)
    assert sorted(m.rcpt_tos[0] for m in sink.received) == sorted(emails)
    assert (await broadcast(client, ws, bid))["delivery"]["status"] == "sent"


async def test_cancel_of_a_scheduled_broadcast_sends_nothing(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active"})
    bid = await create(client, ws)
    await ok(await post(client, ws, "schedule", id=bid, scheduled_date="2099-01-01", scheduled_time="10:00"))
    await ok(await post(client, ws, "cancel", id=bid))
    b = await broadcast(client, ws, bid)
    assert b["status"] == "cancelled" and b["cancelled_at"] and b["delivery"]["status"] == "cancelled"
    await run(pool, settings)
    assert not sink.received


async def test_cancel_mid_send_drops_what_has_not_left(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {f"r{i}@example.com": "active" for i in range(5)})
    bid = await create(client, ws)
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await sending.run_once(pool, fast(settings))           # resolved
    await sending.run_once(pool, fast(settings))           # fed: five queued messages
    assert (await broadcast(client, ws, bid))["delivery"]["queued"] == 5
    await ok(await post(client, ws, "cancel", id=bid))
    await run(pool, settings)
    assert not sink.received
    d = (await broadcast(client, ws, bid))["delivery"]
    assert (d["recipients"], d["cancelled"], d["queued"], d["status"]) == (5, 5, 0, "cancelled")
    r = await client.get("/api/messages.list", headers=ws.headers, params={"workspace_id": ws.id,
                                                                            "broadcast_id": bid})
    assert (await ok(r))["messages"] == []


async def test_delete_of_a_draft(client, ws):
    bid = await create(client, ws)
    assert await ok(await post(client, ws, "delete", id=bid)) == {"success": True}
    assert_json_error(await get(client, ws, "get", id=bid), 404, "Broadcast not found")


# ---------------------------------------------------------------- A/B (checks 33-35, 37)

async def test_ab_test_then_manual_winner(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    emails = [f"r{i:02d}@example.com" for i in range(40)]
    await members(client, ws, "news", {e: "active" for e in emails})
    bid = await create(client, ws, test_settings={
        "enabled": True, "sample_percentage": 20,
        "variations": [{"variation_name": "A", "template_id": "welcome"},
                       {"variation_name": "B", "template_id": "second"}]})
    assert_json_error(await post(client, ws, "selectWinner", id=bid, template_id="welcome"), 400,
                            "broadcast is not in test completed state")
    assert_json_error(await get(client, ws, "getTestResults", id=bid), 400,
                            "broadcast test results not available for status: draft")
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await run(pool, settings)
    b = await broadcast(client, ws, bid)
    assert b["status"] == "test_completed" and b["test_sent_at"]
    assert (b["test_phase_recipient_count"], b["winner_phase_recipient_count"]) == (8, 32)
    assert (b["delivery"]["held"], b["delivery"]["sent"], b["delivery"]["status"]) == (32, 8, "waiting_for_winner")
    subjects = Counter(m.header("Subject").split()[0] for m in sink.received)
    assert subjects == {"Hi": 4, "Second": 4}
    sample = [e for e, phase, _ in model.split(bid, emails, {"enabled": True, "sample_percentage": 20,
                                                              "variations": [1, 2]}) if phase == "test"]
    assert sorted(m.rcpt_tos[0] for m in sink.received) == sorted(sample)
    results = await ok(await get(client, ws, "getTestResults", id=bid))
    assert set(results["variation_results"]) == {"welcome", "second"}
    assert results["variation_results"]["second"]["recipients"] == 4
    assert results["recommended_winner"] == "welcome" and results["is_auto_send_winner"] is False
    assert_json_error(await post(client, ws, "selectWinner", id=bid, template_id="nope"), 400,
                            "invalid template ID")
    await ok(await post(client, ws, "selectWinner", id=bid, template_id="second"))
    await run(pool, settings)
    b = await broadcast(client, ws, bid)
    assert (b["status"], b["winning_template"], b["delivery"]["status"]) == ("processed", "second", "sent")
    assert b["winner_sent_at"] and b["delivery"]["sent"] == 40
    got = Counter(m.rcpt_tos[0] for m in sink.received)
    assert set(got) == set(emails) and set(got.values()) == {1}
    assert Counter(m.header("Subject").split()[0] for m in sink.received) == {"Hi": 4, "Second": 36}


async def test_broadcast_stats_count_the_broadcasts_messages(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {f"r{i}@example.com": "active" for i in range(3)})
    bid = await create(client, ws)
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await run(pool, settings)
    r = await client.get("/api/messages.broadcastStats", headers=ws.headers,
                         params={"workspace_id": ws.id, "broadcast_id": bid})
    stats = (await ok(r))["stats"]
    assert stats["total_sent"] == 3 and stats["total_failed"] == 0


# ---------------------------------------------------------------- failures and retryFailed (checks 41, 42)

async def test_transient_failures_are_retryable_and_retry_failed_sends_them(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"ok@example.com": "active", "busy@example.com": "active",
                                       "gone@example.com": "active"})
    busy = sink.reject("RCPT", "451 4.3.0 try later", address="busy@example.com")
    sink.reject("RCPT", "550 5.1.1 no such user", address="gone@example.com")
    bid = await create(client, ws)
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await run(pool, settings, delivery_max_attempts=2)
    b = await broadcast(client, ws, bid)
    d = b["delivery"]
    assert (b["status"], d["status"], d["sent"], d["failed"], d["retryable"]) == \
        ("processed", "partially_failed", 1, 2, 1), d
    sink.rules.remove(busy)
    r = await ok(await post(client, ws, "retryFailed", id=bid))
    assert r == {"success": True, "requeued": 1}
    assert (await broadcast(client, ws, bid))["delivery"]["status"] == "sending"
    await run(pool, settings)
    d = (await broadcast(client, ws, bid))["delivery"]
    assert (d["status"], d["sent"], d["failed"], d["retryable"]) == ("partially_failed", 2, 1, 0)
    assert sorted(m.rcpt_tos[0] for m in sink.received) == ["busy@example.com", "ok@example.com"]
    r = await ok(await post(client, ws, "retryFailed", id=bid, include_permanent=True))
    assert r == {"success": True, "requeued": 1}
    await run(pool, settings)
    d = (await broadcast(client, ws, bid))["delivery"]
    assert (d["sent"], d["failed"], d["recipients"]) == (2, 1, 3)          # refused again, for good


async def test_retry_failed_of_a_fully_sent_broadcast_is_refused(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active"})
    bid = await create(client, ws)
    assert_json_error(await post(client, ws, "retryFailed", id=bid), 400,
                      "only broadcasts that finished with failures can retry failed recipients, current status: draft")
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await run(pool, settings)
    assert_json_error(await post(client, ws, "retryFailed", id=bid), 400,
                      "only broadcasts that finished with failures can retry failed recipients, "
                      "current status: processed")


# ---------------------------------------------------------------- sendToIndividual (checks 31, 32)

@pytest.fixture
async def running_worker(pool, settings):
    worker = SendWorker(pool, fast(settings))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_send_to_individual(client, ws, sink, pool, settings, running_worker):
    bid = await create(client, ws, test_settings={"variations": [{"template_id": "welcome"},
                                                                 {"template_id": "second"}]})
    assert_json_error(await post(client, ws, "sendToIndividual", broadcast_id=bid, recipient_email="x@example.com"),
                      400, "no marketing email provider configured for this workspace")
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active"})
    assert_json_error(await post(client, ws, "sendToIndividual", broadcast_id=bid), 400, "recipient_email is required")
    assert_json_error(await post(client, ws, "sendToIndividual", recipient_email="x@example.com"), 400,
                      "broadcast_id is required")
    assert_json_error(await post(client, ws, "sendToIndividual", broadcast_id=bid, recipient_email="nope"), 400,
                      "invalid recipient_email format")
    assert_json_error(await post(client, ws, "sendToIndividual", broadcast_id=bid, recipient_email="x@example.com",
                                 template_id="other"), 400, "variation with ID other not found in broadcast")
    assert_json_error(await post(client, ws, "sendToIndividual", broadcast_id="0" * 32,
                                 recipient_email="x@example.com"), 404, "Broadcast not found")
    r = await ok(await post(client, ws, "sendToIndividual", id=bid, recipient_email="Stranger@Example.com",
                            template_id="second"))
    assert r == {"success": True}
    (mail,) = sink.received
    assert mail.rcpt_tos == ["stranger@example.com"] and mail.header("Subject").startswith("Second")
    stats = await ok(await client.get("/api/messages.broadcastStats", headers=ws.headers,
                                      params={"workspace_id": ws.id, "broadcast_id": bid}))
    assert set(stats["stats"].values()) == {0}
    row = await pool.fetchrow("SELECT broadcast_id, list_id, template_id FROM message_history WHERE workspace_id = $1",
                              ws.id)
    assert (row["broadcast_id"], row["list_id"], row["template_id"]) == (None, "news", "second")
    sink.reject("RCPT", "550 5.1.1 no such user", address="gone@example.com")
    r = await post(client, ws, "sendToIndividual", broadcast_id=bid, recipient_email="gone@example.com")
    assert r.status_code == 502 and r.json()["error"].startswith("Failed to send broadcast to individual: ")
    assert "550" in r.json()["error"]
    empty = await create(client, ws, test_settings={})
    assert_json_error(await post(client, ws, "sendToIndividual", broadcast_id=empty, recipient_email="x@example.com"),
                      400, "broadcast has no variations")


# ---------------------------------------------------------------- segments in the audience (checks 19, 22)

def country_segment(ws_id: str, seg_id: str, country: str) -> dict:
    return {"workspace_id": ws_id, "id": seg_id, "name": seg_id.title(), "color": "blue", "timezone": "UTC",
            "tree": {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
                {"field_name": "country", "field_type": "string", "operator": "equals", "string_values": [country]}]}}}}


async def test_segments_narrow_the_audience_and_each_address_gets_one_message(client, ws, sink, pool, settings):
    from postroom.segments import worker as segments_worker

    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"both@example.com": "active", "fr@example.com": "active",
                                       "none@example.com": "active"})
    await ok(await client.post("/api/contacts.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "outside@example.com", "country": "FR"}}))
    for email, country in (("both@example.com", "FR"), ("fr@example.com", "FR"), ("none@example.com", "DE")):
        await ok(await client.post("/api/contacts.upsert", headers=ws.headers, json={
            "workspace_id": ws.id, "contact": {"email": email, "country": country}}))
    for seg_id in ("fr1", "fr2"):                 # two segments that both hold the French contacts
        await ok(await client.post("/api/segments.create", headers=ws.headers,
                                   json=country_segment(ws.id, seg_id, "FR")), 201)
    bid = await create(client, ws, audience={"list": "news", "segments": ["fr1", "fr2"]})
    missing = await create(client, ws, audience={"list": "news", "segments": ["fr1", "gone"]})
    assert_json_error(await post(client, ws, "schedule", id=missing, send_now=True), 400, "segment not found: gone")
    await ok(await post(client, ws, "schedule", id=bid, send_now=True))
    await sending.run_once(pool, fast(settings))
    assert (await broadcast(client, ws, bid))["delivery"]["recipients"] == 0      # waits for the build
    while await segments_worker.scan_once(pool):
        pass
    await run(pool, settings)
    assert sorted(m.rcpt_tos[0] for m in sink.received) == ["both@example.com", "fr@example.com"]
    d = (await broadcast(client, ws, bid))["delivery"]
    assert (d["recipients"], d["sent"], d["status"]) == (2, 2, "sent")


async def test_a_segment_an_active_broadcast_reads_cannot_be_deleted(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {"a@example.com": "active"})
    await ok(await client.post("/api/segments.create", headers=ws.headers,
                               json=country_segment(ws.id, "fr1", "FR")), 201)
    bid = await create(client, ws, audience={"list": "news", "segments": ["fr1"]})
    delete = {"workspace_id": ws.id, "id": "fr1"}
    await ok(await post(client, ws, "schedule", id=bid, scheduled_date="2099-01-01", scheduled_time="10:00"))
    assert_json_error(await client.post("/api/segments.delete", headers=ws.headers, json=delete), 400,
                      f"segment is used by an active broadcast: {bid}")
    got = await client.get("/api/segments.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "fr1"})
    assert got.status_code == 200 and got.json()["segment"]["status"] != "deleted"
    await ok(await post(client, ws, "cancel", id=bid))
    await ok(await client.post("/api/segments.delete", headers=ws.headers, json=delete))
    assert (await client.post("/api/segments.delete", headers=ws.headers, json=delete)).status_code == 404



# ---------------------------------------------------------------- the task view (check 58)

async def tasks(client, ws, route: str, **params):
    return await client.get(f"/api/tasks.{route}", headers=ws.headers, params={"workspace_id": ws.id, **params})


async def test_the_task_view_follows_each_scheduled_broadcast(client, ws, sink, pool, settings):
    await marketing(client, ws, sink, pool)
    await members(client, ws, "news", {f"r{i}@example.com": "active" for i in range(3)})
    draft = await create(client, ws)
    later = await create(client, ws)
    now = await create(client, ws)
    await ok(await post(client, ws, "schedule", id=later, scheduled_date="2099-01-01", scheduled_time="10:00"))
    await ok(await post(client, ws, "schedule", id=now, send_now=True))
    for _ in range(3):                                 # started and fed: three queued, none sent yet
        await sending.run_once(pool, fast(settings))

    listed = await ok(await tasks(client, ws, "list"))
    by_broadcast = {t["broadcast_id"]: t for t in listed["tasks"]}
    assert set(by_broadcast) == {later, now} and listed["total_count"] == 2 and listed["has_more"] is False
    running, pending = by_broadcast[now], by_broadcast[later]
    b = await broadcast(client, ws, now)
    state = running["state"]["send_broadcast"]
    # every recipient fed: the broadcast is processed, its task completed (the contract's mapping)
    assert b["status"] == "processed" and b["delivery"]["status"] == "sending"
    assert (running["type"], running["status"], running["id"]) == ("send_broadcast", "completed",
                                                                   f"send_broadcast_{now}")
    assert state["enqueued_count"] == b["enqueued_count"] == 3
    assert (state["total_recipients"], state["failed_count"], state["phase"], running["progress"]) == (3, 0, "single",
                                                                                                      100.0)
    assert pending["status"] == "pending" and pending["progress"] == 0
    assert pending["next_run_after"].startswith("2099-01-01T10:00:00") and "next_run_after" not in running
    assert (await ok(await tasks(client, ws, "get", id=f"send_broadcast_{now}")))["task"] == running

    filtered = await ok(await tasks(client, ws, "list", status="pending,failed"))
    assert [t["broadcast_id"] for t in filtered["tasks"]] == [later]
    assert (await ok(await tasks(client, ws, "list", type="import_contacts")))["tasks"] == []
    page = await ok(await tasks(client, ws, "list", limit="1", offset="1"))
    assert (len(page["tasks"]), page["total_count"], page["has_more"]) == (1, 2, False)

    await ok(await post(client, ws, "pause", id=now))
    paused = (await ok(await tasks(client, ws, "get", id=f"send_broadcast_{now}")))["task"]
    assert paused["status"] == "paused"
    await ok(await post(client, ws, "resume", id=now))
    await run(pool, settings)
    done = (await ok(await tasks(client, ws, "get", id=f"send_broadcast_{now}")))["task"]
    assert done["status"] == "completed" and "completed_at" in done and len(sink.received) == 3

    for missing in (f"send_broadcast_{draft}", draft, "send_broadcast_", f"send_broadcast_{now}x"):
        assert_json_error(await tasks(client, ws, "get", id=missing), 404, "Task not found")
    assert_json_error(await tasks(client, ws, "list", status="done"), 400,
                      "invalid status parameter: 'done' is not one of pending, running, paused, completed, failed")
    assert_json_error(await tasks(client, ws, "list", created_after="yesterday"), 400,
                      "invalid created_after parameter: expected RFC 3339 date-time such as 2023-05-15T14:30:00Z")
    assert_json_error(await tasks(client, ws, "list", limit="1001"), 400, "limit must be between 1 and 1000")
