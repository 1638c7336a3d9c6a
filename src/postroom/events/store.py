"""SQL for the outbox (`events`): the one record that something happened."""

from __future__ import annotations

EMIT = "INSERT INTO events (workspace_id, type, subject, data) VALUES ($1, $2, $3, $4)"


async def emit(conn, workspace_id: str, event_type: str, subject: str | None, data: dict) -> None:
    """Records an event in the caller's transaction; it exists only if that transaction commits."""
    await conn.execute(EMIT, workspace_id, event_type, subject, data)
