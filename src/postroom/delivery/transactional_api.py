"""Transactional notification endpoints (delivery-contract 3): list, get, create, update,
delete, send and testTemplate, permission resource `transactional`. Requests are checked by
delivery/transactional.py before the membership and permission checks (Endpoint.parse); the
handlers authorise the second resource a route needs, read and write through the stores, and
hand content to the one render path (templates.render)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from postroom.auth.model import permission_error
from postroom.contacts import model as contacts_model, store as contacts_store
from postroom.delivery import api as delivery_api, integrations, sending, store, transactional as tx
from postroom.delivery.model import DeliveryError, Outgoing, Source, resolve_sender
from postroom.delivery.providers.base import Attachment, Message
from postroom.lists import store as lists_store
from postroom.platform.errors import RuleError
from postroom.platform.http import Call, Endpoint, json_response
from postroom.templates import model as templates_model, store as templates_store
from postroom.templates import render as engine
from postroom.templates.render.context import Sending, template_data
from postroom.workspaces import secrets as ws_secrets


def _allowed(call: Call, resource: str, write: bool) -> None:
    _permitted(call.membership, resource, write)


def _permitted(membership, resource: str, write: bool) -> None:
    denied = permission_error(membership, resource, write)
    if denied:
        raise RuleError(denied, 403)


async def _check_templates(conn, workspace_id: str, channels: dict) -> None:
    for template_id in tx.template_ids(channels):
        row = await templates_store.latest_live(conn, workspace_id, template_id) if template_id else None
        if row is None:
            raise DeliveryError(tx.TEMPLATE_MISSING)


# ---------------------------------------------------------------- CRUD (3.2-3.6)

async def list_notifications(call: Call):
    q: tx.ListQuery = call.input
    async with call.pool.acquire() as conn:
        rows, total = await store.list_notifications(conn, call.workspace_id, q.search, q.limit, q.offset)
    return {"notifications": [tx.notification_wire(r) for r in rows], "total": total}


async def get_notification(call: Call):
    async with call.pool.acquire() as conn:
        row = await store.get_notification(conn, call.workspace_id, call.input)
    if row is None:
        raise RuleError(tx.NOT_FOUND, 404)
    return {"notification": tx.notification_wire(row)}


async def create_notification(call: Call):
    _allowed(call, "templates", False)
    async with call.pool.acquire() as conn:
        await _check_templates(conn, call.workspace_id, call.input["channels"])
        row = await store.create_notification(conn, call.workspace_id, call.input)
    if row is None:
        raise RuleError(tx.EXISTS, 409)
    return json_response({"notification": tx.notification_wire(row)}, status=201)


async def update_notification(call: Call):
    _allowed(call, "templates", False)
    update: tx.Update = call.input
    async with call.pool.acquire() as conn:
        if "channels" in update.fields and await store.get_notification(conn, call.workspace_id, update.id):
            await _check_templates(conn, call.workspace_id, update.fields["channels"])
        row = await store.update_notification(conn, call.workspace_id, update.id, update.fields,
                                              lambda r: tx.check_update_allowed(r, update))
    if row is None:
        raise RuleError(tx.NOT_FOUND, 404)
    return {"notification": tx.notification_wire(row)}


def _deletable(row) -> None:
    if row["integration_id"]:
        raise tx.managed_by(row, "delete")


async def delete_notification(call: Call):
    async with call.pool.acquire() as conn:
        if not await store.delete_notification(conn, call.workspace_id, call.input, _deletable):
            raise RuleError(tx.NOT_FOUND, 404)
    return {"success": True}


# ---------------------------------------------------------------- what a send renders with

def _endpoint(call: Call, settings: dict) -> str:
    return templates_model.public_endpoint(settings, _base_url(call))


def _base_url(call: Call) -> str:
    return call.settings.api_endpoint or str(call.request.base_url)


def _tracker(settings, tracking: bool, endpoint: str, message_id: str, workspace_id: str,
             now: int) -> engine.Tracker | None:
    """The message's signed tracking URLs when tracking is on (engagement contract 1.1, 1.4)."""
    return engine.signed_tracking(settings.key_bytes, endpoint, message_id, workspace_id, now) if tracking else None


def _render_options(opts: tx.EmailOptions, endpoint: str, tracker: engine.Tracker | None,
                    utm: dict) -> engine.Options:
    return engine.Options(subject_override=opts.subject or None, preheader_override=opts.subject_preview or None,
                          tracking=tracker is not None, utm=utm, endpoint=endpoint,
                          click_url=tracker.click_url if tracker else None,
                          open_url=tracker.open_url if tracker else None)


async def _render(part: dict, data: dict, options: engine.Options, overridden: bool) -> engine.Result:
    result = await sending.render(templates_model.content(part), data, options)
    if not result.success:
        raise tx.render_failure("template compilation failed", result.error.message, overridden)
    return result


def _email_options(opts: tx.EmailOptions, reply_to: str) -> dict:
    """What the worker reads from the queue payload (2.0)."""
    out: dict = {"cc": list(opts.cc), "bcc": list(opts.bcc)}
    if reply_to:
        out["reply_to"] = reply_to
    if opts.list_unsubscribe_url:
        out["list_unsubscribe_url"] = opts.list_unsubscribe_url
    return out


# ---------------------------------------------------------------- transactional.send (3.7)

def _notification_to_send(reads, req: tx.SendRequest) -> dict:
    """Steps 1 and 2 of 3.7: the live notification, with a channel the request asks for."""
    notification = reads["notification"]
    if notification is None:
        raise DeliveryError(f"notification not found: transactional notification not found: {req.notification_id}")
    if not tx.send_channels(req.channels, notification["channels"]):
        raise DeliveryError(tx.NO_CHANNEL)
    return notification


def _provider_of(settings: dict, integration) -> dict:
    provider_id = settings.get("transactional_email_provider_id") or ""
    if not provider_id:
        raise DeliveryError(tx.NO_PROVIDER)
    if integration is None:
        raise DeliveryError(f"integration with ID {provider_id} not found")
    return integration


def _email_template(template) -> dict:
    if template is None:
        raise DeliveryError("failed to get template: template not found")
    if template["channel"] != "email" or not template["email"]:
        raise DeliveryError("failed to get template: template does not contain email content")
    return template


@dataclass(frozen=True)
class Sender:
    """Who sends and through what: everything the send flow needs besides the request, so the
    API handler and the SMTP bridge (delivery/bridge.py) run the one flow."""
    pool: Any
    settings: Any          # postroom.platform.config.Settings
    workspace_id: str
    membership: Any        # postroom.auth.model.Membership of the caller in the workspace
    base_url: str          # the server's own URL, when the workspace names no API endpoint

    @classmethod
    def of(cls, call: Call) -> "Sender":
        return cls(call.pool, call.settings, call.workspace_id, call.membership, _base_url(call))


async def send(call: Call):
    message_id = await send_notification(Sender.of(call), call.input)
    return {"message_id": message_id, "success": True}


async def send_notification(sender: Sender, req: tx.SendRequest) -> str:
    """Steps 1-9 of 3.7: steps 3-9 in one transaction, so a send refused at any step (a template
    that does not render, say) leaves the contact and the history as they were, and an external
    id's lock is held until its message is committed. Returns the message id (the first one's,
    for a replayed external id)."""
    _permitted(sender.membership, "contacts", True)
    ws = sender.workspace_id
    key_bytes = sender.settings.key_bytes
    async with sender.pool.acquire() as conn:
        reads = await store.send_reads(conn, ws, req.notification_id, sending.EMAIL_HMAC_SECRET)
        notification = _notification_to_send(reads, req)
        message_id = str(uuid.uuid4())
        async with conn.transaction():
            if req.external_id:
                replayed = await store.lock_external_id(conn, ws, req.external_id)
                if replayed is not None:
                    return replayed
            settings = reads["settings"] or {}
            integration = _provider_of(settings, reads["integration"])
            _, contact = await contacts_store.upsert_on(conn, sender.pool, ws, req.contact,
                                                        after_write=lists_store.sync_contact_created_at)
            template = _email_template(reads["template"])
            part = templates_model.variant(template, contact.get("language"),
                                           templates_model.workspace_languages(settings)[1])
            endpoint = templates_model.public_endpoint(settings, sender.base_url)
            link_secret = await ws_secrets.workspace_secret(conn, ws, key_bytes, sending.EMAIL_HMAC_SECRET,
                                                            sealed=reads["link_secret"])
            now = int(time.time())
            tracker = _tracker(sender.settings, tx.tracking_enabled(settings), endpoint, message_id, ws, now)
            data = template_data(Sending(ws, endpoint, settings.get("website_url"), link_secret.hex(),
                                         message_id, now, data=req.data,
                                         contact=contacts_model.to_wire(contact), tracker=tracker))
            options = _render_options(req.options, endpoint, tracker,
                                      tx.utm_of(notification["tracking_settings"], template["id"]))
            result = await _render(part, data, options, bool(req.options.subject))
            from_sender = resolve_sender(integration["senders"], part.get("sender_id"))
            out = Outgoing(
                workspace_id=ws, integration_id=integration["id"], contact_email=req.contact["email"],
                from_address=from_sender["email"], from_name=req.options.from_name or from_sender["name"],
                subject=result.subject or "", html=result.html, text=result.text, template_id=template["id"],
                template_version=template["version"], source_type=Source.TRANSACTIONAL,
                source_id=notification["id"], message_id=message_id, external_id=req.external_id,
                email_options=_email_options(req.options, req.options.reply_to or part.get("reply_to") or ""),
                channel_options=req.options.recorded(), attachments=req.options.attachments, data=data,
                metadata=req.metadata)
            data_key = await store.message_key(conn, ws, key_bytes, sealed=reads["data_secret"])
            sent_id, _ = await store.enqueue(conn, key_bytes, out, integration["kind"],
                                             sender.settings.delivery_max_attempts, key=data_key)
    return sent_id


# ---------------------------------------------------------------- transactional.testTemplate (3.9)

def _failed(reason: str) -> dict:
    return {"success": False, "error": reason}


async def test_template(call: Call):
    """One synchronous send of a template's test data through a chosen integration: no queue,
    no retry, no contact written; one message history row when the provider accepted it."""
    _allowed(call, "templates", False)
    req: tx.TestRequest = call.input
    ws = call.workspace_id
    async with call.pool.acquire() as conn:
        template = await templates_store.latest_live(conn, ws, req.template_id)
        if template is None:
            raise RuleError(templates_model.NOT_FOUND, 404)
        if template["channel"] != "email" or not template["email"]:
            return _failed("template does not contain email content")
        integration = None
        if integrations.as_uuid(req.integration_id) == req.integration_id:
            integration = await store.get_integration(conn, ws, req.integration_id)
        if integration is None:
            return _failed(f"integration not found: {req.integration_id}")
        settings = await sending.workspace_settings(conn, ws)
        found = await contacts_store.get_by_email(conn, ws, req.recipient)
        secret = await sending.email_hmac_secret(conn, ws, call.settings.key_bytes)
    message_id = str(uuid.uuid4())
    endpoint = _endpoint(call, settings)
    now = int(time.time())
    tracker = _tracker(call.settings, tx.tracking_enabled(settings), endpoint, message_id, ws, now)
    # Notifuse's placeholder list, kept, so unsubscribe links render in a test (3.9)
    data = template_data(Sending(ws, endpoint, settings.get("website_url"), secret, message_id, now,
                                 data=template["test_data"] or {},
                                 contact=found[0] if found else {"email": req.recipient},
                                 list={"id": "foo", "name": "bar"}, tracker=tracker))
    part = templates_model.variant(template, req.language, templates_model.workspace_languages(settings)[1])
    try:
        result = await _render(part, data, _render_options(req.options, endpoint, tracker, {}),
                               bool(req.options.subject))
    except DeliveryError as exc:
        return _failed(exc.message)
    sender = resolve_sender(integration["senders"], req.sender_id)
    reply_to = req.options.reply_to or part.get("reply_to") or None
    message = Message(message_id=message_id, from_address=sender["email"],
                      from_name=req.options.from_name or sender["name"], to=req.recipient,
                      subject=result.subject or "", html=result.html, text=result.text, cc=req.options.cc,
                      bcc=req.options.bcc, reply_to=reply_to,
                      attachments=tuple(Attachment(a.filename, a.content, a.content_type, a.disposition)
                                        for a in req.options.attachments),
                      list_unsubscribe_url=req.options.list_unsubscribe_url or None)
    secrets = integrations.unseal(call.settings.key_bytes, ws, integration["id"], integration["secrets"])
    sent, failure = await delivery_api.send_now(call, integration["kind"], {**integration["settings"], **secrets},
                                                message, str(integration["id"]))
    if failure is not None:
        return _failed(f"failed to send test email: {failure}")
    out = Outgoing(workspace_id=ws, integration_id=integration["id"], contact_email=req.recipient,
                   from_address=sender["email"], from_name=message.from_name, subject=message.subject,
                   html=result.html, text=result.text, template_id=template["id"],
                   template_version=template["version"], source_type=Source.TEST, message_id=message_id,
                   channel_options=req.options.recorded(), attachments=req.options.attachments, data=data)
    async with call.pool.acquire() as conn:
        await store.record_sent(conn, call.settings.key_bytes, out, sent.provider_message_id)
    return {"success": True}


ENDPOINTS = [
    Endpoint("/api/transactional.list", "GET", list_notifications, resource="transactional",
             missing_workspace=tx.V + "workspace_id is required", parse=lambda c: tx.parse_list(c.param)),
    Endpoint("/api/transactional.get", "GET", get_notification, resource="transactional",
             missing_workspace=tx.V + "workspace_id is required", parse=lambda c: tx.parse_get(c.param)),
    Endpoint("/api/transactional.create", "POST", create_notification, resource="transactional", write=True,
             parse=lambda c: tx.parse_create(c.body)),
    Endpoint("/api/transactional.update", "POST", update_notification, resource="transactional", write=True,
             parse=lambda c: tx.parse_update(c.body)),
    Endpoint("/api/transactional.delete", "POST", delete_notification, resource="transactional", write=True,
             parse=lambda c: tx.parse_ref(c.body)),
    Endpoint("/api/transactional.send", "POST", send, resource="transactional", write=True,
             body_limit="max_send_body_bytes", parse=lambda c: tx.parse_send(c.body)),
    Endpoint("/api/transactional.testTemplate", "POST", test_template, resource="transactional", write=True,
             body_limit="max_send_body_bytes", parse=lambda c: tx.parse_test(c.body)),
]
