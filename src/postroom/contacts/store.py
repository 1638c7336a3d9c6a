"""SQL for contacts, and the transaction that writes a contact with its side effects."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Awaitable, Callable
from typing import Any

from postroom.contacts import model, query
from postroom.platform import db
from postroom.events import store as events
from postroom.platform.times import format_time
from postroom.timeline import store as timeline

COLUMNS = ", ".join(model.FIELDS)
_N = len(model.FIELDS)

SELECT_FOR_UPDATE = f"SELECT {COLUMNS} FROM contacts WHERE workspace_id = $1 AND email = $2 FOR UPDATE"

INSERT = f"""
INSERT INTO contacts (workspace_id, {COLUMNS})
VALUES ($1, {', '.join(f'${i}' for i in range(2, _N + 2))})
ON CONFLICT (workspace_id, email) DO NOTHING
RETURNING {COLUMNS}
"""

# email ($2) is the key and never changes; every other column takes the merged value.
UPDATE = f"""
UPDATE contacts SET {', '.join(f'{f} = ${i}' for i, f in enumerate(model.FIELDS, start=2) if f != 'email')}
 WHERE workspace_id = $1 AND email = $2
RETURNING {COLUMNS}
"""


def _values(row: dict) -> list:
    return [row[f] for f in model.FIELDS]


# The optimistic path: read the row (and its version, xmin) without a lock, merge in Python, then
# write only if the row is still that version, in one statement together with its timeline entry,
# outbox event and count change. Two round trips for an upsert; a lost race just goes round again.
SELECT_VERSIONED = f"SELECT xmin, {COLUMNS} FROM contacts WHERE workspace_id = $1 AND email = $2"

_P = _N + 2  # first parameter after workspace_id and the row's values

CREATE = timeline.with_record(
    f"""INSERT INTO contacts (workspace_id, {COLUMNS})
        VALUES ($1, {', '.join(f'${i}' for i in range(2, _N + 2))})
        ON CONFLICT (workspace_id, email) DO NOTHING RETURNING email""",
    _P,
    "counted AS (INSERT INTO contact_counts (workspace_id, delta) SELECT $1, 1 FROM w)",
)

_SET = ", ".join(f"{f} = ${i}" for i, f in enumerate(model.FIELDS, start=2) if f != "email")
_IF_VERSION = f"WHERE workspace_id = $1 AND email = $2 AND xmin = ${_P}::text::xid"

UPDATE_IF_VERSION = f"UPDATE contacts SET {_SET} {_IF_VERSION} RETURNING email"
UPDATE_IF_VERSION_RECORDED = timeline.with_record(UPDATE_IF_VERSION, _P + 1)

OPTIMISTIC_ATTEMPTS = 3

# The tables a contact's creation grows, their statistics refreshed as they double (see
# platform.db.GrowthStats): a new installation filled by upserts or imports is not planned as
# empty until autovacuum looks. One tracker per process, fed by upsert and by imports (bulk_store).
GROWTH = db.GrowthStats(("contacts", "contact_lists", "contact_timeline", "events"))

# The follow-up of a write that changed the created_at of existing contacts: after_write(conn,
# workspace_id, emails), awaited in the write's transaction once the contacts are written, while
# the write holds them FOR UPDATE, with the emails of the contacts whose created_at it changed
# (never none). Capabilities above contacts that keep a copy of created_at move it there: today
# lists' memberships (lists.store.sync_contact_created_at). The caller supplies it, since
# contacts' store knows nothing above itself.
AfterWrite = Callable[[Any, str, list[str]], Awaitable[None]]


async def upsert(pool, workspace_id: str, incoming: dict, *, after_write: AfterWrite) -> tuple[str, dict]:
    """Creates or merges one contact atomically; returns ("created" | "updated", stored row).

    Each write is one statement that only applies to the version of the row it merged into, so
    concurrent upserts of one email are applied in some serial order and none is lost: exactly one
    creates, the rest update. Under heavy contention on one contact it falls back to locking.
    A write that changes created_at runs `after_write` (see AfterWrite) in its transaction.
    """
    async with pool.acquire() as conn:
        return await upsert_on(conn, pool, workspace_id, incoming, after_write=after_write)


async def upsert_on(conn, pool, workspace_id: str, incoming: dict, *, after_write: AfterWrite) -> tuple[str, dict]:
    """upsert on the caller's connection, inside its transaction when it has one (a send writes
    the contact and its message together: a send refused later leaves the contact as it was).
    `pool` is where the growth statistics refresh runs, outside that transaction."""
    email = incoming["email"]
    for _ in range(OPTIMISTIC_ATTEMPTS):
        current = await conn.fetchrow(SELECT_VERSIONED, workspace_id, email)
        now = dt.datetime.now(dt.timezone.utc)
        if current is None:
            new = model.merge(None, incoming, now)
            event = {"contact": model.to_wire(new)}
            if await conn.fetchval(CREATE, workspace_id, *_values(new),
                                   "contact.created", "contact", None, event):
                await _maybe_fold_count(conn, workspace_id)
                GROWTH.note(pool, 1)
                return "created", new
            continue  # created meanwhile by someone else: merge into theirs
        old = dict(current)
        version = str(old.pop("xmin"))
        new = model.merge(old, incoming, now)
        if new["created_at"] != old["created_at"]:
            # The contact moves in list order, and its memberships with it: that takes
            # the row's lock (see _upsert_locked). Rare: history imports, corrections.
            return await _upsert_locked(conn, workspace_id, incoming, after_write)
        changes = model.diff(old, new)
        if changes:
            written = await conn.fetchval(UPDATE_IF_VERSION_RECORDED, workspace_id, *_values(new), version,
                                          "contact.updated", "contact", changes,
                                          {"contact": model.to_wire(new)})
        else:
            written = await conn.execute(UPDATE_IF_VERSION, workspace_id, *_values(new), version) != "UPDATE 0"
        if written:
            return "updated", new
    return await _upsert_locked(conn, workspace_id, incoming, after_write)


async def _upsert_locked(conn, workspace_id: str, incoming: dict, after_write: AfterWrite) -> tuple[str, dict]:
    """The contended path: the row is locked first, so the merge cannot lose a race. Also the
    path of an upsert that changes created_at: copies of it kept above contacts (the list
    memberships' contact_created_at) are moved by `after_write`, in this transaction while the
    row is locked."""
    email = incoming["email"]
    async with conn.transaction():
        now = dt.datetime.now(dt.timezone.utc)
        existing = await conn.fetchrow(SELECT_FOR_UPDATE, workspace_id, email)
        if existing is None:
            new = model.merge(None, incoming, now)
            if await conn.fetchval(CREATE, workspace_id, *_values(new),
                                   "contact.created", "contact", None, {"contact": model.to_wire(new)}):
                return "created", new
            existing = await conn.fetchrow(SELECT_FOR_UPDATE, workspace_id, email)
        old = dict(existing)
        new = model.merge(old, incoming, now)
        stored = dict(await conn.fetchrow(UPDATE, workspace_id, *_values(new)))
        if stored["created_at"] != old["created_at"]:
            await after_write(conn, workspace_id, [email])
        changes = model.diff(old, stored)
        if changes:
            await timeline.record(conn, workspace_id, email, "contact.updated", "contact", email,
                                  changes, {"contact": model.to_wire(stored)})
        return "updated", stored


SELECT = f"SELECT {COLUMNS} FROM contacts WHERE workspace_id = $1 AND email = $2"


async def create_if_absent(conn, workspace_id: str, incoming: dict) -> tuple[bool, dict]:
    """Creates the contact when its email is new (with the timeline entry and outbox event of a
    creation); an existing contact is left exactly as it is. Returns (created, stored row).
    For unauthenticated callers (the public subscribe form), who may not change a contact.
    Runs in the caller's transaction when there is one. It never changes a created_at, so it
    takes no after_write (see AfterWrite)."""
    email = incoming["email"]
    async with conn.transaction():
        new = model.merge(None, incoming, dt.datetime.now(dt.timezone.utc))
        stored = await conn.fetchrow(INSERT, workspace_id, *_values(new))
        if stored is None:  # already there (or inserted by a concurrent transaction that committed)
            return False, dict(await conn.fetchrow(SELECT, workspace_id, email))
        stored = dict(stored)
        await timeline.record(conn, workspace_id, email, "contact.created", "contact", email,
                              model.diff(model.EMPTY, stored), {"contact": model.to_wire(stored)})
        await adjust_count(conn, workspace_id, 1)
        return True, stored



# Bare contacts (email and times) for the emails that have none, with each creation's timeline
# entry and outbox event (as upsert writes them: changes NULL, the event carrying the contact) and
# the count change, in one statement. $2 the emails, $3 the creation time, $4 each email's event.
CREATE_MISSING = f"""
WITH w AS (
    INSERT INTO contacts (workspace_id, email, created_at, updated_at)
    SELECT $1, e, $3, $3 FROM unnest($2::text[]) AS e ORDER BY e
    ON CONFLICT (workspace_id, email) DO NOTHING
    RETURNING email
), entry AS (
    {timeline.insert_sql("SELECT $1, w.email, 'contact.created', 'contact', w.email, NULL::jsonb FROM w")}
), event AS (
    {events.insert_sql("SELECT $1, 'contact.created', x.email, x.data FROM unnest($2::text[], $4::jsonb[]) AS x(email, data) JOIN w USING (email)")}
), counted AS (
    INSERT INTO contact_counts (workspace_id, delta) SELECT $1, count(*) FROM w HAVING count(*) > 0
)
SELECT email FROM w
"""


async def create_missing(conn, pool, workspace_id: str, emails: list[str]) -> list[str]:
    """Creates a contact with the email only for each of `emails` (normalised) that has none, in
    the caller's transaction, with the side effects of a creation; an existing contact is left
    exactly as it is. Returns the emails created. Other writers of a created contact wait for
    the caller's commit. It never changes a created_at, so it takes no after_write."""
    emails = sorted(set(emails))
    if not emails:
        return []
    now = dt.datetime.now(dt.timezone.utc)
    data = [{"contact": model.to_wire(model.merge(None, {"email": e}, now))} for e in emails]
    created = [r["email"] for r in await conn.fetch(CREATE_MISSING, workspace_id, emails, now, data)]
    if created:
        await _maybe_fold_count(conn, workspace_id)
        GROWTH.note(pool, len(created))
    return created

# ---------------------------------------------------------------- the contact count
#
# contacts.count must answer in milliseconds at millions of contacts; an exact count(*) is an
# index scan of the whole workspace (100-300 ms at 1M rows, measured). So each workspace's count
# is kept in contact_counts as a few delta rows whose sum is the total. Every transaction that
# inserts or deletes contacts appends its net change (adjust_count) in that same transaction.
# Appending never waits for anyone, so writers do not queue on a hot counter row and the call
# cannot deadlock, wherever it sits in the caller's transaction. Now and then a writer folds the
# workspace's rows into one, taking only rows no one else holds (SKIP LOCKED): the row count,
# and so the cost of a read, stays small.

FOLD_EVERY = 32    # a writer whose row id is a multiple of this folds
FOLD_AT_MOST = 1000

ADJUST_COUNT = "INSERT INTO contact_counts (workspace_id, delta) VALUES ($1, $2) RETURNING id"

FOLD_COUNT = f"""
WITH folded AS (
    DELETE FROM contact_counts
     WHERE workspace_id = $1 AND id IN (
           SELECT id FROM contact_counts WHERE workspace_id = $1
            ORDER BY id LIMIT {FOLD_AT_MOST} FOR UPDATE SKIP LOCKED)
    RETURNING delta
)
INSERT INTO contact_counts (workspace_id, delta)
SELECT $1, sum(delta) FROM folded HAVING count(*) > 0
"""

COUNT = "SELECT coalesce(sum(delta), 0)::bigint FROM contact_counts WHERE workspace_id = $1"

RECOUNT_DELETE = "DELETE FROM contact_counts WHERE workspace_id = $1"
RECOUNT_INSERT = """
INSERT INTO contact_counts (workspace_id, delta)
SELECT $1, count(*) FROM contacts WHERE workspace_id = $1
"""


async def adjust_count(conn, workspace_id: str, delta: int) -> None:
    """Adds `delta` (contacts inserted minus contacts deleted) to the workspace's count.

    Call it in the transaction that inserted/deleted the rows (anywhere in it; once with the
    net change is cheapest), so the count moves exactly when the rows do.
    """
    if not delta:
        return
    row_id = await conn.fetchval(ADJUST_COUNT, workspace_id, delta)
    if row_id % FOLD_EVERY == 0:
        await fold_count(conn, workspace_id)


async def _maybe_fold_count(conn, workspace_id: str) -> None:
    """For writers that add their delta row inside a larger statement (and so do not see its id):
    fold with the same average frequency as adjust_count does."""
    if random.randrange(FOLD_EVERY) == 0:
        await fold_count(conn, workspace_id)


async def fold_count(conn, workspace_id: str) -> None:
    """Replaces the workspace's delta rows (those not held by another transaction) by their sum."""
    await conn.execute(FOLD_COUNT, workspace_id)


async def count(pool, workspace_id: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(COUNT, workspace_id)


async def recount(conn, workspace_id: str) -> int:
    """Rebuilds the workspace's count from the contacts table (repair, bulk loads). Exact only
    while nothing else writes contacts of this workspace."""
    async with conn.transaction():
        await conn.execute(RECOUNT_DELETE, workspace_id)
        await conn.execute(RECOUNT_INSERT, workspace_id)
        return await conn.fetchval(COUNT, workspace_id)


# ---------------------------------------------------------------- single-contact reads

_C_COLUMNS = ", ".join(f"c.{f}" for f in model.FIELDS)

# The contact plus its segment memberships (the rows of contact_segments, which segments keeps:
# read here as stored, no import of segments); the list memberships are added above the store
# (contacts.api, from lists.store.memberships_for).
_GET = f"""
SELECT {_C_COLUMNS},
       ARRAY(SELECT ROW(s.segment_id, s.version, s.matched_at, s.computed_at) FROM contact_segments s
              WHERE s.workspace_id = c.workspace_id AND s.email = c.email
              ORDER BY s.segment_id) AS contact_segments
  FROM contacts c
"""
GET_BY_EMAIL = _GET + " WHERE c.workspace_id = $1 AND c.email = $2"
# Several contacts may share an external id: the most recently updated one wins (index
# contacts_external_id); the email breaks a tie so the answer is stable.
GET_BY_EXTERNAL_ID = _GET + """ WHERE c.workspace_id = $1 AND c.external_id = $2
 ORDER BY c.updated_at DESC, c.email LIMIT 1"""


async def _get(conn, sql: str, workspace_id: str, key: str) -> tuple[dict, list[dict]] | None:
    """(the contact in wire form, its segment memberships {email, segment_id, version,
    matched_at, computed_at} in segment_id order) as getByEmail/getByExternalID send them, or None."""
    row = await conn.fetchrow(sql, workspace_id, key)
    if row is None:
        return None
    segments = [{"email": row["email"], "segment_id": seg, "version": version, "matched_at": format_time(matched),
                 "computed_at": format_time(computed)}
                for seg, version, matched, computed in row["contact_segments"]]
    return model.to_wire(row), segments


async def get_by_email(conn, workspace_id: str, email: str) -> tuple[dict, list[dict]] | None:
    return await _get(conn, GET_BY_EMAIL, workspace_id, email)


async def get_by_external_id(conn, workspace_id: str, external_id: str) -> tuple[dict, list[dict]] | None:
    return await _get(conn, GET_BY_EXTERNAL_ID, workspace_id, external_id)


# ---------------------------------------------------------------- delete

DELETE_CONTACT = f"DELETE FROM contacts WHERE workspace_id = $1 AND email = $2 RETURNING {COLUMNS}"
DELETE_LIST_MEMBERSHIPS = "DELETE FROM contact_lists WHERE workspace_id = $1 AND email = $2"
# A deleted contact leaves its segments: each membership goes with its segment.left event (the
# contact's timeline goes too, so no entry is written for it). The segment's name is read from
# segments' table for the event's data, as the webhooks contract shapes it.
_LEAVE_SEGMENTS = """
WITH gone AS (DELETE FROM contact_segments WHERE workspace_id = $1 AND email = $2 RETURNING segment_id)
{insert}
"""
_LEFT_ROWS = ("SELECT $1, 'segment.left', $2, jsonb_build_object('email', $2::text, 'segment_id', g.segment_id,"
              " 'segment_name', s.name) FROM gone g"
              " LEFT JOIN segments s ON s.workspace_id = $1 AND s.id = g.segment_id")


# The follow-up of a contact's deletion: after_delete(conn, workspace_id, email), awaited in the
# deletion's transaction, for data above contacts that belongs to the contact (its custom events).
AfterDelete = Callable[[Any, str, str], Awaitable[None]]


async def delete(pool, workspace_id: str, email: str, after_delete: AfterDelete | None = None) -> dict | None:
    """Deletes the contact with its list and segment memberships (segment.left for each) and its
    timeline, and records `contact.deleted` (data: {"contact": <the contact as it was>}), in one transaction, which
    also runs `after_delete` (see AfterDelete). Returns the deleted contact's wire form, or None
    when there was none."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(DELETE_CONTACT, workspace_id, email)
        if row is None:
            return None
        if after_delete is not None:
            await after_delete(conn, workspace_id, email)
        await conn.execute(DELETE_LIST_MEMBERSHIPS, workspace_id, email)
        await conn.execute(_LEAVE_SEGMENTS.format(insert=events.insert_sql(_LEFT_ROWS)), workspace_id, email)
        await timeline.delete_for(conn, workspace_id, email)
        wire = model.to_wire(row)
        await events.emit(conn, workspace_id, "contact.deleted", email, {"contact": wire})
        await adjust_count(conn, workspace_id, -1)
        return wire


# ---------------------------------------------------------------- contacts.list

class Conditions:
    """The one builder for dynamic queries: conditions joined by AND, every value a $n
    parameter. Templates are constant SQL from this module with `{0}`, `{1}`... standing for
    the values given with them; no value is ever written into the SQL text."""

    def __init__(self) -> None:
        self.args: list = []
        self.parts: list[str] = []

    def param(self, value) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, template: str, *values) -> "Conditions":
        self.parts.append(template.format(*(self.param(v) for v in values)))
        return self

    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


# Substring filters. Emails are stored lower-cased by model.normalize_email, so the pattern is
# lower-cased the same way in Python and compared as is; other fields keep their case and are
# compared through lower() on both sides (what ILIKE does, but about twice as fast). These are
# the expressions the trigram indexes of migration 0005 are built on.
# email through lower() too, although it is stored lower-case: its trigram index is on that
# expression so that it can never serve an equality on the column (migration 0007).
_SUBSTRING_SQL = {"email": "lower(c.email) LIKE {0}"} | {
    f: f"lower(c.{f}) LIKE lower({{0}})" for f in ("external_id", "first_name", "last_name",
                                                   "full_name", "phone", "country", "language")}
assert set(_SUBSTRING_SQL) == set(query.SUBSTRING_FILTERS)

# Keyset paging on (created_at DESC, email ASC). The directions differ, so no row comparison;
# the leading `created_at <= c` is what the index contacts_created (workspace_id, created_at
# DESC, email) uses as its start position, so a page deep in the list costs what the first does.
_AFTER_SQL = "c.created_at <= {0} AND (c.created_at < {0} OR c.email > {1})"

# A member of a list: a membership that was not removed, on a list that was not deleted (the
# same rule as lists.store.memberships_for), optionally with a given status. The list's own
# check names the workspace as a value, not as c.workspace_id: uncorrelated, it is evaluated
# once per query instead of joined to every row (a join would cost the page its index order).
_LIST_LIVE_SQL = "EXISTS (SELECT 1 FROM lists l WHERE l.workspace_id = {1} AND l.id = {0} AND l.deleted_at IS NULL)"
_IN_LIST_SQL = """EXISTS (SELECT 1 FROM contact_lists cl
               WHERE cl.workspace_id = c.workspace_id AND cl.list_id = {0} AND cl.email = c.email
                 AND cl.deleted_at IS NULL)
          AND """ + _LIST_LIVE_SQL
_IN_LIST_WITH_STATUS_SQL = """EXISTS (SELECT 1 FROM contact_lists cl
               WHERE cl.workspace_id = c.workspace_id AND cl.list_id = {0} AND cl.email = c.email
                 AND cl.status = {2} AND cl.deleted_at IS NULL)
          AND """ + _LIST_LIVE_SQL
_ANY_LIST_WITH_STATUS_SQL = """EXISTS (SELECT 1 FROM contact_lists cl
               JOIN lists l ON l.workspace_id = cl.workspace_id AND l.id = cl.list_id AND l.deleted_at IS NULL
               WHERE cl.workspace_id = c.workspace_id AND cl.email = c.email AND cl.status = {0}
                 AND cl.deleted_at IS NULL)"""
_IN_SEGMENTS_SQL = """EXISTS (SELECT 1 FROM contact_segments cs
               WHERE cs.workspace_id = c.workspace_id AND cs.email = c.email AND cs.segment_id = ANY({0}::text[]))"""

# How many rows, in list order, the first attempt at a filtered page looks at (see list_contacts).
WINDOW = 5000

_ORDER = "c.created_at DESC, c.email"
_PAGE = """SELECT {columns} FROM contacts c WHERE {where} ORDER BY {order} LIMIT {limit}"""
_WINDOWED = """SELECT {columns} FROM (
    SELECT c.workspace_id, {columns} FROM contacts c WHERE {head} ORDER BY {order} LIMIT {window}
) c WHERE {where} ORDER BY {order} LIMIT {limit}"""
# created_at + interval '0' is created_at; it is written so because no index yields rows in
# that order: the planner must collect the matches (trigram/list indexes or a scan) and sort them.
_SET_ORDER = "c.created_at + interval '0' DESC, c.email"

# ---- the members of one list, in list order, from contact_lists_order (migration 0006)
#
# Each membership carries its contact's created_at (contact_created_at, kept equal to it by
# lists.store), so the index (workspace_id, list_id, status, contact_created_at DESC, email)
# holds a list's members of one status in list order, wherever they sit among the contacts.
# A page of one status is one run of that index from the cursor; a page of any status merges
# the runs of the five statuses (a Merge Append of five index scans: each run is a subquery
# with its own ORDER BY and LIMIT, which is what lets the planner merge them instead of
# collecting and sorting every member). The page's contacts are then read by primary key.
# Cost: at most five runs of `take` entries, plus limit + 1 contacts, at any depth.
_MEMBER_AFTER_SQL = " AND cl.contact_created_at <= {0} AND (cl.contact_created_at < {0} OR cl.email > {1})"
_MEMBER_RUN = """(SELECT cl.workspace_id, cl.email, cl.contact_created_at FROM contact_lists cl
      WHERE cl.workspace_id = {ws} AND cl.list_id = {list_id} AND cl.status = {status}
        AND cl.deleted_at IS NULL{after}
      ORDER BY cl.contact_created_at DESC, cl.email LIMIT {take})"""
_MEMBER_ORDER = "m.contact_created_at DESC, m.email"
# Each member's contact, by primary key. It is a LATERAL subquery that the planner may not merge
# (OFFSET 0), so it plans it as the single-row lookup it is: as a join, the planner may count on
# the lookups of many members sharing pages and look each one up through the trigram index of
# migration 0005 (its leading workspace_id makes `email = x` look cheap there: measured ~20 ms a
# member at 200,000 contacts, against ~0.02 ms by primary key). The workspace comes from the
# membership, not as a constant: a workspace its statistics barely know (a new one) looks nearly
# empty, and the planner would pick any index that leads with workspace_id (see
# bulk_store.SELECT_FOR_UPDATE).
_MEMBER_CONTACT = """CROSS JOIN LATERAL (
    SELECT c.workspace_id, {columns} FROM contacts c
     WHERE c.workspace_id = m.workspace_id AND c.email = m.email OFFSET 0
) c"""
_MEMBER_PAGE = """SELECT {columns} FROM (
    {runs}
) m {contact}
 WHERE {where} ORDER BY {order} LIMIT {limit}"""
# With other filters too, the first attempt looks at the list's next WINDOW members only: read in
# a subquery of their own and filtered outside it (filters are never moved into a LIMITed subquery).
_MEMBER_WINDOW = """SELECT {columns} FROM (
    SELECT c.workspace_id, {columns}, m.contact_created_at AS listed_at FROM (
    {runs}
    ) m {contact}
     ORDER BY {order} LIMIT {window}
) c WHERE {where} ORDER BY c.listed_at DESC, c.email LIMIT {limit}"""


def _filters(cond: Conditions, workspace_id: str, q: "query.ListQuery", lists: bool = True) -> None:
    """Adds the filters of q to cond; without `lists`, the list filters are left out (for a
    caller that reads the list's members from their index)."""
    for name, value in q.substrings:
        value = model.normalize_email(value) if name == "email" else value
        cond.add(_SUBSTRING_SQL[name], query.like_pattern(value))
    if lists and q.list_id is not None and q.list_status is not None:
        cond.add(_IN_LIST_WITH_STATUS_SQL, q.list_id, workspace_id, q.list_status)
    elif lists and q.list_id is not None:
        cond.add(_IN_LIST_SQL, q.list_id, workspace_id)
    elif lists and q.list_status is not None:
        cond.add(_ANY_LIST_WITH_STATUS_SQL, q.list_status)
    if q.segments:
        cond.add(_IN_SEGMENTS_SQL, list(q.segments))


def _conditions(workspace_id: str, q: "query.ListQuery") -> tuple[Conditions, int]:
    """Workspace and cursor conditions first (the head of the query), then the filters;
    returns the builder and how many of its parts form the head."""
    cond = Conditions()
    cond.add("c.workspace_id = {0}", workspace_id)
    if q.after is not None:
        cond.add(_AFTER_SQL, *q.after)
    head = len(cond.parts)
    _filters(cond, workspace_id, q)
    return cond, head


def _member_statement(workspace_id: str, q: "query.ListQuery", window: int | None = None) -> tuple[str, list]:
    """A page of list q.list_id (of q.list_status, or of any status) walked in list order from
    contact_lists_order, with q's other filters; with `window`, among its next `window` members only."""
    cond = Conditions()
    ws, list_id = cond.param(workspace_id), cond.param(q.list_id)
    after = _MEMBER_AFTER_SQL.format(cond.param(q.after[0]), cond.param(q.after[1])) if q.after else ""
    statuses = (q.list_status,) if q.list_status is not None else query.LIST_STATUSES
    fetch = q.limit + 1
    runs = "\n    UNION ALL\n    ".join(
        _MEMBER_RUN.format(ws=ws, list_id=list_id, status=cond.param(status), after=after, take=window or fetch)
        for status in statuses)
    cond.parts.append(_LIST_LIVE_SQL.format(list_id, ws))
    _filters(cond, workspace_id, q, lists=False)
    contact = _MEMBER_CONTACT.format(columns=_C_COLUMNS)
    if window is None:
        sql = _MEMBER_PAGE.format(columns=_C_COLUMNS, runs=runs, contact=contact, where=cond.sql(),
                                  order=_MEMBER_ORDER, limit=fetch)
    else:
        sql = _MEMBER_WINDOW.format(columns=_C_COLUMNS, runs=runs, contact=contact, where=cond.sql(),
                                    order=_MEMBER_ORDER, window=window, limit=fetch)
    return sql, cond.args


def list_statements(workspace_id: str, q: "query.ListQuery") -> list[tuple[str, list]]:
    """The statements list_contacts runs, in order, each as (sql, args); the next one runs
    only when the one before returned fewer than limit + 1 rows (see list_contacts)."""
    if q.list_id is not None:
        if not (q.substrings or q.segments):
            return [_member_statement(workspace_id, q)]
        cond, _ = _conditions(workspace_id, q)
        set_based = _PAGE.format(columns=_C_COLUMNS, where=cond.sql(), order=_SET_ORDER, limit=q.limit + 1)
        return [_member_statement(workspace_id, q, WINDOW), (set_based, cond.args)]
    cond, head = _conditions(workspace_id, q)
    fetch = q.limit + 1
    whole = cond.sql()
    if not q.filtered:
        return [(_PAGE.format(columns=_C_COLUMNS, where=whole, order=_ORDER, limit=fetch), cond.args)]
    rest = " AND ".join(cond.parts[head:])
    windowed = _WINDOWED.format(columns=_C_COLUMNS, head=" AND ".join(cond.parts[:head]), order=_ORDER,
                                window=WINDOW, where=rest, limit=fetch)
    set_based = _PAGE.format(columns=_C_COLUMNS, where=whole, order=_SET_ORDER, limit=fetch)
    return [(windowed, cond.args), (set_based, cond.args)]


async def list_contacts(conn, workspace_id: str, q: "query.ListQuery") -> tuple[list[dict], str | None]:
    """One page of contacts.list: (contacts in wire form, next cursor or None on the last page).
    The contacts only: with_contact_lists is answered above the store (contacts.api).

    Unfiltered, a page is one walk of contacts_created from the cursor: limit + 1 index entries
    at any depth. With list_id, it is one walk of the list's members in list order
    (contact_lists_order, see _member_statement): as cheap, wherever the members sit. Filtered
    otherwise, the matching rows may be anywhere, and the planner (which assumes they are
    spread evenly) would walk the whole workspace when they all sit far down the list.
    So such a page is looked for first among the next WINDOW rows (or list members) in list
    order (cheap, enough whenever matches are not rare); only when that does not fill the page
    is it asked by matches (trigram and list indexes, or a scan), then sorted. Both read the
    same conditions, so they answer the same rows.
    """
    fetch = q.limit + 1
    rows = []
    for sql, args in list_statements(workspace_id, q):
        rows = await conn.fetch(sql, *args)
        if len(rows) >= fetch:
            break
    page = rows[:q.limit]
    contacts = [model.to_wire(r) for r in page]
    next_cursor = None
    if len(rows) > q.limit:
        last = page[-1]
        next_cursor = query.encode_cursor(last["created_at"], last["email"])
    return contacts, next_cursor
