"""The OpenAPI part of contacts: the contact object, generated from the field table of
contacts.model, and the contacts.* operations (contacts.import included)."""

from __future__ import annotations

from postroom.contacts import model, query
from postroom.lists.openapi import LIST_ID
from postroom.platform import paging
from postroom.platform.openapi import BOOLEAN, STRING, TIME, CURSOR_PARAM, EMAIL_PARAM, PAGE_CURSOR, Op, array, limit_param, obj, param, ref


def _contact_field(name: str, *, write: bool) -> dict:
    """One contact field: its JSON type and limit; nullable on writes (null clears it), never
    null on reads (a NULL field is omitted)."""
    m = model
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


def _schemas() -> dict:
    email_in = {"type": "string", "format": "email", "maxLength": model.EMAIL_MAX,
                "description": "a valid address; trimmed and lower-cased"}
    email_out = {"type": "string", "maxLength": model.EMAIL_MAX, "description": "normalised: trimmed, lower-case"}
    write = {"email": email_in, **{f: _contact_field(f, write=True) for f in model.FIELDS if f != "email"}}
    read = {"email": email_out, **{f: _contact_field(f, write=False) for f in model.FIELDS if f != "email"}}
    always = ("email", "created_at", "updated_at")
    memberships = array(ref("ContactListMembership"))
    return {
        "ContactInput": obj(write, ["email"], closed=False, description=(
            "A contact to write. Key absent: unchanged; null: cleared (on contacts.import: kept); "
            "\"\": stored as \"\". created_at/updated_at are optional (history imports). Unknown keys "
            "are ignored. Fields are validated in this order; the first failure is the 400.")),
        "Contact": obj(read, always, description="A stored contact; NULL fields are omitted, \"\" is kept."),
        "ContactWithLists": obj({**read, "contact_lists": memberships}, always, description=(
            "A contact of contacts.list; contact_lists only with with_contact_lists=true.")),
        "ContactSegment": obj({"email": email_out, "segment_id": STRING, "version": {"type": "integer", "minimum": 1},
                               "matched_at": TIME, "computed_at": TIME},
                              ["email", "segment_id", "version", "matched_at", "computed_at"],
                              description="A segment membership: when the contact joined, and when it was last confirmed."),
        "ContactDetail": obj({**read, "contact_lists": memberships,
                               "contact_segments": array(ref("ContactSegment"))},
                              [*always, "contact_lists", "contact_segments"],
                              description="A contact as getByEmail/getByExternalID send it."),
    }


SCHEMAS = _schemas()

OPERATIONS = {
    "/api/contacts.upsert": Op(
        "Create or update a contact", id="upsertContact", tag="contacts",
        body={"contact": ref("ContactInput")}, required=["contact"],
        ok=obj({"email": STRING, "action": {"type": "string", "enum": ["created", "updated"]},
                 "contact": ref("Contact"), "error": {"type": "null"}}, ["email", "action", "contact", "error"])),
    "/api/contacts.getByEmail": Op(
        "A contact by email, with its list memberships and segments", id="getContactByEmail", tag="contacts",
        params=[EMAIL_PARAM], ok=obj({"contact": ref("ContactDetail")}, ["contact"]), errors=[404]),
    "/api/contacts.getByExternalID": Op(
        "A contact by external id (the most recently updated of several)", id="getContactByExternalID", tag="contacts",
        params=[param("external_id", STRING, True)],
        ok=obj({"contact": ref("ContactDetail")}, ["contact"]), errors=[404]),
    "/api/contacts.count": Op(
        "The number of contacts", id="countContacts", tag="contacts",
        ok=obj({"total_contacts": {"type": "integer", "minimum": 0}}, ["total_contacts"])),
    "/api/contacts.list": Op(
        "A page of contacts, newest first, with filters", id="listContacts", tag="contacts",
        params=[*(param(name, STRING, description="case-insensitive substring") for name in query.SUBSTRING_FILTERS),
                param("list_id", STRING),
                param("contact_list_status", {"type": "string", "enum": list(query.LIST_STATUSES)}),
                param("segments[]", array(STRING), style="form", explode=True),
                param("segments", array(STRING), style="form", explode=True),
                param("with_contact_lists", BOOLEAN, description="true/false/1/0, any case"),
                limit_param(paging.DEFAULT_LIMIT, paging.MAX_LIMIT), CURSOR_PARAM],
        ok=obj({"contacts": array(ref("ContactWithLists")), "next_cursor": PAGE_CURSOR}, ["contacts"])),
    "/api/contacts.delete": Op(
        "Delete a contact with its memberships and timeline", id="deleteContact", tag="contacts",
        body={"email": STRING}, required=["email"], ok=ref("Success"), errors=[404]),
    "/api/contacts.import": Op(
        "Create or update many contacts; one operation per input row, in input order", id="batchImportContacts", tag="contacts",
        body={"contacts": array({"anyOf": [ref("ContactInput"), {"description": (
                  "any other value: reported as an error in its operation")}]}, minItems=1),
              "subscribe_to_lists": {"type": ["array", "null"], "items": LIST_ID, "description": (
                  "list ids; an unknown one is a 400 before anything is written")}},
        required=["contacts"],
        ok=obj({"operations": array(obj(
            {"email": STRING, "action": {"type": "string", "enum": ["create", "update", "error"]},
             "error": STRING}, ["email", "action"]))}, ["operations"])),
}
