"""SQL for outgoing webhooks: subscriptions, the outbox fan-out, the delivery queue and its log."""

from __future__ import annotations

from postroom.events import dispatch
from postroom.platform import secrets as sealed_secrets

# ---------------------------------------------------------------- subscriptions

SUB_COLUMNS = ("id, name, url, secret, event_types, custom_event_filters, enabled, last_delivery_at, "
               "created_at, updated_at")

INSERT_SUBSCRIPTION = f"""
INSERT INTO webhook_subscriptions (workspace_id, id, name, url, secret, event_types, custom_event_filters)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {SUB_COLUMNS}
"""

GET_SUBSCRIPTION = f"SELECT {SUB_COLUMNS} FROM webhook_subscriptions WHERE workspace_id = $1 AND id = $2"
LOCK_SUBSCRIPTION = GET_SUBSCRIPTION + " FOR UPDATE"
LIST_SUBSCRIPTIONS = f"SELECT {SUB_COLUMNS} FROM webhook_subscriptions WHERE workspace_id = $1 ORDER BY created_at, id"

UPDATE_SUBSCRIPTION = f"""
UPDATE webhook_subscriptions
   SET name = $3, url = $4, event_types = $5, custom_event_filters = $6, enabled = $7, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
RETURNING {SUB_COLUMNS}
"""

SET_SECRET = f"""
UPDATE webhook_subscriptions SET secret = $3, updated_at = now()
 WHERE workspace_id = $1 AND id = $2
RETURNING {SUB_COLUMNS}
"""

DELETE_SUBSCRIPTION = "DELETE FROM webhook_subscriptions WHERE workspace_id = $1 AND id = $2"

# Switching a subscription off or on drops what was queued for it: nothing that happened while it
# was off (or was queued just before) goes out later. In-flight attempts finish.
CANCEL_QUEUED = """
UPDATE webhook_deliveries SET status = 'cancelled', last_error = 'subscription was disabled'
 WHERE workspace_id = $1 AND subscription_id = $2 AND status = 'pending'
"""


def _secret_context(workspace_id: str, sub_id: str) -> bytes:
    return f"webhook_subscription\x00{workspace_id}\x00{sub_id}".encode()


def seal_secret(key_bytes: bytes, workspace_id: str, sub_id: str, secret: str) -> bytes:
    return sealed_secrets.encrypt(key_bytes, secret.encode(), _secret_context(workspace_id, sub_id))


def open_secret(key_bytes: bytes, workspace_id: str, sub_id: str, sealed: bytes) -> str:
    return sealed_secrets.decrypt(key_bytes, sealed, _secret_context(workspace_id, sub_id)).decode()


async def create_subscription(pool, key_bytes: bytes, workspace_id: str, sub_id: str, secret: str, fields: dict):
    async with pool.acquire() as conn:
        return await conn.fetchrow(
            INSERT_SUBSCRIPTION, workspace_id, sub_id, fields["name"], fields["url"],
            seal_secret(key_bytes, workspace_id, sub_id, secret), fields["event_types"],
            fields["custom_event_filters"])


async def get_subscription(pool, workspace_id: str, sub_id: str):
    async with pool.acquire() as conn:
        return await conn.fetchrow(GET_SUBSCRIPTION, workspace_id, sub_id)


async def list_subscriptions(pool, workspace_id: str):
    async with pool.acquire() as conn:
        return await conn.fetch(LIST_SUBSCRIPTIONS, workspace_id)


async def update_subscription(pool, workspace_id: str, sub_id: str, changes: dict):
    """Applies `changes` (the fields given) to the stored subscription; None when it does not exist."""
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchrow(LOCK_SUBSCRIPTION, workspace_id, sub_id)
        if current is None:
            return None
        merged = {key: changes.get(key, current[key])
                  for key in ("name", "url", "event_types", "custom_event_filters", "enabled")}
        row = await conn.fetchrow(UPDATE_SUBSCRIPTION, workspace_id, sub_id, merged["name"], merged["url"],
                                  merged["event_types"], merged["custom_event_filters"], merged["enabled"])
        if merged["enabled"] != current["enabled"]:
            await conn.execute(CANCEL_QUEUED, workspace_id, sub_id)
        return row


async def set_secret(pool, key_bytes: bytes, workspace_id: str, sub_id: str, secret: str):
    async with pool.acquire() as conn:
        return await conn.fetchrow(SET_SECRET, workspace_id, sub_id,
                                   seal_secret(key_bytes, workspace_id, sub_id, secret))


async def delete_subscription(pool, workspace_id: str, sub_id: str) -> bool:
    """Removes the subscription and, by cascade, its queue and log."""
    async with pool.acquire() as conn:
        return await conn.execute(DELETE_SUBSCRIPTION, workspace_id, sub_id) != "DELETE 0"


# ---------------------------------------------------------------- the delivery log

DELIVERY_COLUMNS = ("message_id, subscription_id, event_type, data, status, attempts, max_attempts, "
                    "next_attempt_at, last_attempt_at, delivered_at, last_response_status, last_response_body, "
                    "last_error, created_at")

LIST_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
 WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3
"""
COUNT_DELIVERIES = "SELECT count(*) FROM webhook_deliveries WHERE workspace_id = $1"
LIST_SUB_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
 WHERE workspace_id = $1 AND subscription_id = $4 ORDER BY id DESC LIMIT $2 OFFSET $3
"""
COUNT_SUB_DELIVERIES = "SELECT count(*) FROM webhook_deliveries WHERE workspace_id = $1 AND subscription_id = $2"


async def list_deliveries(pool, workspace_id: str, sub_id: str | None, limit: int, offset: int):
    """(rows newest first, total)."""
    async with pool.acquire() as conn:
        if sub_id is None:
            rows = await conn.fetch(LIST_DELIVERIES, workspace_id, limit, offset)
            total = await conn.fetchval(COUNT_DELIVERIES, workspace_id)
        else:
            rows = await conn.fetch(LIST_SUB_DELIVERIES, workspace_id, limit, offset, sub_id)
            total = await conn.fetchval(COUNT_SUB_DELIVERIES, workspace_id, sub_id)
    return rows, total


# ---------------------------------------------------------------- outbox -> deliveries

CONSUMER = "webhooks"  # of the outbox (postroom.events.dispatch)

# Fan a batch of the workspace's unconsumed events out to the enabled subscriptions that want
# them (created before the event), and mark the batch consumed, in one statement. An event
# handed out twice meets the unique key of webhook_deliveries, which drops the duplicates.
DISPATCH = rf"""
WITH {dispatch.claim_cte(CONSUMER)}, {dispatch.mark_cte(CONSUMER)}, fanout AS (
    INSERT INTO webhook_deliveries (workspace_id, subscription_id, event_id, event_type, subject, message_id,
                                    data, occurred_at, max_attempts)
    SELECT b.workspace_id, s.id, b.id, b.type, b.subject, replace(gen_random_uuid()::text, '-', ''),
           b.data, b.created_at, $3
      FROM batch b
      JOIN webhook_subscriptions s
        ON s.workspace_id = b.workspace_id AND s.enabled AND b.type = ANY (s.event_types)
       AND s.created_at <= b.created_at
       AND (b.type NOT LIKE 'custom\_event.%' OR s.custom_event_filters IS NULL OR (
                (NOT s.custom_event_filters ? 'goal_types' OR s.custom_event_filters -> 'goal_types' ?
                    coalesce(b.data -> 'custom_event' ->> 'goal_type', b.data ->> 'goal_type', ''))
            AND (NOT s.custom_event_filters ? 'event_names' OR s.custom_event_filters -> 'event_names' ?
                    coalesce(b.data -> 'custom_event' ->> 'event_name', b.data ->> 'event_name', ''))))
     ORDER BY b.id, s.id
    ON CONFLICT (workspace_id, subscription_id, event_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS events, (SELECT count(*) FROM fanout) AS deliveries
"""


async def dispatch_workspace(pool, workspace_id: str, batch: int, max_attempts: int) -> tuple[int, int] | None:
    """(events, deliveries) of one batch; None when another dispatcher holds the workspace."""
    async with dispatch.locked(pool, CONSUMER, workspace_id) as conn:
        if conn is None:
            return None
        row = await conn.fetchrow(DISPATCH, workspace_id, batch, max_attempts)
        if row["deliveries"]:
            await dispatch.notify(conn, CONSUMER)
        return row["events"], row["deliveries"]


# ---------------------------------------------------------------- the queue

# Claim due deliveries, subscription by subscription (enabled ones, in random order so that a
# batch too small for all of them favours none), at most `room` per subscription, where room is
# the per-subscription concurrency bound ($2, or $4 while its last attempts failed) less what is
# in flight for it (in any process). A
# delivery is due when it is pending, its time has come, and no earlier delivery of the same
# subject to the same subscription is still open (pending or in flight): per subject, one at a
# time, in event order. Claimed rows move to 'delivering' with a lease; `attempts` is the fence.
# Rows are addressed by ctid after they are locked, so that no plan (generic plans included) can
# join back to the table by scanning a subscription's whole log.
CLAIM = """
WITH subs AS MATERIALIZED (
    SELECT s.workspace_id, s.id,
           CASE WHEN s.consecutive_failures > 0 THEN least($2::int, $4::int) ELSE $2::int END
           - (SELECT count(*) FROM webhook_deliveries f
                       WHERE f.workspace_id = s.workspace_id AND f.subscription_id = s.id
                         AND f.status = 'delivering')::int AS room
      FROM webhook_subscriptions s
     WHERE s.enabled
     ORDER BY random()
), picked AS (
    SELECT p.row_ref
      FROM subs s
     CROSS JOIN LATERAL (
        SELECT d.ctid AS row_ref
          FROM webhook_deliveries d
         WHERE d.workspace_id = s.workspace_id AND d.subscription_id = s.id
           AND d.status = 'pending' AND d.next_attempt_at <= now()
           AND NOT EXISTS (
               SELECT 1 FROM webhook_deliveries e
                WHERE e.workspace_id = d.workspace_id AND e.subscription_id = d.subscription_id
                  AND e.subject = d.subject AND e.id < d.id AND e.status IN ('pending', 'delivering')
                OFFSET 0)  -- kept a per-row probe of webhook_deliveries_open_subject, never an anti-join
         ORDER BY d.next_attempt_at, d.id
         LIMIT greatest(s.room, 0)
         FOR UPDATE SKIP LOCKED
     ) p
     WHERE s.room > 0
     LIMIT $1
)
UPDATE webhook_deliveries d
   SET status = 'delivering', attempts = d.attempts + 1, last_attempt_at = now(),
       claimed_until = now() + make_interval(secs => $3)
  FROM webhook_subscriptions s
 WHERE d.ctid = ANY (ARRAY(SELECT row_ref FROM picked))  -- rows locked above: their addresses hold
   AND s.workspace_id = d.workspace_id AND s.id = d.subscription_id
RETURNING d.ctid AS row_ref, d.workspace_id, d.id, d.subscription_id, d.message_id, d.event_type, d.data,
          d.occurred_at, d.attempts, d.max_attempts, s.url, s.secret
"""

# Results of attempts, many at once. Only the claim a result belongs to (same attempts count,
# still in flight) is updated: a late result from a worker whose lease expired changes nothing.
COMPLETE = """
UPDATE webhook_deliveries d
   SET status = CASE WHEN r.status = 'pending' AND NOT s.enabled THEN 'cancelled' ELSE r.status END,
       next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + make_interval(secs => r.delay)
                              ELSE d.next_attempt_at END,
       claimed_until = NULL,
       delivered_at = CASE WHEN r.status = 'delivered' THEN now() END,
       last_response_status = r.response_status, last_response_body = r.response_body, last_error = r.error
  FROM unnest($1::text[], $2::bigint[], $3::int[], $4::text[], $5::float8[], $6::int[], $7::text[], $8::text[])
       AS r (workspace_id, id, attempts, status, delay, response_status, response_body, error),
       webhook_subscriptions s
 WHERE d.ctid = ANY ($9::tid[])  -- where the claim left them; a row reclaimed since has moved
   AND d.workspace_id = r.workspace_id AND d.id = r.id AND d.status = 'delivering' AND d.attempts = r.attempts
   AND s.workspace_id = d.workspace_id AND s.id = d.subscription_id
RETURNING d.workspace_id, d.subscription_id, d.status
"""

# After a batch of results with a success for the subscription: at most one write a second per
# subscription, whatever the delivery rate (and always when it was failing before).
SUBSCRIPTION_SUCCEEDED = """
UPDATE webhook_subscriptions SET last_delivery_at = now(), consecutive_failures = 0
 WHERE workspace_id = $1 AND id = $2
   AND (consecutive_failures > 0 OR last_delivery_at IS NULL OR last_delivery_at < now() - interval '1 second')
"""

SUBSCRIPTION_FAILED = """
UPDATE webhook_subscriptions SET consecutive_failures = consecutive_failures + $3
 WHERE workspace_id = $1 AND id = $2
"""

# Claims whose lease ran out belong to a worker that died (or hung) mid-attempt: back to the
# queue, due now, with the same message id. Rows being completed right now are skipped.
RECLAIM = """
UPDATE webhook_deliveries d
   SET status = CASE WHEN d.attempts >= d.max_attempts THEN 'failed' ELSE 'pending' END,
       next_attempt_at = now(), claimed_until = NULL,
       last_error = 'attempt abandoned: the worker stopped before it finished'
  FROM (SELECT workspace_id, id FROM webhook_deliveries
         WHERE status = 'delivering' AND claimed_until < now()
         LIMIT 1000
         FOR UPDATE SKIP LOCKED) x
 WHERE d.workspace_id = x.workspace_id AND d.id = x.id
"""

PRUNE = """
DELETE FROM webhook_deliveries d
 USING (SELECT workspace_id, id FROM webhook_deliveries
         WHERE created_at < now() - $1 * interval '1 day'
           AND status IN ('delivered', 'failed', 'cancelled')
         LIMIT $2) x
 WHERE d.workspace_id = x.workspace_id AND d.id = x.id
"""


async def claim(pool, limit: int, per_subscription: int, per_failing_subscription: int, lease_seconds: float):
    async with pool.acquire() as conn:
        return await conn.fetch(CLAIM, limit, per_subscription, lease_seconds, per_failing_subscription)


async def complete(pool, results: list[tuple]) -> list:
    """results: (workspace_id, id, attempts, status, delay, response_status, response_body, error, row_ref)."""
    columns = list(zip(*results))
    async with pool.acquire() as conn:
        done = await conn.fetch(COMPLETE, *columns)
        succeeded, failed = set(), {}
        for r in done:
            key = (r["workspace_id"], r["subscription_id"])
            if r["status"] == "delivered":
                succeeded.add(key)
            else:
                failed[key] = failed.get(key, 0) + 1
        # one autocommit statement per subscription: no lock is held across them (no deadlocks)
        for workspace_id, sub_id in sorted(succeeded):
            await conn.execute(SUBSCRIPTION_SUCCEEDED, workspace_id, sub_id)
        for (workspace_id, sub_id), n in sorted(failed.items()):
            if (workspace_id, sub_id) not in succeeded:
                await conn.execute(SUBSCRIPTION_FAILED, workspace_id, sub_id, n)
    return done


async def reclaim(pool) -> int:
    async with pool.acquire() as conn:
        return int((await conn.execute(RECLAIM)).split()[-1])


async def prune(pool, retention_days: float, batch: int = 5000) -> int:
    async with pool.acquire() as conn:
        return int((await conn.execute(PRUNE, float(retention_days), batch)).split()[-1])


# ---------------------------------------------------------------- planner statistics

# The tables the dispatcher fills, whose statistics it keeps fresh (platform.db.GrowthStats).
QUEUE_TABLES = ("events", "webhook_deliveries")


# /metrics: each count reads a partial index: the outbox's undispatched events, the delivery
# queue's pending and in-flight rows (delivered and failed rows are the log, not the queue).
QUEUE_DEPTHS = """
SELECT (SELECT count(*) FROM events WHERE webhooks_dispatched_at IS NULL) AS outbox,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'delivering') AS delivering
"""
