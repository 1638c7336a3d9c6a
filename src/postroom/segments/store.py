"""SQL for segments: the segment rows, their membership (contact_segments) and the scans.

Membership changes have one writer, `apply_sql`: for a set of candidate contacts (a range of
emails for a scan's chunk, an array of emails for the incremental check), it upserts those the
predicate matches (version and computed_at set, matched_at kept), deletes the candidates' rows it
does not match, and writes `segment.joined` / `segment.left` to the timeline and the outbox, all
in one statement. A member kept by a rebuild gets nothing.
"""

from __future__ import annotations

import datetime as _dt

from postroom.events import store as events
from postroom.segments import compiler, model
from postroom.timeline import store as timeline

CHUNK = 5000  # contacts a scan evaluates and writes per transaction

_COLUMNS = ("id, name, color, tree, timezone, version, status, generated_sql, generated_args, depends, relative, "
            "recompute_after, scan_version, scan_after, created_at, updated_at")
_COUNT = ("(SELECT count(*) FROM contact_segments m WHERE m.workspace_id = g.workspace_id"
          " AND m.segment_id = g.id) AS users_count")

INSERT = f"""
INSERT INTO segments (workspace_id, id, name, color, tree, timezone, generated_sql, generated_args, depends,
                      relative, recompute_after, scan_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1)
ON CONFLICT (workspace_id, id) DO NOTHING
RETURNING {_COLUMNS}, 0::bigint AS users_count
"""
GET = f"SELECT {_COLUMNS}, {_COUNT} FROM segments g WHERE g.workspace_id = $1 AND g.id = $2 AND g.status <> 'deleted'"
LOCK = f"SELECT {_COLUMNS} FROM segments g WHERE g.workspace_id = $1 AND g.id = $2 AND g.status <> 'deleted' FOR UPDATE"
LIST = f"""SELECT {_COLUMNS}, {_COUNT} FROM segments g WHERE g.workspace_id = $1 AND g.status <> 'deleted'
 ORDER BY g.created_at DESC, g.id"""

# A tree change: a new version, rebuilt from the first contact.
SET_TREE = """
UPDATE segments SET tree = $3, generated_sql = $4, generated_args = $5, depends = $6, relative = $7,
       version = version + 1, status = 'building', scan_version = version + 1, scan_after = NULL,
       updated_at = clock_timestamp()
 WHERE workspace_id = $1 AND id = $2
"""
SET_FIELDS = """
UPDATE segments SET name = $3, color = $4, timezone = $5, recompute_after = $6, updated_at = clock_timestamp()
 WHERE workspace_id = $1 AND id = $2
"""
REBUILD = """
UPDATE segments SET version = version + 1, status = 'building', scan_version = version + 1, scan_after = NULL,
       updated_at = clock_timestamp()
 WHERE workspace_id = $1 AND id = $2 AND status <> 'deleted'
"""
MARK_DELETED = """
UPDATE segments SET status = 'deleted', scan_version = NULL, scan_after = NULL, recompute_after = NULL,
       updated_at = clock_timestamp()
 WHERE workspace_id = $1 AND id = $2 AND status <> 'deleted'
RETURNING name
"""

# ---------------------------------------------------------------- the one membership writer

# Candidates, as a restriction of any table's email column {a}: written so that each is an index
# range of that table's (workspace_id, email, ...) index. The last chunk of a scan has no upper
# bound ($6 is NULL then, and still named: a statement must use each of its parameters).
_RANGE = "{a}.email > coalesce($5::text, '') AND {a}.email <= $6::text"
_RANGE_OPEN = "{a}.email > coalesce($5::text, '') AND $6::text IS NULL"
_LISTED = "{a}.email = ANY ($5::text[])"
RANGE_FIRST, LISTED_FIRST = 7, 6  # the predicate's first parameter in each form


def apply_sql(predicate: str, cand: str) -> str:
    """$1 workspace, $2 segment id, $3 version, $4 segment name; the candidates `cand`: $5
    (exclusive) and $6 (inclusive, NULL: to the end) bounds of emails for _RANGE / _RANGE_OPEN,
    $5 an array of emails for _LISTED; the predicate's parameters follow (RANGE_FIRST /
    LISTED_FIRST), compiled with the same `cand` as its scope. Returns (joined, left)."""
    return f"""
WITH matched AS (
    SELECT c.email FROM contacts c WHERE c.workspace_id = $1 AND {cand.format(a="c")} AND {predicate}
),
kept AS (
    INSERT INTO contact_segments AS s (workspace_id, segment_id, email, version, matched_at, computed_at)
    SELECT $1, $2, email, $3, now(), now() FROM matched
    ON CONFLICT (workspace_id, segment_id, email)
    DO UPDATE SET version = EXCLUDED.version, computed_at = EXCLUDED.computed_at
    RETURNING s.email, s.matched_at, (s.xmax = 0) AS joined
),
-- the candidates' members that no longer match, as a set difference (a hash or a sort whatever
-- the statistics of a young membership table say; an anti join planned on them went quadratic)
stale AS (
    SELECT s.email FROM contact_segments s WHERE s.workspace_id = $1 AND s.segment_id = $2 AND {cand.format(a="s")}
    EXCEPT
    SELECT email FROM matched
),
gone AS (
    -- by key, from an array computed once: a plan that stays an index lookup whatever the estimates
    DELETE FROM contact_segments s
     WHERE s.workspace_id = $1 AND s.segment_id = $2 AND {cand.format(a="s")}
       AND s.email = ANY (ARRAY(SELECT email FROM stale))
    RETURNING s.email, s.version
),
changes AS (
    SELECT email, 'segment.joined' AS kind,
           jsonb_build_object('segment_id', jsonb_build_object('new', $2::text),
                              'version', jsonb_build_object('new', $3::int),
                              'matched_at', jsonb_build_object('new', matched_at)) AS changes
      FROM kept WHERE joined
    UNION ALL
    SELECT email, 'segment.left',
           jsonb_build_object('segment_id', jsonb_build_object('old', $2::text),
                              'version', jsonb_build_object('old', version))
      FROM gone
),
entry AS (
    {timeline.insert_sql("SELECT $1, email, kind, 'contact_segment', $2, changes FROM changes")}
),
event AS (
    {events.insert_sql("SELECT $1, kind, email, jsonb_build_object('email', email, 'segment_id', $2::text, "
                       "'segment_name', $4::text) FROM changes")}
)
SELECT count(*) FILTER (WHERE kind = 'segment.joined') AS joined,
       count(*) FILTER (WHERE kind = 'segment.left') AS "left"
  FROM changes
"""


# Every member leaves (segments.delete).
REMOVE_ALL = f"""
WITH gone AS (
    DELETE FROM contact_segments s WHERE s.workspace_id = $1 AND s.segment_id = $2 RETURNING s.email, s.version
),
entry AS (
    {timeline.insert_sql("SELECT $1, email, 'segment.left', 'contact_segment', $2, jsonb_build_object("
                         "'segment_id', jsonb_build_object('old', $2::text), "
                         "'version', jsonb_build_object('old', version)) FROM gone")}
),
event AS (
    {events.insert_sql("SELECT $1, 'segment.left', email, jsonb_build_object('email', email, 'segment_id', $2::text, "
                       "'segment_name', $3::text) FROM gone")}
)
SELECT count(*) FROM gone
"""


async def apply_listed(conn, workspace_id: str, seg, tree: model.Tree, emails: list[str]) -> tuple[int, int]:
    sql, args = compiler.compile_tree(tree, LISTED_FIRST, scope=_LISTED)
    row = await conn.fetchrow(apply_sql(sql, _LISTED), workspace_id, seg["id"], seg["version"], seg["name"],
                              emails, *args)
    return row["joined"], row["left"]


# ---------------------------------------------------------------- segments

def shown(tree: model.Tree, workspace_id: str) -> tuple[str, list]:
    """The predicate as generated_sql / sql_args show it: $1 the workspace, the tree's values after."""
    sql, args = compiler.compile_tree(tree, 2)
    return sql, model.json_args([workspace_id, *args])


async def create(conn, workspace_id: str, seg: model.SegmentInput, now: _dt.datetime):
    """The new segment (building, version 1, its scan pending), or None when the id is taken
    (by a deleted segment too)."""
    sql, args = shown(seg.parsed, workspace_id)
    after = model.next_recompute(seg.timezone, now) if seg.parsed.relative else None
    return await conn.fetchrow(INSERT, workspace_id, seg.id, seg.name, seg.color, seg.tree, seg.timezone, sql,
                               args, sorted(seg.parsed.depends), seg.parsed.relative, after)


async def get(conn, workspace_id: str, seg_id: str):
    return await conn.fetchrow(GET, workspace_id, seg_id)


async def all_live(conn, workspace_id: str) -> list:
    return await conn.fetch(LIST, workspace_id)


async def update(conn, workspace_id: str, seg: model.SegmentInput, now: _dt.datetime) -> bool:
    """Applies segments.update's rules in the caller's transaction; False when there is no such
    live segment. A changed tree (as canonical JSON) gives a new version and a rebuild; a changed
    timezone a new recompute time; name and color change in place."""
    current = await conn.fetchrow(LOCK, workspace_id, seg.id)
    if current is None:
        return False
    if model.canonical(current["tree"]) != model.canonical(seg.tree):
        sql, args = shown(seg.parsed, workspace_id)
        await conn.execute(SET_TREE, workspace_id, seg.id, seg.tree, sql, args, sorted(seg.parsed.depends),
                           seg.parsed.relative)
        tree_changed = True
    else:
        tree_changed = False
    after = current["recompute_after"]
    if not seg.parsed.relative:
        after = None
    elif tree_changed or after is None or seg.timezone != current["timezone"]:
        after = model.next_recompute(seg.timezone, now)
    await conn.execute(SET_FIELDS, workspace_id, seg.id, seg.name, seg.color, seg.timezone, after)
    return True


async def rebuild(conn, workspace_id: str, seg_id: str) -> bool:
    return (await conn.execute(REBUILD, workspace_id, seg_id)) != "UPDATE 0"


async def delete(conn, workspace_id: str, seg_id: str) -> bool:
    """Marks the segment deleted and removes every membership, each with its segment.left."""
    name = await conn.fetchval(MARK_DELETED, workspace_id, seg_id)
    if name is None:
        return False
    await conn.fetchval(REMOVE_ALL, workspace_id, seg_id, name)
    return True


PREVIEW = """
WITH m AS MATERIALIZED (SELECT c.email FROM contacts c WHERE c.workspace_id = $1 AND {predicate})
SELECT (SELECT count(*) FROM m) AS total, ARRAY(SELECT email FROM m ORDER BY email LIMIT $2) AS emails
"""


async def preview(conn, workspace_id: str, tree: model.Tree, limit: int) -> tuple[int, list[str], str, list]:
    """(matching contacts, the first `limit` emails in email order, the predicate, its args)."""
    sql, args = compiler.compile_tree(tree, 3)
    row = await conn.fetchrow(PREVIEW.format(predicate=sql), workspace_id, limit, *args)
    return (row["total"], list(row["emails"]), *shown(tree, workspace_id))


MEMBERS = """
SELECT email FROM contact_segments WHERE workspace_id = $1 AND segment_id = $2
 ORDER BY matched_at DESC, email LIMIT $3 OFFSET $4
"""


async def members(conn, workspace_id: str, seg_id: str, limit: int, offset: int) -> list[str]:
    return [r["email"] for r in await conn.fetch(MEMBERS, workspace_id, seg_id, limit, offset)]


STATUSES = "SELECT id, status FROM segments WHERE workspace_id = $1 AND id = ANY ($2::text[]) AND status <> 'deleted'"


async def statuses(conn, workspace_id: str, seg_ids: list[str]) -> dict[str, str]:
    """{id: building | active} of the live segments among `seg_ids` (for a broadcast's audience
    check: a segment must exist, and be active when the broadcast starts)."""
    return {r["id"]: r["status"] for r in await conn.fetch(STATUSES, workspace_id, seg_ids)}


# ---------------------------------------------------------------- scans: build, rebuild, recompute

# The next segment with a scan to run, locked for one chunk (another builder takes another).
CLAIM_SCAN = f"""
SELECT workspace_id, {_COLUMNS} FROM segments
 WHERE scan_version IS NOT NULL
 ORDER BY updated_at
 LIMIT 1
 FOR UPDATE SKIP LOCKED
"""
# The last email of the next chunk, or NULL when fewer than a chunk are left.
CHUNK_END = """
SELECT email FROM contacts WHERE workspace_id = $1 AND email > coalesce($2::text, '')
 ORDER BY email OFFSET $3 LIMIT 1
"""
# Memberships are derived data: a chunk lost to a crash in the moment after its commit is
# computed again from the unchanged scan position, so a scan does not wait for its WAL flush.
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"
ADVANCE = "UPDATE segments SET scan_after = $3 WHERE workspace_id = $1 AND id = $2"
FINISH = """
UPDATE segments SET status = CASE WHEN status = 'building' THEN 'active' ELSE status END,
       scan_version = NULL, scan_after = NULL
 WHERE workspace_id = $1 AND id = $2
"""


async def scan_step(pool, chunk: int = CHUNK) -> tuple[str, str, bool, int, int] | None:
    """One chunk of the oldest pending scan, in its own transaction: (workspace, segment, finished,
    joined, left), or None when no scan is pending (or every pending one is held by another
    builder). A scan that reaches the last contact leaves `building` for `active`."""
    async with pool.acquire() as conn, conn.transaction():
        seg = await conn.fetchrow(CLAIM_SCAN)
        if seg is None:
            return None
        await conn.execute(ASYNC_COMMIT)
        ws = seg["workspace_id"]
        tree = model.parse_tree(seg["tree"])
        upper = await conn.fetchval(CHUNK_END, ws, seg["scan_after"], chunk - 1)
        cand = _RANGE if upper is not None else _RANGE_OPEN
        sql, args = compiler.compile_tree(tree, RANGE_FIRST, scope=cand)
        row = await conn.fetchrow(apply_sql(sql, cand), ws, seg["id"], seg["version"], seg["name"],
                                  seg["scan_after"], upper, *args)
        if upper is None:
            await conn.execute(FINISH, ws, seg["id"])
        else:
            await conn.execute(ADVANCE, ws, seg["id"], upper)
        return ws, seg["id"], upper is None, row["joined"], row["left"]


DUE_RECOMPUTES = """
SELECT workspace_id, id, timezone FROM segments
 WHERE relative AND status = 'active' AND recompute_after <= $1 AND scan_version IS NULL
 ORDER BY recompute_after LIMIT $2
 FOR UPDATE SKIP LOCKED
"""
START_RECOMPUTE = """
UPDATE segments SET scan_version = version, scan_after = NULL, recompute_after = $3
 WHERE workspace_id = $1 AND id = $2
"""


async def start_recomputes(pool, now: _dt.datetime, limit: int = 100) -> int:
    """Starts the daily recompute of every relative-date segment whose time has come (`now`: the
    clock to read it by): a full scan at the same version, and the next time one day on."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(DUE_RECOMPUTES, now, limit)
        for r in rows:
            await conn.execute(START_RECOMPUTE, r["workspace_id"], r["id"], model.next_recompute(r["timezone"], now))
    return len(rows)


# ---------------------------------------------------------------- the outbox consumer's reads

CONSUMER = "segments"  # of the outbox (postroom.events.dispatch)

# Live segments an event's dependency keys can affect, locked against a concurrent scan chunk
# (which holds its segment FOR UPDATE), in id order.
AFFECTED = f"""
SELECT {_COLUMNS} FROM segments
 WHERE workspace_id = $1 AND status <> 'deleted' AND ($3 OR depends && $2::text[])
 ORDER BY id
 FOR SHARE
"""


async def affected(conn, workspace_id: str, keys: list[str], everything: bool) -> list:
    return await conn.fetch(AFFECTED, workspace_id, keys, everything)
