"""Bad input at every endpoint (issue 5): each case is a 4xx JSON error that names the problem,
and the workspace's rows are exactly what they were before.

The endpoints come from the registry (postroom.app.build_api) and the public routes of the
capabilities: every POST endpoint needs a valid body and a field table here, every GET endpoint
a parameter table; a new endpoint without them fails `test_every_endpoint_has_cases`.

Decisions where the contract is silent:
- A body that is not one decodable JSON object (not JSON, truncated, empty, invalid UTF-8, a
  lone surrogate, a NaN/Infinity literal, a number beyond double range such as 1e400, nesting
  deeper than the decoder allows) is 400 `Invalid request body`, the contract's string for a
  body that is not JSON (Notifuse clients match it exactly).
- `-0` and `-0.0` are valid JSON numbers: accepted, stored as zero and read back as `0`.
- Over the body limit: 413 before anything is decoded (1 MiB in the test settings, 10 MiB by
  default). A 10 MB string under a 10 MiB limit reaches the field's own length rule: 400.
- A query parameter given twice is 400 `invalid <name>: given more than once`, for every
  parameter an endpoint reads, workspace_id included (one rule: platform/params.py
  `query_param`); contacts.list's `segments`/`segments[]` is the one list parameter. An empty
  parameter counts as absent: 400 `... is required` where one is required, the default otherwise.
  A NUL in a parameter is 400 `invalid <name>: contains a NUL character`. /confirm answers every
  malformed link, these included, with its one `invalid confirmation link`.
- limit and offset take ASCII digits only (one parser, platform.paging.parse_limit): `1_0`,
  Arabic-Indic or full-width digits are 400 like any other non-number.
- Stored free-form JSON (workspace settings, like custom_json) is at most 128 levels deep and
  holds no NUL in any key or string: 400 naming the field, never a database error.
- contacts.import reports a bad row in its operation (200, action "error", the model's
  message), as the contract says; nothing of a rejected row is written.
- A lookup by an email that cannot exist (256 characters) answers like any absent contact;
  a write that would store it is 400 `invalid contact: email exceeds 255 characters`.
- templates.* and templateBlocks.* answer a wrong JSON type outside a visual tree, workspace_id
  included, with `Invalid request body` (the templates contract's rule, Notifuse's text), and check
  the whole request before the membership (a foreign workspace gets its 403 only for a valid one).
- customEvents.* answer a wrong JSON type with the field's own message (`invalid request: <field>
  must be a string`, `... goal_value must be a number`; in an import `invalid event at index <i>:
  ...`), as the segments contract words its Postroom-only refusals (`properties must be an
  object`, `<field> must be an RFC 3339 timestamp`), never Notifuse's `Invalid request body`.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import re
import json
import secrets
import time
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from helpers import assert_json_error, snapshot

from postroom.app import CAPABILITIES, build_api, create_app
from postroom.auth import model as auth_model, store as auth_store
from postroom.contacts import model as contacts_model
from postroom.delivery import store as delivery_store
from postroom.delivery.model import Outgoing, Source
from postroom.inbound import store as inbound_store
from postroom.platform.config import Settings
from postroom.templates.render import signed_tracking
from postroom.templates import store as templates_store
from postroom.workspaces import store as ws_store

from conftest import ROOT_EMAIL, Workspace

ENDPOINTS = build_api().endpoints
# non-/api routes; checked against ROUTES below. /preferences is walked as its POST (its GET is
# covered by tests/preferences/test_preferences_api.py); /unsubscribe-oneclick as its JSON path.
# /webhooks/email takes a provider's own body, so it has its own cases (test_provider_webhook_bad_input)
# rather than a field table.
PUBLIC = {"/subscribe": "POST", "/confirm": "GET", "/unsubscribe-oneclick": "POST", "/preferences": "POST",
          "/webhooks/email": "POST"}
PUBLIC_POSTS = ["/subscribe", "/unsubscribe-oneclick", "/preferences"]
# tracking's public routes (engagement contract 1.6): their own cases, test_tracking_routes_* below
TRACKING = {"/t/{token}": "GET", "/t/": "GET", "/r/{token}": "GET", "/r/": "GET", "/opens": "GET", "/visit": "GET"}
PUBLIC.update(TRACKING)
# The notification-center page and its forms answer bad input with an HTML screen, not JSON:
# test_html_routes_refuse_bad_input below.
HTML_ROUTES = {"/notification-center": "GET", "/preferences/form": "POST"}
POST_PATHS = sorted(p for p, e in ENDPOINTS.items() if e.method == "POST") + PUBLIC_POSTS
GET_PATHS = sorted(p for p, e in ENDPOINTS.items() if e.method == "GET") + ["/confirm"]
NOT_JSON = "Invalid request body"
FOREIGN = "user is not a member of the workspace"


def method_of(path: str) -> str:
    return ENDPOINTS[path].method if path in ENDPOINTS else PUBLIC[path]


# ---------------------------------------------------------------- a workspace with data

def long_email(length: int) -> str:
    """A well-formed address of exactly `length` characters (255 or 256 here)."""
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * (length - 197) + ".com"
    assert len(email) == length
    return email


EMAIL_255, EMAIL_256 = long_email(255), long_email(256)
HOOK_URL = "http://127.0.0.1:9/hook"  # a literal address: creating it needs no DNS


@dataclasses.dataclass
class Seeded:
    ws: object      # conftest.Workspace
    sub_id: str     # a webhook subscription
    root: dict      # headers of the root user (workspaces.create)
    confirm: dict   # the query parameters of a real confirmation link (pending@example.com on `double`)
    block_id: str = ""  # a template block
    integration_id: str = ""   # an email integration (kind fake)
    broadcast_id: str = ""     # a draft broadcast
    done_broadcast_id: str = ""  # a processed broadcast (its test results can be read)

    @property
    def id(self) -> str:
        return self.ws.id


async def ok(response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="module")
async def root(client, settings):
    ts = int(time.time())
    sig = auth_model.root_signature(settings.ensure_secret_key(), ROOT_EMAIL, ts)
    body = await ok(await client.post("/api/user.rootSignin",
                                      json={"email": ROOT_EMAIL, "timestamp": ts, "signature": sig}))
    return {"Authorization": f"Bearer {body['token']}"}


async def make_workspace(pool, settings) -> Workspace:
    """A new workspace with an owner API key, as conftest's `new_workspace` makes them (that
    fixture is per test; the seeded workspace below is shared by a module's read-only cases)."""
    ws_id = f"ws_{secrets.token_hex(6)}"
    async with pool.acquire() as conn:
        await ws_store.create_with_owner(conn, ws_id, f"Workspace {ws_id}", {}, None)
        owner = await auth_store.upsert_user(conn, f"owner-{ws_id}@example.com", "Owner", "api_key")
        await auth_store.add_member(conn, ws_id, owner["id"], "owner", auth_model.full_permissions())
    return Workspace(ws_id, auth_model.issue_token(settings.key_bytes, owner["id"], "api_key"), settings, pool)


@pytest.fixture(scope="module")
async def seeded(client, pool, settings, root) -> Seeded:
    """The module's seeded workspace. The cases that use it must change nothing (that is what
    they assert); cases that write on purpose take `fresh` instead."""
    return await seed(client, pool, await make_workspace(pool, settings), root)


@pytest.fixture
async def fresh(client, pool, settings, root) -> Seeded:
    """A seeded workspace of the test's own."""
    return await seed(client, pool, await make_workspace(pool, settings), root)


async def seed(client, pool, ws, root) -> Seeded:
    """A workspace with a contact (known@example.com, also on list `news`), a public list `news`,
    a private list `private`, a public double opt-in list `double` with pending@example.com
    waiting for confirmation, a webhook subscription, a web template `post`, a template block and
    a custom event (order.placed, o-1) of known@example.com."""
    h, w = ws.headers, ws.id
    await ok(await client.post("/api/contacts.upsert", headers=h, json={"workspace_id": w, "contact": {
        "email": "known@example.com", "external_id": "ext-1", "first_name": "Known",
        "custom_json_1": {"a": [1, "x"]}}}))
    await ok(await client.post("/api/lists.create", headers=h, json={
        "workspace_id": w, "id": "news", "name": "News", "is_public": True}), 201)
    await ok(await client.post("/api/lists.create", headers=h, json={
        "workspace_id": w, "id": "private", "name": "Private"}), 201)
    await ok(await client.post("/api/lists.subscribe", headers=h, json={
        "workspace_id": w, "contact": {"email": "known@example.com"}, "list_ids": ["news"]}))
    await ok(await client.post("/api/lists.create", headers=h, json={
        "workspace_id": w, "id": "double", "name": "Double", "is_public": True, "is_double_optin": True}), 201)
    await ok(await client.post("/subscribe", json={
        "workspace_id": w, "contact": {"email": "pending@example.com"}, "list_ids": ["double"]}))
    link = await pool.fetchval("SELECT data->>'confirm_url' FROM events WHERE workspace_id = $1"
                               " AND type = 'list.pending'", w)
    sub = await ok(await client.post("/api/webhookSubscriptions.create", headers=h, json={
        "workspace_id": w, "name": "Hook", "url": HOOK_URL, "event_types": ["contact.created"]}), 201)
    await ok(await client.post("/api/templates.create", headers=h, json=web_template_body(w)), 201)
    async with pool.acquire() as conn:  # as templateBlocks.create stores it
        block = await templates_store.create_block(conn, w, "Footer", TEMPLATE_BLOCK)
    integration = await ok(await client.post("/api/workspaces.createIntegration", headers=h, json={
        "workspace_id": w, "name": "Relay", "type": "email", "provider": fake_provider()}), 201)
    await ok(await client.post("/api/templates.create", headers=h, json=email_template_body(w)), 201)
    await ok(await client.post("/api/transactional.create", headers=h, json={"workspace_id": w, "notification": {
        "id": "note", "name": "Note", "channels": {"email": {"template_id": "mail"}}}}), 201)
    ids = []
    for _ in range(2):
        made = await ok(await client.post("/api/broadcasts.create", headers=h, json={
            "workspace_id": w, "name": "Spring", "audience": {"list": "news"},
            "test_settings": {"variations": [{"template_id": "mail"}]}}), 201)
        ids.append(made["broadcast"]["id"])
    await pool.execute("UPDATE broadcasts SET status = 'processed' WHERE workspace_id = $1 AND id = $2", w, ids[1])
    await ok(await client.post("/api/customEvents.upsert", headers=h, json={
        "workspace_id": w, "email": "known@example.com", "event_name": "order.placed", "external_id": "o-1",
        "properties": {"total": 5}, "goal_type": "purchase", "goal_value": 5, "occurred_at": "2024-01-01T00:00:00Z"}))
    await ok(await client.post("/api/segments.create", headers=h, json=segment_body(w, "seg")), 201)
    return Seeded(ws, sub["subscription"]["id"], root, dict(parse_qsl(urlsplit(link).query)),
                  block_id=str(block["id"]), integration_id=integration["integration_id"], broadcast_id=ids[0],
                  done_broadcast_id=ids[1])


TEMPLATE_BLOCK = {"id": "s1", "type": "mj-section", "children": [
    {"id": "c1", "type": "mj-column", "children": [{"id": "t1", "type": "mj-text", "content": "<p>Hi</p>"}]}]}


def web_template_body(w: str, template_id: str = "post") -> dict:
    return {"workspace_id": w, "id": template_id, "name": "Post", "channel": "web", "category": "blog",
            "web": {"content": {"type": "doc"}, "html": "<p>Hi</p>", "plain_text": "Hi"},
            "template_macro_id": "m1", "test_data": {"contact": {"first_name": "Ann"}}, "settings": {"a": "b"},
            "translations": {"en": {"web": {"content": {"type": "doc"}, "html": "<p>Hello</p>"}}}}


SEGMENT_TREE = {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": [
    {"field_name": "first_name", "field_type": "string", "operator": "equals", "string_values": ["Known"]}]}}}


def segment_body(w: str, segment_id: str) -> dict:
    return {"workspace_id": w, "id": segment_id, "name": "Knowns", "color": "blue", "tree": SEGMENT_TREE,
            "timezone": "Europe/Paris"}


def email_template_body(w: str) -> dict:
    return {"workspace_id": w, "id": "mail", "name": "Mail", "channel": "email", "category": "transactional",
            "email": {"editor_mode": "code", "subject": "Hi {{ contact.first_name }}",
                      "mjml_source": "<mjml><mj-body><mj-text>{{ code }}</mj-text></mj-body></mjml>"}}


def email_options() -> dict:
    return {"from_name": "Billing", "subject": "Code", "subject_preview": "Preview", "cc": ["c@example.com"],
            "bcc": ["b@example.com"], "reply_to": "r@acme.test", "list_unsubscribe_url": "https://acme.test/u",
            "attachments": [{"filename": "a.pdf", "content": "JVBERg==", "content_type": "application/pdf",
                             "disposition": "attachment"}]}


def fake_provider() -> dict:
    """A provider object of kind fake (the in-memory provider the test settings accept)."""
    return {"kind": "fake", "fake": {"api_key": "key-1", "label": "one"}, "max_concurrency": 2,
            "senders": [{"email": "noreply@acme.test", "name": "Acme", "is_default": True}],
            "rate_limit_per_minute": 600}


def headers_for(path: str, s: Seeded) -> dict:
    if path in PUBLIC or ENDPOINTS[path].auth == "none":
        return {}
    if path == "/api/workspaces.create":
        return s.root
    return s.ws.headers


# ---------------------------------------------------------------- valid bodies of every POST endpoint

def valid_body(path: str, s: Seeded) -> dict:
    """A body that the endpoint would accept as it is (each test breaks exactly one thing in it)."""
    w = s.id
    filters = {"goal_types": ["purchase"], "event_names": ["order"]}
    bodies = {
        "/api/contacts.upsert": {"workspace_id": w, "contact": {"email": "known@example.com", "first_name": "New"}},
        "/api/contacts.delete": {"workspace_id": w, "email": "known@example.com"},
        "/api/contacts.import": {"workspace_id": w, "contacts": [{"email": "known@example.com", "first_name": "New"}],
                                 "subscribe_to_lists": ["private"]},
        "/api/lists.create": {"workspace_id": w, "id": "fresh", "name": "Fresh", "is_double_optin": False,
                              "is_public": False, "description": "about",
                              "double_optin_template": {"id": "mail", "version": 0}},
        "/api/lists.update": {"workspace_id": w, "id": "news", "name": "Renamed", "is_double_optin": True,
                              "is_public": False, "description": "about",
                              "double_optin_template": {"id": "mail", "version": 0}},
        "/api/lists.delete": {"workspace_id": w, "id": "news"},
        "/api/lists.subscribe": {"workspace_id": w, "contact": {"email": "known@example.com"},
                                 "list_ids": ["private"]},
        "/api/contactLists.updateStatus": {"workspace_id": w, "email": "known@example.com", "list_id": "news",
                                           "status": "unsubscribed"},
        "/api/contactLists.removeContact": {"workspace_id": w, "email": "known@example.com", "list_id": "news"},
        "/api/webhookSubscriptions.create": {"workspace_id": w, "name": "Other", "url": HOOK_URL,
                                             "event_types": ["contact.updated"], "custom_event_filters": filters},
        "/api/webhookSubscriptions.update": {"workspace_id": w, "id": s.sub_id, "name": "Other", "url": HOOK_URL,
                                             "event_types": ["contact.updated"], "custom_event_filters": filters,
                                             "enabled": False},
        "/api/webhookSubscriptions.delete": {"workspace_id": w, "id": s.sub_id},
        "/api/webhookSubscriptions.toggle": {"workspace_id": w, "id": s.sub_id, "enabled": False},
        "/api/webhookSubscriptions.regenerateSecret": {"workspace_id": w, "id": s.sub_id},
        "/api/webhookSubscriptions.test": {"workspace_id": w, "id": s.sub_id, "event_type": "contact.created"},
        "/api/workspaces.create": {"id": "brand-new-" + w[3:], "name": "Brand new", "settings": {"a": "b"}},
        "/api/workspaces.createAPIKey": {"workspace_id": w, "email_prefix": "robot"},
        "/api/workspaces.update": {"id": w, "name": "Renamed", "settings": {"a": "b", "email_tracking_enabled": True,
                                                                      "website_url": "https://acme.test"}},
        "/api/workspaces.createIntegration": {"workspace_id": w, "name": "Other", "type": "email",
                                              "provider": fake_provider()},
        "/api/workspaces.updateIntegration": {"workspace_id": w, "integration_id": s.integration_id, "name": "Renamed",
                                              "provider": fake_provider()},
        "/api/workspaces.deleteIntegration": {"workspace_id": w, "integration_id": s.integration_id},
        "/api/email.testProvider": {"workspace_id": w, "to": "t@example.com", "provider": fake_provider(),
                                    "integration_id": s.integration_id},
        "/api/webhooks.register": {"workspace_id": w, "integration_id": s.integration_id,
                                   "event_types": ["bounce"], "rotate_secret": False},
        "/api/user.rootSignin": {"email": ROOT_EMAIL, "timestamp": int(time.time()), "signature": "0" * 64},
        "/subscribe": {"workspace_id": w, "contact": {"email": "fresh@example.com"}, "list_ids": ["news"]},
        "/unsubscribe-oneclick": {"wid": w, "email": "known@example.com", "email_hmac": "0" * 64, "lids": ["news"],
                                  "mid": "m1"},
        "/preferences": {"workspace_id": w, "email": "known@example.com", "email_hmac": "0" * 64, "language": "fr",
                         "timezone": "Europe/Paris"},
        "/api/templates.create": web_template_body(w, "fresh"),
        "/api/templates.update": web_template_body(w),
        "/api/templates.delete": {"workspace_id": w, "id": "post"},
        "/api/templates.compile": {"workspace_id": w, "message_id": "preview", "mjml_source": "<mjml><mj-body /></mjml>",
                                   "subject": "Hi", "subject_preview": "Preview", "subject_preview_override": "",
                                   "test_data": {"a": 1}, "channel": "email", "preserve_liquid": False,
                                   "language": "fr", "version": 0,
                                   "tracking_settings": {"enable_tracking": False, "utm_source": "news"}},
        "/api/transactional.create": {"workspace_id": w, "notification": {
            "id": "fresh", "name": "Fresh", "description": "about", "channels": {"email": {"template_id": "mail"}},
            "tracking_settings": {"enable_tracking": True, "utm_source": "app"}, "metadata": {"a": "b"}}},
        "/api/transactional.update": {"workspace_id": w, "id": "note", "updates": {
            "name": "Renamed", "description": "about", "channels": {"email": {"template_id": "mail"}},
            "tracking_settings": {"enable_tracking": True}, "metadata": {"a": "b"}}},
        "/api/transactional.delete": {"workspace_id": w, "id": "note"},
        "/api/transactional.send": {"workspace_id": w, "notification": {
            "id": "note", "external_id": "x-1", "contact": {"email": "known@example.com", "first_name": "New"},
            "channels": ["email"], "data": {"code": "X1"}, "metadata": {"k": "v"}, "email_options": email_options()}},
        "/api/transactional.testTemplate": {"workspace_id": w, "template_id": "mail",
                                            "integration_id": s.integration_id, "sender_id": "s1",
                                            "recipient_email": "t@example.com", "language": "fr",
                                            "email_options": email_options()},
        "/api/templateBlocks.create": {"workspace_id": w, "name": "Header", "block": TEMPLATE_BLOCK},
        "/api/templateBlocks.update": {"workspace_id": w, "id": s.block_id, "name": "Header", "block": TEMPLATE_BLOCK},
        "/api/templateBlocks.delete": {"workspace_id": w, "id": s.block_id},
        "/api/broadcasts.create": broadcast_body(w),
        "/api/broadcasts.update": {**broadcast_body(w), "id": s.broadcast_id, "schedule": {
            "is_scheduled": False, "scheduled_date": "2030-01-02", "scheduled_time": "10:00", "timezone": "UTC",
            "use_recipient_timezone": False}},
        "/api/broadcasts.schedule": {"workspace_id": w, "id": s.broadcast_id, "send_now": False,
                                     "scheduled_date": "2030-01-02", "scheduled_time": "10:00",
                                     "timezone": "Europe/Paris", "use_recipient_timezone": False},
        **{f"/api/broadcasts.{n}": {"workspace_id": w, "id": s.broadcast_id}
           for n in ("delete", "pause", "resume", "cancel")},
        "/api/broadcasts.selectWinner": {"workspace_id": w, "id": s.broadcast_id, "template_id": "mail"},
        "/api/broadcasts.retryFailed": {"workspace_id": w, "id": s.broadcast_id, "include_permanent": True},
        "/api/broadcasts.sendToIndividual": {"workspace_id": w, "broadcast_id": s.broadcast_id,
                                             "recipient_email": "t@example.com", "template_id": "mail"},
        "/api/customEvents.upsert": {"workspace_id": w, **custom_event()},
        "/api/customEvents.create": {"workspace_id": w, **custom_event()},
        "/api/customEvents.import": {"workspace_id": w, "events": [
            {**custom_event(), "source": "shop", "created_at": "2020-01-01T00:00:00Z",
             "updated_at": "2020-01-02T00:00:00Z"}]},
        "/api/segments.create": segment_body(w, "fresh"),
        "/api/segments.update": {**segment_body(w, "seg"), "name": "Renamed"},
        "/api/segments.delete": {"workspace_id": w, "id": "seg"},
        "/api/segments.rebuild": {"workspace_id": w, "segment_id": "seg"},
        "/api/segments.preview": {"workspace_id": w, "tree": SEGMENT_TREE, "limit": 5},
    }
    return bodies[path]


def broadcast_body(w: str) -> dict:
    return {"workspace_id": w, "name": "Autumn", "tracking_enabled": True,
            "audience": {"list": "news", "segments": ["vip"], "exclude_unsubscribed": True},
            "test_settings": {"enabled": False, "sample_percentage": 10, "auto_send_winner": False,
                              "auto_send_winner_metric": "open_rate", "test_duration_hours": 2,
                              "variations": [{"variation_name": "A", "template_id": "mail"}]},
            "utm_parameters": {"source": "news", "campaign": "autumn"}, "metadata": {"k": "v"},
            "data_feed": {"global_feed": {"enabled": False, "url": "", "headers": [{"name": "X", "value": "y"}]}}}


def custom_event() -> dict:
    """A custom event that changes the seeded one (a newer version), with every field set."""
    return {"email": "known@example.com", "event_name": "order.placed", "external_id": "o-1",
            "properties": {"total": 7}, "occurred_at": "2024-02-01T00:00:00Z", "integration_id": "shop",
            "goal_name": "first", "goal_type": "lead", "goal_value": 7.5}


# ---------------------------------------------------------------- field tables

S, I, F, T, FA, O, A, N = "string", "integer", "float", "true", "false", "object", "array", "null"
SAMPLES = {S: "text", I: 7, F: 1.5, T: True, FA: False, O: {"k": "v"}, A: ["v"], N: None}
STRING, NUMBER, BOOL = {S}, {I, F}, {T, FA}
TYPE_NAMES = {S: "String", I: "Number", F: "Number", T: "True", FA: "False", O: "JSON", A: "JSON"}


@dataclasses.dataclass(frozen=True)
class Field:
    path: tuple             # keys (and list indexes) into the valid body
    accepts: frozenset      # JSON kinds accepted; null is wrong only when `required`
    required: bool = False
    hint: str | None = None  # what the message must mention (default: the last key)
    nul: str | None = None   # a value with a NUL in it, for string fields (default: "a\x00b")
    nul_error: str | None = None  # the exact answer to `nul`, where a rule fixes it
    type_error: str | None = None  # the exact answer to a wrong JSON type (not null), where a rule fixes it

    @property
    def name(self) -> str:
        return ".".join(str(p) for p in self.path)

    @property
    def mention(self) -> str:
        return (self.hint or str(self.path[-1])).lower()


def field(path, accepts, required=False, hint=None, nul=None, nul_error=None, type_error=None) -> Field:
    path = tuple(path.split(".")) if isinstance(path, str) else path
    return Field(path, frozenset(accepts), required, hint, nul, nul_error, type_error)


WS_FIELD = field("workspace_id", STRING, True, nul="ws\x00")


def contact_fields(prefix: tuple) -> list[Field]:
    """Every field of the contact object, with what it accepts (contacts-contract.md)."""
    out = []
    for name in contacts_model.FIELDS:
        if name in contacts_model.NUMBER_FIELDS or name in contacts_model.INTEGER_FIELDS:
            accepts = NUMBER
        elif name in contacts_model.JSON_FIELDS:
            accepts = {O, A}
        else:
            accepts = STRING
        nul = {"email": "kn\x00own@example.com"}.get(name)
        if name in contacts_model.DATETIME_FIELDS or name in contacts_model.TIMESTAMP_FIELDS:
            nul = "2023-05-15T14:30:00\x00Z"
        out.append(field(prefix + (name,), accepts, name == "email", nul=nul))
    return out


def contact_type_error(name: str, kind: str) -> str:
    """The contract's message for a contact field given the wrong JSON type."""
    got = TYPE_NAMES[kind]
    if name in contacts_model.JSON_FIELDS:
        return f"invalid contact: invalid JSON value for {name}, got {got}"
    if name in contacts_model.INTEGER_FIELDS:
        expected = "integer"
    elif name in contacts_model.NUMBER_FIELDS:
        expected = "number"
    else:
        expected = "string"
    return f"invalid contact: invalid type for {name}: expected {expected}, got {got}"


FILTER_FIELDS = [
    field("custom_event_filters", {O}),
    field("custom_event_filters.goal_types", {A}),
    field(("custom_event_filters", "goal_types", 0), STRING, hint="goal_types"),
    field("custom_event_filters.event_names", {A}),
    field(("custom_event_filters", "event_names", 0), STRING, hint="event_names"),
]
EMAIL = field("email", STRING, True, nul="kn\x00own@example.com")
# a list's double_optin_template: null clears it; inside it, `id` is required
TEMPLATE_REF_FIELDS = [field("double_optin_template", {O}), field("double_optin_template.id", STRING, True),
                       field("double_optin_template.version", {I})]
LIST_ID = field("list_id", STRING, True, nul="ne\x00ws")
SUB_ID = field("id", STRING, True)


def typed(*fields: Field) -> list[Field]:
    """The fields of a templates route: a wrong JSON type is `Invalid request body` there."""
    return [dataclasses.replace(f, type_error=NOT_JSON) for f in fields]


def web_part_fields(prefix: tuple) -> list[Field]:
    return [field(prefix, {O}, prefix == ("web",)), field(prefix + ("content",), {O}, True),
            field(prefix + ("html",), STRING), field(prefix + ("plain_text",), STRING)]


TEMPLATE_FIELDS = typed(
    WS_FIELD, field("id", STRING, True), field("name", STRING, True), field("channel", STRING, True),
    field("category", STRING, True), *web_part_fields(("web",)), field("email", {O}),
    field("template_macro_id", STRING), field("test_data", {O}), field("settings", {O}),
    field("translations", {O}), field("translations.en", {O}, hint="en"), *web_part_fields(("translations", "en", "web")))
BLOCK_FIELDS = [field("name", STRING, True), field("block", {O}, True)]
# segments.*: a wrong JSON type is `Invalid request body` (the segments contract); a bad tree node
# is named by its path (tests/segments).
SEGMENT_FIELDS = typed(WS_FIELD, field("id", STRING, True), field("name", STRING, True), field("color", STRING, True),
                       field("tree", {O}, True), field("timezone", STRING, True))
INTEGRATION_ID = field("integration_id", STRING, True, hint="integration")
# A sender's `id` is not here: any value that is not a UUID is replaced by a new one (the contract).
# provider is required on create only; on update its absence keeps it as stored.
PROVIDER_FIELDS = [
    field("provider.kind", STRING, True, hint="kind"),
    field("provider.rate_limit_per_minute", {I}, True), field("provider.max_concurrency", {I}),
    field("provider.senders", {A}, True, hint="sender"), field(("provider", "senders", 0), {O}, hint="sender"),
    field(("provider", "senders", 0, "email"), STRING, True, hint="sender email"),
    field(("provider", "senders", 0, "name"), STRING, True, hint="sender name"),
    field(("provider", "senders", 0, "is_default"), BOOL), field("provider.fake", {O}, True, hint="fake"),
    field("provider.fake.api_key", STRING, hint="api key"), field("provider.fake.label", STRING),
]

# transactional.*: a wrong JSON type is `Invalid request body` (Notifuse's typed decoding), except
# inside the contact of a send, where the contacts contract's messages name the field.
EMAIL_OPTION_FIELDS = typed(
    field("email_options", {O}), field("email_options.from_name", STRING), field("email_options.subject", STRING),
    field("email_options.subject_preview", STRING), field("email_options.cc", {A}),
    field(("email_options", "cc", 0), STRING, hint="cc"), field("email_options.bcc", {A}),
    field(("email_options", "bcc", 0), STRING, hint="bcc"), field("email_options.reply_to", STRING, hint="reply"),
    field("email_options.list_unsubscribe_url", STRING), field("email_options.attachments", {A}),
    field(("email_options", "attachments", 0), {O}, hint="attachment"),
    field(("email_options", "attachments", 0, "filename"), STRING, True),
    field(("email_options", "attachments", 0, "content"), STRING, True),
    field(("email_options", "attachments", 0, "content_type"), STRING),
    field(("email_options", "attachments", 0, "disposition"), STRING))


def under(prefix: tuple, fields: list[Field]) -> list[Field]:
    return [dataclasses.replace(f, path=prefix + f.path) for f in fields]


NOTIFICATION_FIELDS = typed(
    field("notification.description", STRING), field("notification.channels", {O}, True, hint="channel"),
    field("notification.channels.email", {O}, hint="email"),
    field("notification.channels.email.template_id", STRING, hint="template"),
    field("notification.tracking_settings", {O}), field("notification.tracking_settings.enable_tracking", BOOL),
    field("notification.tracking_settings.utm_source", STRING), field("notification.metadata", {O}))
TRANSACTIONAL_FIELDS = {
    "/api/transactional.create": [*typed(WS_FIELD, field("notification", {O}, True),
                                         field("notification.id", STRING, True),
                                         field("notification.name", STRING, True)), *NOTIFICATION_FIELDS],
    "/api/transactional.update": typed(
        WS_FIELD, field("id", STRING, True), field("updates", {O}, True, hint="field"), field("updates.name", STRING),
        field("updates.description", STRING), field("updates.channels", {O}), field("updates.tracking_settings", {O}),
        field("updates.metadata", {O})),
    "/api/transactional.delete": typed(WS_FIELD, field("id", STRING, True)),
    "/api/transactional.send": [
        *typed(WS_FIELD, field("notification", {O}, True), field("notification.id", STRING, True),
               field("notification.external_id", STRING), field("notification.contact", {O}, True, hint="contact"),
               field("notification.channels", {A}, True, hint="channel"),
               field(("notification", "channels", 0), STRING, hint="channel"), field("notification.data", {O}),
               field("notification.metadata", {O})),
        *[dataclasses.replace(f, hint="contact") if f.path[-1] == "email" else f
          for f in contact_fields(("notification", "contact"))],
        *under(("notification",), EMAIL_OPTION_FIELDS)],
    "/api/transactional.testTemplate": [
        *typed(WS_FIELD, field("template_id", STRING, True), field("integration_id", STRING, True),
               field("sender_id", STRING, True), field("recipient_email", STRING, True), field("language", STRING)),
        *EMAIL_OPTION_FIELDS],
}

# broadcasts.*: a wrong JSON type is `Invalid request body` (Notifuse's typed decoding).
_BROADCAST = typed(
    field("name", STRING, True), field("tracking_enabled", BOOL), field("audience", {O}, True, hint="list"),
    field("audience.list", STRING, True, hint="list"), field("audience.segments", {A}),
    field(("audience", "segments", 0), STRING, hint="segments"), field("audience.exclude_unsubscribed", BOOL),
    field("test_settings", {O}), field("test_settings.enabled", BOOL), field("test_settings.sample_percentage", {I}),
    field("test_settings.auto_send_winner", BOOL), field("test_settings.auto_send_winner_metric", STRING),
    field("test_settings.test_duration_hours", {I}), field("test_settings.variations", {A}),
    field(("test_settings", "variations", 0), {O}, hint="variations"),
    field(("test_settings", "variations", 0, "template_id"), STRING),
    field(("test_settings", "variations", 0, "variation_name"), STRING),
    field("utm_parameters", {O}), field("utm_parameters.source", STRING), field("metadata", {O}),
    field("data_feed", {O}), field("data_feed.global_feed", {O}), field("data_feed.global_feed.enabled", BOOL),
    field("data_feed.global_feed.url", STRING), field("data_feed.global_feed.headers", {A}))
_BROADCAST_ID = field("id", STRING, True)
BROADCAST_FIELDS = {
    "/api/broadcasts.create": typed(WS_FIELD, *_BROADCAST),
    "/api/broadcasts.update": typed(
        WS_FIELD, _BROADCAST_ID, *_BROADCAST, field("schedule", {O}), field("schedule.is_scheduled", BOOL),
        field("schedule.scheduled_date", STRING), field("schedule.scheduled_time", STRING),
        field("schedule.timezone", STRING), field("schedule.use_recipient_timezone", BOOL)),
    "/api/broadcasts.schedule": typed(
        WS_FIELD, _BROADCAST_ID, field("send_now", BOOL), field("scheduled_date", STRING, hint="date"),
        field("scheduled_time", STRING, hint="time"), field("timezone", STRING),
        field("use_recipient_timezone", BOOL)),
    **{f"/api/broadcasts.{n}": typed(WS_FIELD, _BROADCAST_ID) for n in ("delete", "pause", "resume", "cancel")},
    "/api/broadcasts.selectWinner": typed(WS_FIELD, _BROADCAST_ID, field("template_id", STRING, True)),
    "/api/broadcasts.retryFailed": typed(WS_FIELD, _BROADCAST_ID, field("include_permanent", BOOL)),
    "/api/broadcasts.sendToIndividual": typed(WS_FIELD, field("broadcast_id", STRING, True, hint="broadcast_id"),
                                              field("recipient_email", STRING, True), field("template_id", STRING)),
}

def custom_event_fields(prefix: tuple) -> list[Field]:
    """A custom event's fields (segments-contract, upsert: validation); `prefix` () for an upsert
    body, ("events", 0) for an import's event."""
    when = "2024-01-01T00:00:00\x00Z"
    out = [field(prefix + ("email",), STRING, True, nul="kn\x00own@example.com"),
           field(prefix + ("event_name",), STRING, True), field(prefix + ("external_id",), STRING, True),
           field(prefix + ("properties",), {O}), field(prefix + ("occurred_at",), STRING, nul=when),
           field(prefix + ("integration_id",), STRING), field(prefix + ("goal_name",), STRING),
           field(prefix + ("goal_type",), STRING), field(prefix + ("goal_value",), NUMBER),
           field(prefix + ("deleted_at",), STRING, nul=when)]
    if prefix:
        out += [field(prefix + ("source",), STRING), field(prefix + ("created_at",), STRING, nul=when),
                field(prefix + ("updated_at",), STRING, nul=when)]
    return out


FIELDS: dict[str, list[Field]] = {
    **TRANSACTIONAL_FIELDS,
    **BROADCAST_FIELDS,
    "/api/customEvents.upsert": [WS_FIELD, *custom_event_fields(())],
    "/api/customEvents.create": [WS_FIELD, *custom_event_fields(())],
    "/api/customEvents.import": [WS_FIELD, field("events", {A}, True), field(("events", 0), {O}, hint="event"),
                                 *custom_event_fields(("events", 0))],
    "/api/contacts.upsert": [WS_FIELD, field("contact", {O}, True), *contact_fields(("contact",))],
    "/api/contacts.delete": [WS_FIELD, EMAIL],
    "/api/contacts.import": [WS_FIELD, field("contacts", {A}, True), field(("contacts", 0), {O}, hint="contact"),
                             *contact_fields(("contacts", 0)), field("subscribe_to_lists", {A}),
                             field(("subscribe_to_lists", 0), STRING, hint="subscribe_to_lists", nul="priv\x00ate",
                                   nul_error="list not found: priv\x00ate")],
    "/api/lists.create": [WS_FIELD, field("id", STRING, True, nul="fr\x00esh"), field("name", STRING, True),
                          field("is_double_optin", BOOL), field("is_public", BOOL), field("description", STRING),
                          *TEMPLATE_REF_FIELDS],
    "/api/lists.update": [WS_FIELD, field("id", STRING, True, nul="ne\x00ws"), field("name", STRING, True),
                          field("is_double_optin", BOOL), field("is_public", BOOL), field("description", STRING),
                          *TEMPLATE_REF_FIELDS],
    "/api/lists.delete": [WS_FIELD, field("id", STRING, True, nul="ne\x00ws")],
    "/api/lists.subscribe": [WS_FIELD, field("contact", {O}, True), *contact_fields(("contact",)),
                             field("list_ids", {A}, True),
                             field(("list_ids", 0), STRING, hint="list_ids", nul="priv\x00ate",
                                   nul_error="list not found: priv\x00ate")],
    "/api/contactLists.updateStatus": [WS_FIELD, EMAIL, LIST_ID, field("status", STRING, True, nul="act\x00ive")],
    "/api/contactLists.removeContact": [WS_FIELD, EMAIL, LIST_ID],
    "/api/webhookSubscriptions.create": [
        WS_FIELD, field("name", STRING, True), field("url", STRING, True, nul=HOOK_URL + "\x00"),
        field("event_types", {A}, True, hint="event type"),
        field(("event_types", 0), STRING, hint="event type", nul="contact.\x00updated"), *FILTER_FIELDS],
    "/api/webhookSubscriptions.update": [
        WS_FIELD, SUB_ID, field("name", STRING, True), field("url", STRING, True, nul=HOOK_URL + "\x00"),
        field("event_types", {A}, True, hint="event type"),
        field(("event_types", 0), STRING, hint="event type", nul="contact.\x00updated"), *FILTER_FIELDS,
        field("enabled", BOOL, True)],
    "/api/webhookSubscriptions.delete": [WS_FIELD, SUB_ID],
    "/api/webhookSubscriptions.toggle": [WS_FIELD, SUB_ID, field("enabled", BOOL, True)],
    "/api/webhookSubscriptions.regenerateSecret": [WS_FIELD, SUB_ID],
    "/api/webhookSubscriptions.test": [WS_FIELD, SUB_ID,
                                       field("event_type", STRING, hint="event type", nul="contact.\x00created")],
    "/api/workspaces.create": [field("id", STRING, True, nul="brand\x00new"), field("name", STRING, True),
                               field("settings", {O}), field("settings.a", {S, I, F, T, FA, O, A}),
                               field(("settings", "nested", "k\x00"), {S, I, F, T, FA, O, A}, hint="settings")],
    "/api/workspaces.createAPIKey": [WS_FIELD, field("email_prefix", STRING, True, nul="ro\x00bot")],
    "/api/workspaces.update": [field("id", STRING, True, nul="ws\x00"), field("name", STRING),
                               field("settings", {O}), field("settings.a", {S, I, F, T, FA, O, A}),
                               field("settings.email_tracking_enabled", BOOL, hint="settings"),
                               field("settings.website_url", STRING, hint="settings")],
    "/api/workspaces.createIntegration": [WS_FIELD, field("name", STRING, True, hint="integration name"),
                                          field("type", STRING, True), field("provider", {O}, True),
                                          *PROVIDER_FIELDS],
    "/api/workspaces.updateIntegration": [WS_FIELD, INTEGRATION_ID, field("name", STRING, True, hint="integration name"),
                                          field("provider", {O}), *PROVIDER_FIELDS],
    "/api/workspaces.deleteIntegration": [WS_FIELD, INTEGRATION_ID],
    "/api/webhooks.register": [WS_FIELD, INTEGRATION_ID, field("event_types", {A}),
                               field(("event_types", 0), STRING, hint="event_types"), field("rotate_secret", BOOL)],
    "/api/email.testProvider": [WS_FIELD, field("to", STRING, True), field("provider", {O}, True), *PROVIDER_FIELDS,
                                field("integration_id", STRING, hint="integration")],
    "/api/user.rootSignin": [field("email", STRING, True), field("timestamp", {I}, True),
                             field("signature", STRING, True)],
    "/unsubscribe-oneclick": [field("wid", STRING, True), field("email", STRING, True),
                              field("email_hmac", STRING, True), field("lids", {A}, True),
                              field(("lids", 0), STRING, hint="lids"), field("mid", STRING)],
    "/preferences": [WS_FIELD, field("email", STRING, True), field("email_hmac", STRING, True),
                     field("language", STRING), field("timezone", STRING)],
    "/subscribe": [WS_FIELD, field("contact", {O}, True), *contact_fields(("contact",)),
                   field("list_ids", {A}, True), field(("list_ids", 0), STRING, hint="list_ids", nul="ne\x00ws",
                         nul_error="list not found: ne\x00ws")],
    "/api/templates.create": TEMPLATE_FIELDS,
    "/api/templates.update": TEMPLATE_FIELDS,
    "/api/templates.delete": typed(WS_FIELD, field("id", STRING, True)),
    "/api/templates.compile": typed(
        WS_FIELD, field("message_id", STRING, True), field("mjml_source", STRING), field("subject", STRING),
        field("subject_preview", STRING), field("subject_preview_override", STRING), field("test_data", {O}),
        field("channel", STRING), field("preserve_liquid", BOOL), field("language", STRING), field("version", {I}),
        field("template_id", STRING, hint="id"), field("visual_editor_tree", {O}),
        field("tracking_settings", {O}), field("tracking_settings.enable_tracking", BOOL),
        *[field(("tracking_settings", name), STRING) for name in ("utm_source", "utm_medium", "utm_campaign",
                                                                  "utm_content", "utm_term")]),
    "/api/templateBlocks.create": typed(WS_FIELD, *BLOCK_FIELDS),
    "/api/templateBlocks.update": typed(WS_FIELD, field("id", STRING, True), *BLOCK_FIELDS),
    "/api/templateBlocks.delete": typed(WS_FIELD, field("id", STRING, True)),
    "/api/segments.create": SEGMENT_FIELDS,
    "/api/segments.update": SEGMENT_FIELDS,
    "/api/segments.delete": typed(WS_FIELD, field("id", STRING, True)),
    "/api/segments.rebuild": typed(WS_FIELD, field("segment_id", STRING, True)),
    "/api/segments.preview": typed(WS_FIELD, field("tree", {O}, True), field("limit", {I})),
}


def put(body: dict, path: tuple, value) -> dict:
    """A copy of `body` with the value at `path` replaced (missing objects on the way are made)."""
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            node = node[key]
    node[path[-1]] = value
    return out


async def send(client, path: str, s: Seeded, body=None, content: bytes | None = None, params=None,
               headers: dict | None = None) -> httpx.Response:
    h = {**headers_for(path, s), **(headers or {})}
    if method_of(path) == "GET":
        return await client.get(path, params=params, headers=h)
    if content is not None:
        return await client.post(path, content=content, headers={"Content-Type": "application/json", **h})
    return await client.post(path, json=body, headers=h)


def assert_4xx_naming(r: httpx.Response, *words: str) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    message = body["error"].lower().replace("_", " ")
    for word in words:
        assert word.lower().replace("_", " ") in message, (word, body["error"])
    return body["error"]


class Unchanged:
    """async with Unchanged(pool, ws_id): ... asserts the workspace's rows are as before."""

    def __init__(self, pool, ws_id: str, totals: bool = True):
        self.pool, self.ws_id, self.totals = pool, ws_id, totals

    async def __aenter__(self):
        self.before = await snapshot(self.pool, self.ws_id, self.totals)
        return self

    async def __aexit__(self, *exc):
        if exc[0] is None:
            assert await snapshot(self.pool, self.ws_id, self.totals) == self.before, "stored data changed"


# ---------------------------------------------------------------- the tables cover every endpoint

def test_every_endpoint_has_cases():
    routes = {r.path for capability in CAPABILITIES if capability.name != "platform"
              for r in capability.routes}  # the probes take no input (tests/platform/test_observability.py)
    assert routes == set(PUBLIC) | set(HTML_ROUTES), "a new public route needs its bad-input cases here"
    posts = {p for p, e in ENDPOINTS.items() if e.method == "POST"} | set(PUBLIC_POSTS)
    assert posts == set(FIELDS), f"POST endpoints without a field table: {posts ^ set(FIELDS)}"
    gets = {p for p, e in ENDPOINTS.items() if e.method == "GET"} | {"/confirm"}
    assert gets == set(QUERY_PARAMS), f"GET endpoints without a parameter table: {gets ^ set(QUERY_PARAMS)}"


@pytest.mark.parametrize("form", [
    b"", b"wid=x", b"\xff\xfe", b"wid=%00&email=a%40b.c&email_hmac=0&action=settings",
    b"action=subscribe&list_id=news", b"wid={w}&email=known%40example.com&email_hmac=0&action=delete&list_id=news",
    b"wid={w}&email=known%40example.com&email_hmac=0&action=subscribe&list_id=n%00ews",
    b"wid={w}&email=known%40example.com&email_hmac=0&action=settings&language=FR",
], ids=["empty", "only_wid", "not_utf8", "nul", "no_identity", "unknown_action", "nul_list", "bad_language"])
async def test_html_routes_refuse_bad_input(client, pool, seeded, form):
    """The page's form: a form the page never sends gets the page's error screen (400, HTML)
    and changes nothing."""
    async with Unchanged(pool, seeded.id):
        r = await client.post("/preferences/form", content=form.replace(b"{w}", seeded.id.encode()),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), r.text
    assert "<h1>" in r.text


@pytest.mark.parametrize("query", [{}, {"wid": "x", "email": "a@b.c"}, {"wid": "x\x00", "email": "a@b.c", "email_hmac": "0"}])
async def test_html_page_refuses_bad_input(client, pool, seeded, query):
    async with Unchanged(pool, seeded.id):
        r = await client.get("/notification-center", params=query)
    assert r.status_code in (400, 401) and r.headers["content-type"].startswith("text/html"), r.text


# ---------------------------------------------------------------- bodies that are not one JSON object

def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def in_body(ws_id: str, raw: bytes) -> bytes:
    """`raw` as the value of an extra key of an otherwise plausible body."""
    return b'{"workspace_id": "' + ws_id.encode() + b'", "x": ' + raw + b"}"


UNDECODABLE = {
    "not_json": lambda w: b"workspace_id=" + w.encode(),
    "truncated": lambda w: in_body(w, b"1")[:-1],
    "truncated_string": lambda w: b'{"workspace_id": "' + w.encode(),
    "empty": lambda w: b"",
    "whitespace": lambda w: b" \n",
    "array": lambda w: b'[{"workspace_id": "' + w.encode() + b'"}]',
    "string": lambda w: b'"' + w.encode() + b'"',
    "null": lambda w: b"null",
    "number": lambda w: b"42",
    "trailing_garbage": lambda w: in_body(w, b"1") + b"x",
    "two_documents": lambda w: in_body(w, b"1") + in_body(w, b"2"),
    "single_quotes": lambda w: b"{'workspace_id': '" + w.encode() + b"'}",
    "trailing_comma": lambda w: b'{"workspace_id": "' + w.encode() + b'",}',
    "comment": lambda w: b'{"workspace_id": "' + w.encode() + b'" /* c */}',
    "bom": lambda w: b"\xef\xbb\xbf" + in_body(w, b"1"),
    "nesting_10000_arrays": lambda w: in_body(w, deep(10_000)),
    "nesting_10000_objects": lambda w: in_body(w, b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    "nesting_10000_bare": lambda w: deep(10_000),
    "invalid_utf8": lambda w: in_body(w, b'"\xff\xfe"'),
    "overlong_utf8": lambda w: in_body(w, b'"\xc0\xaf"'),
    "utf8_encoded_surrogate": lambda w: in_body(w, b'"\xed\xa0\x80"'),
    "lone_high_surrogate": lambda w: in_body(w, b'"\\ud800"'),
    "lone_low_surrogate": lambda w: in_body(w, b'"a\\udc00b"'),
    "reversed_surrogates": lambda w: in_body(w, b'"\\udc00\\ud800"'),
    "surrogate_in_key": lambda w: b'{"workspace_id": "' + w.encode() + b'", "\\ud800": 1}',
    "raw_nul_byte": lambda w: in_body(w, b'"a\x00b"'),
    "raw_control_char": lambda w: in_body(w, b'"a\x01b"'),
    "bad_escape": lambda w: in_body(w, b'"\\x41"'),
    "NaN": lambda w: in_body(w, b"NaN"),
    "Infinity": lambda w: in_body(w, b"Infinity"),
    "minus_Infinity": lambda w: in_body(w, b"-Infinity"),
    "nan_lowercase": lambda w: in_body(w, b"nan"),
    "1e400": lambda w: in_body(w, b"1e400"),
    "-1e400": lambda w: in_body(w, b"-1e400"),
    "integer_5000_digits": lambda w: in_body(w, b"9" * 5000),
    "leading_zero": lambda w: in_body(w, b"012"),
    "plus_sign": lambda w: in_body(w, b"+1"),
    "hex_number": lambda w: in_body(w, b"0x10"),
}


@pytest.mark.parametrize("kind", sorted(UNDECODABLE))
@pytest.mark.parametrize("path", POST_PATHS)
async def test_undecodable_body(client, pool, seeded, path, kind):
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, content=UNDECODABLE[kind](seeded.id))
    assert_json_error(r, 400, NOT_JSON)


@pytest.mark.parametrize("where", ["contact", "custom_json", "unknown_key"])
async def test_number_out_of_range_in_a_field(client, pool, seeded, where):
    """1e400 where a number is expected is still a body the decoder refuses."""
    raw = {"contact": b'{"email": "known@example.com", "lifetime_value": 1e400}',
           "custom_json": b'{"email": "known@example.com", "custom_json_1": {"a": [1e400]}}',
           "unknown_key": b'{"email": "known@example.com", "extra": -1e400}'}[where]
    body = b'{"workspace_id": "' + seeded.id.encode() + b'", "contact": ' + raw + b"}"
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/contacts.upsert", seeded, content=body)
    assert_json_error(r, 400, NOT_JSON)


# ---------------------------------------------------------------- over the size limit

async def _chunks(data: bytes, size: int = 64 * 1024):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("declared", [True, False], ids=["content_length", "chunked"])
@pytest.mark.parametrize("path", POST_PATHS)
async def test_body_over_the_limit(client, pool, settings, seeded, path, declared):
    # transactional.send and .testTemplate have a limit of their own (attachments, delivery 3)
    limit = getattr(settings, ENDPOINTS[path].body_limit) if path in ENDPOINTS else settings.max_body_bytes
    body = put(valid_body(path, seeded), ("padding",), "x" * limit)  # a valid body, one key too big
    raw = json.dumps(body).encode()
    assert len(raw) > limit
    h = {**headers_for(path, seeded), "Content-Type": "application/json"}
    async with Unchanged(pool, seeded.id):
        if declared:
            r = await client.post(path, content=raw, headers=h)
        else:
            r = await client.post(path, content=_chunks(raw), headers=h)
            assert "content-length" not in r.request.headers
    assert_json_error(r, 413, f"request body exceeds the limit of {limit} bytes")


async def test_body_exactly_at_the_limit_is_read(client, pool, settings, seeded):
    """The limit is inclusive: a body of exactly max_body_bytes is decoded (here: a bad field)."""
    limit = settings.max_body_bytes
    head = b'{"workspace_id": "' + seeded.id.encode() + b'", "contact": {"email": "known@example.com", "first_name": "'
    tail = b'"}}'
    raw = head + b"x" * (limit - len(head) - len(tail)) + tail
    assert len(raw) == limit
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/contacts.upsert", seeded, content=raw)
    assert_json_error(r, 400, "invalid contact: first_name exceeds 255 characters")


# ---------------------------------------------------------------- 10 MB strings

TEN_MB = 10_000_000


@pytest.fixture(scope="module")
async def default_limit_client(settings, dsn, pool):
    """The app with the default body limit (10 MiB) instead of the tests' 1 MiB."""
    default = Settings().max_body_bytes
    assert default == 10 * 1024 * 1024
    app = create_app(dataclasses.replace(settings, max_body_bytes=default), dsn, pool=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://postroom.test") as c:
        yield c


async def test_ten_megabyte_string_over_the_test_limit_is_413(client, pool, settings, seeded):
    body = put(valid_body("/api/contacts.upsert", seeded), ("contact", "first_name"), "x" * TEN_MB)
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/contacts.upsert", seeded, body)
    assert_json_error(r, 413, f"request body exceeds the limit of {settings.max_body_bytes} bytes")


TEN_MB_CASES = [
    ("/api/contacts.upsert", ("contact", "first_name"), "invalid contact: first_name exceeds 255 characters"),
    ("/api/contacts.upsert", ("contact", "email"), "invalid contact: invalid email format"),
    ("/api/contacts.upsert", ("contact", "custom_string_3"), "invalid contact: custom_string_3 exceeds 255 characters"),
    ("/api/contacts.upsert", ("contact", "timezone"), "invalid contact: invalid timezone: " + "x" * 100 + "..."),
    ("/api/contacts.upsert", ("contact", "last_order_at"),
     'invalid contact: invalid time format for last_order_at: parsing time "' + "x" * 100
     + '...": expected RFC 3339 date-time such as 2023-05-15T14:30:00Z'),
    ("/api/lists.create", ("name",), "invalid create list request: name length must be between 1 and 255"),
    ("/api/lists.create", ("description",), "invalid create list request: description exceeds 2000 characters"),
    ("/api/lists.create", ("id",), "invalid create list request: id length must be between 1 and 32"),
    ("/api/webhookSubscriptions.create", ("name",), "name must be at most 255 characters"),
    ("/api/webhookSubscriptions.create", ("url",), "URL must be at most 2048 characters"),
    ("/api/workspaces.create", ("name",), "name exceeds 255 characters"),
    ("/api/contactLists.updateStatus", ("status",), "invalid status: " + "x" * 100),
    ("/subscribe", ("contact", "first_name"), "invalid contact: first_name exceeds 255 characters"),
    ("/api/templates.create", ("name",), "invalid create template request: name length must be between 1 and 255"),
    ("/api/templates.compile", ("mjml_source",),
     "invalid compile template request: mjml_source exceeds 1048576 bytes"),
    ("/api/templateBlocks.create", ("name",),
     "invalid create template block request: name length must be between 1 and 255"),
    ("/api/segments.create", ("name",), "invalid create segment request: name length must be between 1 and 255"),
    ("/api/segments.create", ("timezone",), "invalid create segment request: timezone length must be between 1 and 100"),
]


@pytest.mark.parametrize("path, at, message", TEN_MB_CASES, ids=[f"{p}:{'.'.join(at)}" for p, at, _ in TEN_MB_CASES])
async def test_ten_megabyte_string_under_the_default_limit(default_limit_client, pool, seeded, path, at, message):
    body = put(valid_body(path, seeded), at, "x" * TEN_MB)
    async with Unchanged(pool, seeded.id):
        r = await send(default_limit_client, path, seeded, body)
    assert_json_error(r, 400, message)


async def test_ten_megabyte_import_row_reports_the_field(default_limit_client, pool, seeded):
    body = put(valid_body("/api/contacts.import", seeded), ("contacts", 0, "last_name"), "y" * TEN_MB)
    async with Unchanged(pool, seeded.id):
        r = await send(default_limit_client, "/api/contacts.import", seeded, body)
    assert r.status_code == 200, r.text
    assert r.json() == {"operations": [{"email": "known@example.com", "action": "error",
                                        "error": "invalid contact: last_name exceeds 255 characters"}]}


# ---------------------------------------------------------------- wrong JSON types, field by field

def wrong_type_cases():
    for path, fields in FIELDS.items():
        for f in fields:
            for kind in (S, I, F, T, FA, O, A, N):
                if kind in f.accepts or (kind == N and not f.required):
                    continue
                if f.accepts == NUMBER and kind in (I, F):
                    continue
                yield pytest.param(path, f, kind, id=f"{path}:{f.name}:{kind}")


def contact_field_of(f: Field) -> str | None:
    """The contact field a Field addresses, if any (contact.<x> or contacts.0.<x>)."""
    if len(f.path) >= 2 and f.path[0] in ("contact", "contacts") and f.path[-2] in ("contact", 0) \
            and f.path[-1] in contacts_model.FIELDS:
        return f.path[-1]
    return None


@pytest.mark.parametrize("path, f, kind", list(wrong_type_cases()))
async def test_wrong_json_type(client, pool, seeded, path, f, kind):
    body = put(valid_body(path, seeded), f.path, SAMPLES[kind])
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, body)
    name = contact_field_of(f)
    if name is not None and kind != N:
        expected = contact_type_error(name, kind)
    elif name == "email":
        expected = "invalid contact: email is required"
    else:
        expected = None
    if path == "/api/contacts.import" and f.path[:1] == ("contacts",) and len(f.path) > 1:
        # a bad row is reported in its operation; nothing of it is written
        assert r.status_code == 200, r.text
        (op,) = r.json()["operations"]
        assert op["action"] == "error", op
        if expected is not None:
            assert op["error"] == expected
        else:
            assert "contact" in op["error"], op
        return
    if f.type_error is not None and kind != N:
        expected = f.type_error
    if expected is not None:
        assert_json_error(r, 400, expected)
    else:
        assert_4xx_naming(r, f.mention)


# ---------------------------------------------------------------- NUL characters in every string

def nul_cases():
    for path, fields in FIELDS.items():
        for f in fields:
            if S in f.accepts:
                yield pytest.param(path, f, id=f"{path}:{f.name}")


def nul_message(path: str, f: Field) -> str | None:
    """The exact message where the contract (or the model) fixes one."""
    name = contact_field_of(f)
    if name is None:
        return f.nul_error
    if name in contacts_model.DATETIME_FIELDS or name in contacts_model.TIMESTAMP_FIELDS:
        return None  # an unparsable time, named by its field (checked below)
    return f"invalid contact: {name} contains a NUL character"


@pytest.mark.parametrize("path, f", list(nul_cases()))
async def test_nul_in_string_field(client, pool, seeded, path, f):
    body = put(valid_body(path, seeded), f.path, f.nul or "a\x00b")
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, body)
    expected = nul_message(path, f)
    if path == "/api/contacts.import" and f.path[:1] == ("contacts",):
        assert r.status_code == 200, r.text
        (op,) = r.json()["operations"]
        assert op["action"] == "error" and f.path[-1] in op["error"], op
        if expected is not None:
            assert op["error"] == expected
        return
    if expected is not None:
        assert_json_error(r, 400, expected)
    else:
        assert_4xx_naming(r, f.mention)


JSON_NUL_VALUES = {
    "value": {"a": "b\x00"},
    "key": {"a\x00": 1},
    "deep_value": [{"x": [["deep\x00"]]}],
    "deep_key": {"a": {"b": {"c\x00": None}}},
    "escaped_only": {"a": "\x00"},
}


@pytest.mark.parametrize("where", sorted(JSON_NUL_VALUES))
@pytest.mark.parametrize("path, prefix", [("/api/contacts.upsert", ("contact",)), ("/api/lists.subscribe", ("contact",)),
                                          ("/subscribe", ("contact",))])
async def test_nul_inside_custom_json(client, pool, seeded, path, prefix, where):
    body = put(valid_body(path, seeded), prefix + ("custom_json_2",), JSON_NUL_VALUES[where])
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, body)
    assert_json_error(r, 400, "invalid contact: custom_json_2 contains a NUL character")


@pytest.mark.parametrize("where", sorted(JSON_NUL_VALUES))
async def test_nul_inside_workspace_settings(client, pool, seeded, where):
    body = put(valid_body("/api/workspaces.create", seeded), ("settings",), {"v": JSON_NUL_VALUES[where]})
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/workspaces.create", seeded, body)
    assert_4xx_naming(r, "settings", "nul")


async def test_nul_inside_custom_json_of_an_import_row(client, pool, seeded):
    body = put(valid_body("/api/contacts.import", seeded), ("contacts", 0, "custom_json_5"), {"k": ["\x00"]})
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/contacts.import", seeded, body)
    assert r.json() == {"operations": [{"email": "known@example.com", "action": "error",
                                        "error": "invalid contact: custom_json_5 contains a NUL character"}]}


async def test_settings_nested_deeper_than_stored_json_allows(client, pool, seeded):
    """Decodable, but deeper than any stored JSON may be (it must be encodable again on the way out)."""
    value: object = 1
    for _ in range(900):
        value = {"a": value}
    body = put(valid_body("/api/workspaces.create", seeded), ("settings",), value)
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/workspaces.create", seeded, body)
    assert_4xx_naming(r, "settings")


async def test_custom_json_nested_deeper_than_allowed(client, pool, seeded):
    value: object = []
    for _ in range(900):
        value = [value]
    body = put(valid_body("/api/contacts.upsert", seeded), ("contact", "custom_json_1"), value)
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/contacts.upsert", seeded, body)
    assert_json_error(r, 400, f"invalid contact: custom_json_1 is nested more than {contacts_model.JSON_MAX_DEPTH} levels deep")


# ---------------------------------------------------------------- numbers at the edges

@pytest.mark.parametrize("literal", [b"-0", b"-0.0", b"0e0", b"-0e-5"])
@pytest.mark.parametrize("name", ["lifetime_value", "orders_count", "custom_number_3"])
async def test_negative_zero_is_zero(client, fresh, name, literal):
    raw = (b'{"workspace_id": "' + fresh.id.encode() + b'", "contact": {"email": "zero@example.com", "'
           + name.encode() + b'": ' + literal + b', "custom_json_1": {"z": ' + literal + b"}}}")
    r = await send(client, "/api/contacts.upsert", fresh, content=raw)
    assert r.status_code == 200, r.text
    for contact in (r.json()["contact"], (await client.get("/api/contacts.getByEmail", headers=fresh.ws.headers, params={
            "workspace_id": fresh.id, "email": "zero@example.com"})).json()["contact"]):
        assert contact[name] == 0 and str(contact[name]) == "0"
        assert contact["custom_json_1"] == {"z": 0}


NUMBER_CASES = [
    ("lifetime_value", b"1" + b"0" * 400, "invalid contact: lifetime_value must be a finite number"),
    ("custom_number_2", b"-" + b"9" * 400, "invalid contact: custom_number_2 must be a finite number"),
    ("orders_count", b"1" + b"0" * 30, f"invalid contact: orders_count must be <= {contacts_model.ORDERS_COUNT_MAX}"),
    ("orders_count", b"9223372036854775808", f"invalid contact: orders_count must be <= {contacts_model.ORDERS_COUNT_MAX}"),
    ("orders_count", b"-1", "invalid contact: orders_count must be >= 0"),
    ("orders_count", b"-0.5", "invalid contact: invalid type for orders_count: expected integer, got Number"),
    ("orders_count", b"1e400", NOT_JSON),
    ("lifetime_value", b"1.7976931348623159e308", NOT_JSON),
]


@pytest.mark.parametrize("name, literal, message", NUMBER_CASES)
async def test_numbers_out_of_range(client, pool, seeded, name, literal, message):
    raw = (b'{"workspace_id": "' + seeded.id.encode() + b'", "contact": {"email": "known@example.com", "'
           + name.encode() + b'": ' + literal + b"}}")
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/contacts.upsert", seeded, content=raw)
    assert_json_error(r, 400, message)


async def test_extreme_numbers_in_custom_json_round_trip(client, fresh):
    """The largest and smallest doubles and a 300-digit integer are stored and read back as numbers."""
    raw = (b'{"workspace_id": "' + fresh.id.encode() + b'", "contact": {"email": "big@example.com", '
           b'"custom_json_1": [1.7976931348623157e308, 5e-324, ' + b"7" * 300 + b"]}}")
    r = await send(client, "/api/contacts.upsert", fresh, content=raw)
    assert r.status_code == 200, r.text
    got = await client.get("/api/contacts.getByEmail", headers=fresh.ws.headers,
                           params={"workspace_id": fresh.id, "email": "big@example.com"})
    assert got.status_code == 200, got.text
    big, tiny, digits = got.json()["contact"]["custom_json_1"]
    assert float(big) == 1.7976931348623157e308 and float(tiny) == 5e-324 and digits == int("7" * 300)


# ---------------------------------------------------------------- emails of 255 and 256 characters

async def test_email_of_255_characters_works_everywhere(client, fresh):
    h, w, e = fresh.ws.headers, fresh.id, EMAIL_255
    r = await client.post("/api/contacts.import", headers=h, json={"workspace_id": w, "contacts": [{"email": e}]})
    assert r.json()["operations"] == [{"email": e, "action": "create"}]
    await ok(await client.post("/api/lists.subscribe", headers=h, json={
        "workspace_id": w, "contact": {"email": e}, "list_ids": ["private"]}))
    await ok(await client.post("/subscribe", json={"workspace_id": w, "contact": {"email": e}, "list_ids": ["news"]}))
    got = await ok(await client.get("/api/contacts.getByEmail", headers=h, params={"workspace_id": w, "email": e}))
    assert {m["list_id"] for m in got["contact"]["contact_lists"]} == {"news", "private"}
    got = await ok(await client.get("/api/contactLists.getByIDs", headers=h,
                                    params={"workspace_id": w, "email": e, "list_id": "news"}))
    assert got["contact_list"]["email"] == e
    got = await ok(await client.get("/api/contactLists.getListsByContact", headers=h, params={"workspace_id": w, "email": e}))
    assert len(got["contact_lists"]) == 2
    got = await ok(await client.get("/api/timeline.list", headers=h, params={"workspace_id": w, "email": e}))
    assert got["timeline"]
    got = await ok(await client.post("/api/contactLists.updateStatus", headers=h, json={
        "workspace_id": w, "email": e, "list_id": "news", "status": "unsubscribed"}))
    assert got["found"] is True
    await ok(await client.post("/api/contactLists.removeContact", headers=h,
                               json={"workspace_id": w, "email": e, "list_id": "news"}))
    await ok(await client.post("/api/contacts.delete", headers=h, json={"workspace_id": w, "email": e}))


TOO_LONG = "invalid contact: email exceeds 255 characters"


def email_256_writes(w: str):
    e = EMAIL_256
    return [
        ("/api/contacts.upsert", {"workspace_id": w, "contact": {"email": e}}),
        ("/api/lists.subscribe", {"workspace_id": w, "contact": {"email": e}, "list_ids": ["private"]}),
        ("/subscribe", {"workspace_id": w, "contact": {"email": e}, "list_ids": ["news"]}),
    ]


@pytest.mark.parametrize("index", range(3), ids=["contacts.upsert", "lists.subscribe", "subscribe"])
async def test_email_of_256_characters_is_refused_by_writes(client, pool, seeded, index):
    path, body = email_256_writes(seeded.id)[index]
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, body)
    assert_json_error(r, 400, TOO_LONG)


async def test_email_of_256_characters_in_an_import_row(client, pool, seeded):
    body = {"workspace_id": seeded.id, "contacts": [{"email": EMAIL_256}], "subscribe_to_lists": ["news"]}
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/contacts.import", seeded, body)
    assert r.json() == {"operations": [{"email": EMAIL_256, "action": "error", "error": TOO_LONG}]}


LOOKUPS = ["contacts.getByEmail", "contacts.delete", "timeline.list", "contactLists.getByIDs",
           "contactLists.getListsByContact", "contactLists.updateStatus", "contactLists.removeContact",
           "contacts.list"]


def email_lookups(w: str, email: str):
    """Every endpoint that looks a contact up by email, and its answer for an absent one."""
    return [
        ("/api/contacts.getByEmail", {"workspace_id": w, "email": email}, 404, {"error": "Contact not found"}),
        ("/api/contacts.delete", {"workspace_id": w, "email": email}, 404, {"error": "Contact not found"}),
        ("/api/timeline.list", {"workspace_id": w, "email": email}, 200, {"timeline": []}),
        ("/api/contactLists.getByIDs", {"workspace_id": w, "email": email, "list_id": "news"}, 404,
         {"error": "Contact list relationship not found"}),
        ("/api/contactLists.getListsByContact", {"workspace_id": w, "email": email}, 200, {"contact_lists": []}),
        ("/api/contactLists.updateStatus", {"workspace_id": w, "email": email, "list_id": "news", "status": "active"},
         200, {"success": True, "message": "contact not in list", "found": False}),
        ("/api/contactLists.removeContact", {"workspace_id": w, "email": email, "list_id": "news"}, 404,
         {"error": "contact not in list"}),
        ("/api/contacts.list", {"workspace_id": w, "email": email}, 200, {"contacts": []}),
    ]


@pytest.mark.parametrize("index", range(len(LOOKUPS)), ids=LOOKUPS)
@pytest.mark.parametrize("email", [EMAIL_256, "nobody@example.com"], ids=["256_chars", "absent"])
async def test_email_lookups_answer_like_an_absent_contact(client, pool, seeded, email, index):
    path, args, status, answer = email_lookups(seeded.id, email)[index]
    assert path == "/api/" + LOOKUPS[index]
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, args, params=args)
    assert r.status_code == status and r.json() == answer, r.text


# ---------------------------------------------------------------- query parameters: NUL, repeated, empty

def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# GET endpoint -> {parameter: (a valid value for the seeded workspace, required)}; "@ws"/"@sub"
# stand for the workspace id and the webhook subscription id. workspace_id is added to all but the
# user-level endpoints.
QUERY_PARAMS: dict[str, dict[str, tuple[str, bool]]] = {
    "/api/contacts.getByEmail": {"email": ("known@example.com", True)},
    "/api/contacts.getByExternalID": {"external_id": ("ext-1", True)},
    "/api/contacts.count": {},
    "/api/contacts.list": {name: ("k", False) for name in (
        "email", "external_id", "first_name", "last_name", "full_name", "phone", "country", "language")} | {
        "list_id": ("news", False), "contact_list_status": ("active", False), "with_contact_lists": ("true", False),
        "limit": ("5", False), "cursor": (b64("2024-01-01T00:00:00Z~a@example.com"), False)},
    "/api/timeline.list": {"email": ("known@example.com", True), "limit": ("5", False),
                           "cursor": (b64("2024-01-01T00:00:00Z|123"), False)},
    "/api/lists.list": {},
    "/api/lists.get": {"id": ("news", True)},
    "/api/lists.stats": {"list_id": ("news", True)},
    "/api/contactLists.getByIDs": {"email": ("known@example.com", True), "list_id": ("news", True)},
    "/api/contactLists.getContactsByList": {"list_id": ("news", True), "limit": ("5", False),
                                            "cursor": (b64("known@example.com"), False), "status": ("active", False)},
    "/api/contactLists.getListsByContact": {"email": ("known@example.com", True)},
    "/api/webhookSubscriptions.list": {},
    "/api/webhookSubscriptions.get": {"id": ("@sub", True)},
    "/api/webhookSubscriptions.deliveries": {"subscription_id": ("@sub", False), "limit": ("5", False),
                                             "offset": ("0", False)},
    "/api/webhookSubscriptions.eventTypes": {},
    "/api/workspaces.list": {},
    "/api/workspaces.get": {"id": ("@ws", True)},
    "/api/templates.list": {"category": ("blog", False), "channel": ("web", False)},
    "/api/templates.get": {"id": ("post", True), "version": ("1", False)},
    "/api/templateBlocks.list": {},
    "/api/templateBlocks.get": {"id": ("@block", True)},
    "/api/messages.list": {name: ("x", False) for name in (
        "id", "external_id", "list_id", "broadcast_id", "template_id", "transactional_notification_id",
        "automation_id")} | {
        "status": ("sent", False), "channel": ("email", False), "contact_email": ("known@example.com", False),
        "limit": ("5", False), "cursor": (b64("2024-01-01T00:00:00.5Z~abc"), False)} | {
        name: ("true", False) for name in ("is_sent", "is_delivered", "is_failed", "is_opened", "is_clicked",
                                           "is_bounced", "is_complained", "is_unsubscribed")} | {
        name: ("2024-01-01T00:00:00Z", False) for name in ("sent_after", "sent_before", "updated_after",
                                                           "updated_before")},
    "/api/messages.broadcastStats": {"broadcast_id": ("b1", True)},
    "/api/messages.linkStats": {"message_id": ("m1", True)},
    "/api/messages.broadcastLinkStats": {"broadcast_id": ("b1", True)},
    "/api/transactional.list": {"search": ("No", False), "limit": ("5", False), "offset": ("0", False)},
    "/api/transactional.get": {"id": ("note", True)},
    "/api/broadcasts.list": {"status": ("draft", False), "limit": ("5", False), "offset": ("0", False),
                             "with_templates": ("true", False)},
    "/api/broadcasts.get": {"id": ("@bcast", True), "with_templates": ("false", False)},
    "/api/broadcasts.getTestResults": {"id": ("@bcast_done", True)},
    "/api/tasks.list": {"status": ("completed", False), "type": ("send_broadcast", False), "limit": ("5", False),
                        "offset": ("0", False), "created_after": ("2020-01-01T00:00:00Z", False),
                        "created_before": ("2099-01-01T00:00:00Z", False)},
    "/api/tasks.get": {"id": ("@task_done", True)},
    "/api/customEvents.get": {"event_name": ("order.placed", True), "external_id": ("o-1", True)},
    "/api/customEvents.list": {"email": ("known@example.com", False), "event_name": ("order.placed", False),
                               "limit": ("5", False), "offset": ("0", False)},
    "/api/webhooks.status": {"integration_id": ("@integration", True)},
    "/api/inboundWebhookEvents.list": {
        "event_type": ("bounce", False), "recipient_email": ("known@example.com", False), "message_id": ("m1", False),
        "timestamp_after": ("2024-01-01T00:00:00Z", False), "timestamp_before": ("2025-01-01T00:00:00Z", False),
        "limit": ("5", False), "cursor": (b64("2024-06-01T00:00:00.5Z~6f1b1a3c-0000-5000-8000-000000000000"), False)},
    "/api/segments.list": {"with_count": ("true", False)},
    "/api/segments.get": {"id": ("seg", True)},
    "/api/segments.contacts": {"segment_id": ("seg", True), "limit": ("5", False), "offset": ("0", False)},
    "/api/openapi.json": {},
    "/confirm": {name: ("@confirm", True) for name in ("workspace_id", "list_id", "email", "expires", "token")},
}


def params_of(path: str, s: Seeded) -> dict[str, str]:
    spec = dict(QUERY_PARAMS[path])
    out = {}
    if path in ENDPOINTS and ENDPOINTS[path].auth == "workspace":
        out["workspace_id"] = s.id
    for name, (value, _) in spec.items():
        out[name] = s.confirm[name] if value == "@confirm" else \
            {"@ws": s.id, "@sub": s.sub_id, "@block": s.block_id, "@bcast": s.broadcast_id,
             "@bcast_done": s.done_broadcast_id, "@task_done": f"send_broadcast_{s.done_broadcast_id}",
             "@integration": s.integration_id}.get(value, value)
    return out


def param_cases():
    for path, spec in QUERY_PARAMS.items():
        names = list(spec)
        if path in ENDPOINTS and ENDPOINTS[path].auth == "workspace":
            names = ["workspace_id"] + names
        for name in names:
            yield pytest.param(path, name, id=f"{path}:{name}")


def required(path: str, name: str) -> bool:
    return name == "workspace_id" or QUERY_PARAMS[path].get(name, ("", False))[1]


async def test_valid_query_parameters_are_accepted(client, fresh):
    """The baseline of the cases below: every GET endpoint answers 200 to its valid parameters."""
    for path in QUERY_PARAMS:
        r = await send(client, path, fresh, params=params_of(path, fresh))
        assert r.status_code == 200, (path, r.text)
    assert r.json() == {"success": True, "message": "subscription confirmed"}  # /confirm, the last


def _items(params: dict, name: str, values: list[str]) -> list[tuple[str, str]]:
    out = []
    for key, value in params.items():
        if key == name:
            out.extend((key, v) for v in values)
        else:
            out.append((key, value))
    if name not in params:
        out.extend((name, v) for v in values)
    return out


@pytest.mark.parametrize("path, name", list(param_cases()))
async def test_repeated_query_parameter(client, pool, seeded, path, name):
    params = params_of(path, seeded)
    for values in ([params[name], params[name]], [params[name], "other"], ["", params[name]]):
        async with Unchanged(pool, seeded.id):
            r = await send(client, path, seeded, params=_items(params, name, values))
        if path == "/confirm":
            assert_json_error(r, 400, "invalid confirmation link")
        else:
            assert_json_error(r, 400, f"invalid {name}: given more than once")


async def test_segments_is_a_list_parameter(client, seeded):
    for key in ("segments", "segments[]"):
        r = await client.get("/api/contacts.list", headers=seeded.ws.headers,
                             params=[("workspace_id", seeded.id), (key, "s1"), (key, "s2")])
        assert r.status_code == 200 and r.json() == {"contacts": []}, r.text


@pytest.mark.parametrize("key", ["segments", "segments[]"])
async def test_segments_bad_values(client, seeded, key):
    base = [("workspace_id", seeded.id)]
    r = await client.get("/api/contacts.list", headers=seeded.ws.headers,
                         params=base + [(key, f"s{i}") for i in range(101)])
    assert_json_error(r, 400, "too many segments: at most 100")
    # repeats of one segment count once
    r = await client.get("/api/contacts.list", headers=seeded.ws.headers,
                         params=base + [(key, f"s{i % 100}") for i in range(150)])
    assert r.status_code == 200, r.text
    r = await client.get("/api/contacts.list", headers=seeded.ws.headers,
                         params=base + [(key, "s1"), (key, "s\x002")])
    assert_json_error(r, 400, "invalid segments: contains a NUL character")


@pytest.mark.parametrize("path, name", list(param_cases()))
async def test_nul_in_query_parameter(client, pool, seeded, path, name):
    params = params_of(path, seeded)
    params[name] = params[name][:1] + "\x00" + params[name][1:]
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, params=params)
    if path == "/confirm":
        assert_json_error(r, 400, "invalid confirmation link")
    else:
        assert_4xx_naming(r, name)


MISSING = {
    ("/api/contacts.getByEmail", "workspace_id"): "Missing workspace ID",
    ("/api/contacts.getByEmail", "email"): "Missing email",
    ("/api/contacts.getByExternalID", "workspace_id"): "Missing workspace ID",
    ("/api/contacts.getByExternalID", "external_id"): "Missing external ID",
    ("/api/templates.list", "workspace_id"): "invalid get templates request: workspace_id is required",
    ("/api/templates.get", "workspace_id"): "invalid get template request: workspace_id is required",
    ("/api/templates.get", "id"): "invalid get template request: id is required",
    ("/api/templateBlocks.list", "workspace_id"): "invalid list template blocks request: workspace_id is required",
    ("/api/templateBlocks.get", "workspace_id"): "invalid get template block request: workspace_id is required",
    ("/api/templateBlocks.get", "id"): "invalid get template block request: id is required",
    ("/api/messages.list", "workspace_id"): "Missing workspace ID",
    ("/api/transactional.list", "workspace_id"): "validation error: workspace_id is required",
    ("/api/transactional.get", "workspace_id"): "validation error: workspace_id is required",
    ("/api/transactional.get", "id"): "validation error: id is required",
    ("/api/broadcasts.getTestResults", "id"): "broadcast id is required",
    **{("/api/customEvents.get", name): "workspace_id, event_name, and external_id are required"
       for name in ("workspace_id", "event_name", "external_id")},
    ("/api/inboundWebhookEvents.list", "workspace_id"): "Invalid parameters: workspace_id is required",
}


def missing_message(path: str, name: str) -> str:
    if path == "/confirm":
        return "invalid confirmation link"
    return MISSING.get((path, name), f"{name} is required")


@pytest.mark.parametrize("path, name", list(param_cases()))
async def test_empty_query_parameter_counts_as_absent(client, pool, seeded, path, name):
    params = params_of(path, seeded)
    async with Unchanged(pool, seeded.id):
        empty = await send(client, path, seeded, params={**params, name: ""})
        absent = await send(client, path, seeded, params={k: v for k, v in params.items() if k != name})
    assert (empty.status_code, empty.json()) == (absent.status_code, absent.json())
    if required(path, name):
        assert_json_error(empty, 400, missing_message(path, name))
    else:
        assert empty.status_code == 200, empty.text


NUMERIC_PARAMS = [(path, name) for path, spec in QUERY_PARAMS.items() for name in spec
                  if name in ("limit", "offset")]
NOT_NUMBERS = ["abc", "1.5", "-1", "0", "1e2", "0x10", "1_0", "\u0661\u0660", "\uff15", "9" * 19, "9" * 5000]


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=["abc", "fraction", "negative", "zero", "exponent", "hex",
                                                    "underscore", "arabic_digits", "fullwidth_digit", "19_digits",
                                                    "5000_digits"])
@pytest.mark.parametrize("path, name", NUMERIC_PARAMS, ids=[f"{p}:{n}" for p, n in NUMERIC_PARAMS])
async def test_malformed_number_in_query_parameter(client, pool, seeded, path, name, value):
    """limit and offset take ASCII digits only, in range; anything else is a 400 naming them
    (offset 0 is fine, so "0" is skipped for it)."""
    if value == "0" and (name == "offset" or path in ("/api/messages.list", "/api/inboundWebhookEvents.list")):
        return  # offset 0 is the first row; these lists read limit 0 as the default (delivery 4.3, engagement 3.8)
    params = {**params_of(path, seeded), name: value}
    async with Unchanged(pool, seeded.id):
        r = await send(client, path, seeded, params=params)
    if ((path == "/api/broadcasts.list" and re.match(r"[+-]?[0-9]", value))
            or path in ("/api/customEvents.list", "/api/segments.contacts")):
        # broadcasts-contract (Notifuse): a leading integer is read and a suffix ignored; limit <= 0
        # means 50, above 100 means 100, a negative offset 0
        # segments-contract, customEvents.list and segments.contacts: a limit that is unparsable or
        # <= 0 means 50 (above 100: 100), an offset that is unparsable or negative means 0
        assert r.status_code == 200, r.text
        return
    if path == "/api/transactional.list" and not (name == "offset" and value == "-1"):
        # delivery 3.2 (Notifuse): a limit that is not a positive integer means none, an offset
        # that is not an integer is ignored; only a negative offset is refused
        assert r.status_code == 200, r.text
        return
    assert_4xx_naming(r, name)


# ---------------------------------------------------------------- a workspace_id of another tenant

@pytest.mark.parametrize("path", sorted(p for p, e in ENDPOINTS.items() if e.auth == "workspace"))
async def test_workspace_id_of_another_tenant(client, pool, seeded, new_workspace, path):
    """With the key of the seeded workspace, naming another (existing) workspace is 403, the same
    answer as for a workspace that does not exist, and the other workspace is untouched."""
    other = await new_workspace()
    await ok(await client.post("/api/contacts.upsert", headers=other.headers, json={
        "workspace_id": other.id, "contact": {"email": "known@example.com", "first_name": "Other"}}))
    answers = []
    name = ENDPOINTS[path].workspace_param  # workspace_id, or id (workspaces.update)
    for target in (other.id, "ws-does-not-exist"):
        if method_of(path) == "GET":
            args = {**params_of(path, seeded), name: target}
            body = None
        else:
            args, body = None, {**valid_body(path, seeded), name: target}
        async with Unchanged(pool, other.id, totals=True), Unchanged(pool, seeded.id, totals=False):
            r = await send(client, path, seeded, body, params=args)
        assert_json_error(r, 403, FOREIGN)
        answers.append((r.status_code, r.content))
    assert answers[0] == answers[1]


# ---------------------------------------------------------------- values the edge must not choke on

@pytest.mark.parametrize("signature", ["é" * 64, "\u2603", "0" * 63 + "\x00", "💌"])
async def test_root_signin_with_a_non_ascii_signature(client, pool, seeded, signature):
    """The signature is compared in constant time as bytes: any text is a wrong signature (401),
    never an error of the comparison itself."""
    body = {"email": ROOT_EMAIL, "timestamp": int(time.time()), "signature": signature}
    async with Unchanged(pool, seeded.id):
        r = await send(client, "/api/user.rootSignin", seeded, body)
    assert_json_error(r, 401, "invalid email or signature")


# ---------------------------------------------------------------- tracking's public routes (engagement 1.6)

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


async def tracked_message(pool, settings, s: Seeded):
    """A message of the workspace and its signed tracking URLs, minted a minute ago (so a valid
    hit would be recorded)."""
    async with pool.acquire() as conn:
        mid, _ = await delivery_store.enqueue(conn, settings.key_bytes, Outgoing(
            workspace_id=s.id, integration_id=s.integration_id, contact_email="known@example.com",
            from_address="noreply@acme.test", from_name="Acme", subject="s", html="<p>x</p>", template_id="mail",
            template_version=1, source_type=Source.BROADCAST, source_id="b1"), "fake")
        await conn.execute("DELETE FROM email_queue WHERE workspace_id = $1 AND message_id = $2", s.id, mid)
    return signed_tracking(settings.key_bytes, "", mid, s.id, int(time.time()) - 60)


def spoiled(token: str) -> list[str]:
    """A valid token made worthless in every way a URL can be broken on its way."""
    swap = {"A": "B"}.get(token[10], "A")
    return [token[:10] + swap + token[11:], token[:-1] + ("A" if token[-1] != "A" else "Q"), token[:-6],
            token + "x", token.upper(), token + "%00", "%00", "x" * 5000, "é", "%FF%FE", "{{ token }}"]


async def test_tracking_routes_answer_bad_tokens_as_the_contract_says(client, pool, settings, fresh):
    """/t/ answers every token with the pixel, /r/ every bad one with 400 `Invalid token` (never
    a redirect); neither writes anything."""
    tracker = await tracked_message(pool, settings, fresh)
    click = tracker.click_url("https://x.test/secret-destination", 0).rsplit("/", 1)[1]
    opened = tracker.open_url().rsplit("/", 1)[1]
    ua = {"User-Agent": BROWSER}
    async with Unchanged(pool, fresh.id):
        for bad in spoiled(click) + [opened]:
            r = await client.get(f"/r/{bad}", headers=ua)
            assert_json_error(r, 400, "Invalid token")
            assert "location" not in r.headers and "secret-destination" not in r.text
        for bad in spoiled(opened) + [click]:
            r = await client.get(f"/t/{bad}", headers=ua)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", bad
        assert_json_error(await client.get("/r/", headers=ua), 400, "Missing token")
        for path in ("/r/a/b", "/t/a/b"):  # a token never holds a slash
            assert_json_error(await client.get(path, headers=ua), 404, "not found")


async def test_tracking_routes_bad_parameters_and_methods(client, pool, fresh):
    async with Unchanged(pool, fresh.id):
        for params, message in (({}, "Missing redirect URL"), ({"url": ""}, "Missing redirect URL"),
                                ([("url", "https://a.test"), ("url", "https://b.test")],
                                 "invalid url: given more than once"),
                                ({"url": "https://a.test/\x00"}, "invalid url: contains a NUL character")):
            assert_json_error(await client.get("/visit", params=params), 400, message)
        for params in ({"mid": "\x00", "wid": "x" * 5000, "ts": "-1"}, [("mid", "a"), ("mid", "b")]):
            r = await client.get("/opens", params=params)  # never read: always the pixel
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        for path in TRACKING:
            concrete = path.replace("{token}", "abc")
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                r = await client.request(method, concrete, content=b"{}")
                assert_json_error(r, 405, "Method not allowed")
# ---------------------------------------------------------------- POST /webhooks/email

async def test_provider_webhook_bad_input(client, pool, settings, seeded):
    """The provider callback: every malformed request is a 4xx JSON error and changes nothing,
    with the right secret as much as without it (engagement-contract 3.1)."""
    async with pool.acquire() as conn:
        secret = (await inbound_store.credentials(conn, settings.key_bytes, seeded.id, seeded.integration_id))["secret"]
    good = {"provider": "x", "workspace_id": seeded.id, "integration_id": seeded.integration_id, "token": secret}
    cases = [
        ({k: v for k, v in good.items() if k != "provider"}, b"{}", 400, "Provider is required"),
        ({k: v for k, v in good.items() if k != "integration_id"}, b"{}", 400,
         "Workspace ID and integration ID are required"),
        ([*good.items(), ("provider", "y")], b"{}", 400, "Provider is required"),
        ({**good, "workspace_id": "ws\x00"}, b"{}", 404, "integration not found"),
        ({**good, "integration_id": seeded.integration_id + "\x00"}, b"{}", 404, "integration not found"),
        ({**good, "integration_id": "not-a-uuid"}, b"{}", 404, "integration not found"),
        ({**good, "token": "wrong"}, b"{}", 401, "invalid webhook signature"),
        ({**good, "token": "wr\x00ong"}, b"{}", 401, "invalid webhook signature"),
        ({**good, "token": "\u00e9\u2603"}, b"{}", 401, "invalid webhook signature"),
        (good, b"", 400, "Failed to process webhook"),
    ]
    cases += [(good, UNDECODABLE[kind](seeded.id), 400, "Failed to process webhook") for kind in sorted(UNDECODABLE)]
    for params, content, status, message in cases:
        async with Unchanged(pool, seeded.id):
            r = await client.post("/webhooks/email", params=params, content=content,
                                  headers={"Content-Type": "application/json"})
        assert_json_error(r, status, message)
    async with Unchanged(pool, seeded.id):
        r = await client.post("/webhooks/email", params=good, content=b"[" + b" " * settings.max_body_bytes + b"]")
    assert r.status_code == 413
