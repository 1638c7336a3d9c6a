"""Broadcast SQL: the broadcast row and its state changes, the audience frozen into
broadcast_recipients at start, the feeder's chunks, and the exact counters of `delivery`.

Counters are read, not kept: held, waiting, skipped and cancelled from the recipients' states; a
fed recipient is queued, sent or failed as its message is in the message history, which the send
loop updates in the transaction of each outcome. Every read is therefore exact, and the invariant
recipients = held + waiting + queued + sent + failed + skipped + cancelled holds by construction.
"""

from __future__ import annotations

from typing import Sequence

from postroom.broadcasts import model
from postroom.contacts import store as contacts_store
from postroom.delivery import store as delivery_store
from postroom.delivery.model import TRANSIENT, Source, Status
from postroom.events import store as events

COLUMNS = """workspace_id, id, name, status, audience, schedule, test_settings, utm_parameters, metadata, data_feed,
       winning_template, test_sent_at, winner_sent_at, test_phase_recipient_count, winner_phase_recipient_count,
       enqueued_count, created_at, updated_at, started_at, completed_at, cancelled_at, paused_at, pause_reason,
       start_at, paused_from, resolved_at, template_versions, finished_at"""

CREATE = f"""
INSERT INTO broadcasts (workspace_id, id, name, audience, schedule, test_settings, utm_parameters, metadata, data_feed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {COLUMNS}
"""

GET = f"SELECT {COLUMNS} FROM broadcasts WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"

LIST = f"""
SELECT {COLUMNS}, count(*) OVER () AS total
  FROM broadcasts
 WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR status = $2)
 ORDER BY created_at DESC, id
 LIMIT $3 OFFSET $4
"""

COUNT = "SELECT count(*) FROM broadcasts WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR status = $2)"

UPDATE = f"""
UPDATE broadcasts SET name = $3, audience = $4, test_settings = $5, utm_parameters = $6, metadata = $7,
                      data_feed = $8, schedule = $9, start_at = $10, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
RETURNING {COLUMNS}
"""

EVENT = events.insert_sql("VALUES ($1, $2, $3, $4)")


async def create(conn, workspace_id: str, broadcast_id: str, b: dict):
    async with conn.transaction():
        return await conn.fetchrow(CREATE, workspace_id, broadcast_id, b["name"], b["audience"],
                                   model.EMPTY_SCHEDULE, b["test_settings"], b["utm_parameters"], b["metadata"],
                                   b["data_feed"])


async def get(conn, workspace_id: str, broadcast_id: str, lock: bool = False):
    return await conn.fetchrow(GET + (" FOR UPDATE" if lock else ""), workspace_id, broadcast_id)


async def list_broadcasts(conn, workspace_id: str, q: model.ListQuery) -> tuple[list, int]:
    rows = await conn.fetch(LIST, workspace_id, q.status, q.limit, q.offset)
    total = rows[0]["total"] if rows else await conn.fetchval(COUNT, workspace_id, q.status)
    return rows, total


async def update(conn, workspace_id: str, broadcast_id: str, b: dict, start_at):
    return await conn.fetchrow(UPDATE, workspace_id, broadcast_id, b["name"], b["audience"], b["test_settings"],
                               b["utm_parameters"], b["metadata"], b["data_feed"], b["schedule"], start_at)


async def emit(conn, workspace_id: str, kind: str, broadcast_id: str, data: dict | None = None) -> None:
    await conn.execute(EVENT, workspace_id, kind, broadcast_id, {"broadcast_id": broadcast_id, **(data or {})})


# ---------------------------------------------------------------- state changes

SET_SCHEDULED = f"""
UPDATE broadcasts SET status = '{model.SCHEDULED}', schedule = $3, start_at = $4, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

SET_STARTED = f"""
UPDATE broadcasts SET status = '{model.PROCESSING}', started_at = now(), start_at = NULL, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

SET_PAUSED = f"""
UPDATE broadcasts SET paused_from = status, status = '{model.PAUSED}', paused_at = now(), pause_reason = $3,
                      updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

SET_RESUMED = """
UPDATE broadcasts SET status = $3, paused_at = NULL, pause_reason = NULL, paused_from = NULL, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

SET_CANCELLED = f"""
UPDATE broadcasts SET status = '{model.CANCELLED}', cancelled_at = now(), start_at = NULL, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

USING_SEGMENT = f"""
SELECT id FROM broadcasts
 WHERE workspace_id = $1 AND deleted_at IS NULL AND audience->'segments' ? $2
   AND status IN ({", ".join(f"'{s}'" for s in model.HOLDS_SEGMENTS)})
 ORDER BY id LIMIT 1
"""


async def using_segment(conn, workspace_id: str, segment_id: str) -> str | None:
    """The first broadcast that still needs the segment (segments-contract: delete refuses)."""
    return await conn.fetchval(USING_SEGMENT, workspace_id, segment_id)


SET_DELETED = "UPDATE broadcasts SET deleted_at = now(), start_at = NULL, updated_at = now() WHERE workspace_id = $1 AND id = $2"

# Recipients never sent because the broadcast was cancelled: every held or waiting one, and every
# fed one whose queued message the cancel removed.
CANCEL_RECIPIENTS = """
UPDATE broadcast_recipients r SET state = 'cancelled'
 WHERE r.workspace_id = $1 AND r.broadcast_id = $2
   AND (r.state IN ('held', 'waiting')
        OR (r.state = 'fed' AND NOT EXISTS (SELECT 1 FROM message_history m
                                             WHERE m.workspace_id = r.workspace_id AND m.id = r.message_id)))
"""


async def schedule(conn, workspace_id: str, broadcast_id: str, send_now: bool, sched: dict, start_at) -> None:
    if send_now:
        await conn.execute(SET_STARTED, workspace_id, broadcast_id)
        await emit(conn, workspace_id, "broadcast.started", broadcast_id)
    else:
        await conn.execute(SET_SCHEDULED, workspace_id, broadcast_id, sched, start_at)
        await emit(conn, workspace_id, "broadcast.scheduled", broadcast_id)


async def pause(conn, workspace_id: str, broadcast_id: str, reason: str | None = None) -> None:
    """Status paused (the feeder stops), and the broadcast's waiting queue rows paused."""
    await conn.execute(SET_PAUSED, workspace_id, broadcast_id, reason)
    await delivery_store.pause_source(conn, workspace_id, Source.BROADCAST, broadcast_id)
    await emit(conn, workspace_id, "broadcast.paused", broadcast_id, {"reason": reason})


async def resume(conn, workspace_id: str, broadcast_id: str, status: str) -> None:
    await conn.execute(SET_RESUMED, workspace_id, broadcast_id, status)
    await delivery_store.resume_source(conn, workspace_id, Source.BROADCAST, broadcast_id)
    await emit(conn, workspace_id, "broadcast.resumed", broadcast_id)


async def cancel(conn, workspace_id: str, broadcast_id: str) -> None:
    """Queue rows not being sent go with their queued messages; those recipients and every held
    or waiting one become cancelled; rows in flight finish and are counted."""
    await conn.execute(SET_CANCELLED, workspace_id, broadcast_id)
    await delivery_store.cancel_source(conn, workspace_id, Source.BROADCAST, broadcast_id)
    await conn.execute(CANCEL_RECIPIENTS, workspace_id, broadcast_id)
    await emit(conn, workspace_id, "broadcast.cancelled", broadcast_id)


async def delete(conn, workspace_id: str, broadcast_id: str) -> None:
    """Soft delete; unsent recipients are cancelled and a pending start dropped."""
    await delivery_store.cancel_source(conn, workspace_id, Source.BROADCAST, broadcast_id)
    await conn.execute(CANCEL_RECIPIENTS, workspace_id, broadcast_id)
    await conn.execute(SET_DELETED, workspace_id, broadcast_id)


# ---------------------------------------------------------------- counters (the delivery object)

COUNTERS = f"""
SELECT count(*) AS recipients,
       count(*) FILTER (WHERE r.state = 'held') AS held,
       count(*) FILTER (WHERE r.state = 'waiting') AS waiting,
       count(*) FILTER (WHERE r.state = 'fed' AND m.status = '{Status.QUEUED}') AS queued,
       count(*) FILTER (WHERE r.state = 'fed' AND m.status = '{Status.SENT}') AS sent,
       count(*) FILTER (WHERE r.state = 'fed' AND m.status = '{Status.FAILED}') AS failed,
       count(*) FILTER (WHERE r.state = 'fed' AND m.status = '{Status.FAILED}'
                          AND m.failure_class = ANY('{{{",".join(TRANSIENT)}}}'::text[])) AS retryable,
       count(*) FILTER (WHERE r.state = 'skipped') AS skipped,
       count(*) FILTER (WHERE r.state = 'cancelled' OR (r.state = 'fed' AND m.id IS NULL)) AS cancelled
  FROM broadcast_recipients r
  LEFT JOIN message_history m ON m.workspace_id = r.workspace_id AND m.id = r.message_id
 WHERE r.workspace_id = $1 AND r.broadcast_id = $2
"""


async def counters(conn, workspace_id: str, broadcast_id: str) -> dict:
    return dict(await conn.fetchrow(COUNTERS, workspace_id, broadcast_id))


# ---------------------------------------------------------------- start: the audience frozen

# "In at least one of the audience's segments" (none listed: everyone), read from the current
# memberships segments keep in contact_segments; each address once whatever the number of segments.
IN_SEGMENTS = """(cardinality({segments}::text[]) = 0 OR EXISTS (
        SELECT 1 FROM contact_segments cs
         WHERE cs.workspace_id = cl.workspace_id AND cs.email = cl.email AND cs.segment_id = ANY({segments}::text[])))"""

# The list's members as the contract's audience rule has them: membership not removed, status
# active (plus unsubscribed when exclude_unsubscribed is false), the contact existing; each
# address once (the primary key); the rank key computed in SQL exactly as model.rank_key does
# (first 8 bytes of SHA-256 of "<broadcast id>:<email>", big-endian, signed). Phase and variation
# by model.split's rule: the sample is the first n by (rank, email), variations round-robin.
RESOLVE = f"""
WITH audience AS (
    SELECT cl.email,
           ('x' || left(encode(sha256(convert_to($2 || ':' || cl.email, 'UTF8')), 'hex'), 16))::bit(64)::bigint
               AS rank,
           c.timezone
      FROM contact_lists cl
      JOIN contacts c ON c.workspace_id = cl.workspace_id AND c.email = cl.email
     WHERE cl.workspace_id = $1 AND cl.list_id = $3 AND cl.deleted_at IS NULL
       AND (cl.status = 'active' OR (cl.status = 'unsubscribed' AND NOT $4))
       AND {IN_SEGMENTS.format(segments="$8")}
), ranked AS (
    SELECT email, rank, timezone, row_number() OVER (ORDER BY rank, email) - 1 AS position FROM audience
)
INSERT INTO broadcast_recipients (workspace_id, broadcast_id, email, rank, phase, variation, state, send_after)
SELECT $1, $2, email, rank,
       CASE WHEN NOT $5 THEN 'single' WHEN position < $6 THEN 'test' ELSE 'winner' END,
       CASE WHEN NOT $5 THEN 0 WHEN position < $6 THEN (position % $7)::smallint END,
       CASE WHEN $5 AND position >= $6 THEN 'held' ELSE 'waiting' END,
       NULL
  FROM ranked
ON CONFLICT DO NOTHING
"""

AUDIENCE_SIZE = f"""
SELECT count(*) FROM contact_lists cl JOIN contacts c ON c.workspace_id = cl.workspace_id AND c.email = cl.email
 WHERE cl.workspace_id = $1 AND cl.list_id = $2 AND cl.deleted_at IS NULL
   AND (cl.status = 'active' OR (cl.status = 'unsubscribed' AND NOT $3))
   AND {IN_SEGMENTS.format(segments="$4")}
"""

SET_RESOLVED = f"""
UPDATE broadcasts SET resolved_at = now(), template_versions = $3, test_phase_recipient_count = $4,
                      winner_phase_recipient_count = $5,
                      status = CASE WHEN $6 THEN '{model.TESTING}' ELSE status END, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

RECIPIENT_TIMES = """
UPDATE broadcast_recipients r SET send_after = t.at
  FROM unnest($3::text[], $4::timestamptz[]) AS t(email, at)
 WHERE r.workspace_id = $1 AND r.broadcast_id = $2 AND r.email = t.email
"""

RECIPIENT_ZONES = """
SELECT r.email, c.timezone FROM broadcast_recipients r
  JOIN contacts c ON c.workspace_id = r.workspace_id AND c.email = r.email
 WHERE r.workspace_id = $1 AND r.broadcast_id = $2
"""


async def resolve(conn, b, versions: dict) -> int:
    """Freezes the audience of a started broadcast (in the caller's transaction, with the row
    locked): recipients, phases, variations, send-after times; pins the template versions and
    moves an A/B broadcast to testing. Returns the number of recipients."""
    a, t = b["audience"], b["test_settings"]
    ab = bool(t.get("enabled"))
    segments = list(a.get("segments") or [])
    total = await conn.fetchval(AUDIENCE_SIZE, b["workspace_id"], a["list"], bool(a.get("exclude_unsubscribed")),
                                segments)
    n = model.sample_size(total, t["sample_percentage"]) if ab else 0
    await conn.execute(RESOLVE, b["workspace_id"], b["id"], a["list"], bool(a.get("exclude_unsubscribed")), ab, n,
                       max(1, len(t.get("variations") or [])), segments)
    if b["schedule"].get("use_recipient_timezone") and b["schedule"].get("is_scheduled") and not ab:
        zones = await conn.fetch(RECIPIENT_ZONES, b["workspace_id"], b["id"])
        emails = [z["email"] for z in zones]
        times = [model.recipient_instant(b["schedule"], z["timezone"]) for z in zones]
        await conn.execute(RECIPIENT_TIMES, b["workspace_id"], b["id"], emails, times)
    await conn.execute(SET_RESOLVED, b["workspace_id"], b["id"], versions, n if ab else 0, total - n if ab else 0, ab)
    return total


# ---------------------------------------------------------------- the scheduler and the feeder

# Broadcasts whose scheduled instant has come, taken by one process (SKIP LOCKED).
START_DUE = f"""
UPDATE broadcasts b SET status = '{model.PROCESSING}', started_at = now(), start_at = NULL, updated_at = now()
  FROM (SELECT workspace_id, id FROM broadcasts
         WHERE status = '{model.SCHEDULED}' AND deleted_at IS NULL AND start_at <= now()
         ORDER BY start_at LIMIT 100 FOR UPDATE SKIP LOCKED) due
 WHERE b.workspace_id = due.workspace_id AND b.id = due.id
RETURNING b.workspace_id, b.id
"""

ACTIVE = f"""
SELECT workspace_id, id FROM broadcasts
 WHERE deleted_at IS NULL AND status IN ('{model.PROCESSING}', '{model.TESTING}', '{model.TEST_COMPLETED}',
                                         '{model.WINNER_SELECTED}', '{model.PROCESSED}')
   AND finished_at IS NULL
 ORDER BY started_at NULLS FIRST
 LIMIT 1000
"""

LOCK = f"{GET} FOR UPDATE SKIP LOCKED"

# Fed recipients whose messages are still queued: the window the feeder keeps.
IN_QUEUE = f"""
SELECT count(*) FROM message_history WHERE workspace_id = $1 AND broadcast_id = $2 AND status = '{Status.QUEUED}'
"""

# The next waiting recipients of the phases being sent, in rank order, due now, with what the
# eligibility re-check and the rendering need: the membership as it is now and the contact.
NEXT_WAITING = """
SELECT r.email, r.variation, r.phase, r.message_id, cl.status AS membership, cl.deleted_at AS removed_at
  FROM broadcast_recipients r
  LEFT JOIN contact_lists cl ON cl.workspace_id = r.workspace_id AND cl.list_id = $3 AND cl.email = r.email
 WHERE r.workspace_id = $1 AND r.broadcast_id = $2 AND r.state = 'waiting'
   AND (r.send_after IS NULL OR r.send_after <= now())
 ORDER BY r.rank, r.email
 LIMIT $4
"""

MARK_FED = """
UPDATE broadcast_recipients r SET state = 'fed', message_id = t.message_id
  FROM unnest($3::text[], $4::text[]) AS t(email, message_id)
 WHERE r.workspace_id = $1 AND r.broadcast_id = $2 AND r.email = t.email
"""

MARK_SKIPPED = """
UPDATE broadcast_recipients SET state = 'skipped'
 WHERE workspace_id = $1 AND broadcast_id = $2 AND email = ANY($3::text[])
"""

ADD_ENQUEUED = "UPDATE broadcasts SET enqueued_count = enqueued_count + $3, updated_at = now() WHERE workspace_id = $1 AND id = $2"

WAITING_LEFT = "SELECT count(*) FROM broadcast_recipients WHERE workspace_id = $1 AND broadcast_id = $2 AND state = 'waiting'"

HELD_TO_WINNER = """
UPDATE broadcast_recipients SET variation = $3, state = 'waiting'
 WHERE workspace_id = $1 AND broadcast_id = $2 AND state = 'held'
"""

SET_PROCESSED = f"""
UPDATE broadcasts SET status = '{model.PROCESSED}', completed_at = now(),
                      winner_sent_at = CASE WHEN winning_template IS NOT NULL THEN now() END, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

SET_TEST_COMPLETED = f"""
UPDATE broadcasts SET status = '{model.TEST_COMPLETED}', test_sent_at = now(), updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

SET_WINNER = f"""
UPDATE broadcasts SET status = '{model.WINNER_SELECTED}', winning_template = $3, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
"""

SET_FINISHED = "UPDATE broadcasts SET finished_at = now(), updated_at = now() WHERE workspace_id = $1 AND id = $2"


async def start_due(pool) -> list:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(START_DUE)
        for r in rows:
            await emit(conn, r["workspace_id"], "broadcast.started", r["id"])
        return rows


async def active(pool) -> list:
    return await pool.fetch(ACTIVE)


CONTACTS = f"SELECT {contacts_store.COLUMNS} FROM contacts WHERE workspace_id = $1 AND email = ANY($2::text[])"


async def next_waiting(conn, b, limit: int) -> tuple[list, dict]:
    """The next waiting recipients, and their contacts by email (a deleted contact is absent)."""
    rows = await conn.fetch(NEXT_WAITING, b["workspace_id"], b["id"], b["audience"]["list"], limit)
    contacts = await conn.fetch(CONTACTS, b["workspace_id"], [r["email"] for r in rows]) if rows else []
    return rows, {c["email"]: dict(c) for c in contacts}


async def mark_fed(conn, workspace_id: str, broadcast_id: str, fed: Sequence[tuple[str, str]],
                   skipped: Sequence[str]) -> None:
    if fed:
        await conn.execute(MARK_FED, workspace_id, broadcast_id, [e for e, _ in fed], [m for _, m in fed])
        await conn.execute(ADD_ENQUEUED, workspace_id, broadcast_id, len(fed))
    if skipped:
        await conn.execute(MARK_SKIPPED, workspace_id, broadcast_id, list(skipped))


# broadcasts.retryFailed: the failed recipients (transient failures, or all with include_permanent)
# go back to waiting with their message id, their failed message making way for the new attempt;
# those no longer eligible (unsubscribed, bounced, complained, removed, deleted) become skipped.
RETRY_FAILED = f"""
WITH chosen AS (
    SELECT r.email, r.message_id,
           coalesce(cl.deleted_at IS NULL AND cl.status = ANY($4::text[]) AND c.email IS NOT NULL, false) AS eligible
      FROM broadcast_recipients r
      JOIN message_history m ON m.workspace_id = r.workspace_id AND m.id = r.message_id
      LEFT JOIN contact_lists cl ON cl.workspace_id = r.workspace_id AND cl.list_id = $3 AND cl.email = r.email
      LEFT JOIN contacts c ON c.workspace_id = r.workspace_id AND c.email = r.email
     WHERE r.workspace_id = $1 AND r.broadcast_id = $2 AND r.state = 'fed' AND m.status = '{Status.FAILED}'
       AND ($5 OR m.failure_class = ANY('{{{",".join(TRANSIENT)}}}'::text[]))
), cleared AS (
    DELETE FROM message_history m USING chosen
     WHERE m.workspace_id = $1 AND m.id = chosen.message_id AND chosen.eligible
), moved AS (
    UPDATE broadcast_recipients r SET state = CASE WHEN chosen.eligible THEN 'waiting' ELSE 'skipped' END
      FROM chosen
     WHERE r.workspace_id = $1 AND r.broadcast_id = $2 AND r.email = chosen.email
    RETURNING chosen.eligible
)
SELECT count(*) FILTER (WHERE eligible) FROM moved
"""


async def retry_failed(conn, b, include_permanent: bool) -> int:
    allowed = ["active"] if b["audience"].get("exclude_unsubscribed") else ["active", "unsubscribed"]
    n = await conn.fetchval(RETRY_FAILED, b["workspace_id"], b["id"], b["audience"]["list"], allowed,
                            include_permanent)
    await conn.execute(SET_UNFINISHED, b["workspace_id"], b["id"])
    return n


SET_UNFINISHED = "UPDATE broadcasts SET finished_at = NULL, updated_at = now() WHERE workspace_id = $1 AND id = $2"


async def select_winner(conn, workspace_id: str, broadcast_id: str, template_id: str, index: int,
                        automatic: bool) -> None:
    await conn.execute(SET_WINNER, workspace_id, broadcast_id, template_id)
    await conn.execute(HELD_TO_WINNER, workspace_id, broadcast_id, index)
    await emit(conn, workspace_id, "broadcast.winner_selected", broadcast_id,
               {"template_id": template_id, "automatic": automatic})


# ---------------------------------------------------------------- the task view (tasks.list, tasks.get)

_TASKED = f"""workspace_id = $1 AND deleted_at IS NULL AND status <> '{model.DRAFT}'
   AND ($2::text[] IS NULL OR status = ANY($2))
   AND ($3::timestamptz IS NULL OR created_at > $3) AND ($4::timestamptz IS NULL OR created_at < $4)"""
TASKS = f"""
SELECT {COLUMNS}, count(*) OVER () AS total FROM broadcasts
 WHERE {_TASKED}
 ORDER BY created_at DESC, id
 LIMIT $5 OFFSET $6
"""
TASKS_COUNT = f"SELECT count(*) FROM broadcasts WHERE {_TASKED}"


async def tasked(conn, workspace_id: str, statuses, after, before, limit: int, offset: int) -> tuple[list, int]:
    """Broadcasts that were ever scheduled (the ones the task view shows), newest first."""
    rows = await conn.fetch(TASKS, workspace_id, statuses, after, before, limit, offset)
    total = rows[0]["total"] if rows else await conn.fetchval(TASKS_COUNT, workspace_id, statuses, after, before)
    return rows, total
