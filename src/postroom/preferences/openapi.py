"""The OpenAPI part of preferences: the public unsubscribe and preference-center routes (no
token; each authenticated by email_hmac), the notification-center page and its form."""

from __future__ import annotations

from postroom.lists import model as lists_model
from postroom.platform.openapi import (RETRY_AFTER, STRING, array, error_refs, error_response, json_content, obj,
                                       param, ref)
from postroom.preferences import model

HMAC = {"type": "string", "description": "lowercase hex HMAC-SHA256 of the normalised email under the "
                                         "workspace secret (engagement contract 2.2)"}
LIST_ID = {"type": "string", "pattern": f"^{lists_model.LIST_ID.pattern}$"}


def _limited(what: str) -> dict:
    return error_response(f"Rate limited ({what}): `{model.RATE_LIMITED}`", RETRY_AFTER)


HTML = {"text/html": {"schema": STRING}}


def _html(description: str, headers: dict | None = None) -> dict:
    out: dict = {"description": description, "content": HTML}
    if headers:
        out["headers"] = headers
    return out


LOCATION = {"Location": {"description": "where to go", "required": True, "schema": STRING}}

SCHEMAS = {
    "ContactPreferences": obj(
        {"contact": obj({name: STRING for name in model.CONTACT_FIELDS}, ["email"],
                        description="only these six fields, NULLs omitted"),
         "public_lists": array(ref("List")), "contact_lists": array(ref("ContactListMembership")),
         "logo_url": STRING, "website_url": STRING},
        ["contact", "public_lists", "contact_lists", "logo_url", "website_url"]),
}

_IDENTITY_QUERY = [
    param("wid", STRING, description="workspace id (form path)"),
    param("email", STRING, description="the contact's email (form path)"),
    param("email_hmac", HMAC),
    param("lids", STRING, description="list ids, repeated or comma-separated (form path)"),
    param("mid", STRING, description="the message the link was in"),
]

_ONECLICK_JSON = obj({"wid": STRING, "email": STRING, "email_hmac": HMAC,
                      "lids": array(STRING, maxItems=model.MAX_LIST_IDS), "mid": STRING},
                     ["wid", "email", "email_hmac", "lids"], closed=False)

_SUBSCRIBE_BODY = obj({"workspace_id": ref("WorkspaceId"),
                       "contact": {"allOf": [ref("ContactInput")], "properties": {"email_hmac": HMAC}},
                       "list_ids": array(LIST_ID, minItems=1, maxItems=lists_model.MAX_LIST_IDS)},
                      ["workspace_id", "contact", "list_ids"], closed=False)

_PREFERENCES_BODY = obj({"workspace_id": ref("WorkspaceId"), "email": STRING, "email_hmac": HMAC,
                         "language": {"type": "string", "pattern": "^[a-z]{2}$"},
                         "timezone": {"type": "string", "minLength": model.TIMEZONE_MIN,
                                      "maxLength": model.TIMEZONE_MAX}},
                        ["workspace_id", "email", "email_hmac"], closed=False)

PATHS = {
    "/unsubscribe-oneclick": {
        "post": {
            "summary": "One-click unsubscribe (RFC 8058) and the page's JSON unsubscribe",
            "description": (
                "Chosen by Content-Type. Not `application/json` (form-urlencoded, multipart, none): the "
                "identity is read from the query string (the List-Unsubscribe URL) and the body is ignored; "
                "without `email_hmac`, `mid` must name a message sent to that email on one of `lids`. "
                "`application/json`: `{wid, email, email_hmac, lids, mid?}`; a bot user agent gets success "
                "with no effect. Active and pending memberships become unsubscribed; others are left as they "
                "are. Never a redirect, never a cookie."),
            "tags": ["public"], "operationId": "unsubscribeOneClick", "security": [],
            "parameters": _IDENTITY_QUERY,
            "requestBody": {"required": False, "content": {
                "application/json": {"schema": _ONECLICK_JSON},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                "multipart/form-data": {"schema": {"type": "object"}}}},
            "responses": {"200": json_content(ref("Success")), **error_refs([400]),
                          "401": error_response(f"`{model.UNAUTHORIZED}`"), **error_refs([413]),
                          "429": _limited(f"{model.UNSUBSCRIBE_EMAIL_LIMIT} per email a minute"),
                          **error_refs([503])}},
        "get": {
            "summary": "Opening the header URL: 303 to the notification center, nothing changed",
            "tags": ["public"], "operationId": "unsubscribeOneClickPage", "security": [],
            "parameters": _IDENTITY_QUERY,
            "responses": {"303": {"description": "to E/notification-center (valid email_hmac)", "headers": LOCATION},
                          **error_refs([405, 503])}},
    },
    "/preferences": {
        "get": {
            "summary": "What the contact may see of itself, the public lists and its memberships",
            "tags": ["public"], "operationId": "getContactPreferences", "security": [],
            "parameters": [param("workspace_id", STRING, True), param("email", STRING, True),
                           param("email_hmac", HMAC, True)],
            "responses": {"200": json_content(ref("ContactPreferences")), **error_refs([400]),
                          "401": error_response(f"`{model.UNAUTHORIZED}`"),
                          "404": error_response(f"`{model.CONTACT_NOT_FOUND}`"),
                          "429": _limited(f"{model.READ_IP_LIMIT} per client address a minute"),
                          **error_refs([503])}},
        "post": {
            "summary": "Set the contact's language and/or timezone",
            "tags": ["public"], "operationId": "updateContactPreferences", "security": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _PREFERENCES_BODY}}},
            "responses": {"200": json_content(ref("Success")), **error_refs([400]),
                          "401": error_response(f"`{model.UNAUTHORIZED}`"),
                          "404": error_response(f"`{model.CONTACT_NOT_FOUND}`"), **error_refs([413]),
                          "429": _limited(f"{model.WRITE_EMAIL_LIMIT} per email and {model.WRITE_IP_LIMIT} per "
                                          "client address a minute"),
                          **error_refs([503])}},
    },
    "/subscribe": {"post": {
        "summary": "Public subscription form (no token; an Authorization header is ignored)",
        "description": (
            "Public lists only. An existing contact's fields are never overwritten; a double opt-in list gives "
            "`pending` and a signed confirmation link. With a valid `contact.email_hmac` the request is the "
            "mailbox owner's: a pending membership becomes active (list.confirmed), an unsubscribed one comes "
            "back (active, or pending on a double opt-in list), and a private list is allowed when the contact "
            "already has a membership on it; a wrong email_hmac is 401."),
        "tags": ["public"], "operationId": "subscribeToLists", "security": [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _SUBSCRIBE_BODY}}},
        "responses": {"200": json_content(ref("Success")), **error_refs([400]),
                      "401": error_response(f"`{model.UNAUTHORIZED}`"), **error_refs([413]),
                      "429": error_response(
                          f"Rate limited: {lists_model.EMAIL_LIMIT} attempts per email and {lists_model.IP_LIMIT} "
                          f"per client address every {lists_model.RATE_WINDOW} s.", RETRY_AFTER),
                      **error_refs([503])}}},
    "/notification-center": {"get": {
        "summary": "The notification center: the contact's lists and preferences, as HTML without JavaScript",
        "description": ("`action=unsubscribe|confirm` with `lid` shows that list's button first; nothing "
                        "changes on GET. The page's forms post to /preferences/form."),
        "tags": ["public"], "operationId": "notificationCenter", "security": [],
        "parameters": [param("wid", STRING), param("email", STRING), param("email_hmac", HMAC),
                       param("lid", STRING), param("lname", STRING), param("mid", STRING),
                       param("action", {"type": "string", "enum": list(model.ACTIONS)}),
                       param("notice", STRING), param("lang", STRING)],
        "responses": {"200": _html("the page (or the preview screen)"),
                      "400": _html("missing parameters"), "401": _html("invalid link"),
                      "404": _html("no such contact"), "429": _html("too many requests", RETRY_AFTER),
                      **error_refs([503])}}},
    "/preferences/form": {"post": {
        "summary": "The notification center's forms (application/x-www-form-urlencoded)",
        "description": ("Fields `wid`, `email`, `email_hmac`, `action` (subscribe, unsubscribe, confirm, settings), "
                        "`list_id`, `mid`, `language`, `timezone`, `lang`. Answered 303 back to the page with a "
                        "`notice`."),
        "tags": ["public"], "operationId": "notificationCenterForm", "security": [],
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
        "responses": {"303": {"description": "back to the page", "headers": LOCATION},
                      "400": _html("a form the page does not send"), "401": _html("invalid link"),
                      "429": _html("too many requests", RETRY_AFTER), **error_refs([413, 503])}}},
}
