"""Tenant isolation (issue 5): with a valid key of workspace A, every endpoint is called against
the ids and emails of workspace B. Nothing of B is returned, changed or confirmed to exist.

The walk is built from the registry (postroom.app.build_api) and the capabilities' public
ROUTES: CASES holds, per path, the requests that aim at B; a path without an entry fails the
test, so a new endpoint cannot ship without its isolation cases.

For every request:
- B's rows, in every table with a workspace_id (and B's workspace, members and sessions), are
  identical before and after it (test_bad_input.snapshot);
- the response body holds none of B's values (emails, ids, names, URLs, secrets, tokens, key
  names...) except those the request itself sent (an echo, such as `list not found: <id>`);
- where a request names something of B, its twin naming something that exists nowhere (same
  shape, fresh value) gets the same status and the same body once the two values are blanked
  out: no existence oracle. Requests naming workspace B itself get the answer of a workspace
  that does not exist.

Requests that A is entitled to make with names B also uses (A creating its own contact with B's
email, its own list with B's list id, ...) run last, after every lookup, and must behave as in
an empty workspace: `created`, not `updated`, and nothing of B's stored values in the answer.

Not walked: POST /subscribe to a *public* list of B with a new email. That is the public form
doing its job (anyone may subscribe to a public list), so it changes B by design. A private list
of B gets the contract's `list is not public` and changes nothing; every other mix of A's and B's
names is walked.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import secrets
import time
import uuid
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

import httpx

from postroom.app import CAPABILITIES, build_api
from postroom.templates import store as templates_store
from postroom.delivery import store as delivery_store
from postroom.delivery.model import Outgoing, Source
from postroom.templates.render import signed_tracking
from postroom.inbound import model as inbound_model, store as inbound_store
from postroom.segments import worker as segments_worker
from postroom.webhooks import delivery

from helpers import snapshot

ENDPOINTS = build_api().endpoints
PUBLIC = {"/subscribe": "POST", "/confirm": "GET", "/unsubscribe-oneclick": "POST", "/preferences": "POST",
          "/preferences/form": "POST", "/notification-center": "GET", "/webhooks/email": "POST",
          **{p: "GET" for p in ("/t/{token}", "/t/", "/r/{token}", "/r/", "/opens", "/visit")}}
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
FOREIGN = {"error": "user is not a member of the workspace"}
SHARED_EMAIL = "shared@example.com"
SHARED_LIST = "shared_list"
SHARED_SEGMENT = "shared_segment"


def method_of(path: str) -> str:
    return ENDPOINTS[path].method if path in ENDPOINTS else PUBLIC[path]


# ---------------------------------------------------------------- the two workspaces

@dataclasses.dataclass
class Tenant:
    ws: object                 # conftest.Workspace
    own_email: str             # a contact only this workspace has
    own_list: str              # a public list only this workspace has
    private_list: str
    double_list: str           # public, double opt-in; pending_email waits on it
    pending_email: str
    external_id: str
    sub_id: str = ""
    sub_secret: str = ""
    key_email: str = ""
    template: str = ""         # a web template's id
    block_id: str = ""         # a template block
    confirm: dict = dataclasses.field(default_factory=dict)  # a real confirmation link's parameters
    integration_id: str = ""   # an email integration (kind fake)
    message_id: str = ""       # a queued broadcast message
    broadcast_id: str = ""
    mail_template: str = ""    # an email template's id
    notification: str = ""     # a transactional notification sending mail_template
    bcast: str = ""            # a draft broadcast to own_list with mail_template
    sent_bcast: str = ""       # a processed broadcast (it has a task in the task view)
    event_name: str = ""       # a custom event (event_name, event_id) of own_email
    event_id: str = ""
    click_url: str = ""        # the destination of a recorded click on message_id
    segment: str = ""          # a segment of the members of own_list
    markers: list = dataclasses.field(default_factory=list)  # values that are this tenant's alone

    @property
    def id(self) -> str:
        return self.ws.id


async def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


async def populate(client, pool, ws, tag: str) -> Tenant:
    """Contacts, lists, memberships (active and pending), timeline, a webhook subscription with
    deliveries, an extra API key and a confirmation secret, all named so they can be told apart."""
    x = secrets.token_hex(4)
    t = Tenant(ws, own_email=f"{tag}-only-{x}@{tag}.example", own_list=f"{tag}_list_{x}",
               private_list=f"{tag}_private_{x}", double_list=f"{tag}_double_{x}",
               pending_email=f"{tag}-pending-{x}@{tag}.example", external_id=f"{tag}-ext-{x}")
    h, w = ws.headers, ws.id
    secret_values = {"first": f"{tag}first{x}", "shared_first": f"{tag}sharedname{x}", "job": f"{tag}job{x}",
                     "custom": f"{tag}custom{x}", "list_name": f"{tag} list name {x}",
                     "shared_list_name": f"{tag} shared list {x}", "description": f"{tag} description {x}",
                     "hook_name": f"{tag} hook {x}", "hook_path": f"/{tag}-hook-{x}"}
    await ok(await client.post("/api/contacts.upsert", headers=h, json={"workspace_id": w, "contact": {
        "email": t.own_email, "external_id": t.external_id, "first_name": secret_values["first"],
        "job_title": secret_values["job"], "custom_json_1": {"note": secret_values["custom"]}}}))
    await ok(await client.post("/api/contacts.upsert", headers=h, json={"workspace_id": w, "contact": {
        "email": SHARED_EMAIL, "first_name": secret_values["shared_first"]}}))
    for list_id, name, extra in (
            (t.own_list, secret_values["list_name"], {"is_public": True, "description": secret_values["description"]}),
            (t.private_list, secret_values["list_name"] + " private", {}),
            (t.double_list, secret_values["list_name"] + " double", {"is_public": True, "is_double_optin": True}),
            (SHARED_LIST, secret_values["shared_list_name"], {})):
        await ok(await client.post("/api/lists.create", headers=h, json={
            "workspace_id": w, "id": list_id, "name": name, **extra}), 201)
    await ok(await client.post("/api/lists.subscribe", headers=h, json={
        "workspace_id": w, "contact": {"email": t.own_email}, "list_ids": [t.own_list, t.private_list]}))
    await ok(await client.post("/api/lists.subscribe", headers=h, json={
        "workspace_id": w, "contact": {"email": SHARED_EMAIL}, "list_ids": [SHARED_LIST]}))
    await ok(await client.post("/subscribe", json={
        "workspace_id": w, "contact": {"email": t.pending_email}, "list_ids": [t.double_list]}))
    link = await pool.fetchval("SELECT data->>'confirm_url' FROM events WHERE workspace_id = $1"
                               " AND type = 'list.pending'", w)
    t.confirm = dict(parse_qsl(urlsplit(link).query))
    sub = (await ok(await client.post("/api/webhookSubscriptions.create", headers=h, json={
        "workspace_id": w, "name": secret_values["hook_name"], "url": "http://127.0.0.1:9" + secret_values["hook_path"],
        "event_types": ["contact.created", "contact.updated", "list.subscribed"]}), 201))["subscription"]
    t.sub_id, t.sub_secret = sub["id"], sub["secret"]
    # an event after the subscription, so that it has deliveries once dispatched
    await ok(await client.post("/api/contacts.upsert", headers=h, json={"workspace_id": w, "contact": {
        "email": t.own_email, "last_name": secret_values["first"] + "-last"}}))
    key = await ok(await client.post("/api/workspaces.createAPIKey", headers=h, json={
        "workspace_id": w, "email_prefix": f"{tag}key{x}"}))
    t.key_email = key["email"]
    t.template = f"{tag}_template_{x}"
    secret_values.update(template_name=f"{tag} template {x}", template_html=f"<p>{tag} body {x}</p>",
                         block_name=f"{tag} block {x}", block_text=f"{tag}blocktext{x}")
    await ok(await client.post("/api/templates.create", headers=h, json=web_template(
        w, t.template, secret_values["template_name"], secret_values["template_html"])), 201)
    async with pool.acquire() as conn:  # as templateBlocks.create stores it 
        block = await templates_store.create_block(conn, w, secret_values["block_name"], section(secret_values["block_text"]))
    t.block_id = str(block["id"])
    integration = await ok(await client.post("/api/workspaces.createIntegration", headers=h, json={
        "workspace_id": w, "name": secret_values["list_name"] + " relay", "type": "email", "provider": {
            "kind": "fake", "fake": {"api_key": f"{tag}apikey{x}", "label": f"{tag}label{x}"},
            "senders": [{"email": f"noreply@{tag}.example", "name": f"{tag} sender {x}"}],
            "rate_limit_per_minute": 60}}), 201)
    t.integration_id, t.broadcast_id = integration["integration_id"], f"{tag}_bcast_{x}"
    t.mail_template, t.notification = f"{tag}_mail_{x}", f"{tag}_note_{x}"
    secret_values.update(note_name=f"{tag} note {x}", mail_subject=f"{tag} mail subject {x}")
    await ok(await client.post("/api/templates.create", headers=h, json={
        "workspace_id": w, "id": t.mail_template, "name": f"{tag} mail {x}", "channel": "email",
        "category": "transactional", "email": {"editor_mode": "code", "subject": secret_values["mail_subject"],
                                               "mjml_source": "<mjml><mj-body></mj-body></mjml>"}}), 201)
    await ok(await client.post("/api/transactional.create", headers=h, json={"workspace_id": w, "notification": {
        "id": t.notification, "name": secret_values["note_name"],
        "channels": {"email": {"template_id": t.mail_template}}}}), 201)
    secret_values["bcast_name"] = f"{tag} broadcast {x}"
    t.bcast = (await ok(await client.post("/api/broadcasts.create", headers=h, json={
        "workspace_id": w, "name": secret_values["bcast_name"], "audience": {"list": t.own_list},
        "test_settings": {"variations": [{"template_id": t.mail_template}]}}), 201))["broadcast"]["id"]
    t.sent_bcast = (await ok(await client.post("/api/broadcasts.create", headers=h, json={
        "workspace_id": w, "name": secret_values["bcast_name"], "audience": {"list": t.own_list},
        "test_settings": {"variations": [{"template_id": t.mail_template}]}}), 201))["broadcast"]["id"]
    await pool.execute("UPDATE broadcasts SET status = 'processed' WHERE workspace_id = $1 AND id = $2", w,
                       t.sent_bcast)
    async with pool.acquire() as conn:
        t.message_id, _ = await delivery_store.enqueue(conn, ws._settings.key_bytes, Outgoing(
            workspace_id=w, integration_id=t.integration_id, contact_email=t.own_email,
            from_address=f"noreply@{tag}.example", from_name="x", subject=f"{tag} subject {x}", html="<p>x</p>",
            template_id=f"{tag}_tpl_{x}", template_version=1, source_type=Source.BROADCAST,
            source_id=t.broadcast_id, external_id=f"{tag}-msg-ext-{x}", data={"code": f"{tag}code{x}"}), "fake")
        # a provider event about that message, as POST /webhooks/email stores it
        await inbound_store.record(conn, w, t.integration_id, inbound_model.parse_smtp(
            {"event": "delivered", "recipient": t.own_email, "message_id": t.message_id, "event_id": f"{tag}ev{x}"},
            "", datetime.datetime.now(datetime.timezone.utc)))
    t.segment = f"{tag}_seg_{x}"
    secret_values.update(segment_name=f"{tag} segment {x}")
    for seg_id, name, tree in ((t.segment, secret_values["segment_name"], in_list(t.own_list)),
                               (SHARED_SEGMENT, secret_values["segment_name"] + " shared", in_list(SHARED_LIST))):
        await ok(await client.post("/api/segments.create", headers=h, json={
            "workspace_id": w, "id": seg_id, "name": name, "color": "red", "tree": tree, "timezone": "UTC"}), 201)
    await segments_worker.scan_once(pool)
    t.event_name, t.event_id = f"{tag}_order_{x}", f"{tag}-event-{x}"
    secret_values["event_prop"] = f"{tag}eventprop{x}"
    await ok(await client.post("/api/customEvents.upsert", headers=h, json={
        "workspace_id": w, "email": t.own_email, "event_name": t.event_name, "external_id": t.event_id,
        "properties": {"note": secret_values["event_prop"]}, "goal_type": "purchase", "goal_value": 12}))
    await ok(await client.post("/api/customEvents.upsert", headers=h, json={
        "workspace_id": w, "email": SHARED_EMAIL, "event_name": "shared_event", "external_id": "shared-1",
        "properties": {"note": secret_values["event_prop"] + "-shared"}}))
    # a recorded click on that message: B has link statistics, a clicked_at and its events
    t.click_url = f"https://{tag}-dest-{x}.example/landing"
    tracker = signed_tracking(ws._settings.key_bytes, "", t.message_id, w, int(time.time()) - 60)
    assert (await client.get(tracker.click_url(t.click_url, 0), headers={"User-Agent": BROWSER})).status_code == 303
    t.markers = [t.event_name, t.event_id, t.click_url, t.segment,
                 t.own_email, t.pending_email, t.own_list, t.private_list, t.double_list, t.external_id,
                 t.sub_id, t.sub_secret, t.sub_secret.removeprefix("whsec_"), t.key_email, key["token"],
                 t.confirm["token"], f"owner-{w}@example.com", w, t.template, t.block_id, t.integration_id,
                 t.message_id, t.broadcast_id, f"{tag}apikey{x}", f"{tag}label{x}", f"{tag}-msg-ext-{x}",
                 f"{tag}code{x}", f"{tag}_tpl_{x}", t.mail_template, t.notification, t.bcast,
                 *secret_values.values()]
    return t


def in_list(list_id: str) -> dict:
    return {"kind": "leaf", "leaf": {"source": "contact_lists", "contact_list": {"operator": "in", "list_id": list_id}}}


def web_template(ws_id: str, template_id: str, name: str = "mine", html: str = "<p>mine</p>") -> dict:
    return {"workspace_id": ws_id, "id": template_id, "name": name, "channel": "web", "category": "blog",
            "web": {"content": {"type": "doc"}, "html": html}}


def section(text: str) -> dict:
    return {"id": "s", "type": "mj-section", "children": [
        {"id": "c", "type": "mj-column", "children": [{"id": "t", "type": "mj-text", "content": text}]}]}


async def dispatch_all(pool, settings) -> None:
    """Fans the outbox out into webhook deliveries (no worker runs here: they stay pending)."""
    for _ in range(20):
        events, _ = await delivery.dispatch_once(pool, settings)
        if events == 0:
            return
    raise AssertionError("the outbox did not drain")


# ---------------------------------------------------------------- the requests, per endpoint

@dataclasses.dataclass
class Probe:
    """One request with A's key (unless `headers` says otherwise)."""

    params: dict | None = None                # GET query
    body: dict | None = None                  # POST JSON
    swap: dict = dataclasses.field(default_factory=dict)  # B's value -> a value that exists nowhere
    check: Callable | None = None             # more assertions on the response (r, ctx)
    late: bool = False                        # a write A is entitled to: after all lookups
    headers: dict | None = None
    status: int | None = None                 # the expected status, where the twin alone does not say
    url: str | None = None                    # the path to request, for a templated public path


class Ctx:
    def __init__(self, a: Tenant, b: Tenant, pool):
        self.a, self.b, self.pool = a, b, pool
        self.nowhere_email = f"ghost-{secrets.token_hex(4)}@b.example"
        self.nowhere_list = f"ghost_list_{secrets.token_hex(4)}"
        self.nowhere_sub = secrets.token_hex(16)
        self.nowhere_ws = f"ws_ghost_{secrets.token_hex(4)}"
        self.nowhere_block = str(uuid.uuid4())

    def ghost(self, tag: str) -> str:
        """A fresh email for the twin of a write (each write its own, so none finds another's)."""
        return f"ghost-{tag}-{secrets.token_hex(4)}@b.example"

    def email(self) -> dict:     # B's contact -> a contact nowhere
        return {self.b.own_email: self.nowhere_email}

    def lst(self) -> dict:
        return {self.b.own_list: self.nowhere_list}

    def private(self) -> dict:
        return {self.b.private_list: self.nowhere_list}

    def sub(self) -> dict:
        return {self.b.sub_id: self.nowhere_sub}

    def block(self) -> dict:
        return {self.b.block_id: self.nowhere_block}

    def seg(self) -> dict:
        return {self.b.segment: "ghost_segment"}


async def a_rows(ctx: Ctx, sql: str) -> set:
    return {r[0] for r in await ctx.pool.fetch(sql, ctx.a.id)}


def only_a(sql: str, extract: Callable):
    """A check: the ids the response lists are all A's (as `sql` reads them from the database)."""
    async def check(r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code == 200, r.text
        listed = set(extract(r.json()))
        assert listed <= await a_rows(ctx, sql), (listed, r.text)
    return check


def status_is(status: int):
    async def check(r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code == status, r.text
    return check


def created(action_of: Callable, word: str):
    """A write in A naming something B also has must behave as in an empty workspace."""
    async def check(r: httpx.Response, ctx: Ctx) -> None:
        assert r.status_code == 200, r.text
        assert action_of(r.json()) == word, r.text
    return check


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def contacts_cases(path: str, c: Ctx) -> list[Probe]:
    a, b = c.a, c.b
    w = a.id
    cases = {
        "/api/contacts.upsert": [
            Probe(body={"workspace_id": w, "contact": {"email": b.pending_email, "first_name": "mine"}},
                  swap={b.pending_email: c.ghost("upsert")}, check=created(lambda j: j["action"], "created"), late=True),
        ],
        "/api/contacts.delete": [Probe(body={"workspace_id": w, "email": b.own_email}, swap=c.email(), status=404)],
        "/api/contacts.getByEmail": [
            Probe(params={"workspace_id": w, "email": b.own_email}, swap=c.email(), status=404),
            Probe(params={"workspace_id": w, "email": b.pending_email.upper()},
                  swap={b.pending_email.upper(): c.nowhere_email}, status=404),
            Probe(params={"workspace_id": w, "email": SHARED_EMAIL}, status=200,
                  check=only_a("SELECT list_id FROM contact_lists WHERE workspace_id = $1",
                               lambda j: [m["list_id"] for m in j["contact"]["contact_lists"]])),
        ],
        "/api/contacts.getByExternalID": [
            Probe(params={"workspace_id": w, "external_id": b.external_id},
                  swap={b.external_id: "ghost-ext"}, status=404)],
        "/api/contacts.count": [Probe(params={"workspace_id": w}, check=count_is_a)],
        "/api/contacts.list": [
            Probe(params={"workspace_id": w}, check=only_a("SELECT email FROM contacts WHERE workspace_id = $1",
                                                           lambda j: [x["email"] for x in j["contacts"]])),
            Probe(params={"workspace_id": w, "email": b.own_email}, swap=c.email(), status=200),
            Probe(params={"workspace_id": w, "external_id": b.external_id}, swap={b.external_id: "ghost-ext"},
                  status=200),
            Probe(params={"workspace_id": w, "email": "only-"}, status=200,
                  check=only_a("SELECT email FROM contacts WHERE workspace_id = $1",
                               lambda j: [x["email"] for x in j["contacts"]])),
            Probe(params={"workspace_id": w, "list_id": b.own_list}, swap=c.lst(), status=200),
            Probe(params={"workspace_id": w, "list_id": b.own_list, "contact_list_status": "active"},
                  swap=c.lst(), status=200),
            Probe(params={"workspace_id": w, "list_id": SHARED_LIST, "with_contact_lists": "true"},
                  check=only_a("SELECT email FROM contact_lists WHERE workspace_id = $1",
                               lambda j: [x["email"] for x in j["contacts"]])),
            Probe(params={"workspace_id": w, "cursor": b64(f"2999-01-01T00:00:00Z~{b.own_email}")},
                  check=only_a("SELECT email FROM contacts WHERE workspace_id = $1",
                               lambda j: [x["email"] for x in j["contacts"]])),
        ],
        "/api/contacts.import": [
            Probe(body={"workspace_id": w, "contacts": [{"email": c.nowhere_email + ".x"}],
                        "subscribe_to_lists": [b.own_list]}, swap=c.lst(), status=400),
            Probe(body={"workspace_id": w, "contacts": [{"email": b.own_email}]}, swap={b.own_email: c.ghost("import")},
                  late=True, check=created(lambda j: j["operations"][0]["action"], "create")),
        ],
    }
    return cases[path]


async def count_is_a(r: httpx.Response, ctx: Ctx) -> None:
    assert r.status_code == 200, r.text
    assert r.json() == {"total_contacts": len(await a_rows(ctx, "SELECT email FROM contacts WHERE workspace_id = $1"))}


def timeline_cases(path: str, c: Ctx) -> list[Probe]:
    w = c.a.id
    return [
        Probe(params={"workspace_id": w, "email": c.b.own_email}, swap=c.email(), status=200),
        Probe(params={"workspace_id": w, "email": c.b.pending_email}, swap={c.b.pending_email: c.nowhere_email},
              status=200),
        Probe(params={"workspace_id": w, "email": SHARED_EMAIL},
              check=only_a("SELECT id::text FROM contact_timeline WHERE workspace_id = $1",
                           lambda j: [e["id"] for e in j["timeline"]])),
    ]


def lists_cases(path: str, c: Ctx) -> list[Probe]:
    a, b = c.a, c.b
    w = a.id
    member = "SELECT list_id FROM contact_lists WHERE workspace_id = $1"
    cases = {
        "/api/lists.list": [Probe(params={"workspace_id": w}, check=only_a(
            "SELECT id FROM lists WHERE workspace_id = $1", lambda j: [x["id"] for x in j["lists"]]))],
        "/api/lists.get": [Probe(params={"workspace_id": w, "id": b.own_list}, swap=c.lst(), status=404),
                           Probe(params={"workspace_id": w, "id": SHARED_LIST}, status=200)],
        "/api/lists.stats": [Probe(params={"workspace_id": w, "list_id": b.private_list}, swap=c.private(), status=404),
                             Probe(params={"workspace_id": w, "list_id": SHARED_LIST}, check=shared_stats_are_a)],
        "/api/lists.create": [
            Probe(body={"workspace_id": w, "id": "optin_list", "name": "mine",
                        "double_optin_template": {"id": b.mail_template}},
                  swap={b.mail_template: "ghost_mail"}, status=400),
            Probe(body={"workspace_id": w, "id": b.own_list, "name": "mine"}, swap={b.own_list: "ghost_created"},
                  status=201, late=True)],
        "/api/lists.update": [
            Probe(body={"workspace_id": w, "id": b.own_list, "name": "mine"}, swap=c.lst(), status=404),
            Probe(body={"workspace_id": w, "id": SHARED_LIST, "name": "mine", "double_optin_template": {
                "id": b.mail_template, "version": 1}}, swap={b.mail_template: "ghost_mail"}, status=400),
            Probe(body={"workspace_id": w, "id": SHARED_LIST, "name": "mine too"}, status=200, late=True)],
        "/api/lists.delete": [Probe(body={"workspace_id": w, "id": b.private_list}, swap=c.private(), status=404)],
        "/api/lists.subscribe": [
            Probe(body={"workspace_id": w, "contact": {"email": a.own_email}, "list_ids": [b.own_list]},
                  swap=c.lst(), status=400),
            Probe(body={"workspace_id": w, "contact": {"email": b.own_email}, "list_ids": [a.own_list, b.private_list]},
                  swap={**c.email(), **c.private()}, status=400),
            Probe(body={"workspace_id": w, "contact": {"email": b.own_email}, "list_ids": [a.own_list]},
                  swap={b.own_email: c.ghost("subscribe")}, status=200, late=True),
        ],
        "/api/contactLists.getByIDs": [
            Probe(params={"workspace_id": w, "email": b.own_email, "list_id": a.own_list}, swap=c.email(), status=404),
            Probe(params={"workspace_id": w, "email": b.own_email, "list_id": b.own_list},
                  swap={**c.email(), **c.lst()}, status=404),
            Probe(params={"workspace_id": w, "email": a.own_email, "list_id": b.private_list},
                  swap=c.private(), status=404),
        ],
        "/api/contactLists.getContactsByList": [
            Probe(params={"workspace_id": w, "list_id": b.own_list}, swap=c.lst(), status=404),
            Probe(params={"workspace_id": w, "list_id": SHARED_LIST}, check=only_a(
                "SELECT email FROM contact_lists WHERE workspace_id = $1",
                lambda j: [m["email"] for m in j["contact_lists"]])),
            Probe(params={"workspace_id": w, "list_id": SHARED_LIST, "cursor": b64(b.own_email)}, check=only_a(
                "SELECT email FROM contact_lists WHERE workspace_id = $1",
                lambda j: [m["email"] for m in j["contact_lists"]])),
        ],
        "/api/contactLists.getListsByContact": [
            Probe(params={"workspace_id": w, "email": b.own_email}, swap=c.email(), status=200),
            Probe(params={"workspace_id": w, "email": SHARED_EMAIL},
                  check=only_a(member, lambda j: [m["list_id"] for m in j["contact_lists"]])),
        ],
        "/api/contactLists.updateStatus": [
            Probe(body={"workspace_id": w, "email": b.own_email, "list_id": a.own_list, "status": "unsubscribed"},
                  swap=c.email(), status=200),
            Probe(body={"workspace_id": w, "email": b.own_email, "list_id": b.own_list, "status": "unsubscribed"},
                  swap={**c.email(), **c.lst()}, status=404),
            Probe(body={"workspace_id": w, "email": b.pending_email, "list_id": b.double_list, "status": "active"},
                  swap={b.pending_email: c.nowhere_email, b.double_list: c.nowhere_list}, status=404),
            Probe(body={"workspace_id": w, "email": SHARED_EMAIL, "list_id": SHARED_LIST, "status": "bounced"},
                  status=200, late=True),
        ],
        "/api/contactLists.removeContact": [
            Probe(body={"workspace_id": w, "email": b.own_email, "list_id": a.own_list}, swap=c.email(), status=404),
            Probe(body={"workspace_id": w, "email": b.own_email, "list_id": b.own_list},
                  swap={**c.email(), **c.lst()}, status=404),
            Probe(body={"workspace_id": w, "email": SHARED_EMAIL, "list_id": SHARED_LIST}, status=200, late=True),
        ],
    }
    return cases[path]


async def shared_stats_are_a(r: httpx.Response, ctx: Ctx) -> None:
    assert r.status_code == 200, r.text
    members = await ctx.pool.fetchval(
        "SELECT count(*) FROM contact_lists WHERE workspace_id = $1 AND list_id = $2 AND deleted_at IS NULL",
        ctx.a.id, SHARED_LIST)
    assert sum(r.json()["stats"].values()) == members


def webhooks_cases(path: str, c: Ctx) -> list[Probe]:
    w, b = c.a.id, c.b
    subs = "SELECT id FROM webhook_subscriptions WHERE workspace_id = $1"
    name = path.rpartition(".")[2]
    if name in ("update", "delete", "toggle", "regenerateSecret", "test"):
        body = {"workspace_id": w, "id": b.sub_id}
        body.update({"update": {"name": "mine"}, "toggle": {"enabled": False},
                     "test": {"event_type": "contact.created"}}.get(name, {}))
        return [Probe(body=body, swap=c.sub(), status=404)]
    return {
        "create": [Probe(body={"workspace_id": w, "name": "mine", "url": "http://127.0.0.1:9/a",
                               "event_types": ["email.opened"]}, status=201, late=True)],
        "list": [Probe(params={"workspace_id": w}, check=only_a(subs, lambda j: [s["id"] for s in j["subscriptions"]]))],
        "get": [Probe(params={"workspace_id": w, "id": b.sub_id}, swap=c.sub(), status=404)],
        "deliveries": [
            Probe(params={"workspace_id": w, "subscription_id": b.sub_id}, swap=c.sub(), status=404),
            Probe(params={"workspace_id": w}, check=only_a(
                "SELECT message_id FROM webhook_deliveries WHERE workspace_id = $1",
                lambda j: [d["id"] for d in j["deliveries"]])),
        ],
        "eventTypes": [Probe(status=200)],  # the same static list for everyone
    }[name]


def workspaces_cases(path: str, c: Ctx) -> list[Probe]:
    b = c.b
    return {
        "/api/workspaces.list": [Probe(check=only_a("SELECT $1::text", lambda j: [x["id"] for x in j]))],
        "/api/workspaces.get": [Probe(params={"id": b.id}, swap={b.id: c.nowhere_ws}, status=403)],
        "/api/workspaces.create": [Probe(body={"id": b.id, "name": "mine"}, swap={b.id: c.nowhere_ws}, status=403)],
        "/api/workspaces.update": [Probe(body={"id": b.id, "name": "mine", "settings": {"a": "b"}},
                                         swap={b.id: c.nowhere_ws}, status=403)],
        "/api/workspaces.createAPIKey": [
            Probe(body={"workspace_id": c.a.id, "email_prefix": b.key_email.partition("@")[0]},
                  swap={b.key_email.partition("@")[0]: "ghostkey"}, check=api_key_is_a, late=True)],
    }[path]


async def api_key_is_a(r: httpx.Response, ctx: Ctx) -> None:
    assert r.status_code == 200, r.text
    assert r.json()["email"].endswith(f"@{ctx.a.id}.api.postroom")


def auth_cases(path: str, c: Ctx) -> list[Probe]:
    ts = int(time.time())
    owner = f"owner-{c.b.id}@example.com"
    return [Probe(body={"email": owner, "timestamp": ts, "signature": "0" * 64}, swap={owner: c.nowhere_email},
                  headers={}, status=401)]


def templates_cases(path: str, c: Ctx) -> list[Probe]:
    w, b = c.a.id, c.b
    ghost = {b.template: "ghost_template"}
    name = path.removeprefix("/api/")
    return {
        "templates.list": [Probe(params={"workspace_id": w}, check=only_a(
            "SELECT id FROM template_heads WHERE workspace_id = $1", lambda j: [t["id"] for t in j["templates"]]))],
        "templates.get": [Probe(params={"workspace_id": w, "id": b.template}, swap=ghost, status=404),
                          Probe(params={"workspace_id": w, "id": b.template, "version": "1"}, swap=ghost, status=404)],
        "templates.update": [Probe(body=web_template(w, b.template), swap=ghost, status=404)],
        "templates.delete": [Probe(body={"workspace_id": w, "id": b.template}, swap=ghost, status=404)],
        "templates.compile": [Probe(body={"workspace_id": w, "message_id": "p", "template_id": b.template},
                                    swap=ghost, status=404)],
        "templates.create": [Probe(body=web_template(w, b.template), swap={b.template: "ghost_created"},
                                   status=201, late=True)],
        "templateBlocks.list": [Probe(params={"workspace_id": w}, check=only_a(
            "SELECT id::text FROM template_blocks WHERE workspace_id = $1", lambda j: [x["id"] for x in j["blocks"]]))],
        "templateBlocks.get": [Probe(params={"workspace_id": w, "id": b.block_id}, swap=c.block(), status=404)],
        "templateBlocks.update": [Probe(body={"workspace_id": w, "id": b.block_id, "name": "mine", "block": section("x")},
                                        swap=c.block(), status=404)],
        "templateBlocks.delete": [Probe(body={"workspace_id": w, "id": b.block_id}, swap=c.block(), status=404)],
        "templateBlocks.create": [Probe(body={"workspace_id": w, "name": "mine", "block": section("x")}, status=201,
                                        late=True)],
    }[name]


def openapi_cases(path: str, c: Ctx) -> list[Probe]:
    return [Probe(headers={}, status=200)]  # one static document; names nothing of any workspace


async def not_public(r, ctx) -> None:
    assert r.json() == {"error": "list is not public"}


def public_cases(path: str, c: Ctx) -> list[Probe]:
    a, b = c.a, c.b
    if path == "/subscribe":
        def sub(ws_id, email, list_ids):
            return {"workspace_id": ws_id, "contact": {"email": email}, "list_ids": list_ids}
        return [
            Probe(body=sub(a.id, c.nowhere_email + ".a", [b.own_list]), swap=c.lst(), headers={}, status=400),
            # The public form names a private list as such (the contract's `list is not public`):
            # list ids are not secrets, and nothing else of the list or of B is said or changed.
            Probe(body=sub(b.id, c.nowhere_email + ".b", [b.private_list]), headers={}, status=400, check=not_public),
            Probe(body=sub(b.id, b.own_email, [b.private_list]), headers={}, status=400, check=not_public),
            Probe(body=sub(b.id, b.own_email, [b.own_list, b.private_list]), headers={}, status=400,
                  check=not_public),
            # A's key is ignored here: it does not make B's private list any more visible
            Probe(body=sub(b.id, b.own_email, [b.private_list]), status=400, check=not_public),
            # The owner's variant without B's email_hmac: the answer of a workspace that does not exist
            Probe(body={"workspace_id": b.id, "contact": {"email": b.own_email, "email_hmac": "0" * 64},
                        "list_ids": [b.private_list]}, swap={b.id: c.nowhere_ws}, headers={}, status=401),
        ]
    if path in PREFERENCE_ROUTES:
        return preferences_cases(path, c)
    # /confirm: B's link with one part changed is worth nothing, and says nothing about B
    link = b.confirm
    return [
        Probe(params={**link, "workspace_id": a.id}, swap={}, headers={}, status=400),
        Probe(params={**link, "token": a.confirm["token"]}, swap={b.id: c.nowhere_ws}, headers={}, status=400),
        Probe(params={**a.confirm, "workspace_id": b.id}, swap={b.id: c.nowhere_ws}, headers={}, status=400),
        Probe(params={**link, "list_id": b.own_list}, swap={b.id: c.nowhere_ws}, headers={}, status=400),
        Probe(params={**link, "email": b.own_email}, swap={b.id: c.nowhere_ws}, headers={}, status=400),
    ]


PREFERENCE_ROUTES = ("/unsubscribe-oneclick", "/preferences", "/preferences/form", "/notification-center")


async def unauthorized(r, ctx) -> None:
    assert r.json() == {"error": "Unauthorized: invalid verification"}


def preferences_cases(path: str, c: Ctx) -> list[Probe]:
    """email_hmac is the only key here: without B's, B's contacts, lists and messages get the
    answer of a workspace that does not exist, and nothing of B is written (not even a counter)."""
    b = c.b
    forged = "0" * 64
    swap = {b.id: c.nowhere_ws}
    if path == "/unsubscribe-oneclick":
        return [Probe(body={"wid": b.id, "email": b.own_email, "email_hmac": forged, "lids": [b.own_list],
                            "mid": b.message_id}, swap=swap, headers={}, status=401, check=unauthorized)]
    if path == "/preferences":
        return [Probe(body={"workspace_id": b.id, "email": b.own_email, "email_hmac": forged, "language": "fr"},
                      swap=swap, headers={}, status=401, check=unauthorized)]
    if path == "/preferences/form":  # the harness posts JSON: not a form the page sends
        return [Probe(body={"wid": b.id, "email": b.own_email, "email_hmac": forged}, swap=swap, headers={},
                      status=400)]
    return [Probe(params={"wid": b.id, "email": b.own_email, "email_hmac": forged}, swap=swap, headers={},
                  status=401)]


def delivery_cases(path: str, c: Ctx) -> list[Probe]:
    w, b = c.a.id, c.b
    ghost_integration = "00000000-0000-4000-8000-00000000beef"
    name = path.rpartition(".")[2]
    if name in ("updateIntegration", "deleteIntegration"):
        body = {"workspace_id": w, "integration_id": b.integration_id}
        if name == "updateIntegration":
            body["name"] = "mine"
        return [Probe(body=body, swap={b.integration_id: ghost_integration}, status=404)]
    return {
        "list": [
            Probe(params={"workspace_id": w}, check=only_a(
                "SELECT id FROM message_history WHERE workspace_id = $1", lambda j: [m["id"] for m in j["messages"]])),
            Probe(params={"workspace_id": w, "id": b.message_id}, swap={b.message_id: "ghost-message"}, status=200),
            Probe(params={"workspace_id": w, "broadcast_id": b.broadcast_id}, swap={b.broadcast_id: "ghost_b"},
                  status=200),
            Probe(params={"workspace_id": w, "contact_email": b.own_email}, swap=c.email(), status=200),
        ],
        "broadcastStats": [Probe(params={"workspace_id": w, "broadcast_id": b.broadcast_id},
                                 swap={b.broadcast_id: "ghost_b"}, status=200)],
        "testProvider": [
            Probe(body={"workspace_id": w, "to": "t@a.example", "integration_id": b.integration_id, "provider": {
                "kind": "fake", "fake": {"api_key": "********"}, "senders": [{"email": "a@a.example", "name": "A"}],
                "rate_limit_per_minute": 60}}, swap={b.integration_id: ghost_integration}, status=404),
        ],
        "createIntegration": [Probe(body={"workspace_id": w, "name": "mine", "type": "email", "provider": {
            "kind": "fake", "fake": {"api_key": "mine"}, "senders": [{"email": "a@a.example", "name": "A"}],
            "rate_limit_per_minute": 60}}, status=201, late=True)],
    }[name]


def tracking_cases(path: str, c: Ctx) -> list[Probe]:
    """A token is a workspace's own: one minted for B's message naming A (or A's message naming
    B) is valid but names a message the workspace does not have, so it records nothing; the
    legacy forms naming B record nothing either; A's statistics of B's ids are empty."""
    w, a, b = c.a.id, c.a, c.b
    old = int(time.time()) - 60
    key = a.ws._settings.key_bytes
    crossed = [signed_tracking(key, "", b.message_id, w, old), signed_tracking(key, "", a.message_id, b.id, old)]
    ua = {"User-Agent": BROWSER}
    if path == "/t/{token}":
        return [Probe(url=t.open_url(), headers=ua, status=200) for t in crossed]
    if path == "/r/{token}":
        return [Probe(url=t.click_url("https://x.test/", 0), headers=ua, status=303) for t in crossed]
    if path in ("/t/", "/r/"):
        return [Probe(headers=ua, status=200 if path == "/t/" else 400)]
    if path == "/opens":
        return [Probe(params={"mid": b.message_id, "wid": b.id, "ts": "0"}, headers=ua, status=200)]
    if path == "/visit":
        return [Probe(params={"mid": b.message_id, "wid": b.id, "ts": "0", "url": "https://x.test/"}, headers=ua,
                      status=200)]
    if path == "/api/messages.linkStats":
        return [Probe(params={"workspace_id": w, "message_id": b.message_id}, swap={b.message_id: "ghost-message"},
                      check=empty_links)]
    return [Probe(params={"workspace_id": w, "broadcast_id": b.broadcast_id}, swap={b.broadcast_id: "ghost_b"},
                  check=empty_links)]


async def empty_links(r: httpx.Response, ctx: Ctx) -> None:
    assert (r.status_code, r.json()) == (200, {"links": []}), r.text


def transactional_cases(path: str, c: Ctx) -> list[Probe]:
    w, a, b = c.a.id, c.a, c.b
    ghost = {b.notification: "ghost_note"}
    ghost_integration = "00000000-0000-4000-8000-00000000beef"
    name = path.rpartition(".")[2]
    return {
        "list": [Probe(params={"workspace_id": w}, check=only_a(
            "SELECT id FROM transactional_notifications WHERE workspace_id = $1",
            lambda j: [n["id"] for n in j["notifications"]])),
            Probe(params={"workspace_id": w, "search": b.notification}, swap=ghost, status=200)],
        "get": [Probe(params={"workspace_id": w, "id": b.notification}, swap=ghost, status=404)],
        "update": [Probe(body={"workspace_id": w, "id": b.notification, "updates": {"name": "mine"}}, swap=ghost,
                         status=404)],
        "delete": [Probe(body={"workspace_id": w, "id": b.notification}, swap=ghost, status=404)],
        "create": [
            # B's template is no template of A's
            Probe(body={"workspace_id": w, "notification": {"id": "mine", "name": "mine", "channels": {
                "email": {"template_id": b.mail_template}}}}, swap={b.mail_template: "ghost_mail"}, status=400),
            # B's notification id is free in A
            Probe(body={"workspace_id": w, "notification": {"id": b.notification, "name": "mine", "channels": {
                "email": {"template_id": a.mail_template}}}}, swap={b.notification: "ghost_created"}, status=201,
                late=True)],
        "send": [Probe(body={"workspace_id": w, "notification": {
            "id": b.notification, "contact": {"email": "x@a.example"}, "channels": ["email"]}}, swap=ghost,
            status=400)],
        "testTemplate": [
            Probe(body={"workspace_id": w, "template_id": b.mail_template, "integration_id": a.integration_id,
                        "sender_id": "s", "recipient_email": "t@a.example"}, swap={b.mail_template: "ghost_mail"},
                  status=404),
            Probe(body={"workspace_id": w, "template_id": a.mail_template, "integration_id": b.integration_id,
                        "sender_id": "s", "recipient_email": "t@a.example"},
                  swap={b.integration_id: ghost_integration}, status=200)],
    }[name]


def broadcasts_cases(path: str, c: Ctx) -> list[Probe]:
    w, b = c.a.id, c.b
    ghost = {b.bcast: "0" * 32}
    name = path.rpartition(".")[2] if "/broadcasts." in path else path.removeprefix("/api/")
    by_id = {"workspace_id": w, "id": b.bcast}
    return {
        "list": [Probe(params={"workspace_id": w}, check=only_a(
            "SELECT id FROM broadcasts WHERE workspace_id = $1", lambda j: [x["id"] for x in j["broadcasts"]])),
            Probe(params={"workspace_id": w, "with_templates": "true"}, check=only_a(
                "SELECT id FROM broadcasts WHERE workspace_id = $1", lambda j: [x["id"] for x in j["broadcasts"]]))],
        "get": [Probe(params={**by_id, "with_templates": "true"}, swap=ghost, status=404)],
        # B's sent broadcast has a task in B, never in A's view
        "tasks.list": [Probe(params={"workspace_id": w}, check=only_a(
            "SELECT 'send_broadcast_' || id FROM broadcasts WHERE workspace_id = $1 AND status <> 'draft'",
            lambda j: [x["id"] for x in j["tasks"]]))],
        "tasks.get": [Probe(params={"workspace_id": w, "id": f"send_broadcast_{b.sent_bcast}"},
                            swap={f"send_broadcast_{b.sent_bcast}": "send_broadcast_" + "0" * 32}, status=404)],
        "getTestResults": [Probe(params=by_id, swap=ghost, status=404)],
        "update": [Probe(body={**by_id, "name": "mine", "audience": {"list": "x"}}, swap=ghost, status=404)],
        "schedule": [Probe(body={**by_id, "send_now": True}, swap=ghost, status=400)],  # A has no marketing provider
        **{n: [Probe(body=by_id, swap=ghost, status=404)]
           for n in ("delete", "pause", "resume", "cancel", "retryFailed")},
        "selectWinner": [Probe(body={**by_id, "template_id": b.mail_template}, swap=ghost, status=404)],
        # A has no marketing provider: refused before any lookup, the same for B's id and a ghost
        "sendToIndividual": [Probe(body={"workspace_id": w, "broadcast_id": b.bcast, "recipient_email": "t@a.example"},
                                   swap=ghost, status=400)],
        # B's list and template are only names in A's draft: nothing of B is read or shown
        "create": [Probe(body={"workspace_id": w, "name": "mine", "audience": {"list": b.own_list},
                               "test_settings": {"variations": [{"template_id": b.mail_template}]}},
                         swap={b.own_list: "ghost_list_x", b.mail_template: "ghost_mail"}, status=201, late=True)],
    }[name]


def custom_events_cases(path: str, c: Ctx) -> list[Probe]:
    w, b = c.a.id, c.b
    ghost = {b.event_id: "ghost-event", b.event_name: "ghost_order"}
    events = "SELECT external_id FROM custom_events WHERE workspace_id = $1"

    async def mine(r: httpx.Response, ctx: Ctx) -> None:  # created in A, holding only what A sent
        assert r.status_code == 200, r.text
        event = r.json()["event"]
        assert event["properties"] == {"mine": True} and "goal_type" not in event, r.text

    mine_event = {"email": b.own_email, "event_name": b.event_name, "external_id": b.event_id,
                  "properties": {"mine": True}}
    name = path.rpartition(".")[2]
    return {
        "upsert": [Probe(body={"workspace_id": w, **mine_event}, swap=ghost, check=mine, late=True)],
        "create": [Probe(body={"workspace_id": w, **mine_event}, swap=ghost, check=mine, late=True)],
        "import": [Probe(body={"workspace_id": w, "events": [mine_event]}, swap=ghost, status=201, late=True)],
        "get": [Probe(params={"workspace_id": w, "event_name": b.event_name, "external_id": b.event_id}, swap=ghost,
                      status=404),
                Probe(params={"workspace_id": w, "event_name": "shared_event", "external_id": "shared-1"},
                      check=only_a(events, lambda j: [j["event"]["external_id"]]))],
        "list": [Probe(params={"workspace_id": w, "email": b.own_email}, swap=c.email(), status=200),
                 Probe(params={"workspace_id": w, "event_name": b.event_name}, swap=ghost, status=200),
                 Probe(params={"workspace_id": w, "email": SHARED_EMAIL},
                       check=only_a(events, lambda j: [e["external_id"] for e in j["events"]])),
                 Probe(params={"workspace_id": w, "event_name": "shared_event"},
                       check=only_a(events, lambda j: [e["external_id"] for e in j["events"]]))],
    }[name]


def inbound_cases(path: str, c: Ctx) -> list[Probe]:
    w, a, b = c.a.id, c.a, c.b
    ghost_integration = "00000000-0000-4000-8000-00000000beef"
    ghost = {b.integration_id: ghost_integration}
    if path == "/webhooks/email":
        def hook(ws_id, integration_id):
            return {"provider": "smtp", "workspace_id": ws_id, "integration_id": integration_id, "token": "guess"}
        event = {"event": "bounce", "recipient": b.own_email, "bounce_category": "hard", "event_id": "e1"}
        return [
            # B's integration under A's workspace, and A's under B's: no such integration
            Probe(params=hook(w, b.integration_id), body=event, swap=ghost, headers={}, status=404),
            Probe(params=hook(b.id, a.integration_id), body=event, swap={b.id: c.nowhere_ws}, headers={}, status=404),
            # B's own callback without B's secret changes nothing (integration ids are random UUIDs, and
            # the contract answers an unknown one with 404 before the credential is checked)
            Probe(params=hook(b.id, b.integration_id), body=event, headers={}, status=401),
            Probe(params=hook(b.id, b.integration_id), body=event, status=401),
        ]
    name = path.rpartition(".")[2]
    return {
        "list": [
            Probe(params={"workspace_id": w}, check=only_a(
                "SELECT id::text FROM inbound_webhook_events WHERE workspace_id = $1",
                lambda j: [e["id"] for e in j["events"]])),
            Probe(params={"workspace_id": w, "recipient_email": b.own_email}, swap=c.email(), status=200),
            Probe(params={"workspace_id": w, "message_id": b.message_id}, swap={b.message_id: "ghost-message"},
                  status=200),
        ],
        "status": [Probe(params={"workspace_id": w, "integration_id": b.integration_id}, swap=ghost, status=404)],
        "register": [Probe(body={"workspace_id": w, "integration_id": b.integration_id, "rotate_secret": True},
                           swap=ghost, status=404)],
    }[name]


def segments_cases(path: str, c: Ctx) -> list[Probe]:
    a, b = c.a, c.b
    w = a.id
    live = "SELECT id FROM segments WHERE workspace_id = $1"
    members = "SELECT email FROM contact_segments WHERE workspace_id = $1"

    def body(seg_id: str, tree: dict) -> dict:
        return {"workspace_id": w, "id": seg_id, "name": "mine", "color": "red", "tree": tree, "timezone": "UTC"}

    name = path.rsplit(".", 1)[1]
    return {
        "list": [Probe(params={"workspace_id": w}, check=only_a(live, lambda j: [s["id"] for s in j["segments"]]))],
        "get": [Probe(params={"workspace_id": w, "id": b.segment}, swap=c.seg(), status=404),
                Probe(params={"workspace_id": w, "id": SHARED_SEGMENT}, status=200,
                      check=only_a(live, lambda j: [j["segment"]["id"]]))],
        "contacts": [Probe(params={"workspace_id": w, "segment_id": b.segment}, swap=c.seg(), status=404),
                     Probe(params={"workspace_id": w, "segment_id": SHARED_SEGMENT},
                           check=only_a(members, lambda j: j["emails"]))],
        "update": [Probe(body=body(b.segment, in_list(a.own_list)), swap=c.seg(), status=404)],
        "delete": [Probe(body={"workspace_id": w, "id": b.segment}, swap=c.seg(), status=404)],
        "rebuild": [Probe(body={"workspace_id": w, "segment_id": b.segment}, swap=c.seg(), status=404)],
        # B's list is an unknown list in A: nobody matches, exactly as for a list that exists nowhere
        "preview": [Probe(body={"workspace_id": w, "tree": in_list(b.own_list)}, swap=c.lst(), status=200),
                    Probe(body={"workspace_id": w, "tree": in_list(SHARED_LIST), "limit": 100},
                          check=only_a("SELECT email FROM contacts WHERE workspace_id = $1", lambda j: j["emails"]))],
        # B's segment id is free in A
        "create": [Probe(body=body(b.segment, in_list(b.own_list)), swap={b.segment: "ghost_created",
                                                                           b.own_list: c.nowhere_list},
                         status=201, late=True)],
    }[name]


# Every /api path and public route -> its requests. A path missing here fails the walk.
CASES: dict[str, Callable[[str, Ctx], list[Probe]]] = {
    **{p: contacts_cases for p in ("/api/contacts.upsert", "/api/contacts.delete", "/api/contacts.getByEmail",
                                   "/api/contacts.getByExternalID", "/api/contacts.count", "/api/contacts.list",
                                   "/api/contacts.import")},
    "/api/timeline.list": timeline_cases,
    **{p: lists_cases for p in ("/api/lists.list", "/api/lists.get", "/api/lists.stats", "/api/lists.create",
                                "/api/lists.update", "/api/lists.delete", "/api/lists.subscribe",
                                "/api/contactLists.getByIDs", "/api/contactLists.getContactsByList",
                                "/api/contactLists.getListsByContact", "/api/contactLists.updateStatus",
                                "/api/contactLists.removeContact")},
    **{f"/api/webhookSubscriptions.{n}": webhooks_cases for n in (
        "create", "list", "get", "update", "delete", "toggle", "regenerateSecret", "deliveries", "test", "eventTypes")},
    **{p: workspaces_cases for p in ("/api/workspaces.list", "/api/workspaces.get", "/api/workspaces.create",
                                     "/api/workspaces.update", "/api/workspaces.createAPIKey")},
    **{f"/api/{n}": templates_cases for n in (
        "templates.list", "templates.get", "templates.create", "templates.update", "templates.delete",
        "templates.compile", "templateBlocks.list", "templateBlocks.get", "templateBlocks.create",
        "templateBlocks.update", "templateBlocks.delete")},
    **{p: delivery_cases for p in ("/api/messages.list", "/api/messages.broadcastStats",
                                   "/api/workspaces.createIntegration", "/api/workspaces.updateIntegration",
                                   "/api/workspaces.deleteIntegration", "/api/email.testProvider")},
    **{f"/api/transactional.{n}": transactional_cases for n in (
        "list", "get", "create", "update", "delete", "send", "testTemplate")},
    **{f"/api/broadcasts.{n}": broadcasts_cases for n in (
        "list", "get", "create", "update", "delete", "schedule", "pause", "resume", "cancel", "getTestResults",
        "selectWinner", "retryFailed", "sendToIndividual")},
    **{f"/api/tasks.{n}": broadcasts_cases for n in ("list", "get")},
    **{f"/api/customEvents.{n}": custom_events_cases for n in ("upsert", "create", "import", "get", "list")},
    **{f"/api/segments.{n}": segments_cases for n in (
        "list", "get", "create", "update", "delete", "rebuild", "preview", "contacts")},
    "/api/user.rootSignin": auth_cases,
    "/api/openapi.json": openapi_cases,
    "/subscribe": public_cases,
    "/confirm": public_cases,
    **{p: tracking_cases for p in ("/t/{token}", "/t/", "/r/{token}", "/r/", "/opens", "/visit",
                                   "/api/messages.linkStats", "/api/messages.broadcastLinkStats")},
    **{p: public_cases for p in PREFERENCE_ROUTES},
    **{p: inbound_cases for p in ("/api/inboundWebhookEvents.list", "/api/webhooks.register", "/api/webhooks.status",
                                  "/webhooks/email")},
}


# ---------------------------------------------------------------- running a probe

def replace_all(value, mapping: dict):
    if isinstance(value, str):
        for old, new in mapping.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {replace_all(k, mapping): replace_all(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_all(v, mapping) for v in value]
    return value


async def call(client, path: str, probe: Probe, ctx: Ctx, swap: dict | None = None) -> httpx.Response:
    headers = ctx.a.ws.headers if probe.headers is None else probe.headers
    params, body = probe.params, probe.body
    if swap:
        params, body = replace_all(params, swap), replace_all(body, swap)
    if method_of(path) == "GET":
        return await client.get(probe.url or path, params=params, headers=headers)
    return await client.post(probe.url or path, params=params, json=body if body is not None else {},
                             headers=headers)


def blank(text: str, values) -> str:
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "<X>")
    return text


def assert_no_leak(r: httpx.Response, probe: Probe, ctx: Ctx, path: str) -> None:
    sent = repr(probe.params) + repr(probe.body)
    text = r.text
    leaked = [m for m in ctx.b.markers if m and m in text and m not in sent]
    assert not leaked, f"{path}: B's values in the answer: {leaked}: {text[:500]}"


async def run_probe(client, path: str, probe: Probe, ctx: Ctx) -> None:
    before = await snapshot(ctx.pool, ctx.b.id)
    r = await call(client, path, probe, ctx)
    assert r.status_code < 500, (path, r.text)
    assert_no_leak(r, probe, ctx, path)
    assert await snapshot(ctx.pool, ctx.b.id) == before, f"{path} changed workspace B: {probe}"
    if probe.status is not None:
        assert r.status_code == probe.status, (path, probe, r.text)
    if probe.check is not None:
        await probe.check(r, ctx)
    if probe.swap:
        twin = await call(client, path, probe, ctx, probe.swap)
        if probe.late:  # two writes: their answers hold their own ids and times; compare what they say
            assert twin.status_code == r.status_code, (path, r.text, twin.text)
            if probe.check is not None:
                await probe.check(twin, ctx)
        else:
            assert (twin.status_code, blank(twin.text, probe.swap.values())) == \
                   (r.status_code, blank(r.text, probe.swap)), f"{path}: B's names get another answer: {probe}"


def foreign(path: str, probe: Probe, ctx: Ctx) -> list[Probe]:
    """The same request naming workspace B (and, as its twin, a workspace that does not exist)."""
    if path in PUBLIC or ENDPOINTS[path].auth != "workspace":
        return []
    swap = {ctx.b.id: ctx.nowhere_ws}
    if probe.params is not None:
        return [dataclasses.replace(probe, params={**probe.params, "workspace_id": ctx.b.id}, swap=swap,
                                    check=None, late=False, status=403)]
    return [dataclasses.replace(probe, body={**(probe.body or {}), "workspace_id": ctx.b.id}, swap=swap,
                                check=None, late=False, status=403)]


# ---------------------------------------------------------------- the walk

def test_every_path_has_isolation_cases():
    routes = {r.path for capability in CAPABILITIES if capability.name != "platform"
              for r in capability.routes}  # the probes name no workspace (tests/platform/test_observability.py)
    assert routes == set(PUBLIC), f"public routes without isolation cases: {routes ^ set(PUBLIC)}"
    missing = set(ENDPOINTS) - set(CASES)
    assert not missing, f"endpoints without isolation cases: {sorted(missing)}"
    stale = set(CASES) - set(ENDPOINTS) - set(PUBLIC)
    assert not stale, f"isolation cases for paths that no longer exist: {sorted(stale)}"


async def test_key_of_a_against_everything_of_b(client, pool, settings, new_workspace):
    a = await populate(client, pool, await new_workspace(), "a")
    b = await populate(client, pool, await new_workspace(), "b")
    await dispatch_all(pool, settings)
    ctx = Ctx(a, b, pool)
    try:
        # B has data in every table the walk must leave alone
        start = await snapshot(pool, b.id)
        for table in ("contacts", "contact_timeline", "events", "lists", "contact_lists", "webhook_subscriptions",
                      "webhook_deliveries", "workspace_secrets", "subscribe_rate_limits", "user_workspaces",
                      "templates", "template_heads", "template_blocks", "custom_events", "message_link_clicks"):
            assert start[table], f"workspace B has no {table} rows to protect"

        probes = []
        for path in sorted(set(ENDPOINTS) | set(PUBLIC)):
            assert path in CASES, f"no isolation cases for {path}"
            mine = CASES[path](path, ctx)
            assert mine, f"no requests for {path}"
            probes += [(path, p) for p in foreign(path, mine[0], ctx)]
            probes += [(path, p) for p in mine]
        probes.sort(key=lambda item: item[1].late)  # lookups first, A's own writes last
        for path, probe in probes:
            await run_probe(client, path, probe, ctx)
        assert await snapshot(pool, b.id) == start
    finally:
        for t in (a, b):  # no deliveries left for another test's worker
            await pool.execute("DELETE FROM webhook_subscriptions WHERE workspace_id = $1", t.id)


async def test_restricted_key_of_b_cannot_reach_a(client, pool, new_workspace):
    """The walk runs with A's owner key; a key of B with limited permissions gets the answer of a
    workspace that does not exist as well, for reads and writes alike."""
    a = await populate(client, pool, await new_workspace(), "a")
    b = await new_workspace()
    key = {"Authorization": f"Bearer {await b.key('contacts:rw')}"}
    before = await snapshot(pool, a.id)
    for target in (a.id, "ws_ghost_nowhere"):
        r = await client.get("/api/contacts.getByEmail", headers=key,
                             params={"workspace_id": target, "email": a.own_email})
        assert (r.status_code, r.json()) == (403, FOREIGN)
        r = await client.post("/api/contacts.upsert", headers=key,
                              json={"workspace_id": target, "contact": {"email": a.own_email, "first_name": "x"}})
        assert (r.status_code, r.json()) == (403, FOREIGN)
    assert await snapshot(pool, a.id) == before
