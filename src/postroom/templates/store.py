"""SQL for templates (versions and their heads) and template blocks.

A template is a head row (template_heads: the lock, the latest version, what the list filters
and orders by) and its versions (templates), written together: create inserts both in one
transaction; update locks the head FOR UPDATE and appends version latest + 1, so concurrent
updates of one template all succeed, one after the other; delete marks the head and every
version. Nothing else changes a written version.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

COLUMNS = ("id, version, name, channel, category, email, web, template_macro_id, integration_id, test_data, "
           "settings, translations, created_at, updated_at, deleted_at")
_T_COLUMNS = ", ".join("t." + c.strip() for c in COLUMNS.split(","))

# ---------------------------------------------------------------- writes

CREATE_HEAD = """
INSERT INTO template_heads (workspace_id, id, latest_version, category, channel, updated_at)
VALUES ($1, $2, 1, $3, $4, clock_timestamp())
ON CONFLICT (workspace_id, id) DO NOTHING
RETURNING updated_at
"""

INSERT_VERSION = f"""
INSERT INTO templates (workspace_id, id, version, name, channel, category, email, web, template_macro_id,
                       integration_id, test_data, settings, translations, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
RETURNING {COLUMNS}
"""

# The head of a live template, locked until the caller's transaction ends. Alone: a join with the
# latest version would be re-checked, after waiting for the lock, against the version row read
# before the wait, and find nothing once another update has moved the head.
LOCK_HEAD = """
SELECT latest_version FROM template_heads
 WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
   FOR UPDATE
"""

MOVE_HEAD = """
UPDATE template_heads SET latest_version = $3, category = $4, channel = $5, updated_at = $6
 WHERE workspace_id = $1 AND id = $2
"""

DELETE_HEAD = """
UPDATE template_heads SET deleted_at = $3 WHERE workspace_id = $1 AND id = $2
"""

DELETE_VERSIONS = """
UPDATE templates SET deleted_at = $3 WHERE workspace_id = $1 AND id = $2
"""


def _version_args(workspace_id: str, fields: Mapping, version: int, created_at, updated_at) -> tuple:
    return (workspace_id, fields["id"], version, fields["name"], fields["channel"], fields["category"],
            fields["email"], fields["web"], fields["template_macro_id"], fields.get("integration_id"),
            fields["test_data"], fields["settings"], fields["translations"], created_at, updated_at)


async def create(conn, workspace_id: str, fields: Mapping):
    """Version 1 of a new template; None when the id is taken (by a live or a deleted template).
    A concurrent create of the same id waits for this one's commit and then gets None."""
    async with conn.transaction():
        created_at = await conn.fetchval(CREATE_HEAD, workspace_id, fields["id"], fields["category"],
                                         fields["channel"])
        if created_at is None:
            return None
        return await conn.fetchrow(INSERT_VERSION, *_version_args(workspace_id, fields, 1, created_at, created_at))


async def _lock_latest(conn, workspace_id: str, template_id: str):
    """The latest version of a live template, its head locked; None when there is none."""
    version = await conn.fetchval(LOCK_HEAD, workspace_id, template_id)
    if version is None:
        return None
    return await conn.fetchrow(VERSION, workspace_id, template_id, version)


async def update(conn, workspace_id: str, template_id: str, revise: Callable[[Mapping], Mapping]):
    """Appends the version `revise(latest)` describes (it may raise to refuse the update); None
    when there is no live template of that id. The head stays locked from the read of the latest
    version to the commit of the next, so updates of one template are serialised."""
    async with conn.transaction():
        latest = await _lock_latest(conn, workspace_id, template_id)
        if latest is None:
            return None
        fields = revise(latest)
        version = latest["version"] + 1
        now = await conn.fetchval("SELECT clock_timestamp()")
        row = await conn.fetchrow(INSERT_VERSION, *_version_args(workspace_id, fields, version,
                                                                   fields["created_at"], now))
        await conn.execute(MOVE_HEAD, workspace_id, template_id, version, fields["category"], fields["channel"], now)
    return row


async def delete(conn, workspace_id: str, template_id: str, refuse: Callable[[Mapping], None]) -> bool:
    """Soft delete: the head and every version get one deleted_at. False when there is no live
    template of that id; `refuse(latest)` may raise to keep it (integration-managed)."""
    async with conn.transaction():
        latest = await _lock_latest(conn, workspace_id, template_id)
        if latest is None:
            return False
        refuse(latest)
        now = await conn.fetchval("SELECT clock_timestamp()")
        await conn.execute(DELETE_HEAD, workspace_id, template_id, now)
        await conn.execute(DELETE_VERSIONS, workspace_id, template_id, now)
    return True


# ---------------------------------------------------------------- reads

def latest_live_sql(workspace: str, template_id: str) -> str:
    """The latest version of a live template, as a query over two SQL expressions (parameters, or
    columns of an outer query that composes it)."""
    return f"""
SELECT {_T_COLUMNS}
  FROM template_heads h
  JOIN templates t ON t.workspace_id = h.workspace_id AND t.id = h.id AND t.version = h.latest_version
 WHERE h.workspace_id = {workspace} AND h.id = {template_id} AND h.deleted_at IS NULL
"""


LATEST_LIVE = latest_live_sql("$1", "$2")

VERSION = f"SELECT {COLUMNS} FROM templates WHERE workspace_id = $1 AND id = $2 AND version = $3"
MAX_VERSION = 2 ** 31 - 1  # the column is an integer

# The latest version of every live template, newest first; a filter of NULL matches everything.
LIST = f"""
SELECT {_T_COLUMNS}
  FROM template_heads h
  JOIN templates t ON t.workspace_id = h.workspace_id AND t.id = h.id AND t.version = h.latest_version
 WHERE h.workspace_id = $1 AND h.deleted_at IS NULL
   AND ($2::text IS NULL OR h.category = $2) AND ($3::text IS NULL OR h.channel = $3)
 ORDER BY h.updated_at DESC, h.id
"""


async def latest_live(conn, workspace_id: str, template_id: str):
    """The latest version of a template that is not deleted, or None: what every sender uses."""
    return await conn.fetchrow(LATEST_LIVE, workspace_id, template_id)


async def get(conn, workspace_id: str, template_id: str, version: int | None):
    """templates.get (2.2): with no version, the latest of a live template; with one, that
    version whether or not the template was deleted since (message history reads it)."""
    if version is None:
        return await latest_live(conn, workspace_id, template_id)
    if version > MAX_VERSION:  # a valid integer (int64, as Notifuse reads it) that no version can be
        return None
    return await conn.fetchrow(VERSION, workspace_id, template_id, version)


async def live_version(conn, workspace_id: str, template_id: str, version: int | None):
    """A reference to a template (a list's double_optin_template): that version (the latest when
    0 or None) of a template that is not deleted, or None."""
    template = await latest_live(conn, workspace_id, template_id)
    if template is not None and version and template["version"] != version:
        template = await get(conn, workspace_id, template_id, version)
    return template


async def list_latest(conn, workspace_id: str, category: str | None, channel: str | None):
    return await conn.fetch(LIST, workspace_id, category, channel)


# ---------------------------------------------------------------- template blocks

BLOCK_COLUMNS = "id, name, block, created, updated"

CREATE_BLOCK = f"""
INSERT INTO template_blocks (workspace_id, id, name, block, created, updated)
VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp())
RETURNING {BLOCK_COLUMNS}
"""

UPDATE_BLOCK = f"""
UPDATE template_blocks SET name = $3, block = $4, updated = clock_timestamp()
 WHERE workspace_id = $1 AND id = $2
RETURNING {BLOCK_COLUMNS}
"""

GET_BLOCK = f"SELECT {BLOCK_COLUMNS} FROM template_blocks WHERE workspace_id = $1 AND id = $2"

DELETE_BLOCK = "DELETE FROM template_blocks WHERE workspace_id = $1 AND id = $2"

# In creation order; `= ANY` serves the workspaces of workspaces.list in one statement.
LIST_BLOCKS = f"""
SELECT workspace_id, {BLOCK_COLUMNS} FROM template_blocks WHERE workspace_id = ANY($1::text[]) ORDER BY workspace_id, seq
"""


async def create_block(conn, workspace_id: str, name: str, block: dict):
    return await conn.fetchrow(CREATE_BLOCK, workspace_id, uuid.uuid4(), name, block)


async def update_block(conn, workspace_id: str, block_id: uuid.UUID, name: str, block: dict):
    """The block with its name and tree replaced; None when there is none."""
    return await conn.fetchrow(UPDATE_BLOCK, workspace_id, block_id, name, block)


async def get_block(conn, workspace_id: str, block_id: uuid.UUID):
    return await conn.fetchrow(GET_BLOCK, workspace_id, block_id)


async def delete_block(conn, workspace_id: str, block_id: uuid.UUID) -> bool:
    return await conn.execute(DELETE_BLOCK, workspace_id, block_id) == "DELETE 1"


async def blocks_of(conn, workspace_ids: list[str]) -> dict[str, list]:
    """workspace id -> its blocks in creation order (workspaces without any are absent)."""
    out: dict[str, list] = {}
    for row in await conn.fetch(LIST_BLOCKS, workspace_ids):
        out.setdefault(row["workspace_id"], []).append(row)
    return out
