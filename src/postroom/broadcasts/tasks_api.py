"""tasks.list and tasks.get: the task view of broadcasts (broadcasts-contract), read-only,
permission resource `broadcasts`. The projection is broadcasts/tasks_model.py."""

from __future__ import annotations

from postroom.broadcasts import model, store, tasks_model
from postroom.platform.errors import RuleError
from postroom.platform.http import Call, Endpoint
from postroom.platform.times import format_time


async def _task(conn, row) -> dict:
    return tasks_model.project(row, await store.counters(conn, row["workspace_id"], row["id"]), format_time)


async def list_tasks(call: Call):
    q: tasks_model.TaskQuery = call.input
    if q.none:
        return {"tasks": [], "total_count": 0, "limit": q.limit, "offset": q.offset, "has_more": False}
    async with call.pool.acquire() as conn:
        rows, total = await store.tasked(conn, call.workspace_id, q.statuses, q.created_after, q.created_before,
                                         q.limit, q.offset)
        tasks = [await _task(conn, r) for r in rows]
    return {"tasks": tasks, "total_count": total, "limit": q.limit, "offset": q.offset,
            "has_more": q.offset + len(tasks) < total}


async def get_task(call: Call):
    broadcast_id = tasks_model.broadcast_id_of(call.input)
    async with call.pool.acquire() as conn:
        row = await store.get(conn, call.workspace_id, broadcast_id) if broadcast_id else None
        if row is None or row["status"] == model.DRAFT:
            raise RuleError(tasks_model.NOT_FOUND, 404)
        return {"task": await _task(conn, row)}


ENDPOINTS = [
    Endpoint("/api/tasks.list", "GET", list_tasks, resource="broadcasts",
             parse=lambda c: tasks_model.parse_list(c.param)),
    Endpoint("/api/tasks.get", "GET", get_task, resource="broadcasts",
             parse=lambda c: tasks_model.parse_get(c.param)),
]
