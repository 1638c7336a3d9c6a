"""SQL for lists and list memberships."""

from __future__ import annotations

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
