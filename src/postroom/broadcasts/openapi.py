"""The OpenAPI part of broadcasts: the broadcast object and its routes."""

from __future__ import annotations

from postroom.broadcasts import model, tasks_model
from postroom.platform.openapi import BOOLEAN, INTEGER, STRING, TIME, Op, array, error_response, obj, param, ref

_COUNT = {"type": "integer", "minimum": 0}
AUDIENCE = obj({"list": STRING, "segments": array(STRING), "exclude_unsubscribed": BOOLEAN}, ["exclude_unsubscribed"])
SCHEDULE = obj({"is_scheduled": BOOLEAN, "scheduled_date": STRING, "scheduled_time": STRING, "timezone": STRING,
                "use_recipient_timezone": BOOLEAN}, ["is_scheduled", "use_recipient_timezone"])
VARIATION = obj({"variation_name": STRING, "template_id": STRING, "metrics": {"type": "object"},
                 "template": {"type": "object"}}, ["variation_name", "template_id", "metrics"])
TEST_SETTINGS = obj({"enabled": BOOLEAN, "sample_percentage": INTEGER, "auto_send_winner": BOOLEAN,
                     "auto_send_winner_metric": {"type": "string", "enum": list(model.WINNER_METRICS)},
                     "test_duration_hours": INTEGER, "variations": array(VARIATION)},
                    ["enabled", "sample_percentage", "auto_send_winner", "variations"])
DELIVERY = obj({"status": {"type": "string", "enum": [model.D_PENDING, model.D_SENDING, model.D_WAITING, model.D_SENT,
                                                      model.D_PARTIAL, model.D_CANCELLED]},
                **{k: _COUNT for k in model.COUNTERS}, "finished_at": TIME},
               ["status", *model.COUNTERS])

SCHEMAS = {
    "Broadcast": obj(
        {"id": STRING, "workspace_id": STRING, "name": STRING, "channel_type": {"const": "email"},
         "status": {"type": "string", "enum": list(model.STATUSES)}, "audience": AUDIENCE, "schedule": SCHEDULE,
         "test_settings": TEST_SETTINGS, "utm_parameters": obj({k: STRING for k in model.UTM_KEYS}),
         "metadata": {"type": "object"}, "winning_template": STRING, "test_sent_at": TIME, "winner_sent_at": TIME,
         "test_phase_recipient_count": _COUNT, "winner_phase_recipient_count": _COUNT, "enqueued_count": _COUNT,
         "created_at": TIME, "updated_at": TIME, "started_at": TIME, "completed_at": TIME, "cancelled_at": TIME,
         "paused_at": TIME, "pause_reason": STRING, "data_feed": {"type": "object"}, "delivery": DELIVERY},
        ["id", "workspace_id", "name", "channel_type", "status", "audience", "schedule", "test_settings",
         "test_phase_recipient_count", "winner_phase_recipient_count", "enqueued_count", "created_at", "updated_at",
         "delivery"]),
}

SCHEMAS["Task"] = obj(
    {"id": STRING, "workspace_id": STRING, "type": {"const": tasks_model.TYPE},
     "status": {"type": "string", "enum": list(tasks_model.TASK_STATUSES)}, "progress": {"type": "number"},
     "state": obj({"progress": {"type": "number"}, "send_broadcast": obj(
         {"broadcast_id": STRING, "total_recipients": _COUNT, "enqueued_count": _COUNT, "failed_count": _COUNT,
          "channel_type": {"const": "email"}, "phase": {"type": "string", "enum": ["single", "test", "winner"]},
          "test_phase_completed": BOOLEAN, "test_phase_recipient_count": _COUNT,
          "winner_phase_recipient_count": _COUNT},
         ["broadcast_id", "total_recipients", "enqueued_count", "failed_count", "channel_type", "phase"])},
         ["send_broadcast"]),
     "error_message": STRING, "created_at": TIME, "updated_at": TIME, "last_run_at": TIME, "completed_at": TIME,
     "next_run_after": TIME, "broadcast_id": STRING, "max_runtime": INTEGER, "max_retries": INTEGER,
     "retry_count": INTEGER, "retry_interval": INTEGER},
    ["id", "workspace_id", "type", "status", "progress", "state", "created_at", "updated_at", "broadcast_id"])

_ONE = obj({"broadcast": ref("Broadcast")}, ["broadcast"])
_SUCCESS = obj({"success": {"const": True}}, ["success"])
_INPUT = {"name": STRING, "audience": {"type": "object"}, "test_settings": {"type": "object"},
          "tracking_enabled": BOOLEAN, "utm_parameters": {"type": "object"}, "metadata": {"type": "object"},
          "data_feed": {"type": "object"}}
_BOOL_PARAM = {"type": "string", "description": "true, false, t, f, 1 or 0, in any case"}
_REF = {"id": STRING}
_RESULT = obj({"template_id": STRING, "template_name": STRING, "recipients": _COUNT, "delivered": _COUNT,
               "opens": _COUNT, "clicks": _COUNT, "open_rate": {"type": "number"}, "click_rate": {"type": "number"}},
              ["template_id", "recipients", "opens", "clicks", "open_rate", "click_rate"])


def _action(summary: str, op_id: str) -> Op:
    return Op(summary, id=op_id, tag="broadcasts", body=_REF, required=["id"], ok=_SUCCESS, errors=[404])


OPERATIONS = {
    "/api/broadcasts.list": Op(
        "The workspace's broadcasts, newest first", id="listBroadcasts", tag="broadcasts",
        params=[param("status", STRING), param("limit", STRING, description="<= 0: 50; above 100: 100"),
                param("offset", STRING), param("with_templates", _BOOL_PARAM)],
        ok=obj({"broadcasts": array(ref("Broadcast")), "total_count": INTEGER}, ["broadcasts", "total_count"])),
    "/api/broadcasts.get": Op(
        "One broadcast, with its live delivery counters", id="getBroadcast", tag="broadcasts",
        params=[param("id", STRING, True), param("with_templates", _BOOL_PARAM)], ok=_ONE, errors=[404]),
    "/api/broadcasts.create": Op(
        "Create a draft broadcast", id="createBroadcast", tag="broadcasts", body=_INPUT, required=["name"],
        status=201, ok=_ONE),
    "/api/broadcasts.update": Op(
        "Change a draft, scheduled or paused broadcast (absent schedule and data_feed are kept)",
        id="updateBroadcast", tag="broadcasts", body={"id": STRING, **_INPUT, "schedule": {"type": "object"}},
        required=["id"], ok=_ONE, errors=[404]),
    "/api/broadcasts.delete": _action("Delete a broadcast; unsent recipients are cancelled", "deleteBroadcast"),
    "/api/broadcasts.schedule": Op(
        "Send a draft now or at a time", id="scheduleBroadcast", tag="broadcasts",
        body={"id": STRING, "send_now": BOOLEAN, "scheduled_date": STRING, "scheduled_time": STRING,
              "timezone": STRING, "use_recipient_timezone": BOOLEAN},
        required=["id"], ok=_SUCCESS, errors=[404]),
    "/api/broadcasts.pause": _action("Stop sending; queued messages wait", "pauseBroadcast"),
    "/api/broadcasts.resume": _action("Continue a paused broadcast where it stopped", "resumeBroadcast"),
    "/api/broadcasts.cancel": _action("Stop for good; what has not left is dropped", "cancelBroadcast"),
    "/api/broadcasts.getTestResults": Op(
        "A/B figures per variation", id="getBroadcastTestResults", tag="broadcasts",
        params=[param("id", STRING, True)],
        ok=obj({"broadcast_id": STRING, "status": STRING, "test_started_at": TIME, "test_completed_at": TIME,
                "variation_results": {"type": "object", "additionalProperties": _RESULT},
                "recommended_winner": STRING, "winning_template": STRING, "is_auto_send_winner": BOOLEAN},
               ["broadcast_id", "status", "variation_results", "is_auto_send_winner"]), errors=[404]),
    "/api/broadcasts.sendToIndividual": Op(
        "Send the broadcast (a variation) to one address now, outside its figures; waits up to 30 s for the "
        "provider", id="sendBroadcastToIndividual", tag="broadcasts",
        body={"broadcast_id": STRING, "id": STRING, "recipient_email": STRING, "template_id": STRING},
        required=["recipient_email"], ok=obj({"success": {"const": True}, "queued": BOOLEAN}, ["success"]),
        errors=[404], responses={502: error_response(
            "The message failed for good: `Failed to send broadcast to individual: <status_info>`.")}),
    "/api/broadcasts.retryFailed": Op(
        "Queue the failed recipients of a finished broadcast again (transient failures; all with "
        "include_permanent), each with its message id and a fresh attempt budget", id="retryFailedBroadcast",
        tag="broadcasts", body={"id": STRING, "include_permanent": BOOLEAN}, required=["id"],
        ok=obj({"success": {"const": True}, "requeued": _COUNT}, ["success", "requeued"]), errors=[404]),
    "/api/tasks.list": Op(
        "Sending progress as Notifuse's task view: one send_broadcast task per broadcast ever scheduled, "
        "newest first", id="listTasks", tag="broadcasts",
        params=[param("status", STRING, description="comma-separated: " + ", ".join(tasks_model.TASK_STATUSES)),
                param("type", STRING, description="comma-separated; only send_broadcast exists"),
                param("created_after", TIME), param("created_before", TIME),
                param("limit", STRING, description=f"1-{tasks_model.LIST_MAX}, default {tasks_model.LIST_DEFAULT}"),
                param("offset", STRING)],
        ok=obj({"tasks": array(ref("Task")), "total_count": INTEGER, "limit": INTEGER, "offset": INTEGER,
                "has_more": BOOLEAN}, ["tasks", "total_count", "limit", "offset", "has_more"])),
    "/api/tasks.get": Op(
        "One broadcast's task", id="getTask", tag="broadcasts", params=[param("id", STRING, True)],
        ok=obj({"task": ref("Task")}, ["task"]), errors=[404]),
    "/api/broadcasts.selectWinner": Op(
        "Choose the A/B winner; the held recipients get it", id="selectBroadcastWinner", tag="broadcasts",
        body={"id": STRING, "template_id": STRING}, required=["id", "template_id"], ok=_SUCCESS, errors=[404]),
}
