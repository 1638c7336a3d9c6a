"""Broadcast endpoints (broadcasts-contract, Routes), permission resource `broadcasts`. Requests
are checked by broadcasts/model.py before the membership and permission checks (Endpoint.parse);
the handlers read and change the row through broadcasts/store.py, each state change in one
transaction with the row locked, and leave sending to broadcasts/sending.py."""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
import uuid

from postroom.broadcasts import model, sending, store
from postroom.broadcasts.model import BroadcastError
from postroom.contacts import model as contacts_model, store as contacts_store
from postroom.delivery import store as delivery_store
from postroom.delivery.model import Status
from postroom.platform.errors import RuleError
from postroom.segments import store as segments_store
from postroom.platform.http import Call, Endpoint, json_response
from postroom.platform.times import format_time
from postroom.templates import model as templates_model, store as templates_store
from postroom.workspaces import store as workspaces_store

NO_MARKETING = "no marketing email provider configured for this workspace"


async def _wire(conn, row, with_templates: bool = False) -> dict:
    counts = await store.counters(conn, row["workspace_id"], row["id"])
    delivery = model.delivery_wire(row["status"], counts,
                                   format_time(row["finished_at"]) if row["finished_at"] else None)
    templates = None
    if with_templates:
        templates = {}
        for v in row["test_settings"].get("variations") or []:
            t = await templates_store.latest_live(conn, row["workspace_id"], v["template_id"]) \
                if v.get("template_id") else None
            if t is not None:
                templates[v["template_id"]] = templates_model.template_wire(t)
    return model.wire(row, delivery, format_time, templates)


async def _found(conn, call: Call, broadcast_id: str, lock: bool = True):
    row = await store.get(conn, call.workspace_id, broadcast_id, lock=lock)
    if row is None:
        raise RuleError(model.NOT_FOUND, 404)
    return row


async def _delivery_status(conn, row) -> str:
    return model.delivery_status(row["status"], await store.counters(conn, row["workspace_id"], row["id"]))


# ---------------------------------------------------------------- reads

async def list_broadcasts(call: Call):
    q: model.ListQuery = call.input
    async with call.pool.acquire() as conn:
        rows, total = await store.list_broadcasts(conn, call.workspace_id, q)
        return {"broadcasts": [await _wire(conn, r, q.with_templates) for r in rows], "total_count": total}


async def get_broadcast(call: Call):
    broadcast_id, with_templates = call.input
    async with call.pool.acquire() as conn:
        row = await _found(conn, call, broadcast_id, lock=False)
        return {"broadcast": await _wire(conn, row, with_templates)}


# ---------------------------------------------------------------- create, update, delete

async def create_broadcast(call: Call):
    async with call.pool.acquire() as conn:
        row = await store.create(conn, call.workspace_id, model.new_id(), call.input)
        return json_response({"broadcast": await _wire(conn, row)}, status=201)


async def update_broadcast(call: Call):
    update: model.Update = call.input
    async with call.pool.acquire() as conn, conn.transaction():
        row = await _found(conn, call, update.broadcast_id)
        model.check_update(row["status"])
        merged = model.merge_update(row, update, started=row["started_at"] is not None)
        start_at = row["start_at"]
        if row["status"] == model.SCHEDULED and merged["schedule"].get("is_scheduled"):
            start_at = _start_instant(merged["schedule"])          # the start moves with the schedule
        updated = await store.update(conn, call.workspace_id, update.broadcast_id, merged, start_at)
        return {"broadcast": await _wire(conn, updated)}


# ---------------------------------------------------------------- schedule

def _start_instant(schedule: dict) -> _dt.datetime:
    if schedule.get("use_recipient_timezone"):
        return model.earliest_instant(schedule)
    return model.scheduled_instant(schedule)


async def _check_startable(conn, call: Call, row) -> None:
    """Rules 10-13 of broadcasts.schedule: the list, the segments, the variations' templates."""
    audience = row["audience"]
    listed = await conn.fetchval("SELECT 1 FROM lists WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
                                 call.workspace_id, audience["list"])
    if not listed:
        raise BroadcastError(f"list not found: {audience['list']}")
    segments = audience.get("segments") or []
    found = await segments_store.statuses(conn, call.workspace_id, segments) if segments else {}
    for segment_id in segments:
        if segment_id not in found:
            raise BroadcastError(f"segment not found: {segment_id}")
    for template_id in model.send_variations(row["test_settings"]):
        if await templates_store.latest_live(conn, call.workspace_id, template_id) is None:
            raise BroadcastError(f"template not found: {template_id}")


async def segment_user(conn, workspace_id: str, segment_id: str) -> str | None:
    """segments.delete asks this (through the composition root): a broadcast that will still read
    the segment refuses its deletion."""
    broadcast_id = await store.using_segment(conn, workspace_id, segment_id)
    return f"segment is used by an active broadcast: {broadcast_id}" if broadcast_id else None


async def _marketing_integration(conn, ws: str):
    workspace = await workspaces_store.get(conn, ws)
    provider_id = ((workspace["settings"] if workspace else None) or {}).get("marketing_email_provider_id")
    found = await delivery_store.get_integration(conn, ws, provider_id) if provider_id else None
    if found is None:
        raise BroadcastError(NO_MARKETING)
    return found


async def schedule_broadcast(call: Call):
    req: model.ScheduleRequest = call.input
    async with call.pool.acquire() as conn, conn.transaction():
        await _marketing_integration(conn, call.workspace_id)
        row = await _found(conn, call, req.broadcast_id)
        model.check_schedule(row["status"])
        await _check_startable(conn, call, row)
        start_at = None if req.send_now else _start_instant(req.schedule)
        await store.schedule(conn, call.workspace_id, row["id"], req.send_now, req.schedule, start_at)
    return {"success": True}


# ---------------------------------------------------------------- pause, resume, cancel

async def _transition(call: Call, change) -> dict:
    """One state change of the broadcast named by the request, in one transaction with its row
    locked: change(conn, row) checks the transition and applies it."""
    async with call.pool.acquire() as conn, conn.transaction():
        await change(conn, await _found(conn, call, call.input))
    return {"success": True}


async def pause_broadcast(call: Call):
    async def pause(conn, row):
        model.check_pause(row["status"], await _delivery_status(conn, row))
        await store.pause(conn, call.workspace_id, row["id"])
    return await _transition(call, pause)


async def resume_broadcast(call: Call):
    async def resume(conn, row):
        model.check_resume(row["status"])
        await store.resume(conn, call.workspace_id, row["id"], model.resumed_status(row["paused_from"]))
    return await _transition(call, resume)


async def cancel_broadcast(call: Call):
    async def cancel(conn, row):
        model.check_cancel(row["status"], await _delivery_status(conn, row))
        await store.cancel(conn, call.workspace_id, row["id"])
    return await _transition(call, cancel)


async def delete_broadcast(call: Call):
    async def delete(conn, row):
        model.check_delete(row["status"])
        await store.delete(conn, call.workspace_id, row["id"])
    return await _transition(call, delete)


# ---------------------------------------------------------------- A/B

async def test_results(call: Call):
    async with call.pool.acquire() as conn:
        row = await _found(conn, call, call.input, lock=False)
        model.check_test_results(row["status"])
        figures = await sending.variation_figures(conn, row)
        names = {}
        for f in figures:
            t = await templates_store.latest_live(conn, call.workspace_id, f.template_id)
            names[f.template_id] = t["name"] if t else ""
    t = row["test_settings"]
    out = {"broadcast_id": row["id"], "status": row["status"],
           "test_started_at": format_time(row["started_at"]) if row["started_at"] else None,
           "test_completed_at": format_time(row["test_sent_at"]) if row["test_sent_at"] else None,
           "variation_results": {f.template_id: {
               "template_id": f.template_id, "template_name": names[f.template_id], "recipients": f.sent,
               "delivered": f.delivered, "opens": f.opens, "clicks": f.clicks, "open_rate": f.open_rate,
               "click_rate": f.click_rate} for f in figures},
           "recommended_winner": (model.recommended_winner(figures)
                                  if not t.get("auto_send_winner") and not row["winning_template"] else None),
           "winning_template": row["winning_template"], "is_auto_send_winner": bool(t.get("auto_send_winner"))}
    return {k: v for k, v in out.items() if v not in (None, "")}


async def select_winner(call: Call):
    broadcast_id, template_id = call.input
    async with call.pool.acquire() as conn, conn.transaction():
        row = await _found(conn, call, broadcast_id)
        model.check_select_winner(row["status"], row["test_settings"])
        model.check_winner_template(row["test_settings"], template_id)
        index = [v["template_id"] for v in row["test_settings"]["variations"]].index(template_id)
        await store.select_winner(conn, call.workspace_id, row["id"], template_id, index, automatic=False)
    return {"success": True}


INDIVIDUAL_WAIT = 30.0      # seconds sendToIndividual waits for the provider's answer


async def send_to_individual(call: Call):
    """One message of the broadcast to one address, rendered like a real one, queued first in
    line; the request waits for its outcome (at most INDIVIDUAL_WAIT seconds)."""
    req: model.Individual = call.input
    ws = call.workspace_id
    async with call.pool.acquire() as conn:
        async with conn.transaction():
            await _marketing_integration(conn, ws)
            row = await _found(conn, call, req.broadcast_id, lock=False)
            template_id = model.individual_template(row["test_settings"], req.template_id)
            p = sending.Pass(conn, call.settings, row)
            try:
                await p.load([template_id])
            except sending.StartRefused as refused:
                raise BroadcastError(str(refused)) from None
            found = await contacts_store.get_by_email(conn, ws, req.recipient)
            message_id = str(uuid.uuid4())
            try:
                out = p.render(contacts_model.to_wire(found[0]) if found else None, template_id, message_id,
                               to=req.recipient, individual=True)
            except sending.RenderFailed as failed:
                raise BroadcastError(f"Failed to send broadcast to individual: render: {failed.message}") from None
            await delivery_store.enqueue(conn, call.settings.key_bytes, out, p.integration["kind"],
                                         call.settings.delivery_max_attempts, key=p.data_key)
        deadline = time.monotonic() + INDIVIDUAL_WAIT
        while time.monotonic() < deadline:
            status, info = await conn.fetchrow(OUTCOME, ws, message_id) or (None, None)
            if status == Status.SENT:
                return {"success": True}
            if status == Status.FAILED:
                raise RuleError(f"Failed to send broadcast to individual: {info}", 502)
            await asyncio.sleep(0.1)
    return {"success": True, "queued": True}


OUTCOME = "SELECT status, status_info FROM message_history WHERE workspace_id = $1 AND id = $2"


async def retry_failed(call: Call):
    broadcast_id, include_permanent = call.input
    async with call.pool.acquire() as conn, conn.transaction():
        row = await _found(conn, call, broadcast_id)
        model.check_retry_failed(row["status"], await _delivery_status(conn, row))
        n = await store.retry_failed(conn, row, include_permanent)
    return {"success": True, "requeued": n}


def _ref(c: Call):
    return model.parse_action(c.body)


ENDPOINTS = [
    Endpoint("/api/broadcasts.list", "GET", list_broadcasts, resource="broadcasts",
             parse=lambda c: model.parse_list(c.param)),
    Endpoint("/api/broadcasts.get", "GET", get_broadcast, resource="broadcasts",
             parse=lambda c: model.parse_get(c.param)),
    Endpoint("/api/broadcasts.create", "POST", create_broadcast, resource="broadcasts", write=True,
             parse=lambda c: model.parse_create(c.body)),
    Endpoint("/api/broadcasts.update", "POST", update_broadcast, resource="broadcasts", write=True,
             parse=lambda c: model.parse_update(c.body)),
    Endpoint("/api/broadcasts.delete", "POST", delete_broadcast, resource="broadcasts", write=True, parse=_ref),
    Endpoint("/api/broadcasts.schedule", "POST", schedule_broadcast, resource="broadcasts", write=True,
             parse=lambda c: model.parse_schedule(c.body)),
    Endpoint("/api/broadcasts.pause", "POST", pause_broadcast, resource="broadcasts", write=True, parse=_ref),
    Endpoint("/api/broadcasts.resume", "POST", resume_broadcast, resource="broadcasts", write=True, parse=_ref),
    Endpoint("/api/broadcasts.cancel", "POST", cancel_broadcast, resource="broadcasts", write=True, parse=_ref),
    Endpoint("/api/broadcasts.getTestResults", "GET", test_results, resource="broadcasts",
             parse=lambda c: model.parse_results_query(c.param)),
    Endpoint("/api/broadcasts.sendToIndividual", "POST", send_to_individual, resource="broadcasts", write=True,
             parse=lambda c: model.parse_individual(c.body)),
    Endpoint("/api/broadcasts.retryFailed", "POST", retry_failed, resource="broadcasts", write=True,
             parse=lambda c: model.parse_retry_failed(c.body)),
    Endpoint("/api/broadcasts.selectWinner", "POST", select_winner, resource="broadcasts", write=True,
             parse=lambda c: model.parse_select_winner(c.body)),
]
