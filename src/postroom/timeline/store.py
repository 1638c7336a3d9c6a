"""SQL for the contact timeline. A timeline entry and its outbox event are written together."""

from __future__ import annotations

# One round trip writes what the contact's history shows and what webhooks will deliver.
RECORD = """
WITH entry AS (
    INSERT INTO contact_timeline (workspace_id, email, kind, entity_type, entity_id, changes)
    VALUES ($1, $2, $3, $4, $5, $6)
)
INSERT INTO events (workspace_id, type, subject, data) VALUES ($1, $3, $2, $7)
"""


async def record(conn, workspace_id: str, email: str, kind: str, entity_type: str, entity_id: str | None,
                 changes: dict | None, event_data: dict) -> None:
    """Adds a timeline entry `kind` for the contact and the outbox event of the same type."""
    await conn.execute(RECORD, workspace_id, email, kind, entity_type, entity_id, changes, event_data)
