"""Unsubscribe and preference-center rules (engagement contract 2): the email_hmac check, the
requests of /unsubscribe-oneclick, /preferences and the page's forms, what a contact may see of
itself, and the rate-limit buckets. Pure: no I/O.

Every request here is authenticated by `email_hmac` alone (2.2): the lowercase hex HMAC-SHA256 of
the normalised email under the workspace's secret string. It never expires and is the same for
every message to that address, so it proves the mailbox, not a request: the answers expose
little (six contact fields) and nothing here changes a contact beyond language and timezone.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from postroom.contacts import model as contacts
from postroom.lists import model as lists
from postroom.platform import fields
from postroom.platform.errors import RuleError
from postroom.templates.render.context import email_hmac


class PreferencesError(RuleError):
    """A preference or unsubscribe request refused: `.status` and the whole `.message`."""


UNAUTHORIZED = "Unauthorized: invalid verification"
RATE_LIMITED = "Too many requests. Please try again later."
CONTACT_NOT_FOUND = "Contact not found"
INVALID_BODY = "Invalid request body"


def unauthorized() -> PreferencesError:
    return PreferencesError(UNAUTHORIZED, 401)


# ---------------------------------------------------------------- email_hmac (2.2)

def normalise_email(email: str) -> str:
    """Trimmed and lower-cased, as stored and as the HMAC is computed."""
    return fields.normalize_email(email)


def hmac_valid(secret: str | None, email: str, given: str | None) -> bool:
    """True when `given` is the email_hmac of `email` under the workspace secret string `secret`
    (None: the workspace has none, or does not exist). The given value is lower-cased and the
    comparison takes the same time wherever the first difference is."""
    if secret is None or not given:
        return False
    expected = email_hmac(normalise_email(email), secret)
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace"))


# ---------------------------------------------------------------- who the request names

@dataclass(frozen=True)
class Identity:
    """A contact of a workspace as a request names it, and the HMAC it presents (None: absent)."""

    workspace_id: str
    email: str
    email_hmac: str | None


def _value(raw, name: str) -> str | None:
    """A present, non-empty string; a present value of another type is refused by name."""
    if raw is None or raw == "":
        return None
    return fields.without_nul(fields.string(raw, name, PreferencesError), name, PreferencesError)


def required(raw, name: str) -> str:
    value = _value(raw, name)
    if value is None:
        raise PreferencesError(f"{name} is required")
    return value


def email_param(raw) -> str:
    email = normalise_email(required(raw, "email"))
    if not email:
        raise PreferencesError("email is required")
    return email


# ---------------------------------------------------------------- POST /unsubscribe-oneclick (2.4)

MAX_LIST_IDS = lists.MAX_LIST_IDS
MESSAGE_ID_MAX = 255


@dataclass(frozen=True)
class OneClick:
    who: Identity
    list_ids: tuple[str, ...]   # only ids a list can have; others name nothing and are dropped
    message_id: str | None      # None: absent, or not an id any message can have


def _list_ids(values: list[str]) -> tuple[str, ...]:
    for value in values:
        fields.without_nul(value, "lids", PreferencesError)
    ids = [part.strip() for value in values for part in value.split(",")]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise PreferencesError("lids is required")
    if len(ids) > MAX_LIST_IDS:
        raise PreferencesError(f"lids must have at most {MAX_LIST_IDS} items")
    return tuple(i for i in ids if lists.LIST_ID.fullmatch(i))


def message_id(raw) -> str | None:
    """A message id as a link gives it, or None: absent, or one no message can have."""
    if not isinstance(raw, str) or not raw or len(raw) > MESSAGE_ID_MAX or "\x00" in raw:
        return None
    return raw


def _mid(raw) -> str | None:
    """`mid` of a request: a string when present (the type and a NUL are refused by name)."""
    return message_id(_value(raw, "mid"))


def parse_oneclick_query(params) -> OneClick:
    """The form path: the identity from the query string (the List-Unsubscribe URL), the body
    ignored. `lids` may repeat or be comma-separated; `email_hmac` may be absent (links sent
    before the HMAC was in them: the `mid` check decides)."""
    ws = required(params.get("wid"), "wid")
    email = email_param(params.get("email"))
    list_ids = _list_ids([v for v in params.getlist("lids") if isinstance(v, str)])
    return OneClick(Identity(ws, email, _value(params.get("email_hmac"), "email_hmac")), list_ids,
                    _mid(params.get("mid")))


def parse_oneclick_json(body) -> OneClick:
    """The JSON path (the page): {wid, email, email_hmac, lids: [ids], mid?}, checked in the
    contract's order; email_hmac is required."""
    if not isinstance(body, dict):
        raise PreferencesError(INVALID_BODY)
    ws = required(body.get("wid"), "wid")
    email = email_param(body.get("email"))
    raw = body.get("lids")
    if raw is not None and not (isinstance(raw, list) and all(isinstance(v, str) for v in raw)):
        raise PreferencesError("lids must be an array of strings")
    list_ids = _list_ids(raw or [])
    given = required(body.get("email_hmac"), "email_hmac")
    return OneClick(Identity(ws, email, given), list_ids, _mid(body.get("mid")))


def message_vouches(message: Mapping | None, click: OneClick) -> bool:
    """The authentication of a link without email_hmac: `mid` names a message of the workspace
    sent to that email, on one of the lists named."""
    return (message is not None and message["contact_email"] == click.who.email
            and message["list_id"] is not None and message["list_id"] in click.list_ids)


def unsubscribed_event(message: Mapping, at: str) -> dict:
    """The outbox data of email.unsubscribed (1.8: the shape of every email.* event)."""
    return {"email": message["contact_email"], "message_id": str(message["id"]),
            "template_id": message["template_id"], "broadcast_id": message["broadcast_id"],
            "list_id": message["list_id"], "channel": message["channel"], "event_timestamp": at}


# ---------------------------------------------------------------- bots (JSON path only)

# Case-insensitive substrings of user agents that fetch links without a person behind them
# (engagement contract 1.7); an empty user agent counts as one.
BOT_MARKERS = (
    "bot", "crawler", "spider", "scanner", "linkcheck", "security", "headlesschrome", "phantomjs",
    "selenium", "safelinks", "proofpoint", "mimecast", "atp", "barracuda", "forcepoint", "cisco ironport",
    "symantec", "mcafee", "trend micro", "sophos", "fireeye", "emailsecurity", "urldefense", "linkprotect",
    "urlscan", "urlfilter", "emailprotection", "antivirus", "malware", "threatdetection", "securityscanner",
    "python-requests", "curl", "wget", "java", "go-http-client", "postman")


def is_bot(user_agent: str | None) -> bool:
    ua = (user_agent or "").strip().lower()
    return not ua or any(marker in ua for marker in BOT_MARKERS)


# ---------------------------------------------------------------- GET and POST /preferences (2.5, 2.6)

def parse_preferences_query(params) -> Identity:
    """GET /preferences?workspace_id&email&email_hmac, checked in the contract's order."""
    email = email_param(params.get("email"))
    given = required(params.get("email_hmac"), "email_hmac")
    ws = required(params.get("workspace_id"), "workspace_id")
    return Identity(ws, email, given)


LANGUAGE = re.compile(r"[a-z]{2}")
TIMEZONE_MIN, TIMEZONE_MAX = 2, 50


@dataclass(frozen=True)
class Update:
    who: Identity
    changes: dict  # language and/or timezone, as contacts' upsert takes them (IANA spelling)


def parse_settings(language, timezone) -> dict:
    """language and/or timezone, checked as 2.6 says; at least one of them."""
    language = _value(language, "language")
    timezone = _value(timezone, "timezone")
    if language is None and timezone is None:
        raise PreferencesError("at least one of language or timezone must be provided")
    out: dict = {}
    if language is not None:
        if not LANGUAGE.fullmatch(language):
            raise PreferencesError("language must be a 2-letter lowercase code")
        out["language"] = language
    if timezone is not None:
        if not TIMEZONE_MIN <= len(timezone) <= TIMEZONE_MAX:
            raise PreferencesError(f"timezone must be between {TIMEZONE_MIN} and {TIMEZONE_MAX} characters")
        try:  # the contacts' rule: an IANA zone, stored in its IANA spelling
            out["timezone"] = contacts.parse_contact({"email": "x@example.com", "timezone": timezone})["timezone"]
        except contacts.ContactError:
            raise PreferencesError(f"invalid timezone: {timezone}") from None
    return out


def parse_update(body) -> Update:
    """POST /preferences {workspace_id, email, email_hmac, language?, timezone?}."""
    if not isinstance(body, dict):
        raise PreferencesError(INVALID_BODY)
    ws = required(body.get("workspace_id"), "workspace_id")
    email = email_param(body.get("email"))
    given = required(body.get("email_hmac"), "email_hmac")
    return Update(Identity(ws, email, given), parse_settings(body.get("language"), body.get("timezone")))


CONTACT_FIELDS = ("email", "first_name", "last_name", "full_name", "language", "timezone")


def contact_view(contact: Mapping) -> dict:
    """What a holder of the link sees of the contact: six fields, NULLs omitted (2.5)."""
    return {k: contact[k] for k in CONTACT_FIELDS if contact.get(k) is not None}


def public_lists(rows) -> list:
    return [row for row in rows if row["is_public"]]


# ---------------------------------------------------------------- rate limits (2.8)

RATE_WINDOW = 60
READ_IP_LIMIT = 100        # GET /preferences and the page, per client address
WRITE_EMAIL_LIMIT = 20     # POST /preferences, per email
WRITE_IP_LIMIT = 100       # POST /preferences, per client address
UNSUBSCRIBE_EMAIL_LIMIT = 20  # /unsubscribe-oneclick, per email; no per-address limit (Gmail posts from few)


def read_buckets(ip: str | None) -> dict[str, int]:
    return {"prefs-read:ip:" + ip: READ_IP_LIMIT} if ip else {}


def write_buckets(email: str, ip: str | None) -> dict[str, int]:
    out = {"prefs-write:email:" + email: WRITE_EMAIL_LIMIT}
    if ip:
        out["prefs-write:ip:" + ip] = WRITE_IP_LIMIT
    return out


def unsubscribe_buckets(email: str) -> dict[str, int]:
    return {"unsubscribe:email:" + email: UNSUBSCRIBE_EMAIL_LIMIT}


def rate_limited(wait: int) -> PreferencesError:
    return PreferencesError(RATE_LIMITED, 429, {"Retry-After": str(wait)})


# ---------------------------------------------------------------- the page (2.9)

PREVIEW_EMAIL = "john.doe@example.com"
PREVIEW_HMACS = ("abc123", "...")


def is_preview(params) -> bool:
    """The console's template previews link here with placeholder values: show an explanation."""
    return (params.get("mid") == "preview" or normalise_email(params.get("email") or "") == PREVIEW_EMAIL
            or params.get("email_hmac") in PREVIEW_HMACS)


ACTIONS = ("confirm", "unsubscribe")
FORM_ACTIONS = ("subscribe", "unsubscribe", "confirm", "settings")
NOTICES = ("subscribed", "pending", "confirmed", "unsubscribed", "saved", "failed")


@dataclass(frozen=True)
class FormPost:
    """One submission of the page's forms (application/x-www-form-urlencoded)."""

    who: Identity
    action: str
    list_id: str | None
    message_id: str | None
    settings: dict
    ui_language: str | None


def parse_form(form: Mapping[str, str]) -> FormPost:
    ws = required(form.get("wid"), "wid")
    email = email_param(form.get("email"))
    given = required(form.get("email_hmac"), "email_hmac")
    action = form.get("action")
    if action not in FORM_ACTIONS:
        raise PreferencesError(f"action must be one of {', '.join(FORM_ACTIONS)}")
    list_id = None
    settings: dict = {}
    if action == "settings":
        settings = parse_settings(form.get("language"), form.get("timezone"))
    else:
        list_id = required(form.get("list_id"), "list_id")
        if not lists.LIST_ID.fullmatch(list_id):
            raise PreferencesError(f"list not found: {list_id[:64]}")
    ui = form.get("lang")
    return FormPost(Identity(ws, email, given), action, list_id, _mid(form.get("mid")), settings,
                    ui if isinstance(ui, str) and LANGUAGE.fullmatch(ui) else None)


@dataclass(frozen=True)
class Row:
    """One line of the page: a list, the contact's status on it (None: not subscribed) and what
    its button does (None: no button, for bounced and complained)."""

    list_id: str
    name: str
    description: str | None
    status: str | None
    button: str | None


def page_rows(memberships: list[dict], public: list) -> list[Row]:
    """Every membership (named from the public list when it is one), then every public list the
    contact is not on. Active gets Unsubscribe; bounced and complained no button; the rest
    Subscribe (pending: Confirm)."""
    by_id = {row["id"]: row for row in public}
    rows = []
    for m in memberships:
        lst = by_id.get(m["list_id"])
        rows.append(Row(m["list_id"], lst["name"] if lst else m["list_name"],
                        lst["description"] if lst else None, m["status"], _button(m["status"])))
    members = {m["list_id"] for m in memberships}
    rows += [Row(lst["id"], lst["name"], lst["description"], None, "subscribe")
             for lst in public if lst["id"] not in members]
    return rows


def _button(status: str) -> str | None:
    if status == lists.ACTIVE:
        return "unsubscribe"
    if status == lists.PENDING:
        return "confirm"
    if status in (lists.BOUNCED, lists.COMPLAINED):
        return None
    return "subscribe"


def ui_language(choices: list[str], asked: str | None, contact_language: str | None,
                accept_language: str | None, default: str) -> str:
    """The page's language: the one asked for (`lang`), else the contact's, else the browser's
    first known one (Accept-Language, by q), else the workspace default, else English."""
    for candidate in (asked, contact_language):
        if candidate and candidate in choices:
            return candidate
    for tag in accepted(accept_language):
        if tag in choices:
            return tag
    return default if default in choices else "en"


def accepted(header: str | None) -> list[str]:
    """The 2-letter languages of an Accept-Language header, best first."""
    out = []
    for n, part in enumerate((header or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        code = tag.strip().lower()[:2]
        if LANGUAGE.fullmatch(code) and q > 0:
            out.append((-q, n, code))
    return list(dict.fromkeys(code for _, _, code in sorted(out)))
