"""The task view of broadcasts (broadcasts-contract, "The task view"): Notifuse's console reads
sending progress from `tasks.list`/`tasks.get`; Postroom has no task rows, so each broadcast that
was ever scheduled is projected as one `send_broadcast` task. Pure: the request rules, the status
mapping and the projection of a broadcast row and its counters."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from postroom.broadcasts import model
from postroom.broadcasts.model import BroadcastError
from postroom.platform import paging
from postroom.platform.times import TimeFormatError, parse_time

TYPE = "send_broadcast"
ID_PREFIX = f"{TYPE}_"
NOT_FOUND = "Task not found"
LIST_DEFAULT, LIST_MAX = 100, 1000

# task status <- broadcast statuses (a draft was never scheduled: it has no task)
STATUS_OF: dict[str, str] = {
    model.SCHEDULED: "pending",
    model.PROCESSING: "running", model.TESTING: "running", model.WINNER_SELECTED: "running",
    model.PAUSED: "paused", model.TEST_COMPLETED: "paused",
    model.PROCESSED: "completed", model.CANCELLED: "completed",
    model.FAILED: "failed",
}
TASK_STATUSES = ("pending", "running", "paused", "completed", "failed")

# Notifuse's defaults for a broadcast task, shown so that the object keeps its shape
_RUN_LIMITS = {"max_runtime": 50, "max_retries": 3, "retry_count": 0, "retry_interval": 300}


def task_id(broadcast_id: str) -> str:
    return ID_PREFIX + broadcast_id


def broadcast_id_of(task: str) -> str | None:
    """The broadcast a task id names, or None for an id that is not a broadcast task's."""
    if not task.startswith(ID_PREFIX) or len(task) == len(ID_PREFIX):
        return None
    return task[len(ID_PREFIX):]


def broadcast_statuses(task_statuses: list[str]) -> list[str]:
    """The broadcast statuses behind the given task statuses."""
    return [b for b, t in STATUS_OF.items() if t in task_statuses]


@dataclass(frozen=True)
class TaskQuery:
    statuses: list[str] | None      # broadcast statuses, None: all that have a task
    none: bool                      # a type filter that excludes send_broadcast: nothing matches
    created_after: _dt.datetime | None
    created_before: _dt.datetime | None
    limit: int
    offset: int


def _split(raw: str | None) -> list[str]:
    return [p.strip() for p in (raw or "").split(",") if p.strip()]


def _time(raw: str | None, name: str) -> _dt.datetime | None:
    if not raw:
        return None
    try:
        return parse_time(raw)
    except TimeFormatError as e:
        raise BroadcastError(f"invalid {name} parameter: {e}") from None


def parse_list(param: Callable[[str], str | None]) -> TaskQuery:
    """GET tasks.list: workspace_id, status and type (comma-separated), created_after and
    created_before (RFC 3339), limit (1-1000, default 100) and offset. Unlike Notifuse, an unknown
    status, a malformed time or number is refused by name rather than ignored."""
    if not param("workspace_id"):
        raise BroadcastError("workspace_id is required")
    statuses = _split(param("status"))
    for s in statuses:
        if s not in TASK_STATUSES:
            raise BroadcastError(f"invalid status parameter: {s!r} is not one of {', '.join(TASK_STATUSES)}")
    types = _split(param("type"))
    return TaskQuery(broadcast_statuses(statuses) if statuses else None, bool(types) and TYPE not in types,
                     _time(param("created_after"), "created_after"), _time(param("created_before"), "created_before"),
                     paging.parse_limit(param("limit"), LIST_DEFAULT, LIST_MAX, BroadcastError),
                     paging.parse_offset(param("offset"), BroadcastError))


def parse_get(param: Callable[[str], str | None]) -> str:
    if not param("workspace_id"):
        raise BroadcastError("workspace_id is required")
    task = (param("id") or "").strip()
    if not task:
        raise BroadcastError("id is required")
    return task


def phase(row: Mapping) -> str:
    """single without A/B; test until a winner is chosen, then winner."""
    if not (row["test_settings"] or {}).get("enabled"):
        return "single"
    chosen = row["winning_template"] or row["winner_sent_at"] is not None or row["status"] == model.WINNER_SELECTED
    return "winner" if chosen else "test"


def project(row: Mapping, counters: Mapping[str, int], fmt: Callable[[Any], str]) -> dict:
    """One broadcast as its task object."""
    recipients = int(counters.get("recipients") or 0)
    enqueued = int(row["enqueued_count"] or 0)
    ab = phase(row)
    status = STATUS_OF[row["status"]]
    out: dict[str, Any] = {
        "id": task_id(row["id"]), "workspace_id": row["workspace_id"], "type": TYPE, "status": status,
        "progress": round(100.0 * min(enqueued, recipients) / recipients, 2) if recipients else 0.0,
        "state": {"progress": 0.0, "send_broadcast": {
            "broadcast_id": row["id"], "total_recipients": recipients, "enqueued_count": enqueued,
            "failed_count": int(counters.get("failed") or 0), "channel_type": "email", "phase": ab,
            "test_phase_completed": ab == "winner" or row["status"] == model.TEST_COMPLETED,
            "test_phase_recipient_count": int(row["test_phase_recipient_count"] or 0),
            "winner_phase_recipient_count": int(row["winner_phase_recipient_count"] or 0)}},
        "created_at": fmt(row["created_at"]), "updated_at": fmt(row["updated_at"]),
        "broadcast_id": row["id"], **_RUN_LIMITS,
    }
    out["state"]["progress"] = out["progress"]
    if row["started_at"]:
        out["last_run_at"] = fmt(row["started_at"])
    done = row["completed_at"] or row["cancelled_at"]
    if status in ("completed", "failed") and done:
        out["completed_at"] = fmt(done)
    if row["status"] == model.SCHEDULED and row["start_at"]:
        out["next_run_after"] = fmt(row["start_at"])
    if row["pause_reason"] and status in ("paused", "failed"):
        out["error_message"] = row["pause_reason"]
    return out
