"""The OpenAPI part of lists: lists, memberships, and the public /subscribe and /confirm."""

from __future__ import annotations

from postroom.lists import api as lists_api, model as lists_model
from postroom.platform.openapi import (BOOLEAN, STRING, TIME, TRUE, CURSOR_PARAM, EMAIL_PARAM, PAGE_CURSOR, Op, array,
                                     error_refs, json_content, limit_param, obj, param, ref)

LIST_ID = {"type": "string", "pattern": f"^{lists_model.LIST_ID.pattern}$"}
STATUS = {"type": "string", "enum": list(lists_model.STATUSES)}
_TEMPLATE_REF_PROPS = {
    "id": {"type": "string", "minLength": 1, "maxLength": lists_model.TEMPLATE_ID_MAX},
    "version": {"type": "integer", "minimum": 0, "description": "0 or absent: the latest version when sent"}}
_TEMPLATE_REF_ABOUT = ("An email template of the workspace: the confirmation email of a double opt-in list "
                       "(none: the built-in default)")
TEMPLATE_REF = obj(_TEMPLATE_REF_PROPS, ["id", "version"], description=_TEMPLATE_REF_ABOUT)
TEMPLATE_REF_INPUT = obj(_TEMPLATE_REF_PROPS, ["id"], closed=False, description=_TEMPLATE_REF_ABOUT)

SCHEMAS = {
    "ContactListMembership": obj(
        {"email": STRING, "list_id": STRING, "list_name": STRING, "status": STATUS,
         "created_at": TIME, "updated_at": TIME},
        ["email", "list_id", "list_name", "status", "created_at", "updated_at"]),
    "List": obj(
        {"id": LIST_ID, "name": {"type": "string", "maxLength": lists_model.NAME_MAX},
         "is_double_optin": BOOLEAN, "is_public": BOOLEAN,
         "description": {"type": "string", "maxLength": lists_model.DESCRIPTION_MAX,
                         "description": "omitted when empty"},
         "double_optin_template": TEMPLATE_REF,
         "created_at": TIME, "updated_at": TIME},
        ["id", "name", "is_double_optin", "is_public", "created_at", "updated_at"]),
}

_LIST_BODY = {"id": LIST_ID, "name": {"type": "string", "maxLength": lists_model.NAME_MAX},
              "is_double_optin": {"type": ["boolean", "null"]}, "is_public": {"type": ["boolean", "null"]},
              "description": {"type": ["string", "null"], "maxLength": lists_model.DESCRIPTION_MAX},
              "double_optin_template": {"anyOf": [TEMPLATE_REF_INPUT, {"type": "null"}],
                                        "description": "null clears it; left out keeps it (update)"}}

OPERATIONS = {
    "/api/lists.list": Op("The live lists", id="listLists", tag="lists", ok=obj({"lists": array(ref("List"))}, ["lists"])),
    "/api/lists.get": Op(
        "One list", id="getList", tag="lists", params=[param("id", LIST_ID, True)],
        ok=obj({"list": ref("List")}, ["list"]), errors=[404]),
    "/api/lists.create": Op(
        "Create a list", id="createList", tag="lists",
        body=_LIST_BODY,
        required=["id", "name"], status=201, ok=obj({"list": ref("List")}, ["list"]), errors=[409]),
    "/api/lists.update": Op(
        "Update a list (flags and description left out keep their value)", id="updateList", tag="lists",
        body=_LIST_BODY,
        required=["id", "name"], ok=obj({"list": ref("List")}, ["list"]), errors=[404]),
    "/api/lists.delete": Op(
        "Delete a list (soft)", id="deleteList", tag="lists", body={"id": LIST_ID}, required=["id"],
        ok=ref("Success"), errors=[404]),
    "/api/lists.stats": Op(
        "Member counts of a list by status", id="getListStats", tag="lists", params=[param("list_id", LIST_ID, True)],
        ok=obj({"list_id": LIST_ID, "stats": obj(
            {f"total_{s}": {"type": "integer", "minimum": 0} for s in lists_model.STATUSES},
            [f"total_{s}" for s in lists_model.STATUSES])}, ["list_id", "stats"]),
        errors=[404]),
    "/api/lists.subscribe": Op(
        "Upsert a contact and subscribe it to lists (needs contacts write too)", id="subscribeToListsAuthenticated", tag="lists",
        body={"contact": ref("ContactInput"),
              "list_ids": array(LIST_ID, minItems=1, maxItems=lists_model.MAX_LIST_IDS)},
        required=["contact", "list_ids"], ok=ref("Success")),
    "/api/contactLists.getByIDs": Op(
        "One membership", id="getContactListByIDs", tag="contactLists", params=[EMAIL_PARAM, param("list_id", LIST_ID, True)],
        ok=obj({"contact_list": ref("ContactListMembership")}, ["contact_list"]), errors=[404]),
    "/api/contactLists.getContactsByList": Op(
        "A page of a list's members in email order", id="getContactsByList", tag="contactLists",
        params=[param("list_id", LIST_ID, True), limit_param(lists_api.PAGE_DEFAULT, lists_api.PAGE_MAX), CURSOR_PARAM,
                param("status", STATUS)],
        ok=obj({"contact_lists": array(ref("ContactListMembership")), "next_cursor": PAGE_CURSOR},
                ["contact_lists"]), errors=[404]),
    "/api/contactLists.getListsByContact": Op(
        "A contact's memberships", id="getListsByContact", tag="contactLists", params=[EMAIL_PARAM],
        ok=obj({"contact_lists": array(ref("ContactListMembership"))}, ["contact_lists"])),
    "/api/contactLists.updateStatus": Op(
        "Set a membership's status", id="updateContactListStatus", tag="contactLists",
        body={"email": STRING, "list_id": LIST_ID, "status": STATUS}, required=["email", "list_id", "status"],
        ok=obj({"success": TRUE, "message": {"type": "string", "enum": [
            "status updated successfully", "contact not in list"]}, "found": BOOLEAN},
            ["success", "message", "found"]), errors=[404]),
    "/api/contactLists.removeContact": Op(
        "Remove a contact from a list", id="removeContactFromList", tag="contactLists",
        body={"email": STRING, "list_id": LIST_ID}, required=["email", "list_id"],
        ok=ref("Success"), errors=[404]),
}

# The public routes (lists.api ROUTES): no token, the workspace named in the request. POST
# /subscribe is documented by preferences, which routes it.
PATHS = {
    "/confirm": {"get": {
        "summary": "The confirmation link of a double opt-in subscription", "tags": ["public"],
        "operationId": "confirmSubscription", "security": [],
        "parameters": [param("workspace_id", STRING, True), param("list_id", STRING, True),
                       param("email", STRING, True),
                       param("expires", {"type": "string", "pattern": "^[0-9]{1,12}$"}, True),
                       param("token", STRING, True)],
        "responses": {"200": json_content(obj({"success": TRUE, "message": STRING}, ["success", "message"])),
                      **error_refs([400, 503])}}},
}
