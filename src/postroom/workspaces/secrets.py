"""A workspace's secrets: random keys made on first use, one per purpose (`name`), stored sealed in
workspace_secrets (migration 0003) and opened with this process's SECRET_KEY.

Sealing (AES-GCM) is postroom.platform.secrets'; this module says which row a secret belongs to
(its associated data) and how it is made, read and shared between processes. Users: the key
behind list confirmation links (lists.model.CONFIRM_SECRET); next, tracking tokens, unsubscribe
links and provider credentials.
"""

from __future__ import annotations

import os

from postroom.platform import secrets as sealing

SECRET_BYTES = 32


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def secret_context(workspace_id: str, name: str) -> bytes:
    """The associated data of a sealed workspace secret (postroom.platform.secrets): copied into
    another workspace's row or under another name, it does not open."""
    return f"workspace_secret:{workspace_id}:{name}".encode()


GET_SECRET = "SELECT sealed FROM workspace_secrets WHERE workspace_id = $1 AND name = $2"

PUT_SECRET = """
INSERT INTO workspace_secrets (workspace_id, name, sealed) VALUES ($1, $2, $3)
ON CONFLICT (workspace_id, name) DO NOTHING
RETURNING sealed
"""


class SecretUnreadable(RuntimeError):
    """A stored secret does not open with this process's SECRET_KEY: a configuration fault."""


def _open(key_bytes: bytes, workspace_id: str, name: str, sealed: bytes) -> bytes:
    try:
        return sealing.decrypt(key_bytes, sealed, secret_context(workspace_id, name))
    except sealing.SecretError:
        raise SecretUnreadable(
            f"the {name} secret of workspace {workspace_id} cannot be opened with this SECRET_KEY: "
            "every process must share the key the secret was sealed with") from None


def sealed_sql(workspace: str, name: str) -> str:
    """The sealed secret `name` of a workspace (NULL: not made yet) as a scalar subquery over two SQL
    expressions, for a query that reads it with other things; workspace_secret(..., sealed=) opens it."""
    return f"(SELECT sealed FROM workspace_secrets WHERE workspace_id = {workspace} AND name = {name})"


async def workspace_secret(conn, workspace_id: str, key_bytes: bytes, name: str,
                           create: bool = True, *, sealed: bytes | None = None) -> bytes | None:
    """The workspace's secret `name`, made (random, sealed) on first use when `create`. `sealed`:
    the stored value when the caller has read it already (sealed_sql)."""
    if sealed is None:
        sealed = await conn.fetchval(GET_SECRET, workspace_id, name)
    if sealed is None:
        if not create:
            return None
        fresh = sealing.encrypt(key_bytes, new_secret(), secret_context(workspace_id, name))
        sealed = await conn.fetchval(PUT_SECRET, workspace_id, name, fresh)
        if sealed is None:  # made by a concurrent process first: use that one
            sealed = await conn.fetchval(GET_SECRET, workspace_id, name)
    return _open(key_bytes, workspace_id, name, sealed)
