"""What the tests share (imported as `helpers`: pytest puts tests/ on sys.path): assertions, rows
written and read as stored, and the snapshot of a workspace that bad-input tests compare."""

import dataclasses

from postroom.delivery.providers.base import Message


def assert_json_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": message}


# ---------------------------------------------------------------- lists and memberships, as stored

async def make_list(client, ws, list_id="news", **fields):
    body = {"workspace_id": ws.id, "id": list_id, "name": fields.pop("name", f"List {list_id}"), **fields}
    r = await client.post("/api/lists.create", headers=ws.headers, json=body)
    assert r.status_code == 201, r.text
    return r.json()["list"]


async def add(pool, ws, list_id, email, status):
    async with pool.acquire() as conn:
        # as the application writes it: contact_created_at from the contact (now when there is none)
        await conn.execute("INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)"
                           " VALUES ($1, $2, $3, $4, coalesce((SELECT created_at FROM contacts"
                           "                                    WHERE workspace_id = $1 AND email = $3), now()))",
                           ws.id, list_id, email, status)


async def make_contacts(pool, ws, emails, created_at=None):
    """Bare contacts (email and times only), straight into the table: memberships need a contact."""
    await pool.execute("INSERT INTO contacts (workspace_id, email, created_at, updated_at)"
                       " SELECT $1, e, coalesce($3, now()), now() FROM unnest($2::text[]) e"
                       " ON CONFLICT DO NOTHING", ws.id, list(emails), created_at)


async def membership(pool, ws, list_id, email):
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, deleted_at FROM contact_lists"
                                  " WHERE workspace_id = $1 AND list_id = $2 AND email = $3", ws.id, list_id, email)
    return None if row is None else (row["status"], row["deleted_at"] is not None)


async def list_events(pool, ws):
    """(type, subject, data) of the workspace's list.* outbox events, oldest first."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT type, subject, data FROM events WHERE workspace_id = $1"
                                " AND type LIKE 'list.%' ORDER BY id", ws.id)
    return [(r["type"], r["subject"], r["data"]) for r in rows]


async def list_timeline(pool, ws):
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT kind, email, entity_type, entity_id, changes FROM contact_timeline"
                                " WHERE workspace_id = $1 AND kind LIKE 'list.%' ORDER BY id", ws.id)
    return [tuple(r) for r in rows]


# ---------------------------------------------------------------- what a workspace holds

_TABLES = """
SELECT c.table_name::text
  FROM information_schema.columns c
  JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
 WHERE c.table_schema = current_schema() AND c.column_name = 'workspace_id' AND t.table_type = 'BASE TABLE'
 ORDER BY 1
"""

_snapshot_sql: list[str] = []


async def _snapshot_query(conn) -> str:
    """One statement reading all of a workspace's rows, table by table, each as sorted JSON."""
    if not _snapshot_sql:
        tables = [r[0] for r in await conn.fetch(_TABLES)]
        parts = [f"""(SELECT json_agg(t ORDER BY t::text) FROM "{t}" t WHERE workspace_id = $1) AS "{t}" """
                 for t in tables]
        parts += [
            "(SELECT json_agg(w ORDER BY w::text) FROM workspaces w WHERE id = $1) AS workspaces",
            "(SELECT json_agg(u ORDER BY u::text) FROM users u JOIN user_workspaces m ON m.user_id = u.id"
            " WHERE m.workspace_id = $1) AS users",
            "(SELECT json_agg(s ORDER BY s::text) FROM user_sessions s JOIN user_workspaces m"
            " ON m.user_id = s.user_id WHERE m.workspace_id = $1) AS user_sessions",
        ]
        _snapshot_sql.append("SELECT " + ",\n".join(parts))
    return _snapshot_sql[0]


async def snapshot(pool, ws_id: str, totals: bool = False) -> dict:
    """Every row of the workspace, in every table with a workspace_id column (read from the
    catalog, so a new table is covered without editing this), its workspaces row, the users that
    are its members and their sessions. `totals`: also the number of workspaces, users and
    sessions overall (for the calls that would create one of those)."""
    async with pool.acquire() as conn:
        out = dict(await conn.fetchrow(await _snapshot_query(conn), ws_id))
        if totals:
            out["totals"] = tuple(await conn.fetchrow(
                "SELECT (SELECT count(*) FROM workspaces), (SELECT count(*) FROM users),"
                " (SELECT count(*) FROM user_sessions)"))
    return out


# ---------------------------------------------------------------- delivery


def provider_message(**changes):
    """The message of one provider call (delivery-contract 2.0): Acme to Jane, text and HTML."""
    base = Message(message_id="00000000-0000-4000-8000-000000000001", from_address="noreply@acme.test",
                   from_name="Acme", to="jane@example.com", subject="Hi Jane", html="<p>Code X1</p>", text="Code X1")
    return dataclasses.replace(base, **changes)
