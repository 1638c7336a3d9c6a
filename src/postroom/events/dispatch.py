"""The outbox's consumer protocol: how a consumer (webhooks, delivery's confirmation emails,
segments) takes the events it has not consumed yet, a batch at a time, one workspace at a time,
in event order.

Each consumer has a column of `events` stamped when it consumed the row (NULL: not yet; a partial
index on (workspace_id, id) covers the NULL rows), an advisory lock of its own, and a channel it
NOTIFYs when a pass has handed work on to its workers. A consumer that wants only some event types
names them: its partial index and its statements then also say `type IN (...)`, so it never
writes the other events (their column stays NULL, outside its index). A pass:

    for workspace_id in await pending_workspaces(pool, consumer, n):
        async with locked(pool, consumer, workspace_id) as conn:   # None: another process has it
            rows = await claim_batch(conn, consumer, workspace_id, limit)   # claimed and marked
            ...  the consumer's own writes, in the same transaction
            await notify(conn, consumer)

A consumer that does its part in SQL composes `claim_cte` and `mark_cte` into one statement
instead of calling `claim_batch` (webhooks/store.py DISPATCH: one round trip a batch).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Consumer:
    column: str        # the column of `events` stamped when the consumer took the row
    lock_id: int       # first key of the consumer's two-key advisory locks (the second: the workspace)
    channel: str       # NOTIFYed after a pass that handed work on
    types: tuple[str, ...] = ()   # the event types it takes; () means every type

    def unconsumed(self) -> str:
        """The condition of its unconsumed rows, the predicate of its partial index word for word
        (constants, not parameters, so that the planner can match the index)."""
        condition = f"{self.column} IS NULL"
        if self.types:
            condition += " AND type " + (f"= '{self.types[0]}'" if len(self.types) == 1 else
                                         "IN (" + ", ".join(f"'{t}'" for t in self.types) + ")")
        return condition


# A lock id or a channel never changes: processes of two versions must take the same lock and
# hear each other.
CONSUMERS = {
    "webhooks": Consumer("webhooks_dispatched_at", 2003331889, "postroom_webhook_deliveries"),
    "confirmations": Consumer("confirmations_consumed_at", 1869640809, "postroom_confirmations",
                              types=("list.pending",)),
    "segments": Consumer("segments_consumed_at", 2003331890, "postroom_segments"),
}


def channel(consumer: str) -> str:
    return CONSUMERS[consumer].channel


# Workspaces with events the consumer has not looked at yet (through its partial index).
def _pending_workspaces(consumer: str) -> str:
    return f"SELECT DISTINCT workspace_id FROM events WHERE {CONSUMERS[consumer].unconsumed()} LIMIT $1"


# One pass of a consumer per workspace at a time (any number of worker processes): a
# transaction-scoped advisory lock, tried, never waited for. Serialising a workspace keeps what
# the consumer makes of its events in event order (the per-subject ordering of webhook deliveries
# relies on their ids following the events').
TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1, hashtext($2))"

NOTIFY = "SELECT pg_notify($1, '')"


def claim_cte(consumer: str) -> str:
    """`batch`: the next $2 unconsumed events of workspace $1, oldest first, with their row
    address (`row_ref`)."""
    return f"""batch AS MATERIALIZED (
    SELECT ctid AS row_ref, workspace_id, id, type, subject, data, created_at
      FROM events
     WHERE workspace_id = $1 AND {CONSUMERS[consumer].unconsumed()}
     ORDER BY id
     LIMIT $2
)"""


def mark_cte(consumer: str) -> str:
    """`marked`: stamps the rows of `batch` consumed."""
    return f"""marked AS (
    -- by row address: a plan that cannot turn into a scan of the whole outbox. (Should another
    -- writer update one of these rows meanwhile, it stays unconsumed and is handed out again by a
    -- later pass: the consumer drops the duplicates by event id.)
    UPDATE events SET {CONSUMERS[consumer].column} = now()
     WHERE ctid = ANY (ARRAY(SELECT row_ref FROM batch))
)"""


async def pending_workspaces(pool, consumer: str, limit: int) -> list[str]:
    async with pool.acquire() as conn:
        return [r["workspace_id"] for r in await conn.fetch(_pending_workspaces(consumer), limit)]


@contextlib.asynccontextmanager
async def locked(pool, consumer: str, workspace_id: str):
    """A connection in a transaction that holds the consumer's lock on the workspace, or None when
    another pass holds it."""
    async with pool.acquire() as conn, conn.transaction():
        held = await conn.fetchval(TRY_LOCK, CONSUMERS[consumer].lock_id, workspace_id)
        yield conn if held else None


async def claim_batch(conn, consumer: str, workspace_id: str, limit: int) -> list:
    """The next `limit` unconsumed events of the workspace, oldest first, claimed and marked
    consumed in one statement of the caller's transaction (under `locked`): rolled back, they are
    unconsumed again."""
    statement = f"WITH {claim_cte(consumer)}, {mark_cte(consumer)}\n" \
                "SELECT workspace_id, id, type, subject, data, created_at FROM batch ORDER BY id"
    return await conn.fetch(statement, workspace_id, limit)


async def notify(conn, consumer: str) -> None:
    """Wakes the consumer's workers (at commit, in every process)."""
    await conn.execute(NOTIFY, CONSUMERS[consumer].channel)
