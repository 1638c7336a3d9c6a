"""SQL for workspaces."""

from __future__ import annotations

COLUMNS = "id, name, settings, created_at, updated_at"

CREATE = f"""
INSERT INTO workspaces (id, name, settings) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""

GET = f"SELECT {COLUMNS} FROM workspaces WHERE id = $1"

LIST_FOR_USER = f"""
SELECT {', '.join('w.' + c.strip() for c in COLUMNS.split(','))}
  FROM workspaces w JOIN user_workspaces uw ON uw.workspace_id = w.id
 WHERE uw.user_id = $1::uuid
 ORDER BY w.created_at, w.id
"""

COUNT = "SELECT count(*) FROM workspaces"

# The settings given are merged into the stored ones, key by key.
UPDATE = f"""
UPDATE workspaces SET name = coalesce($2, name), settings = settings || coalesce($3::jsonb, '{{}}'), updated_at = now()
 WHERE id = $1
RETURNING {COLUMNS}
"""


async def create(conn, ws_id: str, name: str, settings: dict):
    """The new workspace, or None when the id is taken."""
    return await conn.fetchrow(CREATE, ws_id, name, settings)


async def update(conn, ws_id: str, name: str | None, settings: dict | None):
    """The workspace after the change, or None when it does not exist."""
    return await conn.fetchrow(UPDATE, ws_id, name, settings)


async def get(conn, ws_id: str):
    return await conn.fetchrow(GET, ws_id)


async def list_for_user(conn, user_id: str):
    return await conn.fetch(LIST_FOR_USER, user_id)


async def count(conn) -> int:
    return await conn.fetchval(COUNT)


async def create_with_owner(conn, ws_id: str, name: str, settings: dict, owner_id: str | None):
    """Creates the workspace (None when the id is taken) and makes owner_id its owner, atomically."""
    from postroom.auth import model as auth_model, store as auth_store

    async with conn.transaction():
        row = await create(conn, ws_id, name, settings)
        if row is not None and owner_id is not None:
            await auth_store.add_member(conn, ws_id, owner_id, "owner", auth_model.full_permissions())
    return row


async def create_api_key_user(conn, ws_id: str, email: str, permissions: dict) -> str:
    """The API key's user id; the key is a member of the workspace with these permissions."""
    from postroom.auth import store as auth_store

    async with conn.transaction():
        user = await auth_store.upsert_user(conn, email, email.split("@", 1)[0], "api_key")
        if user["type"] != "api_key":
            raise ValueError(f"{email} belongs to a person, not an API key")
        await auth_store.add_member(conn, ws_id, user["id"], "member", permissions)
    return user["id"]
