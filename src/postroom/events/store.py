"""SQL for the outbox (`events`): the one record that something happened.

This module holds the only INSERT INTO events. A statement that writes events together with
something else, in one round trip, composes insert_sql (as a data-modifying CTE, or as its last
part): timeline.store, contacts.bulk_store APPLY, lists.store _RECORDED.
"""

from __future__ import annotations

COLUMNS = "workspace_id, type, subject, data"


def insert_sql(rows: str) -> str:
    """INSERT INTO events of `rows`: a VALUES list or a SELECT giving the COLUMNS in order."""
    return f"INSERT INTO events ({COLUMNS})\n    {rows}"


EMIT = insert_sql("VALUES ($1, $2, $3, $4)")


async def emit(conn, workspace_id: str, event_type: str, subject: str | None, data: dict) -> None:
    """Records an event in the caller's transaction; it exists only if that transaction commits."""
    await conn.execute(EMIT, workspace_id, event_type, subject, data)
