"""The OpenAPI part of the timeline: the entry object and timeline.list."""

from __future__ import annotations

from postroom.platform import paging
from postroom.timeline import api as timeline_api
from postroom.platform.openapi import STRING, TIME, CURSOR_PARAM, EMAIL_PARAM, PAGE_CURSOR, Op, array, limit_param, obj, ref

SCHEMAS = {
    "TimelineEntry": obj(
        {"id": {"type": "string", "pattern": "^[0-9]+$"}, "email": STRING,
         "operation": {"type": "string", "enum": ["insert", "update", "delete"]},
         "entity_type": {"type": "string", "description": "contact, contact_list, ..."},
         "kind": {"type": "string", "description": "the event type recorded, e.g. contact.updated"},
         "entity_id": STRING,
         "changes": {"type": ["object", "null"], "description": "{field: {old, new}}"},
         "created_at": TIME},
        ["id", "email", "operation", "entity_type", "kind", "changes", "created_at"]),
}

OPERATIONS = {
    "/api/timeline.list": Op(
        "A contact's timeline, newest first", id="listContactTimeline", tag="timeline",
        params=[EMAIL_PARAM, limit_param(timeline_api.DEFAULT_LIMIT, paging.MAX_LIMIT), CURSOR_PARAM],
        ok=obj({"timeline": array(ref("TimelineEntry")), "next_cursor": PAGE_CURSOR}, ["timeline"])),
}
