"""SQL for users, sessions and memberships."""

from __future__ import annotations

import datetime as dt

import asyncpg

from postroom.auth.model import Membership

MEMBERSHIP = """
SELECT uw.role, uw.permissions
  FROM user_workspaces uw
 WHERE uw.workspace_id = $1 AND uw.user_id = $2::uuid
"""

SESSION_VALID = """
SELECT 1 FROM user_sessions WHERE id = $1::uuid AND user_id = $2::uuid AND expires_at > now()
"""

USER_EXISTS = "SELECT 1 FROM users WHERE id = $1::uuid"

USER_BY_ID = "SELECT id::text, email, name, type, created_at, updated_at FROM users WHERE id = $1::uuid"

UPSERT_USER = """
INSERT INTO users (email, name, type) VALUES ($1, $2, $3)
ON CONFLICT (email) DO UPDATE SET updated_at = users.updated_at
RETURNING id::text, email, name, type, created_at, updated_at
"""

CREATE_SESSION = """
INSERT INTO user_sessions (user_id, expires_at) VALUES ($1::uuid, $2) RETURNING id::text
"""

ADD_MEMBER = """
INSERT INTO user_workspaces (workspace_id, user_id, role, permissions) VALUES ($1, $2::uuid, $3, $4)
ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = EXCLUDED.role, permissions = EXCLUDED.permissions,
       updated_at = now()
"""


async def membership(conn, workspace_id: str, user_id: str) -> Membership | None:
    row = await conn.fetchrow(MEMBERSHIP, workspace_id, user_id)
    return Membership(row["role"], row["permissions"] or {}) if row else None


async def session_valid(conn, session_id: str, user_id: str) -> bool:
    return await conn.fetchval(SESSION_VALID, session_id, user_id) is not None


async def user_exists(conn, user_id: str) -> bool:
    return await conn.fetchval(USER_EXISTS, user_id) is not None


async def user_by_id(conn, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(USER_BY_ID, user_id)


async def upsert_user(conn, email: str, name: str, kind: str) -> asyncpg.Record:
    return await conn.fetchrow(UPSERT_USER, email, name, kind)


async def create_session(conn, user_id: str, ttl_seconds: int) -> str:
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=ttl_seconds)
    return await conn.fetchval(CREATE_SESSION, user_id, expires)


async def add_member(conn, workspace_id: str, user_id: str, role: str, permissions: dict) -> None:
    await conn.execute(ADD_MEMBER, workspace_id, user_id, role, permissions)
