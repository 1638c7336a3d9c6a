"""Double opt-in confirmation emails: an outbox consumer (events.dispatch, consumer
"confirmations") that turns each `list.pending` event into one confirmation message in the send
queue, through the workspace's marketing email provider (delivery-contract 1.4, 5).

A membership becomes pending however it arose (the public form, lists.subscribe of an
unsubscribed member, contactLists.updateStatus, a second subscribe while pending): the lists
capability records `list.pending`, and this consumer, which lists does not know of, mails it. A
pass takes a batch of a workspace's unconsumed list.pending events under the consumer's advisory
lock, marks them consumed and queues their messages in the same transaction (store.enqueue): a
crash before the commit leaves the events unconsumed and nothing queued, so no confirmation is
lost or doubled. An event handed out twice (an UPDATE of the same row by another consumer makes
its mark miss, see events.dispatch) finds the message of its first hand-out by id and is skipped.

What a mail is made of:
- the list's `double_optin_template` (that version, or the latest), in the contact's language
  (templates.model.variant); without one, or when it was deleted since or does not render, the
  built-in default (delivery.confirmation_mail);
- the template data of a list mail (templates.render.context: `list`, `contact`,
  `confirm_subscription_url`, `unsubscribe_url`...), links on the workspace's public endpoint;
- no open or click tracking: the confirmation link goes straight to the notification center
  (a tracking redirect before it is one more hop for link scanners to follow, and nothing about a
  confirmation is worth measuring); no List-Unsubscribe: the person is not subscribed yet, and
  ignoring the mail is the way to decline;
- the sender of the template (its sender_id) or the integration's default sender; source `list`
  (the list id), priority 2 (5.1: after transactional mail, before every broadcast).

Skipped, with a log line: an event whose membership is no longer pending (confirmed, unsubscribed
or removed since), whose list was deleted or whose contact was deleted. Without a marketing
provider the event is consumed, nothing is queued, and the message is recorded failed with a
status_info naming the setting (store.record_failed): it shows in messages.list, on the contact's
timeline and to email.failed webhook subscriptions, and the log says it once per event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from postroom.contacts import store as contacts_store
from postroom.delivery import confirmation_mail as mail, sending, store
from postroom.delivery.model import Outgoing, Source, resolve_sender
from postroom.events import dispatch
from postroom.lists import model as lists_model, store as lists_store
from postroom.platform import queue
from postroom.templates import model as templates_model, render as engine, store as templates_store
from postroom.templates.render.context import Sending, template_data

log = logging.getLogger("postroom.delivery.confirmations")

CONSUMER = "confirmations"   # of the outbox (postroom.events.dispatch)
BATCH = 50                   # events a transaction: each is rendered while the workspace's lock is held


@dataclass
class _Workspace:
    """What every confirmation of one workspace's batch shares, read once."""
    id: str
    settings: dict
    integration: Any                 # its marketing email integration row, None when it has none
    missing: str | None              # why there is none (status_info)
    secret: str                      # the links' email_hmac secret
    data_key: bytes                  # the key message_data is sealed with

    @classmethod
    async def load(cls, conn, workspace_id: str, key_bytes: bytes) -> "_Workspace":
        settings = await sending.workspace_settings(conn, workspace_id)
        provider_id = settings.get(mail.PROVIDER_SETTING) or ""
        integration = await store.get_integration(conn, workspace_id, provider_id) if provider_id else None
        missing = None
        if integration is None:
            missing = mail.provider_missing(provider_id) if provider_id else mail.NO_PROVIDER
        return cls(workspace_id, settings, integration, missing,
                   await sending.email_hmac_secret(conn, workspace_id, key_bytes),
                   await store.message_key(conn, workspace_id, key_bytes))


@dataclass(frozen=True)
class _Mail:
    content: engine.Content
    template_id: str
    template_version: int
    sender_id: str | None = None
    reply_to: str | None = None


async def _list_template(conn, workspace_id: str, ref: dict | None, language: str | None, default_language: str):
    """The list's own template as a _Mail, None when it has none or it is gone (deleted since)."""
    if not ref:
        return None
    template = await templates_store.live_version(conn, workspace_id, ref["id"], ref.get("version"))
    if template is None or template["channel"] != "email" or not template["email"]:
        log.warning("workspace %s: double_optin_template %s is gone; the built-in confirmation is sent",
                    workspace_id, ref["id"])
        return None
    part = templates_model.variant(template, language, default_language)
    return _Mail(templates_model.content(part), template["id"], template["version"],
                 part.get("sender_id") or None, part.get("reply_to") or None)


def _default(contact: dict, settings: dict) -> _Mail:
    languages, default_language = templates_model.workspace_languages(settings)
    language = mail.language_for(contact.get("language"), languages, default_language)
    return _Mail(mail.default_content(language), mail.DEFAULT_TEMPLATE_ID, mail.DEFAULT_TEMPLATE_VERSION)


@dataclass(frozen=True)
class _Pending:
    """A list.pending event whose membership still waits: what its confirmation is sent to."""
    message_id: str
    email: str
    list: Any                        # the list row
    contact: dict                    # the contact in wire form


async def _still_pending(conn, workspace_id: str, event) -> _Pending | None:
    """The event's membership when it still waits for a confirmation and its message was not
    made by an earlier hand-out of the event; None (logged) otherwise."""
    data = event["data"]
    list_id = mail.list_context(data)["id"]
    email = (data.get("contact_list") or {}).get("email") or event["subject"]
    message_id = mail.message_id(workspace_id, event["id"])
    if not email or not list_id or await store.message_exists(conn, workspace_id, message_id):
        return None
    lst = await lists_store.get_list(conn, workspace_id, list_id)
    membership = await lists_store.get_membership(conn, workspace_id, list_id, email) if lst else None
    found = await contacts_store.get_by_email(conn, workspace_id, email) if membership else None
    if lst is None:
        why = "the list was deleted"
    elif found is None:   # a contact's memberships go with it
        why = "no longer a member"
    elif membership["status"] != lists_model.PENDING:
        why = f"the membership is {membership['status']} now"
    else:
        return _Pending(message_id, email, lst, found[0])
    log.info("workspace %s: no confirmation for %s on list %s: %s", workspace_id, email, list_id, why)
    return None


async def _render(ws: _Workspace, chosen: _Mail, p: _Pending, values: dict, endpoint: str):
    """(the mail rendered, the _Mail it came from): the list's template, else the default when
    that one does not render (logged). result.success False: not even the default rendered."""
    options = engine.Options(endpoint=endpoint)
    result = await sending.render(chosen.content, values, options)
    if not result.success and chosen.template_id != mail.DEFAULT_TEMPLATE_ID:
        log.warning("workspace %s: double_optin_template %s does not render (%s); the built-in confirmation is sent",
                    ws.id, chosen.template_id, result.error.message)
        chosen = _default(p.contact, ws.settings)
        result = await sending.render(chosen.content, values, options)
    return result, chosen


async def _confirm(conn, settings, ws: _Workspace, event) -> str | None:
    """Queues (or records failed) the confirmation of one list.pending event; returns the message
    id, None when the event is skipped."""
    p = await _still_pending(conn, ws.id, event)
    if p is None:
        return None
    lst = p.list
    chosen = await _list_template(conn, ws.id, lst[lists_model.TEMPLATE_REF], p.contact.get("language"),
                                  templates_model.workspace_languages(ws.settings)[1]) or _default(p.contact, ws.settings)
    base = settings.api_endpoint or mail.endpoint_of_link(event["data"].get("confirm_url"))
    endpoint = templates_model.public_endpoint(ws.settings, base)
    values = template_data(Sending(ws.id, endpoint, ws.settings.get("website_url"), ws.secret, p.message_id,
                                   int(time.time()), contact=p.contact, list={"id": lst["id"], "name": lst["name"]}))
    failure, result = ws.missing or (None if endpoint else mail.NO_ENDPOINT), None
    if failure is None:
        result, chosen = await _render(ws, chosen, p, values, endpoint)
        if not result.success:
            failure = f"template compilation failed: {result.error.message}"
    integration = ws.integration
    sender = resolve_sender(integration["senders"], chosen.sender_id) if failure is None else None
    out = Outgoing(
        workspace_id=ws.id, integration_id=integration["id"] if integration is not None else "",
        contact_email=p.email, from_address=sender["email"] if sender else "", from_name=sender["name"] if sender else "",
        subject=result.subject or "" if sender else "", html=result.html if sender else "",
        text=result.text if sender else None, template_id=chosen.template_id,
        template_version=chosen.template_version, source_type=Source.LIST, source_id=lst["id"],
        message_id=p.message_id, list_id=lst["id"], data=values,
        email_options={"reply_to": chosen.reply_to} if chosen.reply_to else {})
    if failure is not None:
        log.warning("workspace %s: confirmation email to %s for list %s not sent: %s", ws.id, p.email, lst["id"],
                    failure)
        await store.record_failed(conn, settings.key_bytes, out, failure)
    else:
        await store.enqueue(conn, settings.key_bytes, out, integration["kind"], settings.delivery_max_attempts,
                            key=ws.data_key)
    return p.message_id


async def confirm_workspace(pool, settings, workspace_id: str, batch: int = BATCH) -> int | None:
    """One batch of the workspace's list.pending events: their confirmations queued and the events
    marked consumed, in one transaction. Returns the events consumed; None when another pass holds
    the workspace."""
    async with dispatch.locked(pool, CONSUMER, workspace_id) as conn:
        if conn is None:
            return None
        events = await dispatch.claim_batch(conn, CONSUMER, workspace_id, batch)
        if not events:
            return 0
        ws = await _Workspace.load(conn, workspace_id, settings.key_bytes)
        for event in events:
            await _confirm(conn, settings, ws, event)
        await dispatch.notify(conn, CONSUMER)
        return len(events)


async def confirm_once(pool, settings, batch: int = BATCH, max_workspaces: int = 1000) -> int:
    """One pass: a batch for each workspace with unconsumed list.pending events (skipping those
    another process holds). Returns the events consumed."""
    total = 0
    for workspace_id in await dispatch.pending_workspaces(pool, CONSUMER, max_workspaces):
        total += await confirm_workspace(pool, settings, workspace_id, batch) or 0
    return total


async def run(pool, settings, stop: asyncio.Event) -> None:
    """The consumer loop: passes while there is work, then a poll interval's rest (pending
    memberships are not announced: the loop polls, like the webhook dispatcher)."""
    async def one_pass() -> bool:
        return await confirm_once(pool, settings) > 0

    await queue.run_passes(stop, one_pass, settings.delivery_poll_interval, log, "confirmation")


def start(pool, settings, stop: asyncio.Event) -> list[asyncio.Task]:
    """The confirmation loop of one process; it ends when `stop` is set or when cancelled."""
    return [asyncio.create_task(run(pool, settings, stop), name="delivery-confirmations")]
