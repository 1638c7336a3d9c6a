"""SQL for the contact timeline. A timeline entry and its outbox event are written together.

This module holds the only INSERT INTO contact_timeline: a statement that writes entries with
something else, in one round trip, composes insert_sql (with_record here, contacts.bulk_store
APPLY, lists.store _RECORDED), and the outbox's part comes from events.store.insert_sql.
"""

from __future__ import annotations

from postroom.events import store as events

COLUMNS = "workspace_id, email, kind, entity_type, entity_id, changes"
COLUMNS_AT = COLUMNS + ", created_at"  # entries of facts that happened at a time of their own


def insert_sql(rows: str, at: bool = False) -> str:
    """INSERT INTO contact_timeline of `rows`: a VALUES list or a SELECT giving the COLUMNS in order
    (COLUMNS_AT with `at`: the entry's created_at is given, e.g. a custom event's occurred_at)."""
    return f"INSERT INTO contact_timeline ({COLUMNS_AT if at else COLUMNS})\n    {rows}"


# One round trip writes what the contact's history shows and what webhooks will deliver.
RECORD = f"""
WITH entry AS (
    {insert_sql("VALUES ($1, $2, $3, $4, $5, $6)")}
)
{events.insert_sql("VALUES ($1, $3, $2, $7)")}
"""


def with_record(write_sql: str, first_param: int, *more_ctes: str) -> str:
    """One statement that runs `write_sql` (a data-modifying statement whose RETURNING gives
    `email`, with $1 = workspace_id) and, for each row it returns, writes the timeline entry and
    the outbox event as `record` does. The entry's parameters follow the write's own, from
    `first_param` on: kind, entity_type, changes, event_data (entity_id is the email). `more_ctes`
    may add further writes reading `w`. The statement returns how many rows the write touched."""
    k, t, c, d = (f"${i}" for i in range(first_param, first_param + 4))
    extra = "".join(f",\n{cte}" for cte in more_ctes)
    return f"""
WITH w AS ({write_sql}),
entry AS (
    {insert_sql(f"SELECT $1, w.email, {k}, {t}, w.email, {c}::jsonb FROM w")}
),
event AS (
    {events.insert_sql(f"SELECT $1, {k}, w.email, {d}::jsonb FROM w")}
){extra}
SELECT count(*) FROM w
"""


async def record(conn, workspace_id: str, email: str, kind: str, entity_type: str, entity_id: str | None,
                 changes: dict | None, event_data: dict) -> None:
    """Adds a timeline entry `kind` for the contact and the outbox event of the same type."""
    await conn.execute(RECORD, workspace_id, email, kind, entity_type, entity_id, changes, event_data)


# Newest first by id (ids grow with insertion); `before` is the id of the last entry of the
# previous page. coalesce keeps `id < ...` an index bound of contact_timeline_email on every
# page, so a page costs the same at any depth.
LIST_FOR = """
SELECT id, email, kind, entity_type, entity_id, changes, created_at
  FROM contact_timeline
 WHERE workspace_id = $1 AND email = $2 AND id < coalesce($3::bigint, 9223372036854775807)
 ORDER BY id DESC
 LIMIT $4
"""

DELETE_FOR = "DELETE FROM contact_timeline WHERE workspace_id = $1 AND email = $2"


async def list_for(conn, workspace_id: str, email: str, before: int | None, limit: int) -> list:
    """Up to `limit` entries of the contact's timeline older than entry `before` (None: newest)."""
    return await conn.fetch(LIST_FOR, workspace_id, email, before, limit)


async def delete_for(conn, workspace_id: str, email: str) -> None:
    """Removes the contact's whole timeline (in the caller's transaction: contacts.delete)."""
    await conn.execute(DELETE_FOR, workspace_id, email)
