"""SQL for lists and list memberships.

Every change of a membership is one statement: the write of the membership feeds, through
`changed`, the contact's timeline entry and the outbox event of the same kind (_RECORDED), so a
change and its side effects cannot part, and a batch of any size costs one round trip.
"""

from __future__ import annotations

from postroom.events import store as events
from postroom.lists import model
from postroom.timeline import store as timeline

# ---------------------------------------------------------------- reading memberships

# Every membership, of any status, that was not removed, on lists that were not deleted.
MEMBERSHIPS_FOR = """
SELECT cl.email, cl.list_id, l.name AS list_name, cl.status, cl.created_at, cl.updated_at
  FROM contact_lists cl
  JOIN lists l ON l.workspace_id = cl.workspace_id AND l.id = cl.list_id AND l.deleted_at IS NULL
 WHERE cl.workspace_id = $1 AND cl.email = ANY($2::text[]) AND cl.deleted_at IS NULL
 ORDER BY cl.email, cl.created_at, cl.list_id
"""


def membership_wire(row) -> dict:
    return {"email": row["email"], "list_id": row["list_id"], "list_name": row["list_name"],
            "status": row["status"], "created_at": row["created_at"], "updated_at": row["updated_at"]}


async def memberships_for(conn, workspace_id: str, emails: list[str]) -> dict[str, list[dict]]:
    """email -> its memberships as sent in contact_lists (emails without any are absent)."""
    out: dict[str, list[dict]] = {}
    for row in await conn.fetch(MEMBERSHIPS_FOR, workspace_id, emails):
        out.setdefault(row["email"], []).append(membership_wire(row))
    return out


# ---------------------------------------------------------------- side effects of membership changes

def _rfc3339(column: str) -> str:
    """A timestamptz as contacts.model.format_time writes it: UTC, "Z", fraction without trailing zeros."""
    return (f"rtrim(rtrim(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '0'), '.')"
            " || 'Z'")


# `changed` (email, list_id, list_name, status, old_status, new_status, kind, created_at,
# updated_at, confirm_url) -> one timeline entry and one outbox event per row:
#   timeline changes: {"status": {"old", "new"}} (null: not a member), plus
#                     "confirm_url": the link as a plain string, on list.pending;
#   event data:       {"contact_list": {email, list_id, list_name, status, created_at, updated_at},
#                      "previous_status", and "confirm_url" on list.pending}.
# The signed link rides along for webhook subscribers that send their own confirmation; Postroom's
# own confirmation email (delivery.confirmations) links to the notification center instead.
_ENTRIES = """SELECT $1, c.email, c.kind, 'contact_list', c.list_id,
           jsonb_build_object('status', jsonb_build_object('old', c.old_status, 'new', c.new_status))
           || CASE WHEN c.confirm_url IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('confirm_url', c.confirm_url) END
      FROM changed c"""
_EVENTS = f"""SELECT $1, c.kind, c.email,
           jsonb_build_object('contact_list', jsonb_build_object(
                                  'email', c.email, 'list_id', c.list_id, 'list_name', c.list_name,
                                  'status', c.status, 'created_at', {_rfc3339('c.created_at')},
                                  'updated_at', {_rfc3339('c.updated_at')}),
                              'previous_status', c.old_status)
           || CASE WHEN c.confirm_url IS NULL THEN '{{}}'::jsonb
                   ELSE jsonb_build_object('confirm_url', c.confirm_url) END
      FROM changed c"""
_RECORDED = f"""
, entry AS (
    {timeline.insert_sql(_ENTRIES)}
)
{events.insert_sql(_EVENTS)}
RETURNING id
"""


def _recorded(write: str, changed: str) -> str:
    """WITH w AS (<write ... RETURNING the membership>), changed AS (<changed>) + _RECORDED."""
    return f"WITH w AS ({write}),\nchanged AS ({changed}){_RECORDED}"


# ---------------------------------------------------------------- import: set-based subscription

UNKNOWN_LIST_IDS = """
SELECT x.id
  FROM unnest($2::text[]) WITH ORDINALITY AS x(id, n)
 WHERE NOT EXISTS (SELECT 1 FROM lists l
                    WHERE l.workspace_id = $1 AND l.id = x.id AND l.deleted_at IS NULL)
 ORDER BY x.n
"""


async def unknown_list_ids(conn, workspace_id: str, list_ids: list[str]) -> list[str]:
    """The ids among list_ids that name no list (or a deleted one), once each, in input order."""
    seen: set[str] = set()
    out = []
    for row in await conn.fetch(UNKNOWN_LIST_IDS, workspace_id, list_ids):
        if row["id"] not in seen:
            seen.add(row["id"])
            out.append(row["id"])
    return out


MEMBERSHIP_COLUMNS = "email, list_id, status, created_at, updated_at"

# ---------------------------------------------------------------- contact_created_at
#
# Every membership row carries its contact's created_at (contact_created_at), so that a list's
# members can be read in contacts.list order from an index (contacts.store, migration 0006).
# It is written by the statement that creates the membership, from the contact row, which that
# statement locks FOR SHARE: a transaction changing the contact's created_at holds the row FOR
# UPDATE and moves the contact's memberships (sync_contact_created_at) before it commits, so a
# membership is written either before it (and moved by it) or after it (from the new value).
# Removed memberships keep following their contact too, so a membership that comes back is
# right as it stands. A contact's memberships go with it (contacts.store.delete).
#
# The contact is looked up in a subquery of its own (LATERAL, fenced by its FOR SHARE): as a
# join, the planner may take the trigram index of migration 0005 for `email = x` (its leading
# workspace_id makes that look cheap) or scan the workspace; by itself it is a primary-key lookup.
# For many contacts, the workspace too comes from the outer list rather than as a constant
# (EMAILS_OF): a workspace its statistics barely know (a new one) would look nearly empty, and
# the planner would scan it, or an index that does not lead with the email, for every lookup.
_CONTACT_OF = """(SELECT c.created_at FROM contacts c
                   WHERE c.workspace_id = {workspace} AND c.email = {email} FOR SHARE) c"""
EMAILS_OF = "(SELECT DISTINCT $1::text AS workspace_id, unnest($2::text[]) AS email OFFSET 0) e"

# The contacts' created_at copied onto every membership row of theirs where it differs. The
# memberships are found by email (contact_lists_email; `= ANY` says how many to the planner,
# which would otherwise scan the table), each contact by primary key.
SYNC_CONTACT_CREATED_AT = f"""
UPDATE contact_lists cl SET contact_created_at = x.created_at
  FROM (SELECT e.email, c.created_at
          FROM {EMAILS_OF}
         CROSS JOIN LATERAL (SELECT c.created_at FROM contacts c
                              WHERE c.workspace_id = e.workspace_id AND c.email = e.email OFFSET 0) c) x
 WHERE cl.workspace_id = $1 AND cl.email = ANY($2::text[]) AND cl.email = x.email
   AND cl.contact_created_at <> x.created_at
"""


async def sync_contact_created_at(conn, workspace_id: str, emails: list[str]) -> None:
    """Copies each contact's created_at onto its memberships (removed ones included). Call it in
    the transaction that changed the created_at of these contacts, after the change, with those
    contacts locked (FOR UPDATE, as an UPDATE does): see contact_created_at above. It is the
    `after_write` every caller of contacts' writes passes (contacts.store.AfterWrite)."""
    if emails:
        await conn.execute(SYNC_CONTACT_CREATED_AT, workspace_id, list(emails))


# model.on_import, set-based: absent or removed -> active (list.subscribed); any other membership
# is kept as it is. Rows go in key order so that concurrent imports lock them in the same order.
# Emails without a contact get no membership.
ADD_MEMBERS = _recorded(
    f"""
    INSERT INTO contact_lists AS cl (workspace_id, list_id, email, status, contact_created_at)
    WITH m AS MATERIALIZED (  -- each contact once, whatever the number of lists
        SELECT e.email, c.created_at
          FROM {EMAILS_OF}
         CROSS JOIN LATERAL {_CONTACT_OF.format(workspace="e.workspace_id", email="e.email")})
    SELECT $1, l.id, m.email, '{model.ACTIVE}', m.created_at
      FROM m CROSS JOIN lists l
     WHERE l.workspace_id = $1 AND l.id = ANY($3::text[]) AND l.deleted_at IS NULL
     ORDER BY l.id, m.email
    ON CONFLICT (workspace_id, list_id, email) DO UPDATE
       SET status = '{model.ACTIVE}', created_at = now(), updated_at = now(), deleted_at = NULL,
           contact_created_at = EXCLUDED.contact_created_at
     WHERE cl.deleted_at IS NOT NULL
    RETURNING cl.email, cl.list_id, cl.status, cl.created_at, cl.updated_at""",
    f"""
    SELECT w.email, w.list_id, l.name AS list_name, w.status, NULL::text AS old_status,
           w.status AS new_status, '{model.SUBSCRIBED}'::text AS kind, w.created_at, w.updated_at,
           NULL::text AS confirm_url
      FROM w JOIN lists l ON l.workspace_id = $1 AND l.id = w.list_id""")


async def add_members(conn, workspace_id: str, emails: list[str], list_ids: list[str]) -> None:
    """Import's subscribe_to_lists: each (email, list) becomes `active` when it was not a member
    (never, or removed); unsubscribed, bounced, complained and pending members keep their status.
    Each membership that changed gets its `list.subscribed` timeline entry and outbox event.

    `emails` must be normalised already; emails without a contact and unknown or deleted list ids
    are skipped (check the ids first with unknown_list_ids). The contacts are locked FOR SHARE.
    One statement whatever the number of rows; run it in the caller's transaction so that the
    memberships commit with the contacts.
    """
    if emails and list_ids:
        await conn.execute(ADD_MEMBERS, workspace_id, emails, list_ids)


# ---------------------------------------------------------------- lists

LIST_COLUMNS = "id, name, is_double_optin, is_public, description, double_optin_template, created_at, updated_at"

ALL_LISTS = f"""
SELECT {LIST_COLUMNS} FROM lists WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY created_at, id
"""

GET_LIST = f"SELECT {LIST_COLUMNS} FROM lists WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"

# FOR SHARE: a list cannot be deleted or changed under a transaction that subscribes to it.
LISTS_BY_IDS = f"""
SELECT {LIST_COLUMNS} FROM lists
 WHERE workspace_id = $1 AND id = ANY($2::text[]) AND deleted_at IS NULL
 ORDER BY id
"""
LISTS_BY_IDS_SHARE = LISTS_BY_IDS + " FOR SHARE"

# A deleted list keeps its row (and its id): creating that id again is a conflict.
CREATE_LIST = f"""
INSERT INTO lists (workspace_id, id, name, is_double_optin, is_public, description, double_optin_template)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (workspace_id, id) DO NOTHING
RETURNING {LIST_COLUMNS}
"""

LOCK_LIST = GET_LIST + " FOR UPDATE"

UPDATE_LIST = f"""
UPDATE lists SET name = $3, is_double_optin = $4, is_public = $5, description = $6, double_optin_template = $7,
                 updated_at = now()
 WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
RETURNING {LIST_COLUMNS}
"""

DELETE_LIST = """
UPDATE lists SET deleted_at = now(), updated_at = now()
 WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
"""

LIST_STATS = """
SELECT status, count(*) AS n FROM contact_lists
 WHERE workspace_id = $1 AND list_id = $2 AND deleted_at IS NULL
 GROUP BY status
"""


async def all_lists(conn, workspace_id: str):
    return await conn.fetch(ALL_LISTS, workspace_id)


async def get_list(conn, workspace_id: str, list_id: str):
    return await conn.fetchrow(GET_LIST, workspace_id, list_id)


async def lists_by_ids(conn, workspace_id: str, list_ids: list[str], share: bool = False) -> dict:
    """id -> list row for the ids that name a live list; `share` locks them for the transaction."""
    rows = await conn.fetch(LISTS_BY_IDS_SHARE if share else LISTS_BY_IDS, workspace_id, list_ids)
    return {row["id"]: row for row in rows}


async def create_list(conn, workspace_id: str, new: dict):
    """The new list, or None when the id is taken (by a live or a deleted list)."""
    return await conn.fetchrow(CREATE_LIST, workspace_id, new["id"], new["name"], new["is_double_optin"],
                               new["is_public"], new["description"], new[model.TEMPLATE_REF])


async def update_list(conn, workspace_id: str, list_id: str, body: dict, check_template=None):
    """Applies lists.update to the live list (None when there is none); raises model.ListError.
    `check_template(conn, ref)` is awaited, before anything is written, for a double_optin_template
    the request sets (templates sit above lists: the caller reads them)."""
    async with conn.transaction():
        stored = await conn.fetchrow(LOCK_LIST, workspace_id, list_id)
        if stored is None:
            return None
        new = model.parse_list_update(body, stored)
        ref = new[model.TEMPLATE_REF]
        if check_template is not None and ref is not None and body.get(model.TEMPLATE_REF) is not None:
            await check_template(conn, ref)
        return await conn.fetchrow(UPDATE_LIST, workspace_id, list_id, new["name"], new["is_double_optin"],
                                   new["is_public"], new["description"], ref)


async def delete_list(conn, workspace_id: str, list_id: str) -> bool:
    """Soft delete: the list and its memberships leave every read; the rows stay."""
    return await conn.execute(DELETE_LIST, workspace_id, list_id) == "UPDATE 1"


async def list_stats(conn, workspace_id: str, list_id: str) -> dict[str, int]:
    counts = {status: 0 for status in model.STATUSES}
    for row in await conn.fetch(LIST_STATS, workspace_id, list_id):
        counts[row["status"]] = row["n"]
    return counts


# ---------------------------------------------------------------- one membership

# The contact, locked before its memberships (FOR SHARE: it stays as it is until we commit), in
# the order every writer of a contact and its memberships takes them (contacts.store.upsert,
# the import): a subscription cannot hold a membership while it waits for its contact.
LOCK_CONTACT = "SELECT true FROM contacts WHERE workspace_id = $1 AND email = $2 FOR SHARE"

# Removed memberships are included: the caller treats them as "not a member".
LOCK_MEMBERSHIP = f"""
SELECT {MEMBERSHIP_COLUMNS}, deleted_at FROM contact_lists
 WHERE workspace_id = $1 AND list_id = $2 AND email = $3
   FOR UPDATE
"""

GET_MEMBERSHIP = """
SELECT cl.email, cl.list_id, l.name AS list_name, cl.status, cl.created_at, cl.updated_at
  FROM contact_lists cl
  JOIN lists l ON l.workspace_id = cl.workspace_id AND l.id = cl.list_id AND l.deleted_at IS NULL
 WHERE cl.workspace_id = $1 AND cl.list_id = $2 AND cl.email = $3 AND cl.deleted_at IS NULL
"""

# Parameters of a single change: $1 workspace, $2 list id, $3 email, $4 list name, $5 old status,
# $6 event kind, $7 confirmation URL or NULL, and $8 the new status where there is one.
_ONE = """
    SELECT w.email, w.list_id, $4::text AS list_name, w.status, $5::text AS old_status,
           {new_status} AS new_status, $6::text AS kind, w.created_at, w.updated_at, $7::text AS confirm_url
      FROM w"""

# Nothing is inserted when the contact does not exist (deleted since it was written).
INSERT_MEMBERSHIP = _recorded(f"""
    INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)
    SELECT $1, $2, $3, $8, c.created_at FROM {_CONTACT_OF.format(workspace="$1", email="$3")}
    ON CONFLICT (workspace_id, list_id, email) DO NOTHING
    RETURNING {MEMBERSHIP_COLUMNS}""", _ONE.format(new_status="w.status"))

# A removed membership that comes back is a new membership: it starts again at now(). Its
# contact_created_at followed the contact all along (see above).
SET_STATUS = _recorded(f"""
    UPDATE contact_lists
       SET status = $8, updated_at = now(),
           created_at = CASE WHEN deleted_at IS NULL THEN created_at ELSE now() END, deleted_at = NULL
     WHERE workspace_id = $1 AND list_id = $2 AND email = $3
    RETURNING {MEMBERSHIP_COLUMNS}""", _ONE.format(new_status="w.status"))

REMOVE_MEMBERSHIP = _recorded(f"""
    UPDATE contact_lists SET deleted_at = now(), updated_at = now()
     WHERE workspace_id = $1 AND list_id = $2 AND email = $3
    RETURNING {MEMBERSHIP_COLUMNS}""", _ONE.format(new_status="NULL::text"))


def _current(row) -> str | None:
    """The status of a locked membership row; None when there is none or it was removed."""
    return None if row is None or row["deleted_at"] is not None else row["status"]


def _with_name(row, lst) -> dict:
    out = dict(row)
    out["list_name"] = lst["name"]
    return out


async def get_membership(conn, workspace_id: str, list_id: str, email: str):
    return await conn.fetchrow(GET_MEMBERSHIP, workspace_id, list_id, email)


async def _lock(conn, workspace_id: str, list_id: str, email: str):
    return await conn.fetchrow(LOCK_MEMBERSHIP, workspace_id, list_id, email)


async def _apply(conn, sql: str, workspace_id: str, lst, email: str, current: str | None,
                 change: model.Change, link=None) -> bool:
    """Writes one change with its timeline entry and event; False when the write found no row to
    write (an INSERT that met a membership inserted meanwhile)."""
    url = await link(lst["id"]) if change.status == model.PENDING else None
    args = [workspace_id, lst["id"], email, lst["name"], current, change.kind, url]
    if change.status is not None:
        args.append(change.status)
    return await conn.fetchval(sql, *args) is not None


async def subscribe(conn, workspace_id: str, email: str, lists, public: bool, link, owner: bool = False) -> int:
    """Applies model.on_subscribe (model.on_owner_subscribe when `owner`: the request proved it
    comes from the mailbox) to the contact's membership of each list (list rows, locked by the
    caller with lists_by_ids(share=True)) and records each change. Call in a transaction.
    `link(list_id)` is awaited for the confirmation URL of a membership that becomes pending.
    Returns the number of memberships changed (none when the contact does not exist)."""
    changed = 0
    if not await conn.fetchval(LOCK_CONTACT, workspace_id, email):
        return changed
    for lst in sorted(lists, key=lambda r: r["id"]):  # one lock order for every transaction
        row = await _lock(conn, workspace_id, lst["id"], email)
        for _ in range(2):
            current = _current(row)
            change = (model.on_owner_subscribe(current, lst["is_double_optin"], lst["is_public"]) if owner
                      else model.on_subscribe(current, lst["is_double_optin"], public))
            if change is None:
                break
            sql = INSERT_MEMBERSHIP if row is None else SET_STATUS
            if await _apply(conn, sql, workspace_id, lst, email, current, change, link):
                changed += 1
                break
            # Inserted meanwhile by a concurrent transaction: decide again on what is there now.
            row = await _lock(conn, workspace_id, lst["id"], email)
    return changed


async def unsubscribe(conn, workspace_id: str, lists, email: str) -> int:
    """model.on_unsubscribe on the contact's membership of each list (rows locked by the caller
    with lists_by_ids(share=True)), each change with its timeline entry and list.unsubscribed
    event. Call in a transaction. Returns the number of memberships changed."""
    changed = 0
    if not await conn.fetchval(LOCK_CONTACT, workspace_id, email):
        return changed
    for lst in sorted(lists, key=lambda r: r["id"]):  # one lock order for every transaction
        current = _current(await _lock(conn, workspace_id, lst["id"], email))
        change = model.on_unsubscribe(current)
        if change is not None and await _apply(conn, SET_STATUS, workspace_id, lst, email, current, change):
            changed += 1
    return changed


async def set_status(conn, workspace_id: str, lst, email: str, status: str, link) -> bool:
    """contactLists.updateStatus; False when the contact is not in the list. Call in a transaction."""
    current = _current(await _lock(conn, workspace_id, lst["id"], email))
    if current is None:
        return False
    change = model.on_set_status(current, status)
    if change is not None:
        await _apply(conn, SET_STATUS, workspace_id, lst, email, current, change, link)
    return True


async def confirm(conn, workspace_id: str, lst, email: str) -> bool:
    """A confirmation link: pending -> active; True when it changed something. Raises
    model.ListError when the membership is not pending (nor active). Call in a transaction."""
    current = _current(await _lock(conn, workspace_id, lst["id"], email))
    change = model.on_confirm(current)
    if change is None:
        return False
    return await _apply(conn, SET_STATUS, workspace_id, lst, email, current, change)


async def remove(conn, workspace_id: str, lst, email: str) -> None:
    """contactLists.removeContact (the row stays, with deleted_at). Raises model.ListError 404
    when the contact is not in the list. Call in a transaction."""
    current = _current(await _lock(conn, workspace_id, lst["id"], email))
    change = model.on_remove(current)
    await _apply(conn, REMOVE_MEMBERSHIP, workspace_id, lst, email, current, change)


# ---------------------------------------------------------------- the members of a list, by pages

def _members_query(after: bool, status: bool) -> str:
    """Keyset pages in email order on the primary key: a page costs the same wherever it is."""
    where = ["workspace_id = $1", "list_id = $2", "deleted_at IS NULL"]
    if after:
        where.append("email > $4")
    if status:
        where.append(f"status = ${5 if after else 4}")
    return (f"SELECT {MEMBERSHIP_COLUMNS} FROM contact_lists WHERE {' AND '.join(where)} "
            f"ORDER BY email LIMIT $3")


_MEMBERS = {(a, s): _members_query(a, s) for a in (False, True) for s in (False, True)}


async def members_page(conn, workspace_id: str, lst, limit: int, after: str | None,
                       status: str | None) -> tuple[list[dict], str | None]:
    """Up to `limit` memberships of the list after the email `after`; and the last email when more follow."""
    args: list = [workspace_id, lst["id"], limit + 1]
    if after is not None:
        args.append(after)
    if status is not None:
        args.append(status)
    rows = await conn.fetch(_MEMBERS[(after is not None, status is not None)], *args)
    more = len(rows) > limit
    page = [membership_wire(_with_name(row, lst)) for row in rows[:limit]]
    return page, (page[-1]["email"] if more else None)
