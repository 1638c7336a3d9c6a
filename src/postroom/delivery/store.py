"""SQL of delivery: the message history, the send queue with its shared budgets, attachments and
email integrations. Rules come from delivery/model.py and delivery/integrations.py; this module
only reads and writes.

Every write of a message change writes its timeline entry and its outbox event in the same
transaction (4.5), through the timeline's and the outbox's own insert_sql.
"""

from __future__ import annotations

import contextlib

import datetime as _dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from postroom.delivery import integrations, model
from postroom.delivery.model import checksum  # noqa: F401  (store.checksum: where callers look)
from postroom.delivery.model import Breaker, Budget, Outcome, Outgoing, QueueState, Status
from postroom.events import store as events
from postroom.platform import secrets as sealing
from postroom.templates import store as templates_store
from postroom.timeline import store as timeline
from postroom.workspaces import secrets as ws_secrets

CHANNEL = "postroom_delivery"          # NOTIFY channel: work was queued
MESSAGE_DATA_SECRET = "message_data"   # the workspace secret that seals message_data (1.4)
ENTITY = "message_history"

_P, _PR, _F = QueueState.PENDING.value, QueueState.PROCESSING.value, QueueState.FAILED.value


def _data_context(workspace_id: str, message_id: str) -> bytes:
    return f"message_data:{workspace_id}:{message_id}".encode()


async def message_key(conn, workspace_id: str, key_bytes: bytes, create: bool = True, *,
                      sealed: bytes | None = None) -> bytes | None:
    return await ws_secrets.workspace_secret(conn, workspace_id, key_bytes, MESSAGE_DATA_SECRET, create,
                                             sealed=sealed)


def seal_data(key: bytes, workspace_id: str, message_id: str, data: dict, metadata: dict | None) -> bytes:
    body = {"data": data or {}}
    if metadata:
        body["metadata"] = metadata
    return sealing.encrypt(key, json.dumps(body, separators=(",", ":")).encode(), _data_context(workspace_id, message_id))


def open_data(key: bytes | None, workspace_id: str, message_id: str, blob) -> dict:
    if blob is None or key is None:
        return {"data": {}}
    return json.loads(sealing.decrypt(key, blob, _data_context(workspace_id, message_id)))


# ---------------------------------------------------------------- enqueue

PUT_ATTACHMENTS = """
INSERT INTO message_attachments (workspace_id, sha256, content)
SELECT $1, s, c FROM unnest($2::text[], $3::bytea[]) AS a(s, c)
ON CONFLICT (workspace_id, sha256) DO NOTHING
"""

GET_ATTACHMENTS = "SELECT sha256, content FROM message_attachments WHERE workspace_id = $1 AND sha256 = ANY($2::text[])"

MESSAGE_COLUMNS = """id, external_id, contact_email, broadcast_id, automation_id, transactional_notification_id,
       list_id, template_id, template_version, channel, status, status_info, message_data, channel_options,
       attachments, attempts, provider_message_id, sent_at, delivered_at, failed_at, opened_at, clicked_at,
       bounced_at, complained_at, unsubscribed_at, created_at, updated_at"""

# A new message, its timeline entry, its queue row and the workers' wake-up (delivered at commit), in
# one round trip. A replayed external id inserts nothing: `created` is then false and the first
# message's id is read (MESSAGE_BY_EXTERNAL_ID).
ENQUEUE = f"""
WITH m AS (
    INSERT INTO message_history (workspace_id, id, external_id, contact_email, broadcast_id, automation_id,
                                 transactional_notification_id, list_id, template_id, template_version, channel,
                                 message_data, channel_options, attachments, integration_id, sent_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
    ON CONFLICT (workspace_id, external_id) WHERE external_id IS NOT NULL DO NOTHING
    RETURNING workspace_id, id, contact_email
),
entry AS (
    {timeline.insert_sql(f"SELECT workspace_id, contact_email, 'insert_message_history', '{ENTITY}', id, $17 FROM m")}
),
queued AS (
    INSERT INTO email_queue (workspace_id, priority, source_type, source_id, integration_id, provider_kind,
                             contact_email, message_id, template_id, payload, max_attempts, expires_at)
    SELECT workspace_id, $18, $19, $20, $15, $21, contact_email, id, $9, $22, $23, now() + $24::interval FROM m
    RETURNING 1
)
SELECT count(*) AS created FROM (SELECT pg_notify('{CHANNEL}', '') FROM queued) woken
"""

MESSAGE_BY_EXTERNAL_ID = "SELECT id FROM message_history WHERE workspace_id = $1 AND external_id = $2"

INSERT_TIMELINE = timeline.insert_sql("VALUES ($1, $2, $3, $4, $5, $6)")

NOTIFY = f"SELECT pg_notify('{CHANNEL}', '')"


async def put_attachments(conn, workspace_id: str, contents: Sequence[bytes]) -> list[str]:
    """Stores attachment bytes once per checksum; returns the checksums in order."""
    sums = [checksum(c) for c in contents]
    if contents:
        await conn.execute(PUT_ATTACHMENTS, workspace_id, sums, list(contents))
    return sums


async def enqueue(conn, key_bytes: bytes, out: Outgoing, provider_kind: str,
                  max_attempts: int = model.Rules.max_attempts, *, key: bytes | None = None) -> tuple[str, bool]:
    """Records `out` in the message history (status queued, timeline entry insert_message_history)
    and the send queue, in the caller's transaction (a transaction of its own when the caller has
    none), and wakes the send loops at commit. Returns (message id, created): with an external id
    already recorded, nothing is written and that message's id comes back. `key`: the workspace's
    message-data key when the caller has it already (message_key)."""
    message_id = out.message_id or str(uuid.uuid4())
    # Inside the caller's transaction no savepoint is taken: any failure here aborts that
    # transaction anyway, and a replayed external id writes nothing.
    async with contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction():
        key = key or await message_key(conn, out.workspace_id, key_bytes)
        stored = [a.content for a in out.attachments if a.content is not None]
        await put_attachments(conn, out.workspace_id, stored)
        sources = out.source_columns()
        sent_at = _dt.datetime.now(_dt.timezone.utc)
        changes = model.insert_changes({"template_id": out.template_id, "template_version": out.template_version,
                                        "channel": out.channel, "broadcast_id": sources["broadcast_id"],
                                        "sent_at": sent_at})
        priority = out.priority if out.priority is not None else model.PRIORITY[out.source_type]
        created = await conn.fetchval(
            ENQUEUE, out.workspace_id, message_id, out.external_id, out.contact_email,
            sources["broadcast_id"], sources["automation_id"], sources["transactional_notification_id"],
            out.list_id, out.template_id, out.template_version, out.channel,
            seal_data(key, out.workspace_id, message_id, out.data, out.metadata), out.channel_options,
            [a.ref() for a in out.attachments] or None, out.integration_id, sent_at, changes,
            priority, out.source_type.value, out.source_id, provider_kind, out.payload(), max_attempts,
            model.EXPIRY[out.source_type])
        if not created:
            return await conn.fetchval(MESSAGE_BY_EXTERNAL_ID, out.workspace_id, out.external_id), False
    return message_id, True


# Many messages of one source at once (a broadcast's chunk): one statement for their history rows,
# timeline entries, queue rows and the wake-up. Per message: id, address, template and version,
# sealed data, timeline changes, payload; the rest is the source's.
ENQUEUE_MANY = f"""
WITH o AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::bytea[], $7::jsonb[], $8::jsonb[])
           AS o(id, email, template_id, template_version, data, changes, payload)
),
m AS (
    INSERT INTO message_history (workspace_id, id, contact_email, broadcast_id, automation_id,
                                 transactional_notification_id, list_id, template_id, template_version, channel,
                                 message_data, integration_id, sent_at)
    SELECT $1, id, email, $9, $10, $11, $12, template_id, template_version, $13, data, $14, $15 FROM o
    RETURNING id
),
entry AS (
    {timeline.insert_sql(f"SELECT $1, email, 'insert_message_history', '{ENTITY}', id, changes FROM o")}
),
queued AS (
    INSERT INTO email_queue (workspace_id, priority, source_type, source_id, integration_id, provider_kind,
                             contact_email, message_id, template_id, payload, max_attempts, expires_at)
    SELECT $1, $16, $17, $18, $14, $19, email, id, template_id, payload, $20, now() + $21::interval FROM o
    RETURNING 1
)
SELECT count(*) FROM (SELECT pg_notify('{CHANNEL}', '') FROM queued LIMIT 1) woken
"""


async def enqueue_many(conn, key_bytes: bytes, outs: Sequence[Outgoing], provider_kind: str,
                       max_attempts: int = model.Rules.max_attempts, *, key: bytes | None = None) -> None:
    """enqueue for many messages of one source, workspace, integration and list, without external
    ids or attachments (a broadcast's chunk), in one statement in the caller's transaction."""
    if not outs:
        return
    first = outs[0]
    shared = ("workspace_id", "integration_id", "source_type", "source_id", "list_id", "channel", "priority")
    if any(getattr(o, f) != getattr(first, f) for o in outs for f in shared) or \
            any(o.external_id or o.attachments or not o.message_id for o in outs):
        raise ValueError("enqueue_many: one source, integration and list; message ids given; no external ids or attachments")
    key = key or await message_key(conn, first.workspace_id, key_bytes)
    sources = first.source_columns()
    sent_at = _dt.datetime.now(_dt.timezone.utc)
    changes = [model.insert_changes({"template_id": o.template_id, "template_version": o.template_version,
                                     "channel": o.channel, "broadcast_id": sources["broadcast_id"], "sent_at": sent_at})
               for o in outs]
    priority = first.priority if first.priority is not None else model.PRIORITY[first.source_type]
    await conn.execute(
        ENQUEUE_MANY, first.workspace_id, [o.message_id for o in outs], [o.contact_email for o in outs],
        [o.template_id for o in outs], [o.template_version for o in outs],
        [seal_data(key, o.workspace_id, o.message_id, o.data, o.metadata) for o in outs], changes,
        [o.payload() for o in outs], sources["broadcast_id"], sources["automation_id"],
        sources["transactional_notification_id"], first.list_id, first.channel, first.integration_id, sent_at,
        priority, first.source_type.value, first.source_id, provider_kind, max_attempts, model.EXPIRY[first.source_type])


# A test send (transactional.testTemplate) is sent before it is recorded: its row starts sent.
INSERT_SENT_MESSAGE = f"""
INSERT INTO message_history (workspace_id, id, contact_email, template_id, template_version, channel, message_data,
                             channel_options, attachments, integration_id, status, attempts, provider_message_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '{Status.SENT}', 1, $11)
RETURNING {MESSAGE_COLUMNS}
"""


async def record_sent(conn, key_bytes: bytes, out: Outgoing, provider_message_id: str | None) -> None:
    """The history row of a message a provider already accepted, with its timeline entry."""
    async with conn.transaction():
        key = await message_key(conn, out.workspace_id, key_bytes)
        await put_attachments(conn, out.workspace_id, [a.content for a in out.attachments if a.content is not None])
        row = await conn.fetchrow(
            INSERT_SENT_MESSAGE, out.workspace_id, out.message_id, out.contact_email, out.template_id,
            out.template_version, out.channel, seal_data(key, out.workspace_id, out.message_id, out.data, out.metadata),
            out.channel_options, [a.ref() for a in out.attachments] or None, out.integration_id, provider_message_id)
        await conn.execute(INSERT_TIMELINE, out.workspace_id, out.contact_email, "insert_message_history", ENTITY,
                           out.message_id, model.insert_changes(row))


# ---------------------------------------------------------------- claims (5.6 steps 2-3)

# Integrations with due rows, skipping those whose breaker is open or that are throttled. A probe
# of a half-open breaker, or a dead probe's replacement, shows up once open_until passed. The
# (workspace, integration) pairs of waiting rows are walked as a skip scan of email_queue_due (one
# index probe per pair, recursive CTE) rather than a DISTINCT over every waiting row: a broadcast
# of a million rows costs the loop the same as one message. Rows of a deleted integration are found
# the same way, and fail at their claim.
DUE_INTEGRATIONS = f"""
WITH RECURSIVE pairs AS (
    (SELECT workspace_id, integration_id FROM email_queue WHERE status IN ('{_P}', '{_F}')
      ORDER BY workspace_id, integration_id LIMIT 1)
    UNION ALL
    SELECT n.workspace_id, n.integration_id
      FROM pairs p, LATERAL (
           SELECT workspace_id, integration_id FROM email_queue
            WHERE status IN ('{_P}', '{_F}') AND (workspace_id, integration_id) > (p.workspace_id, p.integration_id)
            ORDER BY workspace_id, integration_id LIMIT 1) n
)
SELECT p.workspace_id, p.integration_id
  FROM pairs p
  LEFT JOIN delivery_budget b ON b.workspace_id = p.workspace_id AND b.integration_id = p.integration_id
 WHERE (b IS NULL OR ((b.throttled_until IS NULL OR b.throttled_until <= now())
                      AND (b.breaker = '{Breaker.CLOSED}' OR b.open_until IS NULL OR b.open_until <= now())))
   AND EXISTS (SELECT 1 FROM email_queue q
                WHERE q.workspace_id = p.workspace_id AND q.integration_id = p.integration_id
                  AND q.status IN ('{_P}', '{_F}') AND q.next_retry_at <= now())
 LIMIT $1
"""

INTEGRATION_COLUMNS = """id, name, kind, settings, secrets, secret_fields, senders, rate_limit_per_minute,
       max_concurrency, created_at, updated_at"""

GET_INTEGRATION = f"SELECT {INTEGRATION_COLUMNS} FROM email_integrations WHERE workspace_id = $1 AND id = $2"

ENSURE_BUDGET = """
INSERT INTO delivery_budget (workspace_id, integration_id, tokens) VALUES ($1, $2, $3)
ON CONFLICT (workspace_id, integration_id) DO NOTHING
"""

# Another process claiming this integration holds the row: skip it rather than wait.
LOCK_BUDGET = """
SELECT tokens, refilled_at, breaker, consecutive_failures, open_until, opened_count, throttled_until, now() AS now
  FROM delivery_budget WHERE workspace_id = $1 AND integration_id = $2
   FOR UPDATE SKIP LOCKED
"""

LOCK_BUDGET_WAIT = LOCK_BUDGET.replace(" SKIP LOCKED", "")

SAVE_BUDGET = """
UPDATE delivery_budget SET tokens = $3, refilled_at = $4, breaker = $5, consecutive_failures = $6,
       open_until = $7, opened_count = $8, throttled_until = $9
 WHERE workspace_id = $1 AND integration_id = $2
"""

CLAIM_ROWS = f"""
WITH due AS (
    SELECT id FROM email_queue
     WHERE workspace_id = $1 AND integration_id = $2 AND status IN ('{_P}', '{_F}')
       AND next_retry_at <= now()
     ORDER BY priority, next_retry_at, created_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
,
claimed AS (
    UPDATE email_queue q
       SET status = '{_PR}', attempts = q.attempts + 1, claim_id = $4, lease_expires_at = now() + $5::interval,
           updated_at = now()
      FROM due
     WHERE q.workspace_id = $1 AND q.id = due.id
    RETURNING q.workspace_id, q.id, q.claim_id, q.integration_id, q.provider_kind, q.contact_email, q.message_id,
              q.payload, q.attempts, q.throttled, q.max_attempts, q.last_error, q.expires_at, now() AS claimed_at,
              q.priority, q.created_at, q.next_retry_at
)
-- RETURNING keeps no order: the calls start in claim order, priority first
SELECT * FROM claimed ORDER BY priority, next_retry_at, created_at
"""


def _budget(row) -> Budget:
    return Budget(row["tokens"], row["refilled_at"], row["breaker"], row["consecutive_failures"],
                  row["open_until"], row["opened_count"], row["throttled_until"])


def _budget_args(b: Budget) -> tuple:
    return (b.tokens, b.refilled_at, str(b.breaker), b.consecutive_failures, b.open_until, b.opened_count,
            b.throttled_until)


async def due_integrations(pool, limit: int = 1000) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in await pool.fetch(DUE_INTEGRATIONS, limit)]


async def claim(pool, workspace_id: str, integration_id: str, slots: Callable[[Any], int], rules: model.Rules):
    """One short transaction (5.6 step 3): the integration's budget row locked (skipped when another
    process holds it), refilled, k rows taken in priority order with a lease, k tokens spent.
    `slots(integration row)` is how many calls this process may still start for it. Returns
    (integration row or None when it was deleted, claimed rows). Rows of a deleted
    integration are claimed without a budget: they fail at once."""
    lease = _dt.timedelta(seconds=rules.lease)
    async with pool.acquire() as conn, conn.transaction():
        integration = await conn.fetchrow(GET_INTEGRATION, workspace_id, integration_id)
        if integration is None:
            return None, await conn.fetch(CLAIM_ROWS, workspace_id, integration_id, model.CLAIM_MAX,
                                          uuid.uuid4(), lease)
        rate = integration["rate_limit_per_minute"]
        await conn.execute(ENSURE_BUDGET, workspace_id, integration_id, model.capacity(rate))
        locked = await conn.fetchrow(LOCK_BUDGET, workspace_id, integration_id)
        if locked is None:
            return integration, []
        budget, now = _budget(locked), locked["now"]
        k = model.plan_claim(budget, now, rate, slots(integration))
        rows = []
        if k:
            rows = await conn.fetch(CLAIM_ROWS, workspace_id, integration_id, k, uuid.uuid4(), lease)
        await conn.execute(SAVE_BUDGET, workspace_id, integration_id,
                           *_budget_args(model.after_claim(budget, now, rate, len(rows), rules)))
    return integration, rows


# ---------------------------------------------------------------- outcomes (5.6 step 5)

@dataclass(frozen=True)
class Result:
    """One claimed row's outcome, as complete() records it."""
    workspace_id: str
    queue_id: Any
    claim_id: Any
    integration_id: str
    outcome: Outcome
    counts_for_budget: bool = True    # False for rows of a deleted integration


# Queue rows deleted (final) or rescheduled, then their messages updated, in one statement. The
# claim_id condition fences a worker that lost its lease: its outcome then changes nothing.
APPLY = f"""
WITH o AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::float8[],
                         $8::bool[], $9::text[])
           AS o(workspace_id, id, claim_id, kind, info, pmid, delay, throttled, cls)
),
done AS (
    DELETE FROM email_queue q USING o
     WHERE q.workspace_id = o.workspace_id AND q.id = o.id AND q.claim_id = o.claim_id AND o.kind <> 'retry'
    RETURNING q.workspace_id, q.message_id, q.attempts, o.kind, o.info, o.pmid, o.cls
),
again AS (
    UPDATE email_queue q
       SET status = '{_F}', next_retry_at = now() + make_interval(secs => o.delay), last_error = left(o.info, 1000),
           throttled = q.throttled + o.throttled::int, claim_id = NULL, lease_expires_at = NULL, updated_at = now()
      FROM o
     WHERE q.workspace_id = o.workspace_id AND q.id = o.id AND q.claim_id = o.claim_id AND o.kind = 'retry'
    RETURNING q.workspace_id, q.message_id, q.attempts, o.kind, o.info, o.pmid, o.cls
),
moved AS (SELECT * FROM done UNION ALL SELECT * FROM again)
UPDATE message_history m
   SET status = CASE moved.kind WHEN 'sent' THEN '{Status.SENT}' WHEN 'failed' THEN '{Status.FAILED}'
                ELSE m.status END,
       sent_at = CASE WHEN moved.kind = 'sent' THEN now() ELSE m.sent_at END,
       failed_at = CASE WHEN moved.kind = 'failed' THEN coalesce(m.failed_at, now()) ELSE m.failed_at END,
       provider_message_id = CASE WHEN moved.kind = 'sent' THEN moved.pmid ELSE m.provider_message_id END,
       failure_class = CASE WHEN moved.kind = 'failed' THEN moved.cls WHEN moved.kind = 'sent' THEN NULL
                       ELSE m.failure_class END,
       status_info = left(moved.info, {model.STATUS_INFO_MAX}),
       attempts = moved.attempts, updated_at = now()
  FROM moved
 WHERE m.workspace_id = moved.workspace_id AND m.id = moved.message_id
RETURNING m.workspace_id, {', '.join('m.' + c.strip() for c in MESSAGE_COLUMNS.split(','))}, moved.kind
"""

RECORD_MANY = f"""
WITH entry AS (
    {timeline.insert_sql("SELECT w, e, k, '" + ENTITY + "', i, c FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) AS t(w, e, k, i, c)")}
)
{events.insert_sql("SELECT w, t, e, d FROM unnest($1::text[], $6::text[], $2::text[], $7::jsonb[]) AS t(w, t, e, d)")}
"""


async def complete(pool, results: Sequence[Result], rules: model.Rules) -> None:
    """Records a batch of outcomes in one transaction: queue rows deleted or rescheduled, messages
    updated, timeline entries and email.sent / email.failed events for final outcomes, breaker
    and throttle state of each integration."""
    if not results:
        return
    cols: list[list] = [[] for _ in range(9)]
    for r in results:
        o = r.outcome
        for col, value in zip(cols, (r.workspace_id, r.queue_id, r.claim_id, o.kind, o.info,
                                     o.provider_message_id, o.delay, o.cls == "throttled", o.cls)):
            col.append(value)
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(APPLY, *cols)
        entries: list[list] = [[] for _ in range(7)]
        for row in rows:
            if row["kind"] == "retry":
                continue
            outcome = Outcome(row["kind"])
            event = "email.sent" if row["kind"] == "sent" else "email.failed"
            stamp = row["sent_at"] if row["kind"] == "sent" else row["failed_at"]
            for col, value in zip(entries, (row["workspace_id"], row["contact_email"], "update_message_history",
                                            row["id"], model.update_changes(outcome, row), event,
                                            model.event_data(row, stamp, with_info=row["kind"] == "failed"))):
                col.append(value)
        if entries[0]:
            await conn.execute(RECORD_MANY, *entries)
        await _settle_budgets(conn, results, rules)


async def _settle_budgets(conn, results: Sequence[Result], rules: model.Rules) -> None:
    per: dict[tuple[str, str], list[Outcome]] = {}
    for r in results:
        if r.counts_for_budget:
            per.setdefault((r.workspace_id, r.integration_id), []).append(r.outcome)
    for (workspace_id, integration_id), outcomes in sorted(per.items()):  # one lock order: no deadlock
        locked = await conn.fetchrow(LOCK_BUDGET_WAIT, workspace_id, integration_id)
        if locked is None:
            continue
        after = model.after_outcomes(_budget(locked), outcomes, locked["now"], rules)
        await conn.execute(SAVE_BUDGET, workspace_id, integration_id, *_budget_args(after))


# A claim whose lease ran out (its worker died or hung): due again now. The call it made counts
# as an attempt (5.2), and its outcome, should it still arrive, is fenced off by claim_id.
RECLAIM = f"""
UPDATE email_queue
   SET status = '{_F}', claim_id = NULL, lease_expires_at = NULL, next_retry_at = now(),
       last_error = coalesce(last_error, 'lease expired'), updated_at = now()
 WHERE status = '{_PR}' AND lease_expires_at < now()
"""


async def reclaim(pool) -> int:
    return _count(await pool.execute(RECLAIM))


# ---------------------------------------------------------------- a source's rows (5.2)

_PA = QueueState.PAUSED.value

# Rows in flight finish as they are; only waiting rows stop.
PAUSE_SOURCE = f"""
UPDATE email_queue SET status = '{_PA}', updated_at = now()
 WHERE workspace_id = $1 AND source_type = $2 AND source_id = $3 AND status IN ('{_P}', '{_F}')
"""

RESUME_SOURCE = f"""
UPDATE email_queue SET status = '{_P}', next_retry_at = now(), updated_at = now()
 WHERE workspace_id = $1 AND source_type = $2 AND source_id = $3 AND status = '{_PA}'
"""

# A cancelled message was never sent: its queue row and its queued history row go together.
CANCEL_SOURCE = f"""
WITH gone AS (
    DELETE FROM email_queue
     WHERE workspace_id = $1 AND source_type = $2 AND source_id = $3 AND status IN ('{_P}', '{_F}', '{_PA}')
    RETURNING message_id
)
DELETE FROM message_history m USING gone
 WHERE m.workspace_id = $1 AND m.id = gone.message_id AND m.status = '{Status.QUEUED}'
"""

SOURCE_COUNTS = f"""
SELECT count(*) FILTER (WHERE status = '{Status.QUEUED}') AS queued,
       count(*) FILTER (WHERE status = '{Status.SENT}') AS sent,
       count(*) FILTER (WHERE status = '{Status.FAILED}') AS failed
  FROM message_history
 WHERE workspace_id = $1 AND CASE $2::text WHEN 'broadcast' THEN broadcast_id
                                           WHEN 'automation' THEN automation_id
                                           WHEN 'transactional' THEN transactional_notification_id
                                           ELSE list_id END = $3
"""


def _count(status: str) -> int:
    return int(status.split()[-1])


async def pause_source(conn, workspace_id: str, source_type: model.Source, source_id: str) -> int:
    """Stops the source's waiting rows (a broadcast paused); returns how many."""
    return _count(await conn.execute(PAUSE_SOURCE, workspace_id, source_type.value, source_id))


async def resume_source(conn, workspace_id: str, source_type: model.Source, source_id: str) -> int:
    """Makes the source's paused rows due now and wakes the send loops; returns how many."""
    async with conn.transaction():
        n = _count(await conn.execute(RESUME_SOURCE, workspace_id, source_type.value, source_id))
        if n:
            await conn.execute(NOTIFY)
    return n


async def cancel_source(conn, workspace_id: str, source_type: model.Source, source_id: str) -> int:
    """Deletes the source's rows not in flight with their queued messages; returns how many messages."""
    return _count(await conn.execute(CANCEL_SOURCE, workspace_id, source_type.value, source_id))


async def source_counts(conn, workspace_id: str, source_type: model.Source, source_id: str) -> dict:
    """queued / sent / failed messages of a source (a broadcast is complete when none is queued)."""
    return dict(await conn.fetchrow(SOURCE_COUNTS, workspace_id, source_type.value, source_id))


async def attachments(pool, workspace_id: str, checksums: Sequence[str]) -> dict[str, bytes]:
    if not checksums:
        return {}
    return {r["sha256"]: bytes(r["content"]) for r in await pool.fetch(GET_ATTACHMENTS, workspace_id, list(checksums))}


# ---------------------------------------------------------------- the message history (4.3, 4.4)

_FLAG_SQL = {name: (f"status {{}} '{Status.SENT}'" if column is None else f"{column} IS {{}}NULL")
             for name, column in model.FLAGS.items()}


def list_sql(q: model.MessageQuery) -> tuple[str, list]:
    """messages.list as one statement: conditions as $n parameters, newest first, one row more
    than the page to know whether another follows."""
    args: list = []

    def arg(value) -> str:
        args.append(value)
        return f"${len(args) + 1}"           # $1 is the workspace

    where = ["workspace_id = $1"]
    for column, value in q.exact.items():
        where.append(f"{column} = {arg(value)}")
    for name, wanted in q.flags.items():
        template = _FLAG_SQL[name]
        if model.FLAGS[name] is None:
            where.append(template.format("=" if wanted else "<>"))
        else:
            where.append(template.format("NOT " if wanted else ""))
    for name, column, op in model.RANGES:
        if name in q.ranges:
            where.append(f"{column} {op} {arg(q.ranges[name])}")
    if q.cursor is not None:
        where.append(f"(created_at, id) < ({arg(q.cursor[0])}, {arg(q.cursor[1])})")
    sql = (f"SELECT {MESSAGE_COLUMNS}\n  FROM message_history\n WHERE " + "\n   AND ".join(where) +
           f"\n ORDER BY created_at DESC, id DESC\n LIMIT {q.limit + 1}")
    return sql, args


async def list_messages(conn, workspace_id: str, q: model.MessageQuery) -> list:
    sql, args = list_sql(q)
    return await conn.fetch(sql, workspace_id, *args)


BROADCAST_STATS = f"""
SELECT count(*) FILTER (WHERE status = '{Status.SENT}') AS total_sent,
       count(delivered_at) AS total_delivered, count(bounced_at) AS total_bounced,
       count(complained_at) AS total_complained, count(failed_at) AS total_failed,
       count(opened_at) AS total_opened, count(clicked_at) AS total_clicked,
       count(unsubscribed_at) AS total_unsubscribed,
       count(*) FILTER (WHERE status = '{Status.QUEUED}') AS total_queued
  FROM message_history WHERE workspace_id = $1 AND broadcast_id = $2
"""


async def broadcast_stats(conn, workspace_id: str, broadcast_id: str) -> dict:
    row = await conn.fetchrow(BROADCAST_STATS, workspace_id, broadcast_id)
    return {k: row[k] for k in model.STAT_FIELDS}


# A provider report's reason (engagement-contract 3.6): written with bounced_at or complained_at,
# in the transaction that set that column (mark_message), never cleared.
NOTE_STATUS_INFO = f"""
UPDATE message_history SET status_info = $3, updated_at = now() WHERE workspace_id = $1 AND id = $2
RETURNING {MESSAGE_COLUMNS}
"""


async def note_status_info(conn, workspace_id: str, message_id: str, status_info: str):
    """Sets the message's status_info (at most 255 characters); returns the row."""
    return await conn.fetchrow(NOTE_STATUS_INFO, workspace_id, message_id, status_info[:255])


# ---------------------------------------------------------------- integrations (1)

LIST_INTEGRATIONS = f"""
SELECT {INTEGRATION_COLUMNS} FROM email_integrations WHERE workspace_id = $1 ORDER BY created_at, id
"""

INTEGRATIONS_OF = f"""
SELECT workspace_id, {INTEGRATION_COLUMNS} FROM email_integrations WHERE workspace_id = ANY($1::text[])
 ORDER BY workspace_id, created_at, id
"""

CREATE_INTEGRATION = f"""
INSERT INTO email_integrations (workspace_id, id, name, kind, settings, secrets, secret_fields, senders,
                                rate_limit_per_minute, max_concurrency)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING {INTEGRATION_COLUMNS}
"""

RENAME_INTEGRATION = f"""
UPDATE email_integrations SET name = $3, updated_at = now() WHERE workspace_id = $1 AND id = $2
RETURNING {INTEGRATION_COLUMNS}
"""

UPDATE_INTEGRATION = f"""
UPDATE email_integrations
   SET name = $3, kind = $4, settings = $5, secrets = $6, secret_fields = $7, senders = $8,
       rate_limit_per_minute = $9, max_concurrency = $10, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
RETURNING {INTEGRATION_COLUMNS}
"""

LOCK_INTEGRATION = f"{GET_INTEGRATION} FOR UPDATE"

# Deleting an integration clears whichever provider id of the workspace's settings named it (1.4),
# and its budget row.
DELETE_INTEGRATION = """
WITH gone AS (DELETE FROM email_integrations WHERE workspace_id = $1 AND id = $2 RETURNING id),
budget AS (DELETE FROM delivery_budget WHERE workspace_id = $1 AND integration_id IN (SELECT id FROM gone))
UPDATE workspaces w
   SET settings = w.settings
       || CASE WHEN w.settings->>'transactional_email_provider_id' = $2
               THEN '{"transactional_email_provider_id": ""}'::jsonb ELSE '{}'::jsonb END
       || CASE WHEN w.settings->>'marketing_email_provider_id' = $2
               THEN '{"marketing_email_provider_id": ""}'::jsonb ELSE '{}'::jsonb END
  FROM gone
 WHERE w.id = $1
RETURNING 1
"""

INTEGRATION_EXISTS = "SELECT 1 FROM email_integrations WHERE workspace_id = $1 AND id = $2"


async def list_integrations(conn, workspace_id: str) -> list:
    return await conn.fetch(LIST_INTEGRATIONS, workspace_id)


async def integrations_of(conn, workspace_ids: list[str]) -> dict[str, list]:
    """workspace id -> its integrations in creation order, for many workspaces in one query."""
    out: dict[str, list] = {}
    for row in await conn.fetch(INTEGRATIONS_OF, workspace_ids):
        out.setdefault(row["workspace_id"], []).append(row)
    return out


async def get_integration(conn, workspace_id: str, integration_id: str):
    return await conn.fetchrow(GET_INTEGRATION, workspace_id, integration_id)


async def create_integration(conn, key_bytes: bytes, workspace_id: str, name: str, kind: str, plain: dict,
                             secrets: dict, senders: list, rate: int, concurrency: int | None):
    integration_id = str(uuid.uuid4())
    sealed = integrations.seal(key_bytes, workspace_id, integration_id, secrets) if secrets else None
    return await conn.fetchrow(CREATE_INTEGRATION, workspace_id, integration_id, name, kind, plain, sealed,
                               sorted(secrets), senders, rate, concurrency)


async def update_integration(conn, key_bytes: bytes, workspace_id: str, integration_id: str, name: str,
                             spec, allow_fake: bool = False):
    """Renames, or with a provider spec replaces the provider by the merge rule (1.5). None when
    the integration does not exist. The row is locked while merging: two updates do not interleave."""
    async with conn.transaction():
        stored = await conn.fetchrow(LOCK_INTEGRATION, workspace_id, integration_id)
        if stored is None:
            return None
        if spec is None:
            return await conn.fetchrow(RENAME_INTEGRATION, workspace_id, integration_id, name)
        old = integrations.unseal(key_bytes, workspace_id, integration_id, stored["secrets"])
        plain, secrets, concurrency = integrations.merged(spec, stored, old, allow_fake)
        sealed = integrations.seal(key_bytes, workspace_id, integration_id, secrets) if secrets else None
        return await conn.fetchrow(UPDATE_INTEGRATION, workspace_id, integration_id, name, spec.kind, plain,
                                   sealed, sorted(secrets), spec.senders, spec.rate_limit_per_minute, concurrency)


async def delete_integration(conn, workspace_id: str, integration_id: str) -> bool:
    return await conn.fetchval(DELETE_INTEGRATION, workspace_id, integration_id) is not None


QUEUE_DEPTH = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'paused') AS paused
  FROM email_queue
"""


# ---------------------------------------------------------------- transactional notifications (3)

NOTIFICATION_COLUMNS = """id, name, description, channels, tracking_settings, metadata, integration_id,
       created_at, updated_at"""

# A deleted notification's id may be reused: its row is overwritten (3.4). A live one blocks.
CREATE_NOTIFICATION = f"""
INSERT INTO transactional_notifications AS n (workspace_id, id, name, description, channels, tracking_settings,
                                              metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (workspace_id, id) DO UPDATE
   SET name = excluded.name, description = excluded.description, channels = excluded.channels,
       tracking_settings = excluded.tracking_settings, metadata = excluded.metadata, integration_id = NULL,
       created_at = now(), updated_at = now(), deleted_at = NULL
 WHERE n.deleted_at IS NOT NULL
RETURNING {NOTIFICATION_COLUMNS}
"""

GET_NOTIFICATION = f"""
SELECT {NOTIFICATION_COLUMNS} FROM transactional_notifications
 WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
"""

# `search` is matched literally: % _ and \ are escaped (3.2).
LIST_NOTIFICATIONS = f"""
SELECT {NOTIFICATION_COLUMNS}, count(*) OVER () AS total
  FROM transactional_notifications
 WHERE workspace_id = $1 AND deleted_at IS NULL
   AND ($2::text IS NULL OR name ILIKE $2 OR id ILIKE $2)
 ORDER BY created_at DESC, id
 LIMIT $3 OFFSET $4
"""

COUNT_NOTIFICATIONS = """
SELECT count(*) FROM transactional_notifications
 WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR name ILIKE $2 OR id ILIKE $2)
"""

DELETE_NOTIFICATION = """
UPDATE transactional_notifications SET deleted_at = now(), updated_at = now()
 WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
"""


def like_pattern(search: str | None) -> str | None:
    if not search:
        return None
    return "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def create_notification(conn, workspace_id: str, n: dict):
    """The new row, or None when a live notification has this id."""
    return await conn.fetchrow(CREATE_NOTIFICATION, workspace_id, n["id"], n["name"], n["description"],
                               n["channels"], n["tracking_settings"], n["metadata"])


async def get_notification(conn, workspace_id: str, notification_id: str, lock: bool = False):
    return await conn.fetchrow(GET_NOTIFICATION + (" FOR UPDATE" if lock else ""), workspace_id, notification_id)


async def list_notifications(conn, workspace_id: str, search: str | None, limit: int | None,
                             offset: int) -> tuple[list, int]:
    pattern = like_pattern(search)
    rows = await conn.fetch(LIST_NOTIFICATIONS, workspace_id, pattern, limit, offset)
    total = rows[0]["total"] if rows else await conn.fetchval(COUNT_NOTIFICATIONS, workspace_id, pattern)
    return rows, total


async def update_notification(conn, workspace_id: str, notification_id: str, fields: dict,
                              check: Callable[[Any], None]):
    """Applies `fields` (columns -> values, the merge done by the model) to the live notification,
    locked while `check(row)` decides; None when there is none."""
    async with conn.transaction():
        row = await get_notification(conn, workspace_id, notification_id, lock=True)
        if row is None:
            return None
        check(row)
        if not fields:
            return row
        names = list(fields)
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=3))
        return await conn.fetchrow(
            f"UPDATE transactional_notifications SET {sets}, updated_at = now()"
            f" WHERE workspace_id = $1 AND id = $2 RETURNING {NOTIFICATION_COLUMNS}",
            workspace_id, notification_id, *(fields[n] for n in names))


async def delete_notification(conn, workspace_id: str, notification_id: str, check: Callable[[Any], None]) -> bool:
    async with conn.transaction():
        row = await get_notification(conn, workspace_id, notification_id, lock=True)
        if row is None:
            return False
        check(row)
        await conn.execute(DELETE_NOTIFICATION, workspace_id, notification_id)
    return True


# One send of an external id at a time per workspace (3.7 step 3); the partial unique index on
# message_history backs it. Two int4 keys: hashtext of each, so workspaces never share a lock key
# space by accident of concatenation.
LOCK_EXTERNAL_ID = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))"


async def lock_external_id(conn, workspace_id: str, external_id: str) -> str | None:
    """Takes the transaction lock of the key and returns the id of its message, if one exists."""
    await conn.execute(LOCK_EXTERNAL_ID, workspace_id, external_id)
    return await conn.fetchval(MESSAGE_BY_EXTERNAL_ID, workspace_id, external_id)


# ---------------------------------------------------------------- what happened after sending (4.2, 4.5)

# The timestamps that engagement (opens, clicks, unsubscribes) and provider reports (deliveries,
# bounces, complaints) set on a message. Each is set once: the first report wins.
ENGAGEMENT_COLUMNS = ("delivered_at", "opened_at", "clicked_at", "bounced_at", "complained_at", "unsubscribed_at")


def _mark_sql(column: str) -> str:
    if column not in ENGAGEMENT_COLUMNS:
        raise ValueError(f"not an engagement column: {column}")
    # The row lock of the UPDATE orders two concurrent first reports: the second sees the column
    # set and changes nothing.
    return f"""
WITH marked AS (
    UPDATE message_history SET {column} = $3, updated_at = now()
     WHERE workspace_id = $1 AND id = $2 AND {column} IS NULL
    RETURNING {MESSAGE_COLUMNS}
),
entry AS (
    {timeline.insert_sql(f"SELECT $1, contact_email, 'update_message_history', '{ENTITY}', id, "
                         f"jsonb_build_object('{column}', jsonb_build_object('new', {column})) FROM marked")}
)
SELECT * FROM marked
"""


_MARK = {column: _mark_sql(column) for column in ENGAGEMENT_COLUMNS}


async def mark_message(conn, workspace_id: str, message_id: str, column: str, at: _dt.datetime):
    """Sets one of ENGAGEMENT_COLUMNS of a message to `at` when it is still empty, with its timeline
    entry (update_message_history), in the caller's transaction. Returns the message row when this
    call set it, None when it was already set or the message does not exist: the caller writes its
    outbox event (email.opened, email.delivered, ...) only for a row, so a repeated report counts once."""
    return await conn.fetchrow(_MARK[column], workspace_id, message_id, at)


# ---------------------------------------------------------------- what a transactional send reads (3.7)

# Everything a send reads before it writes, in one round trip: the workspace's settings, the live
# notification, the transactional integration the settings name, the latest live version of the
# notification's email template and the two workspace secrets a message needs (NULL: not made
# yet). Rows come as JSON objects (NULL when absent); the caller checks them in the contract's order.
SEND_READS = f"""
SELECT w.settings, to_jsonb(n) AS notification, to_jsonb(i) AS integration, to_jsonb(t) AS template,
       {ws_secrets.sealed_sql("w.id", "$3")} AS link_secret, {ws_secrets.sealed_sql("w.id", "$4")} AS data_secret
  FROM workspaces w
  LEFT JOIN LATERAL (SELECT {NOTIFICATION_COLUMNS} FROM transactional_notifications
                      WHERE workspace_id = w.id AND id = $2 AND deleted_at IS NULL) n ON true
  LEFT JOIN LATERAL (SELECT id, kind, senders FROM email_integrations
                      WHERE workspace_id = w.id AND id = w.settings->>'transactional_email_provider_id') i ON true
  LEFT JOIN LATERAL ({templates_store.latest_live_sql("w.id", "n.channels->'email'->>'template_id'")}) t ON true
 WHERE w.id = $1
"""


async def send_reads(conn, workspace_id: str, notification_id: str, link_secret: str):
    """SEND_READS for a workspace, a notification id and the name of the links' secret."""
    return await conn.fetchrow(SEND_READS, workspace_id, notification_id, link_secret, MESSAGE_DATA_SECRET)


# ---------------------------------------------------------------- list mails that are never queued

MESSAGE_EXISTS = "SELECT true FROM message_history WHERE workspace_id = $1 AND id = $2"


async def message_exists(conn, workspace_id: str, message_id: str) -> bool:
    return bool(await conn.fetchval(MESSAGE_EXISTS, workspace_id, message_id))


# A message that fails before it could be queued (no provider to send it with, a broadcast
# recipient whose rendering failed): its history row starts failed, so that messages.list, the
# contact's timeline and email.failed subscribers show it.
INSERT_FAILED_MESSAGE = f"""
INSERT INTO message_history (workspace_id, id, contact_email, broadcast_id, list_id, template_id, template_version,
                             channel, message_data, integration_id, status, status_info, failed_at, failure_class)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '{Status.FAILED}', left($11, {model.STATUS_INFO_MAX}), now(), $12)
RETURNING {MESSAGE_COLUMNS}
"""


async def record_failed(conn, key_bytes: bytes, out: Outgoing, status_info: str,
                        failure_class: str = "message") -> None:
    """The history row of a message that could not be queued, failed from the start (with the
    failure class a broadcast's retry reads), its timeline entries (insert, then the failure) and
    its email.failed event, in the caller's transaction. `out.integration_id` may be empty."""
    key = await message_key(conn, out.workspace_id, key_bytes)
    row = await conn.fetchrow(
        INSERT_FAILED_MESSAGE, out.workspace_id, out.message_id, out.contact_email,
        out.source_columns()["broadcast_id"], out.list_id, out.template_id, out.template_version, out.channel,
        seal_data(key, out.workspace_id, out.message_id, out.data, out.metadata), out.integration_id or None,
        status_info, failure_class)
    await conn.execute(INSERT_TIMELINE, out.workspace_id, out.contact_email, "insert_message_history", ENTITY,
                       out.message_id, model.insert_changes(row))
    await conn.execute(INSERT_TIMELINE, out.workspace_id, out.contact_email, "update_message_history", ENTITY,
                       out.message_id, model.update_changes(Outcome("failed"), row))
    await events.emit(conn, out.workspace_id, "email.failed", out.contact_email,
                      model.event_data(row, row["failed_at"], with_info=True))
