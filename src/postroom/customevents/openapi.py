"""The OpenAPI part of custom events: the event object and the customEvents.* operations."""

from __future__ import annotations

from postroom.customevents import model
from postroom.platform.openapi import INTEGER, STRING, TIME, Op, array, obj, param, ref

GOAL_TYPE = {"type": "string", "enum": list(model.GOAL_TYPES)}
GOAL_VALUE = {"type": "number", "exclusiveMinimum": -10**13, "exclusiveMaximum": 10**13,
              "description": "stored with 2 decimals, rounded half away from zero; read back as a JSON "
                             "number (10, not 10.00); may be negative (refunds)"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _nullable(schema: dict) -> dict:
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return dict(schema, type=[*kinds, "null"])


EVENT_INPUT = {
    "email": {"type": "string", "description": "trimmed, lower-cased and validated like a contact's"},
    "event_name": {"type": "string", "maxLength": model.EVENT_NAME_MAX, "pattern": f"^{model.EVENT_NAME.pattern}$"},
    "external_id": {"type": "string", "minLength": 1, "maxLength": model.EXTERNAL_ID_MAX},
    "properties": {"type": ["object", "null"], "description": "any JSON object, replaced whole; default {}"},
    "occurred_at": dict(NULLABLE_TIME, description="RFC 3339; default now; the newer version wins"),
    "integration_id": _nullable({"type": "string", "maxLength": model.INTEGRATION_ID_MAX}),
    "goal_name": _nullable({"type": "string", "maxLength": model.GOAL_NAME_MAX}),
    "goal_type": {"anyOf": [GOAL_TYPE, {"type": "null"}]},
    "goal_value": _nullable(dict(GOAL_VALUE, description="required for purchase and subscription")),
    "deleted_at": dict(NULLABLE_TIME, description="set: soft delete; null: live (restores a deleted event)"),
}
IMPORT_EVENT = {
    **EVENT_INPUT,
    "source": _nullable({"type": "string", "maxLength": model.SOURCE_MAX, "description": "default api"}),
    "created_at": dict(NULLABLE_TIME, description="history imports: the first insert's time"),
    "updated_at": dict(NULLABLE_TIME, description="history imports: the change's time"),
}
REQUIRED = ["email", "event_name", "external_id"]

SCHEMAS = {
    "CustomEvent": obj(
        {"external_id": STRING, "email": STRING, "event_name": STRING, "properties": {"type": "object"},
         "occurred_at": TIME, "source": STRING, "integration_id": STRING, "goal_name": STRING,
         "goal_type": GOAL_TYPE, "goal_value": GOAL_VALUE, "deleted_at": TIME, "created_at": TIME,
         "updated_at": TIME},
        ["external_id", "email", "event_name", "properties", "occurred_at", "source", "created_at", "updated_at"],
        description="A custom event as stored; integration_id, goal_* and deleted_at omitted when null."),
    "CustomEventImportInput": obj(IMPORT_EVENT, REQUIRED, closed=False),
}

_WRITE = ("Keyed by (event_name, external_id): a newer occurred_at replaces the stored version, an older "
          "or equal one changes nothing; deleted_at set soft-deletes, null restores. A missing contact is "
          "created (not for a delete). The answer is the event as stored. Permission: contacts write.")
_EVENT = obj({"event": ref("CustomEvent")}, ["event"])


def _upsert(summary: str, op_id: str) -> Op:
    return Op(summary, id=op_id, tag="customEvents", body=EVENT_INPUT, required=REQUIRED, ok=_EVENT,
              description=_WRITE)


OPERATIONS = {
    "/api/customEvents.upsert": _upsert("Create or update a custom event", "upsertCustomEvent"),
    "/api/customEvents.create": _upsert("Create or update a custom event (customEvents.upsert)",
                                        "createCustomEvent"),
    "/api/customEvents.import": Op(
        "Upsert up to 50 custom events in one transaction, in input order", id="importCustomEvents",
        tag="customEvents", body={"events": array(ref("CustomEventImportInput"), minItems=1,
                                                  maxItems=model.IMPORT_MAX)},
        required=["events"], status=201,
        ok=obj({"event_ids": array(STRING), "count": INTEGER}, ["event_ids", "count"]),
        description="Every event is checked before anything is written; any refusal writes nothing. "
                    "Permission: contacts write."),
    "/api/customEvents.get": Op(
        "One live custom event", id="getCustomEvent", tag="customEvents",
        params=[param("event_name", STRING, True), param("external_id", STRING, True)], ok=_EVENT, errors=[404]),
    "/api/customEvents.list": Op(
        "Live custom events of a contact and/or of a name, newest first", id="listCustomEvents",
        tag="customEvents",
        params=[param("email", STRING, description="normalised before the lookup"), param("event_name", STRING),
                param("limit", STRING, description="1..100, default 50; unparsable or <= 0: 50, above 100: 100"),
                param("offset", STRING, description="default 0; unparsable or negative: 0")],
        ok=obj({"events": array(ref("CustomEvent")), "count": INTEGER}, ["events", "count"]),
        description="email or event_name is required; both given, both apply."),
}
