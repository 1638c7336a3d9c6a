"""Delivery endpoints: the message history (messages.list, messages.broadcastStats) and the
workspace's email integrations. Each validates before the membership and permission checks (the
contract's order) through its Endpoint's `parse`; the handlers only authorise, store and encode."""

from __future__ import annotations

import asyncio
import logging
import uuid

from postroom.delivery import integrations, model, store
from postroom.delivery.providers.base import Context, Message, SendFailed
from postroom.platform.errors import RuleError
from postroom.platform.http import Call, Endpoint, json_response

NOT_OWNER = "user is not an owner of the workspace"
log = logging.getLogger("postroom.delivery")


def _fake(call: Call) -> bool:
    """Kind `fake` (the in-memory provider) is accepted only where the process allows it: tests."""
    return bool(call.settings.delivery_fake_provider)


def _owner(call: Call) -> None:
    if call.membership.role != "owner":
        raise RuleError(NOT_OWNER, 403)


# ---------------------------------------------------------------- the message history

async def list_messages(call: Call):
    q: model.MessageQuery = call.input
    async with call.pool.acquire() as conn:
        rows = await store.list_messages(conn, call.workspace_id, q)
        key = await store.message_key(conn, call.workspace_id, call.settings.key_bytes, create=False)
    page = rows[:q.limit]
    out: dict = {"messages": [model.message_wire(r, store.open_data(key, call.workspace_id, r["id"],
                                                                    r["message_data"])) for r in page]}
    has_more = len(rows) > q.limit
    if has_more:
        out["next_cursor"] = model.encode_message_cursor(page[-1]["created_at"], page[-1]["id"])
    out["has_more"] = has_more
    return out


async def broadcast_stats(call: Call):
    async with call.pool.acquire() as conn:
        stats = await store.broadcast_stats(conn, call.workspace_id, call.input)
    return {"broadcast_id": call.input, "stats": stats}


# ---------------------------------------------------------------- integrations (1.5)

async def _run_hooks(call: Call, step: str, integration) -> None:
    """The side effects other capabilities attach to an integration (provider webhooks, 1.5),
    handed in by the composition root as app.state.integration_hooks, each with
    `created(pool, settings, workspace_id, row)` and `deleting(...)`. A failure is logged and
    never fails the call (as Notifuse)."""
    for hooks in getattr(call.request.app.state, "integration_hooks", ()):
        try:
            await getattr(hooks, step)(call.pool, call.settings, call.workspace_id, integration)
        except Exception:
            log.exception("integration %s of workspace %s: %s hook failed", integration["id"], call.workspace_id,
                          step)


async def create_integration(call: Call):
    _owner(call)
    name, spec = call.input
    plain, secrets, concurrency = integrations.merged(spec, None, {}, _fake(call))
    async with call.pool.acquire() as conn:
        row = await store.create_integration(conn, call.settings.key_bytes, call.workspace_id, name, spec.kind,
                                             plain, secrets, spec.senders, spec.rate_limit_per_minute, concurrency)
    await _run_hooks(call, "created", row)
    return json_response({"status": "success", "integration_id": row["id"]}, status=201)


async def update_integration(call: Call):
    _owner(call)
    integration_id, name, spec = call.input
    row = None
    if integrations.as_uuid(integration_id) == integration_id:
        async with call.pool.acquire() as conn:
            row = await store.update_integration(conn, call.settings.key_bytes, call.workspace_id, integration_id,
                                                 name, spec, _fake(call))
    if row is None:
        raise RuleError(integrations.NOT_FOUND, 404)
    return {"status": "success", "message": "Integration updated successfully"}


async def delete_integration(call: Call):
    _owner(call)
    integration_id = call.input
    async with call.pool.acquire() as conn:
        row = await store.get_integration(conn, call.workspace_id, integration_id)
    if row is None:
        raise RuleError(integrations.NOT_FOUND, 404)
    await _run_hooks(call, "deleting", row)   # before the row goes: unregistering needs its credentials
    async with call.pool.acquire() as conn:
        if not await store.delete_integration(conn, call.workspace_id, integration_id):
            raise RuleError(integrations.NOT_FOUND, 404)
    return {"status": "success", "message": "Integration deleted successfully"}




# ---------------------------------------------------------------- email.testProvider (1.5)

async def test_provider(call: Call):
    """Sends one fixed message now through the provider in the request: no queue, no retry, no
    message history. Secrets sent masked come from `integration_id`, or from the one integration
    of the workspace with the same kind and plain settings."""
    to, spec, integration_id = call.input
    key_bytes, fake = call.settings.key_bytes, _fake(call)
    stored, old = None, {}
    if spec.masked:
        async with call.pool.acquire() as conn:
            if integration_id is not None:
                stored = await store.get_integration(conn, call.workspace_id, integration_id)
                if stored is None:
                    raise RuleError(integrations.NOT_FOUND, 404)
            else:
                found = [r for r in await store.list_integrations(conn, call.workspace_id)
                         if integrations.same_settings(spec, r)]
                stored = found[0] if len(found) == 1 else None
        if stored is None or stored["kind"] != spec.kind:
            raise RuleError(integrations.MASKED_SECRET)
        old = integrations.unseal(key_bytes, call.workspace_id, stored["id"], stored["secrets"])
    plain, secrets, _ = integrations.merged(spec, stored, old, fake)
    sender = model.resolve_sender(spec.senders)
    message = Message(message_id=str(uuid.uuid4()), from_address=sender["email"], from_name=sender["name"], to=to,
                      subject=integrations.TEST_SUBJECT, html=integrations.TEST_HTML)
    _, failure = await send_now(call, spec.kind, {**plain, **secrets}, message, str(stored["id"]) if stored else None)
    if failure is not None:
        return {"success": False, "error": f"failed to test provider: {failure}"}
    return {"success": True}


async def send_now(call: Call, kind: str, settings: dict, message: Message, integration_id: str | None):
    """One provider call outside the queue (tests of providers and templates): a provider built
    for this call and closed after it. Returns (Sent, None), or (None, the failure's text)."""
    module = integrations.kind_module(kind, _fake(call))
    parsed = module.Settings.parse(settings)
    factory = getattr(call.request.app.state, "provider_factory", None)   # tests inject a fake
    context = None if factory is not None else Context()
    provider = factory(parsed, kind) if factory is not None else \
        module.connect(parsed, context, integration_id=integration_id)
    try:
        async with asyncio.timeout(model.SEND_TIMEOUT):
            return await provider.send(message), None
    except SendFailed as exc:
        return None, exc.status_info
    except TimeoutError:
        return None, f"timeout after {model.SEND_TIMEOUT:g} s"
    finally:
        await provider.aclose()
        if context is not None:
            await context.aclose()


ENDPOINTS = [
    Endpoint("/api/messages.list", "GET", list_messages, resource="message_history",
             missing_workspace="Missing workspace ID", parse=lambda c: model.parse_message_query(c.query)),
    Endpoint("/api/messages.broadcastStats", "GET", broadcast_stats, resource="message_history",
             parse=lambda c: model.parse_broadcast_stats(c.query)),
    Endpoint("/api/workspaces.createIntegration", "POST", create_integration, write=True,
             missing_workspace="workspace ID is required",
             parse=lambda c: integrations.parse_create(c.body, _fake(c))),
    Endpoint("/api/workspaces.updateIntegration", "POST", update_integration, write=True,
             missing_workspace="workspace ID is required",
             parse=lambda c: integrations.parse_update(c.body, _fake(c))),
    Endpoint("/api/workspaces.deleteIntegration", "POST", delete_integration, write=True,
             missing_workspace="workspace ID is required", parse=lambda c: integrations.parse_delete(c.body)),
    Endpoint("/api/email.testProvider", "POST", test_provider, resource="workspace", write=True,
             missing_workspace="Missing workspace ID", parse=lambda c: integrations.parse_test(c.body, _fake(c))),
]
