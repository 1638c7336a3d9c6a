"""SQL for open and click tracking (engagement contract 1.8, 1.9): what a recorded hit writes,
in one transaction, and the per-link click statistics (message_link_clicks, migration 0015).

The first open and the first click set the message's opened_at / clicked_at through
delivery.store.mark_message (set once, with its update_message_history entry); only for a
timestamp set now are the contract's own timeline entry (open_email / click_email) and the outbox
event (email.opened / email.clicked) written, so a repeated hit adds nothing but its link count.
"""

from __future__ import annotations

import datetime as _dt

from postroom.delivery import store as delivery_store
from postroom.events import store as events
from postroom.timeline import store as timeline
from postroom.tracking import model
from postroom.workspaces import store as workspaces_store

# The entry and its event in one round trip: $1 workspace, $2 contact email, $3 kind, $4 message
# id, $5 changes, $6 event type, $7 event data.
ENTRY_AND_EVENT = f"""
WITH entry AS (
    {timeline.insert_sql(f"VALUES ($1, $2, $3, '{delivery_store.ENTITY}', $4, $5::jsonb)")}
)
{events.insert_sql("VALUES ($1, $6, $2, $7::jsonb)")}
"""

# Every recorded click of a message's link, counted; nothing for a message the workspace does not
# have. `url` follows the latest click (the same link of one message always has one destination).
COUNT_CLICK = """
INSERT INTO message_link_clicks AS l (workspace_id, message_id, link_index, broadcast_id, url, clicks,
                                      first_clicked_at, last_clicked_at)
SELECT m.workspace_id, m.id, $3, m.broadcast_id, $4, 1, $5, $5
  FROM message_history m
 WHERE m.workspace_id = $1 AND m.id = $2
ON CONFLICT (workspace_id, message_id, link_index) DO UPDATE
   SET clicks = l.clicks + 1, url = EXCLUDED.url,
       first_clicked_at = least(l.first_clicked_at, EXCLUDED.first_clicked_at),
       last_clicked_at = greatest(l.last_clicked_at, EXCLUDED.last_clicked_at)
"""

LINK_STATS = """
SELECT link_index, url, clicks, first_clicked_at, last_clicked_at
  FROM message_link_clicks
 WHERE workspace_id = $1 AND message_id = $2
 ORDER BY link_index
"""

# Per link of a broadcast: all clicks, distinct messages, and the destination of the latest click
# (personalised links differ per recipient).
BROADCAST_LINK_STATS = """
SELECT link_index,
       (array_agg(url ORDER BY last_clicked_at DESC, message_id DESC))[1] AS url,
       sum(clicks)::bigint AS clicks,
       count(*) AS unique_clicks
  FROM message_link_clicks
 WHERE workspace_id = $1 AND broadcast_id = $2
 GROUP BY link_index
 ORDER BY unique_clicks DESC, link_index
"""


async def tracking_on(conn, workspace_id: str) -> bool:
    """Rule 3 of 1.7, read now: the workspace exists and its switch is on."""
    row = await workspaces_store.get(conn, workspace_id)
    return model.workspace_tracks(None if row is None else (row["settings"] or {}))


async def record_open(conn, workspace_id: str, message_id: str, at: _dt.datetime) -> bool:
    """A recorded open, in the caller's transaction: opened_at with open_email and email.opened
    when it is the first; True when it set opened_at."""
    row = await delivery_store.mark_message(conn, workspace_id, message_id, "opened_at", at)
    if row is None:
        return False
    await conn.execute(ENTRY_AND_EVENT, workspace_id, row["contact_email"], model.open_kind(row["channel"]),
                       message_id, model.changes("opened_at", row["opened_at"]), "email.opened",
                       model.event_data(row, row["opened_at"]))
    return True


async def record_click(conn, workspace_id: str, message_id: str, link_index: int, url: str,
                       at: _dt.datetime) -> bool:
    """A recorded click, in the caller's transaction: the link's count always (when the message
    exists), clicked_at with click_email and email.clicked when it is the first click, then
    opened_at with open_email and email.opened when no open was recorded before. True when it
    set clicked_at."""
    await conn.execute(COUNT_CLICK, workspace_id, message_id, link_index, url, at)
    row = await delivery_store.mark_message(conn, workspace_id, message_id, "clicked_at", at)
    if row is not None:
        await conn.execute(ENTRY_AND_EVENT, workspace_id, row["contact_email"], model.click_kind(row["channel"]),
                           message_id, model.changes("clicked_at", row["clicked_at"]), "email.clicked",
                           model.event_data(row, row["clicked_at"], url))
    await record_open(conn, workspace_id, message_id, at)
    return row is not None


async def link_stats(conn, workspace_id: str, message_id: str):
    return await conn.fetch(LINK_STATS, workspace_id, message_id)


async def broadcast_link_stats(conn, workspace_id: str, broadcast_id: str):
    return await conn.fetch(BROADCAST_LINK_STATS, workspace_id, broadcast_id)
