"""Provider events over HTTP: the public POST /webhooks/email (engagement-contract 3.1, 3.2),
GET /api/inboundWebhookEvents.list (3.8), webhooks.register and webhooks.status (4, the minimal
first version of 4.3), and the side effects attached to creating and deleting an integration
(delivery-contract 1.5), which delivery calls through the hooks app.py hands it."""

from __future__ import annotations

import datetime as _dt
import logging
import os

from starlette.routing import Route

from postroom.contacts import model as contacts_model
from postroom.delivery import integrations, store as delivery_store
from postroom.inbound import model, sns as sns_module, store
from postroom.platform import times
from postroom.platform.errors import RuleError
from postroom.platform.fields import required_string
from postroom.platform.http import WORKSPACE_ID, Call, Endpoint, error_response, json_response, read_body

log = logging.getLogger("postroom.inbound")

NOT_REGISTRABLE = ("smtp",)   # no provider webhooks (3.9 instead)


def _sns(state) -> sns_module.Sns:
    """The process's SNS client and certificate cache, made on first use from its settings."""
    found = getattr(state, "inbound_sns", None)
    if found is None:
        found = state.inbound_sns = sns_module.Sns(state.settings.sns_base_url)
    return found


def _param(request, name: str) -> str:
    values = request.query_params.getlist(name)
    return values[0] if len(values) == 1 else ""


# ---------------------------------------------------------------- POST /webhooks/email (3.1)

async def provider_webhook(request):
    if request.method != "POST":
        return error_response(405, "Method not allowed", {"Allow": "POST"})
    if not _param(request, "provider"):
        return error_response(400, model.PROVIDER_REQUIRED)
    workspace_id, integration_id = _param(request, "workspace_id"), _param(request, "integration_id")
    if not workspace_id or not integration_id:
        return error_response(400, model.IDS_REQUIRED)
    state = request.app.state
    raw = await read_body(request, state.settings.max_body_bytes)
    # ids that no workspace or integration can have name nothing (and never reach the database)
    if not WORKSPACE_ID.match(workspace_id) or integrations.as_uuid(integration_id) != integration_id:
        return error_response(404, model.NOT_FOUND)
    key_bytes = state.settings.key_bytes
    async with state.pool.acquire() as conn:
        row = await delivery_store.get_integration(conn, workspace_id, integration_id)
        if row is None:
            return error_response(404, model.NOT_FOUND)
        creds = await store.credentials(conn, key_bytes, workspace_id, integration_id, create=False)
    kind = row["kind"]
    body = model.decode(raw)
    if not await _authenticated(request, state, workspace_id, row, creds, body, raw):
        return error_response(401, model.BAD_SIGNATURE)
    now = _dt.datetime.now(times.UTC)
    text = raw.decode("utf-8", "replace")
    if kind == "ses":
        if body.get("Type") == "SubscriptionConfirmation":
            return await _confirm(state, body)
        if body.get("Type") != "Notification":
            return json_response({"success": True})
    found = model.parse(kind, body, text, now)
    async with state.pool.acquire() as conn:
        await store.record(conn, workspace_id, integration_id, found)
    return json_response({"success": True})


async def _authenticated(request, state, workspace_id: str, row, creds, body, raw: bytes) -> bool:
    """3.2: the provider's own signature where it has one and the integration can check it, else
    the secret (query `token`, Basic password, or X-Postroom-Webhook-Token); SES always needs a
    valid SNS signature, and its topic must be ours unless the secret is presented."""
    secret = creds["secret"] if creds else None
    presented = [_param(request, "token"), model.basic_password(request.headers.get("authorization")),
                 request.headers.get(model.TOKEN_HEADER)]
    by_secret = model.secret_state(presented, secret)
    if by_secret == model.WRONG:
        return False
    unauthenticated_ok = state.settings.allow_unauthenticated_provider_webhooks and by_secret == model.NONE
    kind = row["kind"]
    if kind == "ses":
        if not sns_module.is_envelope(body) or not await _sns(state).authentic(body):
            return False
        ours = body["TopicArn"] in (creds["sns_topic_arns"] if creds else [])
        return ours or by_secret == model.VALID or unauthenticated_ok
    signed = model.NONE
    if kind == "mailgun":
        signing_key = integrations.unseal(state.settings.key_bytes, workspace_id, row["id"],
                                          row["secrets"]).get("webhook_signing_key")
        if signing_key:
            signed = model.mailgun_signature(signing_key, body.get("signature") if isinstance(body, dict) else None)
    elif kind == "sendgrid":
        public_key = row["settings"].get("webhook_public_key")
        if public_key:
            signed = model.sendgrid_signature(
                public_key, request.headers.get("x-twilio-email-event-webhook-signature"),
                request.headers.get("x-twilio-email-event-webhook-timestamp"), raw)
    if signed != model.NONE:
        return signed == model.VALID
    if by_secret == model.NONE and unauthenticated_ok:
        log.warning("unauthenticated provider webhook accepted for integration %s (%s)", row["id"], kind)
    return by_secret == model.VALID or unauthenticated_ok


async def _confirm(state, body: dict):
    """An authenticated SubscriptionConfirmation: its SubscribeURL fetched once (3.4)."""
    outcome = await _sns(state).confirm(body.get("SubscribeURL"))
    if outcome is None:
        return error_response(400, model.FAILED)
    if not outcome.ok:
        log.warning("SNS subscription confirmation failed: %s", outcome.error)
        return error_response(502, "failed to confirm the SNS subscription")
    return json_response({"success": True})


# ---------------------------------------------------------------- GET /api/inboundWebhookEvents.list (3.8)

def _valid_email(email: str) -> bool:
    try:
        contacts_model.validate_email(email)
    except RuleError:
        return False
    return True


async def list_events(call: Call):
    q: model.EventQuery = call.input
    async with call.pool.acquire() as conn:
        rows = await store.list_events(conn, call.workspace_id, q)
    page = rows[:q.limit]
    out: dict = {"events": [model.event_wire(r) for r in page]}
    has_more = len(rows) > q.limit
    if has_more:
        out["next_cursor"] = model.encode_cursor(page[-1]["timestamp"], str(page[-1]["id"]))
    out["has_more"] = has_more
    return out


# ---------------------------------------------------------------- webhooks.register / webhooks.status (4)

def _ids(get) -> str:
    """workspace_id then integration_id, each required (4.1's messages)."""
    required_string(get("workspace_id"), "workspace_id", missing="workspace_id is required")
    integration_id = required_string(get("integration_id"), "integration_id", missing="integration_id is required")
    if "\x00" in integration_id:
        raise RuleError("invalid integration_id: contains a NUL character")
    return integration_id


def parse_register(call: Call) -> tuple[str, list[str], bool]:
    integration_id = _ids(call.body.get)
    event_types = model.parse_event_types(call.body.get("event_types"))
    rotate = call.body.get("rotate_secret", False)
    if rotate is None:
        rotate = False
    if not isinstance(rotate, bool):
        raise RuleError("rotate_secret must be a boolean")
    return integration_id, event_types, rotate


async def _status(call: Call, integration_id: str, event_types: list[str], rotate: bool, registering: bool):
    async with call.pool.acquire() as conn, conn.transaction():
        row = await delivery_store.get_integration(conn, call.workspace_id, integration_id)
        if row is None:
            raise RuleError(f"integration with ID {integration_id} not found", 404)
        if registering and row["kind"] in NOT_REGISTRABLE:
            raise RuleError(model.NOT_IMPLEMENTED.format(row["kind"]))
        key_bytes = call.settings.key_bytes
        if rotate:
            await store.set_secret(conn, key_bytes, call.workspace_id, integration_id,
                                   model.new_secret(_random()))
        creds = await store.credentials(conn, key_bytes, call.workspace_id, integration_id)
    base = call.settings.api_endpoint or str(call.request.base_url)
    url = model.callback_url(base, row["kind"], call.workspace_id, integration_id, creds["secret"])
    return model.status_wire(row["kind"], url, event_types, creds["last_event_at"])


def _random() -> bytes:
    return os.urandom(model.SECRET_BYTES)


async def register(call: Call):
    """The minimal first version (4.3): no provider is called; the answer gives the callback URL
    to enter in the provider's console."""
    integration_id, event_types, rotate = call.input
    return await _status(call, integration_id, event_types, rotate, True)


async def status(call: Call):
    """Also for SMTP integrations (Postroom): a relay posting the generic JSON needs the callback
    URL with its token, and this is where it is read."""
    return await _status(call, call.input, list(model.EVENT_TYPES), False, False)


# ---------------------------------------------------------------- integration hooks (delivery-contract 1.5)

class IntegrationHooks:
    """What delivery calls after creating and before deleting an integration (app.py hands this
    in as app.state.integration_hooks; delivery never imports inbound). The minimal first version
    registers nothing at the provider: creating makes the webhook secret the callback URL
    carries (for every kind: SMTP relays post the generic JSON); deleting has nothing to
    unregister (the credentials go with the integration)."""

    async def created(self, pool, settings, workspace_id: str, integration) -> None:
        async with pool.acquire() as conn:
            await store.credentials(conn, settings.key_bytes, workspace_id, integration["id"])

    async def deleting(self, pool, settings, workspace_id: str, integration) -> None:
        return None


HOOKS = IntegrationHooks()


ENDPOINTS = [
    Endpoint("/api/inboundWebhookEvents.list", "GET", list_events, resource="message_history",
             missing_workspace="Invalid parameters: workspace_id is required",
             parse=lambda c: model.parse_event_query(c.param, _valid_email)),
    Endpoint("/api/webhooks.register", "POST", register, resource="workspace", write=True, parse=parse_register),
    Endpoint("/api/webhooks.status", "GET", status, resource="workspace",
             parse=lambda c: _ids(c.param)),
]

ROUTES = [Route("/webhooks/email", provider_webhook, methods=None)]
