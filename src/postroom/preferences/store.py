"""SQL and transactions of the preference center: the workspace's email_hmac secret, the message
an unsubscribe names, and the effects of an unsubscribe, a subscribe by the mailbox's owner and
a language or timezone change. Memberships change only through lists.store, contacts only
through contacts.store, a message's unsubscribed_at only through delivery.store.mark_message,
so their timeline entries and outbox events are the ones those capabilities write.
"""

from __future__ import annotations

import datetime as dt

from postroom.contacts import store as contacts_store
from postroom.delivery import store as delivery_store
from postroom.events import store as events
from postroom.lists import store as lists_store
from postroom.platform.times import format_time
from postroom.preferences import model
from postroom.timeline import store as timeline
from postroom.workspaces import secrets, store as workspaces_store

# The workspace secret behind email_hmac, used as its hex string (templates contract 5.2): the
# one the senders sign links with (delivery.transactional_api.EMAIL_HMAC_SECRET).
EMAIL_HMAC_SECRET = "email_hmac"

MESSAGE = """
SELECT id, contact_email, list_id, template_id, broadcast_id, channel
  FROM message_history WHERE workspace_id = $1 AND id = $2
"""

INSERT_TIMELINE = timeline.insert_sql("VALUES ($1, $2, $3, $4, $5, $6)")


async def workspace(conn, workspace_id: str, key_bytes: bytes):
    """(settings, email_hmac secret string or None), or None when there is no such workspace.
    The secret is never made here: a workspace that has none has sent no link to check."""
    row = await workspaces_store.get(conn, workspace_id)
    if row is None:
        return None
    secret = await secrets.workspace_secret(conn, workspace_id, key_bytes, EMAIL_HMAC_SECRET, create=False)
    return row["settings"] or {}, (secret.hex() if secret is not None else None)


async def message(conn, workspace_id: str, message_id: str | None):
    if message_id is None:
        return None
    return await conn.fetchrow(MESSAGE, workspace_id, message_id)


async def unsubscribe(conn, workspace_id: str, email: str, list_ids, msg) -> int:
    """One transaction: every active or pending membership of the contact on `list_ids` becomes
    unsubscribed (lists' rule and records); `msg` (the message the request named, already known
    to be this contact's) gets its unsubscribed_at once, with the contract's timeline entry
    `unsubscribe_email` and outbox event `email.unsubscribed`. Returns the memberships changed."""
    async with conn.transaction():
        found = await lists_store.lists_by_ids(conn, workspace_id, list(list_ids), share=True)
        changed = await lists_store.unsubscribe(conn, workspace_id, list(found.values()), email)
        if msg is not None:
            at = dt.datetime.now(dt.timezone.utc)
            marked = await delivery_store.mark_message(conn, workspace_id, msg["id"], "unsubscribed_at", at)
            if marked is not None:
                stamp = format_time(marked["unsubscribed_at"])
                await conn.execute(INSERT_TIMELINE, workspace_id, email, "unsubscribe_email", delivery_store.ENTITY,
                                   msg["id"], {"unsubscribed_at": {"old": None, "new": stamp}})
                await events.emit(conn, workspace_id, "email.unsubscribed", email, model.unsubscribed_event(msg, stamp))
    return changed


async def contact(conn, workspace_id: str, email: str) -> dict | None:
    """The contact in wire form, or None."""
    found = await contacts_store.get_by_email(conn, workspace_id, email)
    return None if found is None else found[0]


async def update_contact(conn, pool, workspace_id: str, email: str, changes: dict) -> bool:
    """Sets language and/or timezone of an existing contact (contacts' upsert, with its
    contact.updated entry and event); False when there is no such contact (none is created)."""
    async with conn.transaction():
        if await conn.fetchval(LOCK_CONTACT, workspace_id, email) is None:
            return False
        await contacts_store.upsert_on(conn, pool, workspace_id, {"email": email, **changes},
                                       after_write=lists_store.sync_contact_created_at)
    return True


LOCK_CONTACT = "SELECT true FROM contacts WHERE workspace_id = $1 AND email = $2 FOR UPDATE"


async def memberships(conn, workspace_id: str, email: str) -> list[dict]:
    return (await lists_store.memberships_for(conn, workspace_id, [email])).get(email, [])
