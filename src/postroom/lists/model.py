"""List and subscription rules: validation, the membership state machine, event shapes,
confirmation links and rate-limit buckets. Pure: no I/O.

Membership states: active, pending, unsubscribed, bounced, complained; "not a member" is a
membership that never existed or was removed (its row is kept with deleted_at set).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from postroom.contacts import model as contacts
from postroom.platform import fields
from postroom.platform.errors import RuleError

# ---------------------------------------------------------------- lists

LIST_ID = re.compile(r"[a-zA-Z0-9_]{1,32}")
NAME_MAX = 255
DESCRIPTION_MAX = 2000
MAX_LIST_IDS = 100  # per subscribe call


class ListError(RuleError):
    """A request the list rules reject: `.status` and the whole user-facing `.message`."""


def _check_id(prefix: str, value, name: str = "id") -> str:
    fields.required_string(value, f"{prefix}{name}", ListError)
    if not LIST_ID.fullmatch(value):
        if len(value) > 32:
            raise ListError(f"{prefix}{name} length must be between 1 and 32")
        raise ListError(f"{prefix}{name} must contain only letters, digits and _")
    return value


def list_id_param(value: str | None, name: str = "id") -> str:
    """A list id from a query string or body, for endpoints that look a list up."""
    return _check_id("", value, name)


def _check_bool(prefix: str, body: dict, name: str, default):
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ListError(f"{prefix}{name} must be a boolean")
    return value


def _check_name(prefix: str, value) -> str:
    return fields.text(value, f"{prefix}name", NAME_MAX, ListError, fields.BETWEEN)


def _check_description(prefix: str, body: dict, default):
    if "description" not in body:
        return default
    value = body["description"]
    if value is None:
        return None
    name = f"{prefix}description"
    value = fields.without_nul(fields.string(value, name, ListError), name, ListError).strip()
    return fields.at_most(value, name, DESCRIPTION_MAX, ListError)


TEMPLATE_REF = "double_optin_template"
TEMPLATE_ID_MAX = 32   # a template id's limit (templates contract 1.1)
_INT64 = 2 ** 63


def _check_template_ref(prefix: str, body: dict, default):
    """double_optin_template: absent keeps `default`, null clears it, else a template reference
    {"id", "version"?} (version 0 or absent: the template's latest version when the mail is sent).
    Stored as {"id", "version"}. Whether the template exists, in this workspace, and is an email
    template is checked by the caller (check_template_ref), which can read templates."""
    if TEMPLATE_REF not in body:
        return default
    value = body[TEMPLATE_REF]
    if value is None:
        return None
    name = f"{prefix}{TEMPLATE_REF}"
    if not isinstance(value, dict):
        raise ListError(f"{name} must be an object")
    template_id = fields.required_string(value.get("id"), f"{name}.id", ListError)
    fields.at_most(fields.without_nul(template_id, f"{name}.id", ListError), f"{name}.id", TEMPLATE_ID_MAX,
                   ListError, fields.BETWEEN)
    version = value.get("version")
    if version is None:
        version = 0
    if not isinstance(version, int) or isinstance(version, bool) or abs(version) >= _INT64:
        raise ListError(f"{name}.version must be an integer")
    if version < 0:
        raise ListError(f"{name}.version must be zero or positive")
    return {"id": template_id, "version": version}


def check_template_ref(prefix: str, ref: dict, template) -> None:
    """`template`: the referenced template as stored (that version, or the latest when the
    reference names none), None when the workspace has no such live template."""
    name = f"{prefix}{TEMPLATE_REF}"
    if template is None:
        shown = ref["id"] + (f" version {ref['version']}" if ref["version"] else "")
        raise ListError(f"{name}: template not found: {shown}")
    if template["channel"] != "email" or not template["email"]:
        raise ListError(f"{name}: template {ref['id']} is not an email template")


CREATE_PREFIX = "invalid create list request: "
UPDATE_PREFIX = "invalid update list request: "


def parse_new_list(body: dict) -> dict:
    """lists.create: id, name (required), is_double_optin, is_public (default false), description,
    double_optin_template (default none)."""
    p = CREATE_PREFIX
    return {
        "id": _check_id(p, body.get("id")),
        "name": _check_name(p, body.get("name")),
        "is_double_optin": _check_bool(p, body, "is_double_optin", False),
        "is_public": _check_bool(p, body, "is_public", False),
        "description": _check_description(p, body, None),
        TEMPLATE_REF: _check_template_ref(p, body, None),
    }


def parse_list_update(body: dict, stored) -> dict:
    """lists.update: id and name required (as Notifuse); a flag or description left out keeps its
    stored value (improvement: Notifuse resets it to false/empty)."""
    p = UPDATE_PREFIX
    return {
        "id": stored["id"],
        "name": _check_name(p, body.get("name")),
        "is_double_optin": _check_bool(p, body, "is_double_optin", stored["is_double_optin"]),
        "is_public": _check_bool(p, body, "is_public", stored["is_public"]),
        "description": _check_description(p, body, stored["description"]),
        TEMPLATE_REF: _check_template_ref(p, body, stored[TEMPLATE_REF]),
    }


def list_to_wire(row) -> dict:
    out = {"id": row["id"], "name": row["name"], "is_double_optin": row["is_double_optin"],
           "is_public": row["is_public"]}
    if row["description"]:  # omitted when empty, as Notifuse does
        out["description"] = row["description"]
    if row[TEMPLATE_REF]:    # omitted when none (Notifuse: omitempty)
        out[TEMPLATE_REF] = {"id": row[TEMPLATE_REF]["id"], "version": row[TEMPLATE_REF].get("version") or 0}
    out["created_at"] = row["created_at"]
    out["updated_at"] = row["updated_at"]
    return out


# ---------------------------------------------------------------- membership states and events

ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED, COMPLAINED = (
    "active", "pending", "unsubscribed", "bounced", "complained")
STATUSES = (ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED, COMPLAINED)

SUBSCRIBED, PENDING_KIND, CONFIRMED, RESUBSCRIBED, UNSUBSCRIBED_KIND, BOUNCED_KIND, COMPLAINED_KIND, REMOVED = (
    "list.subscribed", "list.pending", "list.confirmed", "list.resubscribed",
    "list.unsubscribed", "list.bounced", "list.complained", "list.removed")
KINDS = (SUBSCRIBED, PENDING_KIND, CONFIRMED, RESUBSCRIBED, UNSUBSCRIBED_KIND, BOUNCED_KIND,
         COMPLAINED_KIND, REMOVED)


def parse_status(value) -> str:
    if value is None or value == "":
        raise ListError("status is required")
    if not isinstance(value, str) or value not in STATUSES:
        shown = value if isinstance(value, str) else contacts.json_type_name(value)
        raise ListError(f"invalid status: {shown[:100]}")
    return value


@dataclass(frozen=True)
class Change:
    """What happens to one membership: its status afterwards (None: removed) and the event kind."""

    status: str | None
    kind: str


def on_subscribe(current: str | None, double_optin: bool, public: bool) -> Change | None:
    """A subscribe (lists.subscribe when `public` is false, POST /subscribe when true).

    - not a member: `active`, except on a double opt-in list through the public form: `pending`
      (the authenticated caller vouches for the consent, as the contract says);
    - unsubscribed: `pending` on a double opt-in list (consent must be given again), else
      `active` (list.resubscribed);
    - pending: stays pending, and the confirmation link is issued again (list.pending), so a
      person who lost the message can ask for another; only the link or an explicit
      contactLists.updateStatus ends the wait;
    - active: nothing; bounced and complained: never re-activated by a subscribe.
    """
    if current is None:
        if double_optin and public:
            return Change(PENDING, PENDING_KIND)
        return Change(ACTIVE, SUBSCRIBED)
    if current == UNSUBSCRIBED:
        return Change(PENDING, PENDING_KIND) if double_optin else Change(ACTIVE, RESUBSCRIBED)
    if current == PENDING:
        return Change(PENDING, PENDING_KIND)
    return None  # active, bounced, complained


def on_owner_subscribe(current: str | None, double_optin: bool, public: bool) -> Change | None:
    """A subscribe by the mailbox's owner (POST /subscribe with a valid email_hmac: the
    preference center's Subscribe and the confirm link of a double opt-in email):

    - pending: `active` (list.confirmed), no new confirmation link;
    - a list that is not public: only for a contact that already has a membership on it (any
      status, not removed), else refused as the public form refuses it;
    - otherwise as the public form (on_subscribe with `public`): unsubscribed comes back
      `active` on a single opt-in list and `pending` on a double opt-in one; bounced and
      complained stay as they are.
    """
    if current is None and not public:
        raise ListError(NOT_PUBLIC)
    if current == PENDING:
        return Change(ACTIVE, CONFIRMED)
    return on_subscribe(current, double_optin, True)


def on_unsubscribe(current: str | None) -> Change | None:
    """An unsubscribe by the mailbox's owner (one-click, the preference center): active and
    pending become `unsubscribed`; unsubscribed, bounced, complained and "not a member" stay as
    they are, so a repeated request writes nothing and a suppression is never overwritten."""
    if current in (ACTIVE, PENDING):
        return Change(UNSUBSCRIBED, UNSUBSCRIBED_KIND)
    return None


def on_import(current: str | None) -> Change | None:
    """contacts.import's subscribe_to_lists (as Notifuse: active even on a double opt-in list):
    only a non-member becomes active. Applied set-based by lists.store.add_members."""
    return Change(ACTIVE, SUBSCRIBED) if current is None else None


_STATUS_KINDS = {PENDING: PENDING_KIND, UNSUBSCRIBED: UNSUBSCRIBED_KIND, BOUNCED: BOUNCED_KIND,
                 COMPLAINED: COMPLAINED_KIND}


def on_set_status(current: str, new: str) -> Change | None:
    """contactLists.updateStatus on an existing membership: any status may be set explicitly.
    Setting the current status again changes nothing (no event)."""
    if new == current:
        return None
    if new == ACTIVE:
        return Change(ACTIVE, CONFIRMED if current == PENDING else RESUBSCRIBED)
    return Change(new, _STATUS_KINDS[new])


def on_confirm(current: str | None) -> Change | None:
    """A valid confirmation link: pending -> active. Already active: nothing (a second click).
    Anything else (removed, unsubscribed since, bounced, complained): refused."""
    if current == PENDING:
        return Change(ACTIVE, CONFIRMED)
    if current == ACTIVE:
        return None
    raise ListError("subscription is not pending confirmation")


def on_remove(current: str | None) -> Change:
    if current is None:
        raise ListError("contact not in list", 404)
    return Change(None, REMOVED)


# ---------------------------------------------------------------- subscribe requests

def parse_list_ids(value) -> list[str]:
    """list_ids of a subscribe: a non-empty array of list ids, duplicates dropped (order kept).
    An id that cannot exist is reported like one that does not: `list not found: <id>`."""
    if value is None or (isinstance(value, list) and not value):
        raise ListError("list_ids is required")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ListError("list_ids must be an array of strings")
    ids = list(dict.fromkeys(value))
    if len(ids) > MAX_LIST_IDS:
        raise ListError(f"list_ids must have at most {MAX_LIST_IDS} items")
    for list_id in ids:
        if not LIST_ID.fullmatch(list_id):
            raise ListError(f"list not found: {list_id[:64]}")
    return ids


def parse_subscribe(body: dict) -> tuple[dict, list[str]]:
    """{contact, list_ids} of lists.subscribe and POST /subscribe, checked in Notifuse's order."""
    raw = body.get("contact")
    if raw is None:
        raise ListError("contact field is required")
    try:
        incoming = contacts.parse_contact(raw)
    except contacts.ContactError as exc:
        raise ListError(exc.message) from None
    return incoming, parse_list_ids(body.get("list_ids"))


NOT_PUBLIC = "list is not public"


def check_lists(wanted: list[str], found: dict, public: bool) -> list:
    """The list rows for `wanted` (in that order), or the first reason to refuse them all."""
    rows = []
    for list_id in wanted:
        row = found.get(list_id)
        if row is None:
            raise ListError(f"list not found: {list_id}")
        # The contract names this answer; it tells a caller that a private list id exists, which
        # is the documented trade-off (ids are not secrets; nothing of the list is revealed).
        if public and not row["is_public"]:
            raise ListError(NOT_PUBLIC)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- public subscribe rate limits
#
# The policy of the public form; the counting is postroom.platform.ratelimit's.

RATE_WINDOW = 60          # seconds, fixed windows on the database's clock
EMAIL_LIMIT = 10          # subscribe attempts per email per window (per workspace)
IP_LIMIT = 50             # per client address per window (per workspace)
RATE_LIMITED = "Too many subscription attempts. Please try again in a few minutes."


def rate_buckets(email: str, ip: str | None) -> dict[str, int]:
    """bucket name -> its limit, for one public subscribe attempt (platform.ratelimit.count_attempt)."""
    buckets = {"email:" + email: EMAIL_LIMIT}
    if ip:
        buckets["ip:" + ip] = IP_LIMIT
    return buckets


# ---------------------------------------------------------------- confirmation links

CONFIRM_TTL = 7 * 24 * 3600
CONFIRM_SECRET = "confirm_links"  # the workspace secret (postroom.workspaces.secrets) links are signed with
INVALID_LINK = "invalid confirmation link"
EXPIRED_LINK = "confirmation link has expired"
_CONFIRM_CONTEXT = b"postroom/confirm/v1"


def _confirm_mac(secret: bytes, workspace_id: str, list_id: str, email: str, expires: int) -> str:
    # NUL separates the parts: none of them can contain one (ids by pattern, email by validation).
    message = b"\x00".join((_CONFIRM_CONTEXT, workspace_id.encode(), list_id.encode(), email.encode(),
                            str(expires).encode()))
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def confirm_url(base: str, secret: bytes, workspace_id: str, list_id: str, email: str, now: float) -> str:
    """GET {base}/confirm?... signed with the workspace's secret; valid for CONFIRM_TTL seconds."""
    expires = int(now) + CONFIRM_TTL
    token = _confirm_mac(secret, workspace_id, list_id, email, expires)
    query = urlencode({"workspace_id": workspace_id, "list_id": list_id, "email": email,
                       "expires": expires, "token": token})
    return f"{base.rstrip('/')}/confirm?{query}"


CONFIRM_PARAMS = ("workspace_id", "list_id", "email", "expires", "token")


@dataclass(frozen=True)
class ConfirmRequest:
    workspace_id: str
    list_id: str
    email: str
    expires: int
    token: str


def parse_confirm(params) -> ConfirmRequest:
    """The parts of a confirmation link; anything malformed is the same 400, revealing nothing."""
    ws, list_id, email = params.get("workspace_id"), params.get("list_id"), params.get("email")
    expires, token = params.get("expires"), params.get("token")
    if not (ws and list_id and email and expires and token):
        raise ListError(INVALID_LINK)
    if not re.fullmatch(r"[a-z0-9_-]{1,32}", ws) or not LIST_ID.fullmatch(list_id) \
            or not re.fullmatch(r"[0-9]{1,12}", expires) or len(token) > 100 or len(email) > 255 \
            or "\x00" in email:
        raise ListError(INVALID_LINK)
    return ConfirmRequest(ws, list_id, email, int(expires), token)


def check_confirm(secret: bytes | None, req: ConfirmRequest, now: float) -> None:
    """Raises unless the link was signed with this workspace's secret and has not expired."""
    if secret is None:
        raise ListError(INVALID_LINK)
    expected = _confirm_mac(secret, req.workspace_id, req.list_id, req.email, req.expires)
    if not hmac.compare_digest(expected.encode(), req.token.encode("utf-8", "replace")):
        raise ListError(INVALID_LINK)
    if now > req.expires:
        raise ListError(EXPIRED_LINK)
