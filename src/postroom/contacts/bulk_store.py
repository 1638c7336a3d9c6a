"""SQL for bulk contact writes: imports in chunks, each chunk one transaction.

A chunk is written in a few round trips whatever its size (BEGIN, 1, CREATE, COPY, 4, count, COMMIT):

1. `SELECT ... FOR UPDATE` of the chunk's existing contacts, in email order (concurrent imports
   lock in the same order);
2. in Python, each email's rows are merged into its stored contact in input order (bulk.fold,
   i.e. model.merge), and the diff computed (model.diff): one merge rule for upsert and import.
   A creation's timeline entry has no diff (changes NULL), as upsert's: its event carries the
   contact (model.to_wire, encoded here; PostgreSQL parses that text into jsonb for about half
   what building the same object from the staged columns costs it);
3. the final rows are COPYed into a temporary table;
4. one statement applies them: UPDATE of the locked contacts, INSERT of the new ones, and the
   timeline entries and outbox events (sent as arrays); then the workspace's contact count
   moves by the number of new contacts (contacts.store.adjust_count), the caller's `after_write`
   runs for the contacts whose created_at changed (contacts.store.AfterWrite: their list
   memberships follow it) and its `after_chunk`, if any, for every contact of the chunk (the
   import's subscribe_to_lists), all in the chunk's transaction.

A contact created by someone else between (1) and (4) makes the INSERT skip it (ON CONFLICT DO
NOTHING, after waiting for that transaction): the statement reports fewer inserted rows than
planned and the chunk is retried, now finding the contact and merging into it. Deadlocks and
serialization failures are retried the same way. A chunk the database refuses for its data is
split in halves until the contact at fault is found: it is reported, its neighbours are written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import msgspec

from postroom.contacts import bulk, model, store as contacts_store
from postroom.events import store as events
from postroom.timeline import store as timeline

_encode = msgspec.json.Encoder().encode
COLUMNS = ", ".join(model.FIELDS)
_UPDATED = [f for f in model.FIELDS if f != "email"]
_JSON = model.JSON_FIELDS

# The chunk's existing contacts, locked in email order, each looked up by primary key. The
# workspace comes to each lookup from the outer list, not as a constant: planned with the
# workspace's own statistics, a workspace the statistics barely know (a new one, importing
# while another fills the table) looks nearly empty, and the planner scans it for every chunk
# (measured 620 ms a chunk of 2,000 at 50,000 contacts) or looks each email up through an index
# that does not lead with it (2 s). Without the value it plans the primary-key lookups it is.
SELECT_FOR_UPDATE = f"""
SELECT c.* FROM (SELECT DISTINCT $1::text AS workspace_id, unnest($2::text[]) AS email
                  ORDER BY email OFFSET 0) k
 CROSS JOIN LATERAL (SELECT {COLUMNS} FROM contacts c
                      WHERE c.workspace_id = k.workspace_id AND c.email = k.email FOR UPDATE) c
"""

# The staging table: the contact columns (JSON ones as text: binary COPY has no jsonb encoder for
# our codec) and whether the contact existed. The side effects are not staged but sent as arrays:
# next to a contact, its diff and event would make the staged row wide enough to be compressed
# into TOAST on the way in and out.
STAGE = "import_stage"
STAGE_COLUMNS = (*model.FIELDS, "existed")
CREATE_STAGE = f"""
CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS
SELECT {', '.join(f'{f}::text AS {f}' if f in _JSON else f for f in model.FIELDS)}, NULL::boolean AS existed
  FROM contacts WITH NO DATA
"""


def _value(f: str) -> str:
    return f"s.{f}::jsonb" if f in _JSON else f"s.{f}"


# $1 workspace; $2, $3, $4, $5: for each timeline entry and outbox event, the email, the kind, the
# changes (NULL for a creation) and the event data (JSON text). One statement: the updates of the
# locked contacts, the inserts of the new ones and every side effect. Returns how many new contacts
# were inserted: fewer than planned means a concurrent create, and the caller rolls back and retries.
# (Data-modifying CTEs all run, read or not. The arrays are read twice rather than through a
# materialised CTE, which would copy every event into a tuplestore, on disk beyond work_mem.)
_ENTRIES = """SELECT $1, x.email, x.kind, 'contact', x.email, x.changes::jsonb
      FROM unnest($2::text[], $3::text[], $4::text[]) AS x(email, kind, changes)"""
_EVENTS = """SELECT $1, x.kind, x.email, x.event::jsonb
      FROM unnest($2::text[], $3::text[], $5::text[]) AS x(email, kind, event)"""
APPLY = f"""
WITH updated AS (
    UPDATE contacts c SET {', '.join(f'{f} = {_value(f)}' for f in _UPDATED)}
      FROM {STAGE} s
     WHERE s.existed AND c.workspace_id = $1 AND c.email = s.email
), inserted AS (
    INSERT INTO contacts (workspace_id, {COLUMNS})
    SELECT $1, {', '.join(_value(f) for f in model.FIELDS)}
      FROM {STAGE} s WHERE NOT s.existed ORDER BY s.email
    ON CONFLICT (workspace_id, email) DO NOTHING
    RETURNING 1
), entry AS (
    {timeline.insert_sql(_ENTRIES)}
), event AS (
    {events.insert_sql(_EVENTS)}
)
SELECT count(*) FROM inserted
"""

MAX_ATTEMPTS = 8
# Errors about a row's data, worth splitting the chunk for: data exception (22), integrity
# constraint violation (23), program limit exceeded (54, e.g. an index row too large).
_ROW_ERROR_CLASSES = ("22", "23", "54")
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


class _ConcurrentCreate(Exception):
    """A contact planned as new was inserted by someone else meanwhile."""


_JSON_AT = tuple(i for i, f in enumerate(model.FIELDS) if f in _JSON)
CREATED, UPDATED = "contact.created", "contact.updated"

# after_chunk(conn, workspace_id, emails): awaited last in each chunk's transaction with the
# emails of every contact the chunk wrote, in email order (contacts.imports: subscribe_to_lists).
AfterChunk = Callable[[Any, str, list[str]], Awaitable[None]]


class _Plan:
    """A chunk ready to write: staged contacts and the side effects, as the columns APPLY takes."""

    def __init__(self) -> None:
        self.records: list[tuple] = []
        self.new = 0
        self.emails: list[str] = []
        self.kinds: list[str] = []
        self.changes: list[str | None] = []
        self.events: list[str] = []
        self.moved: list[str] = []  # existing contacts whose created_at this write changes

    def add(self, row: Mapping, existed: bool, kind: str | None, changes: dict | None) -> None:
        """One contact as stored after the write. A timeline entry and an event of `kind` go with
        it unless kind is None; the entry's changes are `changes` (None for a creation: the event
        carries the whole contact) and the event's data is {"contact": <the contact, wire form>}."""
        values = [row[f] for f in model.FIELDS]
        for i in _JSON_AT:
            if values[i] is not None:
                values[i] = _encode(values[i]).decode()
        values.append(existed)
        self.records.append(tuple(values))
        if not existed:
            self.new += 1
        if kind is not None:
            self.emails.append(row["email"])
            self.kinds.append(kind)
            self.changes.append(None if changes is None else _encode(changes).decode())
            self.events.append(_encode({"contact": model.to_wire(row)}).decode())


def _plan(existing: Mapping[str, Mapping], groups: Mapping[str, Sequence[dict]], emails: Sequence[str],
          now: dt.datetime) -> _Plan:
    """Each email's rows merged into its stored contact in order, with the diff and the event.
    A creation's timeline entry has no diff (changes NULL): its event carries the contact."""
    plan = _Plan()
    for email in emails:
        old = existing.get(email)
        row = bulk.fold(old, groups[email], now)
        if old is None:
            plan.add(row, False, CREATED, None)
            continue
        changes = model.diff(old, row)
        plan.add(row, True, UPDATED if changes else None, changes)
        if row["created_at"] != old["created_at"]:
            plan.moved.append(email)
    return plan


async def write_chunk(conn, workspace_id: str, groups: Mapping[str, Sequence[dict]], *,
                      after_write: contacts_store.AfterWrite, after_chunk: AfterChunk | None = None) -> dict[str, bool]:
    """Writes the contacts of one chunk in one transaction: email -> whether it existed before.

    `groups` maps each email to its parsed rows in input order (bulk.Batch.incoming).
    `after_write` (for the contacts whose created_at changed) and `after_chunk` (for all of
    them) run in the same transaction. Retries on a concurrent create, a deadlock or a
    serialization failure.
    """
    emails = sorted(groups)
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with conn.transaction():
                now = dt.datetime.now(dt.timezone.utc)
                existing = {r["email"]: dict(r) for r in await conn.fetch(SELECT_FOR_UPDATE, workspace_id, emails)}
                plan = _plan(existing, groups, emails, now)
                await conn.execute(CREATE_STAGE)
                await conn.copy_records_to_table(STAGE, records=plan.records, columns=STAGE_COLUMNS)
                if await conn.fetchval(APPLY, workspace_id, plan.emails, plan.kinds, plan.changes,
                                       plan.events) != plan.new:
                    raise _ConcurrentCreate
                await contacts_store.adjust_count(conn, workspace_id, plan.new)
                if plan.moved:  # their list memberships carry a copy of created_at
                    await after_write(conn, workspace_id, plan.moved)
                if after_chunk is not None:
                    await after_chunk(conn, workspace_id, emails)
            return {email: email in existing for email in emails}
        except (_ConcurrentCreate, *_RETRYABLE):
            if attempt == MAX_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def _row_error(exc: asyncpg.PostgresError) -> bool:
    return (getattr(exc, "sqlstate", None) or "")[:2] in _ROW_ERROR_CLASSES


async def _write(conn, workspace_id: str, batch: bulk.Batch, emails: Sequence[str],
                 after_write: contacts_store.AfterWrite, after_chunk: AfterChunk | None) -> None:
    try:
        existed = await write_chunk(conn, workspace_id, {e: batch.incoming(e) for e in emails},
                                    after_write=after_write, after_chunk=after_chunk)
    except asyncpg.PostgresError as exc:
        if not _row_error(exc):
            raise
        if len(emails) == 1:
            batch.failed(emails[0], f"could not store contact: {exc.message}")
            return
        half = len(emails) // 2  # each half commits on its own; the one at fault splits again
        await _write(conn, workspace_id, batch, emails[:half], after_write, after_chunk)
        await _write(conn, workspace_id, batch, emails[half:], after_write, after_chunk)
        return
    for email, was in existed.items():
        batch.applied(email, was)


_VALIDATE_SLICE = 250  # emails validated between two turns of the event loop


async def _validated(batch: bulk.Batch, emails: Sequence[str]) -> list[str]:
    """The emails of a chunk whose rows are valid, after validating their deferred rows
    (bulk.Batch.defer). Other requests get the event loop now and then."""
    out = []
    for i, email in enumerate(emails, 1):
        if batch.validate(email):
            out.append(email)
        if i % _VALIDATE_SLICE == 0:
            await asyncio.sleep(0)
    return out


async def write_batch(pool, workspace_id: str, batch: bulk.Batch, chunk_size: int = 2000, concurrency: int = 2, *,
                      after_write: contacts_store.AfterWrite, after_chunk: AfterChunk | None = None) -> None:
    """Writes every valid row of `batch` in chunks of `chunk_size` contacts, each its own
    transaction, and sets each row's operation (create / update, or error when the database
    refused that contact). The rows of one email always fall in one chunk, so chunks touch
    disjoint contacts and up to `concurrency` of them are written at once, each on a connection
    of `pool`. Each chunk runs `after_write` and `after_chunk` in its transaction (write_chunk).

    Rows the batch deferred (bulk.Batch.defer) are validated chunk by chunk ahead of the writers,
    up to `concurrency` chunks ahead: Python validates the next chunks while PostgreSQL applies
    the current ones, instead of the two taking turns.

    An error that is not about a row's data (an outage, say) propagates once the chunks in flight
    have stopped: the chunks committed before it stay committed, the rest are not written.
    """
    writers = max(1, concurrency)
    ready: asyncio.Queue = asyncio.Queue(maxsize=writers)  # validated chunks; None: no more

    async def validate_ahead():
        for emails in bulk.chunks(batch.keys(), chunk_size):
            emails = await _validated(batch, emails)
            if emails:
                await ready.put(emails)
        for _ in range(writers):
            await ready.put(None)

    async def writer():
        # a connection only once there is a chunk to write (none at all when every row was invalid)
        if (emails := await ready.get()) is None:
            return
        async with pool.acquire() as conn:
            while emails is not None:
                await _write(conn, workspace_id, batch, emails, after_write, after_chunk)
                contacts_store.GROWTH.note(pool, len(emails))
                emails = await ready.get()

    tasks = [asyncio.create_task(validate_ahead())] + [asyncio.create_task(writer()) for _ in range(writers)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


# ---------------------------------------------------------------- export

EXPORT = f"SELECT {COLUMNS} FROM contacts c WHERE c.workspace_id = $1 ORDER BY c.email"
# Members of any of the lists, of any status, whose membership was not removed.
EXPORT_LISTS = f"""
SELECT {COLUMNS} FROM contacts c
 WHERE c.workspace_id = $1
   AND EXISTS (SELECT 1 FROM contact_lists cl
                WHERE cl.workspace_id = $1 AND cl.email = c.email
                  AND cl.list_id = ANY($2::text[]) AND cl.deleted_at IS NULL)
 ORDER BY c.email
"""


async def export_rows(conn, workspace_id: str, list_ids: Sequence[str] = (), prefetch: int = 1000):
    """The workspace's contacts (or the members of `list_ids`) ordered by email, streamed with a
    server-side cursor from one snapshot: memory stays flat whatever the number of contacts."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if list_ids:
            cursor = conn.cursor(EXPORT_LISTS, workspace_id, list(list_ids), prefetch=prefetch)
        else:
            cursor = conn.cursor(EXPORT, workspace_id, prefetch=prefetch)
        async for row in cursor:
            yield row
