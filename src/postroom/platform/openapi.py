"""The OpenAPI 3.1 document of every endpoint Postroom serves, and GET /api/openapi.json.

Written by us from the contract (docs/contacts-contract.md and each handler), built once as plain
data on first use (it reads app.CAPABILITIES, and app imports this module) and served as the same
bytes on every call. Methods, authentication and the errors every endpoint shares (401, 403,
400 for workspace_id and bodies, 413, 503) are derived from the registered Endpoint objects; the
contact object is generated from the field table of postroom.contacts.model; the rest is written
out per operation below. 500 is documented nowhere: a 5xx other than 503 is a bug.

The test suite holds the document to the code: tests/test_openapi.py validates it and compares
its operations with the registered endpoints, tests/conftest.py checks every request and
response the tests make against it, and tests/test_fuzz.py runs Schemathesis on it.
"""

from __future__ import annotations

from importlib import metadata

from starlette.responses import Response

from postroom.contacts import model as contact_model, query
from postroom.lists import api as lists_api, model as lists_model
from postroom.platform import jsonenc, paging
from postroom.platform.config import DEFAULT_MAX_BODY
from postroom.platform.http import WORKSPACE_ID, Call, Endpoint
from postroom.timeline import api as timeline_api
from postroom.webhooks import model as webhooks_model

PATH = "/api/openapi.json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict, required=(), *, closed: bool = True, description: str | None = None) -> dict:
    """An object schema. Responses are closed (an undocumented key is drift); requests stay open,
    since the server ignores unknown keys."""
    out: dict = {"type": "object"}
    if description:
        out["description"] = description
    if required:
        out["required"] = list(required)
    out["properties"] = properties
    if closed:
        out["additionalProperties"] = False
    return out


def _array(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}
TIME = {"type": "string", "format": "date-time"}
TRUE = {"const": True}
ANY_JSON: dict = {}


# ---------------------------------------------------------------- the contact object, from the field table

def _contact_field(name: str, *, write: bool) -> dict:
    """One contact field: its JSON type and limit; nullable on writes (null clears it), never
    null on reads (a NULL field is omitted)."""
    m = contact_model
    if name in m.NUMBER_FIELDS:
        schema: dict = {"type": "number", "description": "finite number; a whole number reads back without a fraction"}
    elif name in m.INTEGER_FIELDS:
        schema = {"type": "integer", "minimum": 0, "maximum": m.ORDERS_COUNT_MAX}
    elif name in m.DATETIME_FIELDS or name in m.TIMESTAMP_FIELDS:
        schema = dict(TIME, description="RFC 3339; offsets allowed on writes, UTC with Z on reads")
    elif name in m.JSON_FIELDS:
        schema = {"type": ["object", "array"], "description": "replaced whole, never deep-merged"}
    elif name == "timezone":
        schema = {"type": "string", "description": "an IANA time zone name (any case on writes), or empty"}
    elif name in m.STRING_FIELDS:
        schema = {"type": "string", "maxLength": m.LIMITS[name], "description": "trimmed of whitespace"}
    else:  # pragma: no cover - a new kind of field needs a schema here
        raise ValueError(f"no schema for contact field {name}")
    if write:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema = dict(schema, type=[*kinds, "null"])
    return schema


def _contact_schemas() -> dict:
    email_in = {"type": "string", "format": "email", "maxLength": contact_model.EMAIL_MAX,
                "description": "a valid address; trimmed and lower-cased"}
    email_out = {"type": "string", "maxLength": contact_model.EMAIL_MAX, "description": "normalised: trimmed, lower-case"}
    write = {"email": email_in, **{f: _contact_field(f, write=True) for f in contact_model.FIELDS if f != "email"}}
    read = {"email": email_out, **{f: _contact_field(f, write=False) for f in contact_model.FIELDS if f != "email"}}
    always = ("email", "created_at", "updated_at")
    memberships = _array(_ref("ContactListMembership"))
    return {
        "ContactInput": _obj(write, ["email"], closed=False, description=(
            "A contact to write. Key absent: unchanged; null: cleared (on contacts.import: kept); "
            "\"\": stored as \"\". created_at/updated_at are optional (history imports). Unknown keys "
            "are ignored. Fields are validated in this order; the first failure is the 400.")),
        "Contact": _obj(read, always, description="A stored contact; NULL fields are omitted, \"\" is kept."),
        "ContactWithLists": _obj({**read, "contact_lists": memberships}, always, description=(
            "A contact of contacts.list; contact_lists only with with_contact_lists=true.")),
        "ContactDetail": _obj({**read, "contact_lists": memberships,
                               "contact_segments": _array(STRING)},
                              [*always, "contact_lists", "contact_segments"],
                              description="A contact as getByEmail/getByExternalID send it."),
    }


# ---------------------------------------------------------------- the other shapes

_LIST_ID = {"type": "string", "pattern": f"^{lists_model.LIST_ID.pattern}$"}
_WORKSPACE_ID = {"type": "string", "pattern": WORKSPACE_ID.pattern,
                 "description": "1-32 characters of a-z, 0-9, _ and -"}
_STATUS = {"type": "string", "enum": list(lists_model.STATUSES)}
_EVENT_TYPE = {"type": "string", "enum": list(webhooks_model.EVENT_TYPES)}
_FILTERS = _obj({"goal_types": _array(STRING), "event_names": _array(STRING)})


def _schemas() -> dict:
    return {
        "Error": _obj({"error": {"type": "string", "description": "what was wrong, naming the field or value"}},
                      ["error"], description="The body of every error, on every status."),
        "WorkspaceId": _WORKSPACE_ID,
        "Success": _obj({"success": TRUE}, ["success"]),
        **_contact_schemas(),
        "ContactListMembership": _obj(
            {"email": STRING, "list_id": STRING, "list_name": STRING, "status": _STATUS,
             "created_at": TIME, "updated_at": TIME},
            ["email", "list_id", "list_name", "status", "created_at", "updated_at"]),
        "List": _obj(
            {"id": _LIST_ID, "name": {"type": "string", "maxLength": lists_model.NAME_MAX},
             "is_double_optin": BOOLEAN, "is_public": BOOLEAN,
             "description": {"type": "string", "maxLength": lists_model.DESCRIPTION_MAX,
                             "description": "omitted when empty"},
             "created_at": TIME, "updated_at": TIME},
            ["id", "name", "is_double_optin", "is_public", "created_at", "updated_at"]),
        "TimelineEntry": _obj(
            {"id": {"type": "string", "pattern": "^[0-9]+$"}, "email": STRING,
             "operation": {"type": "string", "enum": ["insert", "update", "delete"]},
             "entity_type": {"type": "string", "description": "contact, contact_list, ..."},
             "kind": {"type": "string", "description": "the event type recorded, e.g. contact.updated"},
             "entity_id": STRING,
             "changes": {"type": ["object", "null"], "description": "{field: {old, new}}"},
             "created_at": TIME},
            ["id", "email", "operation", "entity_type", "kind", "changes", "created_at"]),
        "User": _obj(
            {"id": {"type": "string", "format": "uuid"}, "email": STRING, "name": STRING,
             "type": {"type": "string", "enum": ["user", "api_key"]}, "created_at": TIME, "updated_at": TIME},
            ["id", "email", "name", "type", "created_at", "updated_at"]),
        "Workspace": _obj(
            {"id": _WORKSPACE_ID, "name": STRING, "settings": {"type": "object"}, "created_at": TIME,
             "updated_at": TIME},
            ["id", "name", "settings", "created_at", "updated_at"]),
        "WebhookSubscription": _obj(
            {"id": STRING, "name": STRING, "url": {"type": "string", "format": "uri"},
             "secret": {"type": "string", "pattern": f"^{webhooks_model.SECRET_PREFIX}"},
             "event_types": _array(_EVENT_TYPE, minItems=1),
             "custom_event_filters": _FILTERS,
             "settings": _obj({"event_types": _array(_EVENT_TYPE), "custom_event_filters": _FILTERS},
                              ["event_types"]),
             "enabled": BOOLEAN, "last_delivery_at": TIME, "created_at": TIME, "updated_at": TIME},
            ["id", "name", "url", "secret", "event_types", "settings", "enabled", "created_at", "updated_at"]),
        "WebhookDelivery": _obj(
            {"id": {"type": "string", "description": "the webhook-id header of every attempt"},
             "subscription_id": STRING, "event_type": STRING, "payload": ANY_JSON,
             "status": {"type": "string", "enum": ["pending", "delivering", "delivered", "failed", "cancelled"]},
             "attempts": INTEGER, "max_attempts": INTEGER, "next_attempt_at": TIME,
             "last_attempt_at": TIME, "delivered_at": TIME, "last_response_status": INTEGER,
             "last_response_body": STRING, "last_error": STRING, "created_at": TIME},
            ["id", "subscription_id", "event_type", "payload", "status", "attempts", "max_attempts",
             "next_attempt_at", "created_at"]),
    }


# ---------------------------------------------------------------- shared responses

_ERRORS = {
    400: ("BadRequest", "The request is invalid; the message names the field or value."),
    401: ("Unauthorized", "Missing, malformed, expired or revoked token."),
    403: ("Forbidden", "Not a member of the workspace (also for a workspace that does not exist), "
                       "or the key lacks the permission."),
    404: ("NotFound", "The named resource does not exist in this workspace."),
    405: ("MethodNotAllowed", "A method the path does not serve (any operation's other methods): "
                              "{\"error\": \"Method not allowed\"} with Allow."),
    409: ("Conflict", "The resource already exists."),
    413: ("PayloadTooLarge", "The request body is over the configured limit (POSTROOM_MAX_BODY_BYTES, "
                             f"default {DEFAULT_MAX_BODY // (1024 * 1024)} MiB)."),
    429: ("TooManyRequests", f"Rate limited: {lists_model.EMAIL_LIMIT} attempts per email and "
                             f"{lists_model.IP_LIMIT} per client address every {lists_model.RATE_WINDOW} s."),
    503: ("ServiceUnavailable", "The database is unavailable: {\"error\": \"database unavailable\"}; retry."),
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _error_responses() -> dict:
    out = {}
    for status, (name, description) in _ERRORS.items():
        response: dict = {"description": description,
                          "content": {"application/json": {"schema": _ref("Error")}}}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        elif status == 405:
            response["headers"] = {"Allow": {"description": "the method the path serves", "required": True,
                                             "schema": STRING}}
        out[name] = response
    return out


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# ---------------------------------------------------------------- parameters

def _q(name: str, schema: dict, required: bool = False, description: str | None = None, **extra) -> dict:
    out = {"name": name, "in": "query", "required": required, "schema": schema, **extra}
    if description:
        out["description"] = description
    return out


def _limit(default: int, maximum: int) -> dict:
    return _q("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default})


_CURSOR = _q("cursor", STRING, description="the previous page's next_cursor")
_EMAIL_Q = _q("email", STRING, True, "normalised (trimmed, lower-cased) before the lookup")


# ---------------------------------------------------------------- the operations of /api/*

class Op:
    """What the Endpoint does not say about one operation."""

    def __init__(self, summary: str, *, tag: str, ok: dict, params=(), body: dict | None = None,
                 required=(), status: int = 200, errors=(), description: str | None = None):
        self.summary, self.tag, self.ok, self.params = summary, tag, ok, list(params)
        self.body, self.required, self.status = body, list(required), status
        self.errors, self.description = set(errors), description


_PAGE_CURSOR = {"type": "string", "description": "present when another page follows"}
_CONTACT_FIELD_REQUIRED = {"contact": _ref("ContactInput")}

OPERATIONS: dict[str, Op] = {
    # ---- auth and workspaces
    "/api/user.rootSignin": Op(
        "Sign in as the root user with a signed timestamp", tag="auth",
        body={"email": STRING, "timestamp": {"type": "integer", "description": "unix seconds, within 60 s"},
              "signature": {"type": "string", "description": "hex HMAC-SHA256 of \"{email}:{timestamp}\" "
                                                             "under SECRET_KEY"}},
        required=["email", "timestamp", "signature"],
        ok=_obj({"token": STRING, "user": _ref("User")}, ["token", "user"]), errors=[401]),
    "/api/workspaces.list": Op(
        "The workspaces the caller is a member of (a bare array)", tag="workspaces",
        ok=_array(_ref("Workspace"))),
    "/api/workspaces.get": Op(
        "One workspace of the caller", tag="workspaces",
        params=[_q("id", _WORKSPACE_ID, True)],
        ok=_obj({"workspace": _ref("Workspace")}, ["workspace"]), errors=[400, 403]),
    "/api/workspaces.create": Op(
        "Create a workspace (root user only); the caller becomes its owner", tag="workspaces",
        body={"id": _WORKSPACE_ID, "name": {"type": "string", "maxLength": 255},
              "settings": {"type": ["object", "null"]}},
        required=["id", "name"],
        ok=_obj({"workspace": _ref("Workspace")}, ["workspace"]), errors=[403, 409]),
    "/api/workspaces.createAPIKey": Op(
        "Create an API key of the workspace (owners only)", tag="workspaces",
        body={"email_prefix": {"type": "string", "description": "up to 64 of a-z, 0-9, '.', '_' and '-'"}},
        required=["email_prefix"],
        ok=_obj({"token": STRING, "email": STRING}, ["token", "email"]), errors=[409]),
    # ---- contacts
    "/api/contacts.upsert": Op(
        "Create or update a contact", tag="contacts",
        body=_CONTACT_FIELD_REQUIRED, required=["contact"],
        ok=_obj({"email": STRING, "action": {"type": "string", "enum": ["created", "updated"]},
                 "contact": _ref("Contact"), "error": {"type": "null"}}, ["email", "action", "contact", "error"])),
    "/api/contacts.getByEmail": Op(
        "A contact by email, with its list memberships and segments", tag="contacts",
        params=[_EMAIL_Q], ok=_obj({"contact": _ref("ContactDetail")}, ["contact"]), errors=[404]),
    "/api/contacts.getByExternalID": Op(
        "A contact by external id (the most recently updated of several)", tag="contacts",
        params=[_q("external_id", STRING, True)],
        ok=_obj({"contact": _ref("ContactDetail")}, ["contact"]), errors=[404]),
    "/api/contacts.count": Op(
        "The number of contacts", tag="contacts",
        ok=_obj({"total_contacts": {"type": "integer", "minimum": 0}}, ["total_contacts"])),
    "/api/contacts.list": Op(
        "A page of contacts, newest first, with filters", tag="contacts",
        params=[*(_q(name, STRING, description="case-insensitive substring") for name in query.SUBSTRING_FILTERS),
                _q("list_id", STRING),
                _q("contact_list_status", {"type": "string", "enum": list(query.LIST_STATUSES)}),
                _q("segments[]", _array(STRING), style="form", explode=True),
                _q("segments", _array(STRING), style="form", explode=True),
                _q("with_contact_lists", BOOLEAN, description="true/false/1/0, any case"),
                _limit(paging.DEFAULT_LIMIT, paging.MAX_LIMIT), _CURSOR],
        ok=_obj({"contacts": _array(_ref("ContactWithLists")), "next_cursor": _PAGE_CURSOR}, ["contacts"])),
    "/api/contacts.delete": Op(
        "Delete a contact with its memberships and timeline", tag="contacts",
        body={"email": STRING}, required=["email"], ok=_ref("Success"), errors=[404]),
    "/api/contacts.import": Op(
        "Create or update many contacts; one operation per input row, in input order", tag="contacts",
        body={"contacts": _array({"anyOf": [_ref("ContactInput"), {"description": (
                  "any other value: reported as an error in its operation")}]}, minItems=1),
              "subscribe_to_lists": {"type": ["array", "null"], "items": _LIST_ID, "description": (
                  "list ids; an unknown one is a 400 before anything is written")}},
        required=["contacts"],
        ok=_obj({"operations": _array(_obj(
            {"email": STRING, "action": {"type": "string", "enum": ["create", "update", "error"]},
             "error": STRING}, ["email", "action"]))}, ["operations"])),
    "/api/timeline.list": Op(
        "A contact's timeline, newest first", tag="timeline",
        params=[_EMAIL_Q, _limit(timeline_api.DEFAULT_LIMIT, paging.MAX_LIMIT), _CURSOR],
        ok=_obj({"timeline": _array(_ref("TimelineEntry")), "next_cursor": _PAGE_CURSOR}, ["timeline"])),
    # ---- lists
    "/api/lists.list": Op("The live lists", tag="lists", ok=_obj({"lists": _array(_ref("List"))}, ["lists"])),
    "/api/lists.get": Op(
        "One list", tag="lists", params=[_q("id", _LIST_ID, True)],
        ok=_obj({"list": _ref("List")}, ["list"]), errors=[404]),
    "/api/lists.create": Op(
        "Create a list", tag="lists",
        body={"id": _LIST_ID, "name": {"type": "string", "maxLength": lists_model.NAME_MAX},
              "is_double_optin": {"type": ["boolean", "null"]}, "is_public": {"type": ["boolean", "null"]},
              "description": {"type": ["string", "null"], "maxLength": lists_model.DESCRIPTION_MAX}},
        required=["id", "name"], status=201, ok=_obj({"list": _ref("List")}, ["list"]), errors=[409]),
    "/api/lists.update": Op(
        "Update a list (flags and description left out keep their value)", tag="lists",
        body={"id": _LIST_ID, "name": {"type": "string", "maxLength": lists_model.NAME_MAX},
              "is_double_optin": {"type": ["boolean", "null"]}, "is_public": {"type": ["boolean", "null"]},
              "description": {"type": ["string", "null"], "maxLength": lists_model.DESCRIPTION_MAX}},
        required=["id", "name"], ok=_obj({"list": _ref("List")}, ["list"]), errors=[404]),
    "/api/lists.delete": Op(
        "Delete a list (soft)", tag="lists", body={"id": _LIST_ID}, required=["id"],
        ok=_ref("Success"), errors=[404]),
    "/api/lists.stats": Op(
        "Member counts of a list by status", tag="lists", params=[_q("list_id", _LIST_ID, True)],
        ok=_obj({"list_id": _LIST_ID, "stats": _obj(
            {f"total_{s}": {"type": "integer", "minimum": 0} for s in lists_model.STATUSES},
            [f"total_{s}" for s in lists_model.STATUSES])}, ["list_id", "stats"]),
        errors=[404]),
    "/api/lists.subscribe": Op(
        "Upsert a contact and subscribe it to lists (needs contacts write too)", tag="lists",
        body={**_CONTACT_FIELD_REQUIRED,
              "list_ids": _array(_LIST_ID, minItems=1, maxItems=lists_model.MAX_LIST_IDS)},
        required=["contact", "list_ids"], ok=_ref("Success")),
    "/api/contactLists.getByIDs": Op(
        "One membership", tag="contactLists", params=[_EMAIL_Q, _q("list_id", _LIST_ID, True)],
        ok=_obj({"contact_list": _ref("ContactListMembership")}, ["contact_list"]), errors=[404]),
    "/api/contactLists.getContactsByList": Op(
        "A page of a list's members in email order", tag="contactLists",
        params=[_q("list_id", _LIST_ID, True), _limit(lists_api.PAGE_DEFAULT, lists_api.PAGE_MAX), _CURSOR,
                _q("status", _STATUS)],
        ok=_obj({"contact_lists": _array(_ref("ContactListMembership")), "next_cursor": _PAGE_CURSOR},
                ["contact_lists"]), errors=[404]),
    "/api/contactLists.getListsByContact": Op(
        "A contact's memberships", tag="contactLists", params=[_EMAIL_Q],
        ok=_obj({"contact_lists": _array(_ref("ContactListMembership"))}, ["contact_lists"])),
    "/api/contactLists.updateStatus": Op(
        "Set a membership's status", tag="contactLists",
        body={"email": STRING, "list_id": _LIST_ID, "status": _STATUS}, required=["email", "list_id", "status"],
        ok=_obj({"success": TRUE, "message": {"type": "string", "enum": [
            "status updated successfully", "contact not in list"]}, "found": BOOLEAN},
            ["success", "message", "found"]), errors=[404]),
    "/api/contactLists.removeContact": Op(
        "Remove a contact from a list", tag="contactLists",
        body={"email": STRING, "list_id": _LIST_ID}, required=["email", "list_id"],
        ok=_ref("Success"), errors=[404]),
    # ---- webhooks
    "/api/webhookSubscriptions.create": Op(
        "Create a webhook subscription (its secret is in the answer)", tag="webhooks",
        body={"name": {"type": "string", "maxLength": webhooks_model.MAX_NAME},
              "url": {"type": "string", "format": "uri", "maxLength": webhooks_model.MAX_URL,
                      "description": "http(s); link-local and cloud metadata addresses are refused"},
              "event_types": _array(_EVENT_TYPE, minItems=1),
              "custom_event_filters": {"anyOf": [_FILTERS, {"type": "null"}]}},
        required=["name", "url", "event_types"], status=201,
        ok=_obj({"subscription": _ref("WebhookSubscription")}, ["subscription"])),
    "/api/webhookSubscriptions.list": Op(
        "The workspace's webhook subscriptions", tag="webhooks",
        ok=_obj({"subscriptions": _array(_ref("WebhookSubscription"))}, ["subscriptions"])),
    "/api/webhookSubscriptions.get": Op(
        "One webhook subscription", tag="webhooks", params=[_q("id", STRING, True)],
        ok=_obj({"subscription": _ref("WebhookSubscription")}, ["subscription"]), errors=[404]),
    "/api/webhookSubscriptions.update": Op(
        "Update a webhook subscription (absent fields keep their value)", tag="webhooks",
        body={"id": STRING, "name": {"type": "string", "maxLength": webhooks_model.MAX_NAME},
              "url": {"type": "string", "format": "uri", "maxLength": webhooks_model.MAX_URL},
              "event_types": _array(_EVENT_TYPE, minItems=1),
              "custom_event_filters": {"anyOf": [_FILTERS, {"type": "null"}]}, "enabled": BOOLEAN},
        required=["id"], ok=_obj({"subscription": _ref("WebhookSubscription")}, ["subscription"]),
        errors=[404]),
    "/api/webhookSubscriptions.delete": Op(
        "Delete a webhook subscription with its delivery log", tag="webhooks",
        body={"id": STRING}, required=["id"], ok=_ref("Success"), errors=[404]),
    "/api/webhookSubscriptions.toggle": Op(
        "Enable or disable a webhook subscription", tag="webhooks",
        body={"id": STRING, "enabled": BOOLEAN}, required=["id", "enabled"],
        ok=_obj({"subscription": _ref("WebhookSubscription")}, ["subscription"]), errors=[404]),
    "/api/webhookSubscriptions.regenerateSecret": Op(
        "Replace a webhook subscription's secret", tag="webhooks",
        body={"id": STRING}, required=["id"],
        ok=_obj({"subscription": _ref("WebhookSubscription")}, ["subscription"]), errors=[404]),
    "/api/webhookSubscriptions.deliveries": Op(
        "The delivery log, newest first", tag="webhooks",
        params=[_limit(20, 100), _q("offset", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1,
                                               "default": 0}),
                _q("subscription_id", STRING)],
        ok=_obj({"deliveries": _array(_ref("WebhookDelivery")), "total": {"type": "integer", "minimum": 0},
                 "limit": INTEGER, "offset": INTEGER}, ["deliveries", "total", "limit", "offset"]),
        errors=[404]),
    "/api/webhookSubscriptions.test": Op(
        "Send a signed sample event to the subscription's URL now and report the outcome", tag="webhooks",
        body={"id": STRING, "event_type": {"anyOf": [_EVENT_TYPE, {"enum": ["", None]}]}}, required=["id"],
        ok=_obj({"success": BOOLEAN, "status_code": INTEGER, "response_body": STRING, "error": STRING},
                ["success", "status_code", "response_body"]), errors=[404]),
    "/api/webhookSubscriptions.eventTypes": Op(
        "The event types a subscription can name", tag="webhooks",
        ok=_obj({"event_types": _array(_EVENT_TYPE)}, ["event_types"])),
    PATH: Op("This document", tag="platform", ok={"type": "object", "description": "OpenAPI 3.1"}),
}


# operationIds: Notifuse's for the operations of its public document (a client generated from
# either document gets the same method names), ours in the same style for the rest.
OPERATION_IDS = {
    "/api/user.rootSignin": "rootSignin",
    "/api/workspaces.list": "listWorkspaces",
    "/api/workspaces.get": "getWorkspace",
    "/api/workspaces.create": "createWorkspace",
    "/api/workspaces.createAPIKey": "createWorkspaceAPIKey",
    "/api/contacts.list": "listContacts",
    "/api/contacts.count": "countContacts",
    "/api/contacts.upsert": "upsertContact",
    "/api/contacts.getByEmail": "getContactByEmail",
    "/api/contacts.getByExternalID": "getContactByExternalID",
    "/api/contacts.import": "batchImportContacts",
    "/api/contacts.delete": "deleteContact",
    "/api/timeline.list": "listContactTimeline",
    "/api/lists.list": "listLists",
    "/api/lists.get": "getList",
    "/api/lists.create": "createList",
    "/api/lists.update": "updateList",
    "/api/lists.delete": "deleteList",
    "/api/lists.stats": "getListStats",
    "/api/lists.subscribe": "subscribeToListsAuthenticated",
    "/api/contactLists.getByIDs": "getContactListByIDs",
    "/api/contactLists.getContactsByList": "getContactsByList",
    "/api/contactLists.getListsByContact": "getListsByContact",
    "/api/contactLists.updateStatus": "updateContactListStatus",
    "/api/contactLists.removeContact": "removeContactFromList",
    "/api/webhookSubscriptions.create": "createWebhookSubscription",
    "/api/webhookSubscriptions.list": "listWebhookSubscriptions",
    "/api/webhookSubscriptions.get": "getWebhookSubscription",
    "/api/webhookSubscriptions.update": "updateWebhookSubscription",
    "/api/webhookSubscriptions.delete": "deleteWebhookSubscription",
    "/api/webhookSubscriptions.toggle": "toggleWebhookSubscription",
    "/api/webhookSubscriptions.regenerateSecret": "regenerateWebhookSecret",
    "/api/webhookSubscriptions.deliveries": "getWebhookDeliveries",
    "/api/webhookSubscriptions.test": "testWebhookSubscription",
    "/api/webhookSubscriptions.eventTypes": "listWebhookEventTypes",
    PATH: "getOpenAPIDocument",
}

# ---------------------------------------------------------------- paths outside /api (ROUTES and app.py)

def _plain_operations() -> dict:
    subscribe_body = _obj({"workspace_id": _ref("WorkspaceId"), **_CONTACT_FIELD_REQUIRED,
                           "list_ids": _array(_LIST_ID, minItems=1, maxItems=lists_model.MAX_LIST_IDS)},
                          ["workspace_id", "contact", "list_ids"], closed=False)

    def probe(operation_id: str, summary: str, ok: dict, errors=(), description: str | None = None,
              security: list | None = None) -> dict:
        """GET, and HEAD (the same answer without a body)."""
        get = {"summary": summary, "tags": ["platform"], "operationId": operation_id, "security": security or [],
               "responses": {"200": ok, **_error_refs(errors)}}
        if description:
            get["description"] = description
        head = dict(get, operationId="head" + operation_id.removeprefix("get"), summary=summary + " (headers only)",
                    responses={status: {"description": r.get("description", "see GET")}
                               for status, r in get["responses"].items()})
        return {"get": get, "head": head}

    return {
        "/subscribe": {"post": {
            "summary": "Public subscription form (no token; an Authorization header is ignored)",
            "description": "Public lists only. An existing contact's fields are never overwritten; a double "
                           "opt-in list gives `pending` and a signed confirmation link.",
            "tags": ["public"], "operationId": "subscribeToLists", "security": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": subscribe_body}}},
            "responses": {"200": _json(_ref("Success")), **_error_refs([400, 413, 429, 503])}}},
        "/confirm": {"get": {
            "summary": "The confirmation link of a double opt-in subscription", "tags": ["public"],
            "operationId": "confirmSubscription", "security": [],
            "parameters": [_q("workspace_id", STRING, True), _q("list_id", STRING, True), _q("email", STRING, True),
                           _q("expires", {"type": "string", "pattern": "^[0-9]{1,12}$"}, True),
                           _q("token", STRING, True)],
            "responses": {"200": _json(_obj({"success": TRUE, "message": STRING}, ["success", "message"])),
                          **_error_refs([400, 503])}}},
        "/healthz": probe("getLiveness", "Liveness: the process answers (the database is not asked)",
                          _json(_obj({"status": {"const": "ok"}}, ["status"]))),
        "/readyz": probe("getReadiness", "Readiness: the database answers and no migration is pending",
                         _json(_obj({"status": {"const": "ready"}}, ["status"]), "ready"), [503],
                         "503 `database unavailable` or `migrations pending: ...` when not ready."),
        "/metrics": probe("getMetrics", "Prometheus metrics",
                          {"description": "Prometheus text exposition format",
                           "content": {"text/plain": {"schema": STRING}}}, [401],
                          "No token unless POSTROOM_METRICS_TOKEN is set; then `Bearer <that token>`.",
                          [{}, {"MetricsToken": []}]),
    }


# ---------------------------------------------------------------- assembling the document

def _error_refs(statuses) -> dict:
    return {str(s): {"$ref": f"#/components/responses/{_ERRORS[s][0]}"} for s in sorted(statuses)}


def _operation(endpoint: Endpoint, op: Op) -> dict:
    errors = set(op.errors)
    if endpoint.path != PATH:
        errors.add(503)  # every other endpoint reads the database (tokens of users included)
    if endpoint.auth != "none":
        errors.add(401)
    if endpoint.auth == "workspace":
        errors |= {400, 403}
    if endpoint.method == "POST":
        errors |= {400, 413}
    if op.params and any(p.get("required") for p in op.params):
        errors.add(400)
    out: dict = {"summary": op.summary, "tags": [op.tag], "operationId": OPERATION_IDS[endpoint.path]}
    if op.description:
        out["description"] = op.description
    if endpoint.auth == "none":
        out["security"] = []
    elif endpoint.auth == "workspace" and endpoint.resource:
        out["description"] = (out.get("description", "") + f" Permission: {endpoint.resource} "
                              f"{'write' if endpoint.write else 'read'}.").strip()
    workspace = endpoint.auth == "workspace"
    if endpoint.method == "GET":
        params = list(op.params)
        if workspace:
            params.insert(0, _q(endpoint.workspace_param, _ref("WorkspaceId"), True))
        if params:
            out["parameters"] = params
    else:
        props = dict(op.body or {})
        required = list(op.required)
        if workspace:
            props = {endpoint.workspace_param: _ref("WorkspaceId"), **props}
            required.insert(0, endpoint.workspace_param)
        out["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _obj(props, required, closed=False)}}}
    out["responses"] = {str(op.status): _json(op.ok), **_error_refs(errors)}
    return out


def endpoints() -> list[Endpoint]:
    """Every /api endpoint the app registers (app.CAPABILITIES' ENDPOINTS), this one included."""
    from postroom import app  # app imports this module: late, to avoid the cycle

    return [e for capability in app.CAPABILITIES for e in capability.ENDPOINTS]


_DESCRIPTION = """\
Postroom's HTTP API, compatible with Notifuse's: RPC-style paths `/api/<resource>.<verb>`, reads are
GET with query parameters, writes are POST with a JSON body, and every call names its `workspace_id`.

- Auth: `Authorization: Bearer <token>`, an HS256 JWT (an API key, or a user session from
  user.rootSignin). Authentication is checked before the method.
- Every error is JSON `{"error": "<message>"}` on every status. A method an operation does not list
  gets 405 `Method not allowed` (401 first when a token is required and missing); an unknown
  `/api/...` path gets 404 `not found`.
- OPTIONS on any path answers 200 with an empty body and the CORS headers.
- JSON is compact; times are RFC 3339 in UTC with `Z`; a whole number has no fraction.
- Query parameters given empty count as absent.
"""


def build() -> dict:
    endpoints_ = endpoints()
    paths: dict = {}
    for endpoint in endpoints_:
        op = OPERATIONS.get(endpoint.path)
        if op is None:
            continue  # tests/test_openapi.py names every registered endpoint left out
        paths[endpoint.path] = {endpoint.method.lower(): _operation(endpoint, op)}
    paths.update(_plain_operations())
    try:
        version = metadata.version("postroom")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "0.0.0"
    tags = []
    for item in paths.values():
        for operation in item.values():
            for tag in operation["tags"]:
                if tag not in tags:
                    tags.append(tag)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Postroom API", "version": version, "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"BearerAuth": []}],
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "MetricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "the value of POSTROOM_METRICS_TOKEN"},
            },
            "schemas": _schemas(),
            "responses": _error_responses(),
        },
    }


_document: bytes | None = None


def document_bytes() -> bytes:
    """The document as served; built on first use (the app's modules must all be imported)."""
    global _document
    if _document is None:
        _document = jsonenc.encode(build())
    return _document


def document() -> dict:
    return jsonenc.decode(document_bytes())


async def serve(call: Call) -> Response:
    return Response(document_bytes(), media_type="application/json")


ENDPOINTS = [Endpoint(PATH, "GET", serve, auth="none")]
