"""The broadcast loop of `postroom serve` and `postroom worker` (broadcasts-contract, The sending
pipeline): an in-process scheduler that starts due broadcasts, and a feeder that moves each
running broadcast's recipients into the send queue of the delivery contract, one window ahead of
sending, rendering each through the one render path.

A pass, every second or when woken: start the broadcasts whose instant has come; then, for each
running broadcast, with its row locked (SKIP LOCKED: one process per broadcast at a time, any
number of processes): freeze the audience at the first pass (start checks, then
store.resolve), feed one chunk, and move the status on (processed, test_completed, the automatic
winner, the end of delivery). Every step is one transaction: a crash loses nothing and a recipient
is fed once (its message id is written with its queue row).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
import uuid

from postroom.broadcasts import model, store
from postroom.contacts import model as contacts_model
from postroom.delivery import store as delivery_store
from postroom.delivery.model import Outgoing, Source, Status, marketing_unsubscribe, resolve_sender
from postroom.delivery.transactional import tracking_enabled
from postroom.delivery import sending as delivery_sending
from postroom.platform.queue import pause as wait
from postroom.segments import store as segments_store
from postroom.templates import model as templates_model, store as templates_store
from postroom.templates import render as engine
from postroom.templates.render.context import Sending, template_data

log = logging.getLogger("postroom.broadcasts")

CHUNK = 500                   # recipients fed per transaction
MIN_WINDOW = 500              # unsettled messages a broadcast keeps in the queue, at least
RENDER_FAILURES_TO_PAUSE = 25
ELIGIBLE = ("active", "unsubscribed")


class StartRefused(Exception):
    """A start check failed: the broadcast pauses with this reason."""


def window(rate_per_minute: int | None) -> int:
    """max(500, 2 minutes of the integration's rate)."""
    return max(MIN_WINDOW, 2 * int(rate_per_minute or 0))


class Pass:
    """What one pass over one broadcast needs, read once: workspace settings, the marketing
    integration, the pinned templates, the links' secret."""

    def __init__(self, conn, settings, b):
        self.conn, self.settings, self.b = conn, settings, b
        self.ws = b["workspace_id"]

    async def load(self, template_ids: list[str] | None = None) -> None:
        """Reads what rendering needs; `template_ids`: the templates to load (latest versions),
        instead of the broadcast's pinned or variation templates. Raises StartRefused."""
        conn, ws = self.conn, self.ws
        self.ws_settings = await delivery_sending.workspace_settings(conn, ws)
        provider_id = self.ws_settings.get("marketing_email_provider_id") or ""
        self.integration = await delivery_store.get_integration(conn, ws, provider_id) if provider_id else None
        if self.integration is None:
            raise StartRefused("no marketing email provider configured for this workspace")
        list_row = await conn.fetchrow("SELECT id, name FROM lists WHERE workspace_id = $1 AND id = $2"
                                       " AND deleted_at IS NULL", ws, self.b["audience"]["list"])
        if list_row is None:
            raise StartRefused(f"list not found: {self.b['audience']['list']}")
        self.list = {"id": list_row["id"], "name": list_row["name"]}
        segments = self.b["audience"].get("segments") or []
        found = await segments_store.statuses(conn, ws, segments) if segments else {}
        for segment_id in segments:
            if segment_id not in found:
                raise StartRefused(f"segment not found: {segment_id}")
        self.segments_building = any(status != "active" for status in found.values())
        self.templates = {}
        pinned = {} if template_ids else (self.b["template_versions"] or {})
        wanted = template_ids or (list(pinned) if pinned else model.send_variations(self.b["test_settings"]))
        for template_id in wanted:
            row = (await templates_store.get(conn, ws, template_id, pinned[template_id]) if pinned
                   else await templates_store.latest_live(conn, ws, template_id))
            if row is None:
                raise StartRefused(f"template not found: {template_id}")
            self.templates[template_id] = row
        self.secret = await delivery_sending.email_hmac_secret(conn, ws, self.settings.key_bytes)
        self.data_key = await delivery_store.message_key(conn, ws, self.settings.key_bytes)
        self.endpoint = templates_model.public_endpoint(self.ws_settings, self.settings.api_endpoint or "")
        self.tracking = tracking_enabled(self.ws_settings)

    def variation_template(self, index: int) -> str:
        variations = self.b["test_settings"]["variations"]
        return variations[index]["template_id"] if index is not None and index < len(variations) else \
            variations[0]["template_id"]

    def render(self, contact: dict | None, template_id: str, message_id: str, *, to: str | None = None,
               individual: bool = False) -> Outgoing:
        """One recipient's message. `individual`: a broadcasts.sendToIndividual test, recorded
        without the broadcast (it never counts in its figures) and queued like transactional mail."""
        b, template = self.b, self.templates[template_id]
        utm = {f"utm_{k}": v for k, v in (b["utm_parameters"] or {}).items()}
        utm.setdefault("utm_content", template_id)
        part = templates_model.variant(template, (contact or {}).get("language"),
                                       templates_model.workspace_languages(self.ws_settings)[1])
        now = int(time.time())
        tracker = (engine.signed_tracking(self.settings.key_bytes, self.endpoint, message_id, self.ws, now)
                   if self.tracking else None)
        data = template_data(Sending(self.ws, self.endpoint, self.ws_settings.get("website_url"), self.secret,
                                     message_id, now, contact=contact, list=self.list,
                                     broadcast={"id": b["id"], "name": b["name"]}, utm=utm,
                                     global_feed=(b["data_feed"] or {}).get("global_feed_data"), tracker=tracker))
        result = engine.render(templates_model.content(part), data, engine.Options(
            tracking=tracker is not None, utm=utm, endpoint=self.endpoint,
            click_url=tracker.click_url if tracker else None, open_url=tracker.open_url if tracker else None))
        if not result.success:
            raise RenderFailed(result.error.message)
        sender = resolve_sender(self.integration["senders"], part.get("sender_id"))
        options = marketing_unsubscribe(data)
        if part.get("reply_to"):
            options["reply_to"] = part["reply_to"]
        return Outgoing(workspace_id=self.ws, integration_id=self.integration["id"],
                        contact_email=to or contact["email"],
                        from_address=sender["email"], from_name=sender["name"], subject=result.subject or "",
                        html=result.html, text=result.text, template_id=template_id,
                        template_version=template["version"],
                        source_type=Source.TEST if individual else Source.BROADCAST,
                        source_id=None if individual else b["id"], message_id=message_id, email_options=options,
                        list_id=self.list["id"], data=data)


class RenderFailed(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


async def advance(conn, settings, b) -> bool:
    """One step of one broadcast, in the caller's transaction with its row locked. True when it
    did something (the loop then comes back at once)."""
    p = Pass(conn, settings, b)
    try:
        await p.load()
    except StartRefused as refused:
        if b["resolved_at"] is None or b["status"] != model.PROCESSED:
            await store.pause(conn, p.ws, b["id"], str(refused))
            return True
        raise
    if b["resolved_at"] is None:
        if p.segments_building:            # the start waits until its segments are built
            return False
        versions = {tid: row["version"] for tid, row in p.templates.items()}
        await store.resolve(conn, b, versions)
        return True
    status = b["status"]
    if status in (model.PROCESSING, model.TESTING, model.WINNER_SELECTED):
        fed = await feed(conn, p)
        if fed:
            return True
        if await conn.fetchval(store.WAITING_LEFT, p.ws, b["id"]):
            return False                               # waiting for send-after times or the window
        if status == model.TESTING:
            if await conn.fetchval(store.IN_QUEUE, p.ws, b["id"]) == 0:
                await conn.execute(store.SET_TEST_COMPLETED, p.ws, b["id"])
                await store.emit(conn, p.ws, "broadcast.test_completed", b["id"])
                return True
            return False
        await conn.execute(store.SET_PROCESSED, p.ws, b["id"])
        await store.emit(conn, p.ws, "broadcast.processed", b["id"])
        return True
    if status == model.TEST_COMPLETED:
        return await auto_winner(conn, b)
    if status == model.PROCESSED:
        if await feed(conn, p):                        # recipients of broadcasts.retryFailed
            return True
        counts = await store.counters(conn, p.ws, b["id"])
        if not (counts["held"] or counts["waiting"] or counts["queued"]):
            await conn.execute(store.SET_FINISHED, p.ws, b["id"])
            await store.emit(conn, p.ws, "broadcast.sent", b["id"], {"counters": counts})
            return True
    return False


async def feed(conn, p: Pass) -> int:
    """Feeds up to one chunk of due waiting recipients, within the window; returns how many were
    fed or skipped."""
    b = p.b
    room = window(p.integration["rate_limit_per_minute"]) - await conn.fetchval(store.IN_QUEUE, p.ws, b["id"])
    if room <= 0:
        return 0
    rows, contacts = await store.next_waiting(conn, b, min(CHUNK, room))
    fed, skipped, queued, failures = [], [], [], 0
    allowed = ("active",) if b["audience"].get("exclude_unsubscribed") else ELIGIBLE
    for r in rows:
        contact = contacts.get(r["email"])
        if contact is None or r["removed_at"] is not None or r["membership"] not in allowed:
            skipped.append(r["email"])
            continue
        message_id = r["message_id"] or f"{p.ws}_{uuid.uuid4()}"    # a retried recipient keeps its id
        template_id = p.variation_template(r["variation"])
        try:
            out = p.render(contacts_model.to_wire(contact), template_id, message_id)
        except RenderFailed as failed:
            failures += 1
            await delivery_store.record_failed(conn, p.settings.key_bytes, _failed_message(p, r, template_id,
                                                                                          message_id),
                                               f"render: {failed.message}")
            fed.append((r["email"], message_id))
            if failures >= RENDER_FAILURES_TO_PAUSE:
                await delivery_store.enqueue_many(conn, p.settings.key_bytes, queued, p.integration["kind"],
                                                  p.settings.delivery_max_attempts, key=p.data_key)
                await store.mark_fed(conn, p.ws, b["id"], fed, skipped)
                await store.pause(conn, p.ws, b["id"], f"Template rendering failed: {failed.message}")
                return len(fed) + len(skipped)
            continue
        failures = 0
        queued.append(out)
        fed.append((r["email"], message_id))
    await delivery_store.enqueue_many(conn, p.settings.key_bytes, queued, p.integration["kind"],
                                      p.settings.delivery_max_attempts, key=p.data_key)
    await store.mark_fed(conn, p.ws, b["id"], fed, skipped)
    return len(fed) + len(skipped)


def _failed_message(p: Pass, r, template_id: str, message_id: str) -> Outgoing:
    template = p.templates[template_id]
    return Outgoing(workspace_id=p.ws, integration_id=p.integration["id"], contact_email=r["email"],
                    from_address="", from_name="", subject="", html="", template_id=template_id,
                    template_version=template["version"], source_type=Source.BROADCAST, source_id=p.b["id"],
                    message_id=message_id, list_id=p.list["id"])


async def auto_winner(conn, b) -> bool:
    t = b["test_settings"]
    if not t.get("auto_send_winner") or not model.winner_due(b["test_sent_at"], t["test_duration_hours"],
                                                             _dt.datetime.now(_dt.timezone.utc)):
        return False
    figures = await variation_figures(conn, b)
    winner = model.automatic_winner(figures, t["auto_send_winner_metric"])
    index = [v["template_id"] for v in t["variations"]].index(winner)
    await store.select_winner(conn, b["workspace_id"], b["id"], winner, index, automatic=True)
    return True


VARIATION_FIGURES = f"""
SELECT template_id, count(*) FILTER (WHERE status = '{Status.SENT}') AS sent,
       count(delivered_at) AS delivered, count(opened_at) AS opens, count(clicked_at) AS clicks
  FROM message_history WHERE workspace_id = $1 AND broadcast_id = $2
 GROUP BY template_id
"""


async def variation_figures(conn, b) -> list[model.VariationFigures]:
    by_template = {r["template_id"]: r for r in await conn.fetch(VARIATION_FIGURES, b["workspace_id"], b["id"])}
    out = []
    for v in b["test_settings"]["variations"]:
        r = by_template.get(v["template_id"])
        out.append(model.VariationFigures(v["template_id"], *(r[k] if r else 0 for k in
                                                              ("sent", "delivered", "opens", "clicks"))))
    return out


# ---------------------------------------------------------------- the loop

async def run_once(pool, settings) -> int:
    """One pass over every running broadcast; returns how many steps were taken."""
    steps = len(await store.start_due(pool))
    for ref in await store.active(pool):
        try:
            async with pool.acquire() as conn, conn.transaction():
                b = await conn.fetchrow(store.LOCK, ref["workspace_id"], ref["id"])
                if b is not None:
                    steps += await advance(conn, settings, b)
        except Exception:   # that step is rolled back whole; the next pass tries again
            log.exception("broadcast %s of workspace %s: step failed", ref["id"], ref["workspace_id"])
    return steps


async def run(pool, settings, stop: asyncio.Event, interval: float = 1.0) -> None:
    while not stop.is_set():
        try:
            steps = await run_once(pool, settings)
        except Exception:
            log.exception("broadcast pass failed")
            steps = 0
        if not steps:
            await wait(stop, interval)


def start(pool, settings, stop: asyncio.Event) -> list[asyncio.Task]:
    return [asyncio.create_task(run(pool, settings, stop, settings.delivery_poll_interval or 1.0),
                                name="broadcasts")]
