"""SQL of provider events: the events table, each integration's webhook credentials, and the
effects of a new event (engagement-contract 3.6), all in the caller's one transaction.

Effects go through their owners' writers: message timestamps through delivery.store.mark_message
(set once, with its timeline entry), memberships through lists.store.set_status (with their
timeline entries and outbox events, as lists writes them), the outbox through events.store.
"""

from __future__ import annotations

import os

from postroom.delivery import model as delivery_model, store as delivery_store
from postroom.events import store as events
from postroom.inbound import model
from postroom.lists import store as lists_store
from postroom.platform import secrets as sealing
from postroom.timeline import store as timeline

EVENT_COLUMNS = """id, type, source, integration_id, recipient_email, message_id, timestamp, raw_payload,
       bounce_type, bounce_category, bounce_diagnostic, bounce_classification, complaint_feedback_type, created_at"""

# ---------------------------------------------------------------- credentials (3.2)


def _context(workspace_id: str, integration_id: str) -> bytes:
    return f"inbound_webhook_secret:{workspace_id}:{integration_id}".encode()


GET_CREDENTIALS = """
SELECT secret, sns_topic_arns, last_event_at FROM inbound_webhook_credentials
 WHERE workspace_id = $1 AND integration_id = $2
"""

# Nothing is made for an integration that no longer exists (the foreign key would refuse it).
PUT_CREDENTIALS = """
INSERT INTO inbound_webhook_credentials (workspace_id, integration_id, secret)
SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM email_integrations WHERE workspace_id = $1 AND id = $2)
ON CONFLICT (workspace_id, integration_id) DO NOTHING
"""

ROTATE_SECRET = """
UPDATE inbound_webhook_credentials SET secret = $3, updated_at = now() WHERE workspace_id = $1 AND integration_id = $2
"""

SET_TOPICS = """
UPDATE inbound_webhook_credentials SET sns_topic_arns = $3, updated_at = now()
 WHERE workspace_id = $1 AND integration_id = $2
"""

TOUCH = """
UPDATE inbound_webhook_credentials SET last_event_at = now() WHERE workspace_id = $1 AND integration_id = $2
"""


def _seal(key_bytes: bytes, workspace_id: str, integration_id: str, secret: str) -> bytes:
    return sealing.encrypt(key_bytes, secret.encode(), _context(workspace_id, integration_id))


async def credentials(conn, key_bytes: bytes, workspace_id: str, integration_id: str, create: bool = True):
    """{secret, sns_topic_arns, last_event_at} of the integration's webhooks; the secret is made
    (32 random bytes, base64url) on first use when `create`. None when there is none."""
    row = await conn.fetchrow(GET_CREDENTIALS, workspace_id, integration_id)
    if row is None and create:
        fresh = model.new_secret(os.urandom(model.SECRET_BYTES))
        await conn.execute(PUT_CREDENTIALS, workspace_id, integration_id,
                           _seal(key_bytes, workspace_id, integration_id, fresh))
        row = await conn.fetchrow(GET_CREDENTIALS, workspace_id, integration_id)
    if row is None:
        return None
    secret = sealing.decrypt(key_bytes, row["secret"], _context(workspace_id, integration_id)).decode()
    return {"secret": secret, "sns_topic_arns": list(row["sns_topic_arns"]), "last_event_at": row["last_event_at"]}


async def set_secret(conn, key_bytes: bytes, workspace_id: str, integration_id: str, secret: str) -> None:
    """Replaces the secret (webhooks.register rotate_secret; tests set a known one)."""
    await credentials(conn, key_bytes, workspace_id, integration_id)
    await conn.execute(ROTATE_SECRET, workspace_id, integration_id,
                       _seal(key_bytes, workspace_id, integration_id, secret))


async def set_topics(conn, workspace_id: str, integration_id: str, topics: list[str]) -> None:
    await conn.execute(SET_TOPICS, workspace_id, integration_id, topics)


async def touch(conn, workspace_id: str, integration_id: str) -> None:
    """A verified event arrived (4.3: is_registered)."""
    await conn.execute(TOUCH, workspace_id, integration_id)


# ---------------------------------------------------------------- storing events (3.7)

INSERT_EVENT = """
INSERT INTO inbound_webhook_events (workspace_id, id, type, source, integration_id, recipient_email, message_id,
                                    timestamp, raw_payload, bounce_type, bounce_category, bounce_diagnostic,
                                    bounce_classification, complaint_feedback_type)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (workspace_id, id) DO NOTHING
RETURNING id
"""

# Everything about one recipient happens in one order: two concurrent soft bounces cannot both
# count four (each not seeing the other) and leave an address that reached the threshold active.
LOCK_RECIPIENT = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext('inbound:' || $2))"

# The timeline entry of a stored event, for an address that is a contact (3.6).
EVENT_ENTRY = timeline.insert_sql(
    "SELECT $1, c.email, 'insert_inbound_webhook_event', 'inbound_webhook_event', $3, $4::jsonb"
    " FROM contacts c WHERE c.workspace_id = $1 AND c.email = $2")

# The message an event claims: Postroom's id, else the provider's own id (3.3).
FIND_MESSAGE = """
SELECT id, contact_email, list_id FROM message_history
 WHERE workspace_id = $1 AND (id = $2 OR (provider_message_id = $2 AND provider_message_id IS NOT NULL))
 ORDER BY (id = $2) DESC
 LIMIT 1
"""

# Distinct messages with a counted soft bounce since the recipient's last delivery (3.6).
SOFT_BOUNCES = """
SELECT count(DISTINCT coalesce(nullif(message_id, ''), id::text)) FROM inbound_webhook_events
 WHERE workspace_id = $1 AND recipient_email = $2 AND type = 'bounce' AND bounce_classification = 'soft_count'
   AND timestamp > coalesce((SELECT max(delivered_at) FROM message_history
                              WHERE workspace_id = $1 AND contact_email = $2), '-infinity')
"""

THRESHOLD = "SELECT settings FROM workspaces WHERE id = $1"


async def soft_bounce_threshold(conn, workspace_id: str) -> int:
    return model.soft_bounce_threshold(await conn.fetchval(THRESHOLD, workspace_id))


async def record(conn, workspace_id: str, integration_id: str, found: list[model.Event]) -> int:
    """Stores each event once (its derived id) and applies the effects of those stored now, in
    one transaction; returns how many were new."""
    new = 0
    async with conn.transaction():
        # every recipient of the batch locked up front, in one order: two batches naming the same
        # addresses in different orders cannot deadlock
        for email in sorted({event.recipient_email for event in found}):
            await conn.execute(LOCK_RECIPIENT, workspace_id, email)
        threshold = None
        for event in found:
            event_id = event.id_for(integration_id)
            inserted = await conn.fetchval(
                INSERT_EVENT, workspace_id, event_id, event.type, event.source, integration_id,
                event.recipient_email, event.message_id or None, event.timestamp, event.raw_payload,
                event.bounce_type or None, event.bounce_category or None, event.bounce_diagnostic or None,
                event.bounce_classification or None, event.complaint_feedback_type or None)
            if inserted is None:
                continue
            new += 1
            await conn.execute(EVENT_ENTRY, workspace_id, event.recipient_email, event.message_id or event_id,
                               model.timeline_changes(event))
            fx = model.effects(event)
            if fx.counts_soft:
                if threshold is None:
                    threshold = await soft_bounce_threshold(conn, workspace_id)
                if await conn.fetchval(SOFT_BOUNCES, workspace_id, event.recipient_email) < threshold:
                    continue
            await _apply(conn, workspace_id, event, fx)
        if found:
            await touch(conn, workspace_id, integration_id)
    return new


async def _apply(conn, workspace_id: str, event: model.Event, fx: model.Effects) -> None:
    message = None
    if event.message_id:
        message = await conn.fetchrow(FIND_MESSAGE, workspace_id, event.message_id)
        # An event about another address of the message (a cc) is not about the message itself.
        if message is not None and message["contact_email"] != event.recipient_email:
            message = None
    if fx.column is not None and message is not None:
        row = await delivery_store.mark_message(conn, workspace_id, message["id"], fx.column, event.timestamp)
        if row is not None:
            if fx.status_info and event.status_info:
                row = await delivery_store.note_status_info(conn, workspace_id, message["id"], event.status_info)
            data = delivery_model.event_data(row, event.timestamp)
            if fx.status_info:
                data["reason"] = row["status_info"]
            await events.emit(conn, workspace_id, fx.outbox, row["contact_email"], data)
    if fx.memberships is not None:
        await _memberships(conn, workspace_id, event.recipient_email, fx, message)


async def _memberships(conn, workspace_id: str, email: str, fx: model.Effects, message) -> None:
    current = (await lists_store.memberships_for(conn, workspace_id, [email])).get(email, [])
    if fx.memberships == "list":
        wanted = message["list_id"] if message is not None else None
        current = [m for m in current if m["list_id"] == wanted and m["status"] in ("active", "pending")]
    targets = sorted(m["list_id"] for m in current if m["status"] not in fx.keep)
    if not targets:
        return
    lists = await lists_store.lists_by_ids(conn, workspace_id, targets, share=True)
    for list_id in targets:
        if list_id in lists:
            await lists_store.set_status(conn, workspace_id, lists[list_id], email, fx.to_status, None)


# ---------------------------------------------------------------- inboundWebhookEvents.list (3.8)

def list_sql(q: model.EventQuery) -> tuple[str, list]:
    args: list = []

    def arg(value) -> str:
        args.append(value)
        return f"${len(args) + 1}"

    where = ["workspace_id = $1"]
    for column, value in q.exact.items():
        where.append(f"{column} = {arg(value)}")
    if q.after is not None:
        where.append(f"timestamp >= {arg(q.after)}")
    if q.before is not None:
        where.append(f"timestamp <= {arg(q.before)}")
    if q.cursor is not None:
        where.append(f"(timestamp, id) < ({arg(q.cursor[0])}, {arg(q.cursor[1])}::uuid)")
    sql = (f"SELECT {EVENT_COLUMNS}\n  FROM inbound_webhook_events\n WHERE " + "\n   AND ".join(where) +
           f"\n ORDER BY timestamp DESC, id DESC\n LIMIT {q.limit + 1}")
    return sql, args


async def list_events(conn, workspace_id: str, q: model.EventQuery) -> list:
    sql, args = list_sql(q)
    return await conn.fetch(sql, workspace_id, *args)

