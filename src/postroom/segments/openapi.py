"""The OpenAPI part of segments: the segment object, the tree DSL (loosely: the server validates
it node by node and names the bad node's path) and the segments.* operations."""

from __future__ import annotations

from postroom.platform.openapi import ANY_JSON, INTEGER, STRING, TIME, TRUE, Op, array, obj, param, ref
from postroom.segments import model

SEGMENT_ID = {"type": "string", "pattern": "^[a-z0-9_]{1,32}$"}
TREE = {"type": "object", "description": (
    "A node: {\"kind\": \"branch\", \"branch\": {\"operator\": \"and\"|\"or\", \"leaves\": [node, ...]}} or "
    "{\"kind\": \"leaf\", \"leaf\": {\"source\": \"contacts\"|\"contact_lists\"|\"contact_timeline\"|"
    f"\"custom_events_goals\", ...}}; at most {model.MAX_DEPTH} levels and {model.MAX_NODES} nodes.")}
COUNT = {"type": "integer", "minimum": 0}

SCHEMAS = {
    "Segment": obj({
        "id": SEGMENT_ID, "name": STRING, "color": STRING, "tree": TREE, "timezone": STRING,
        "version": {"type": "integer", "minimum": 1}, "status": {"type": "string", "enum": list(model.STATUSES)},
        "generated_sql": {"type": "string", "description": "for debugging only; its text is not part of the contract"},
        "generated_args": array(ANY_JSON), "recompute_after": TIME,
        "db_created_at": TIME, "db_updated_at": TIME, "users_count": COUNT,
    }, ["id", "name", "color", "tree", "timezone", "version", "status", "db_created_at", "db_updated_at",
        "users_count"]),
}

_SEGMENT = obj({"segment": ref("Segment")}, ["segment"])
_BODY = {"id": SEGMENT_ID, "name": {"type": "string", "maxLength": model.NAME_MAX},
         "color": {"type": "string", "maxLength": model.COLOR_MAX},
         "tree": TREE, "timezone": {"type": "string", "maxLength": model.TIMEZONE_MAX}}
_REQUIRED = ["id", "name", "color", "tree", "timezone"]

OPERATIONS = {
    "/api/segments.list": Op(
        "The segments that are not deleted, newest first, with exact member counts", id="listSegments",
        tag="segments", params=[param("with_count", STRING, description="accepted for compatibility; counts are always exact")],
        ok=obj({"segments": array(ref("Segment"))}, ["segments"])),
    "/api/segments.get": Op(
        "One segment", id="getSegment", tag="segments", params=[param("id", STRING, True)], ok=_SEGMENT,
        errors=[404]),
    "/api/segments.create": Op(
        "Create a segment; its members are computed in the background (building, then active)",
        id="createSegment", tag="segments", body=_BODY, required=_REQUIRED, status=201, ok=_SEGMENT),
    "/api/segments.update": Op(
        "Update a segment: a changed tree gives version + 1 and a rebuild; name and color change in place",
        id="updateSegment", tag="segments", body=_BODY, required=_REQUIRED, ok=_SEGMENT, errors=[404]),
    "/api/segments.delete": Op(
        "Delete a segment (its id stays reserved); every member leaves", id="deleteSegment", tag="segments",
        body={"id": SEGMENT_ID}, required=["id"], ok=ref("Success"), errors=[404]),
    "/api/segments.rebuild": Op(
        "Recompute a segment's members (version + 1)", id="rebuildSegment", tag="segments",
        body={"segment_id": STRING}, required=["segment_id"],
        ok=obj({"success": TRUE, "message": {"const": "Segment rebuild has been queued"}}, ["success", "message"]),
        errors=[404]),
    "/api/segments.preview": Op(
        "Evaluate an unsaved tree now: the count and the first emails in email order", id="previewSegment",
        tag="segments", body={"tree": TREE, "limit": INTEGER}, required=["tree"],
        ok=obj({"emails": array(STRING), "total_count": COUNT, "limit": {"type": "integer", "minimum": 1},
                "generated_sql": STRING, "sql_args": array(ANY_JSON)},
               ["emails", "total_count", "limit", "generated_sql", "sql_args"])),
    "/api/segments.contacts": Op(
        "A page of a segment's members, newest first (matched_at DESC, email)", id="getSegmentContacts",
        tag="segments", params=[param("segment_id", STRING, True), param("limit", STRING), param("offset", STRING)],
        ok=obj({"emails": array(STRING), "limit": {"type": "integer", "minimum": 1}, "offset": COUNT},
               ["emails", "limit", "offset"]), errors=[404]),
}
