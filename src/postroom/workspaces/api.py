"""Workspace endpoints."""

from __future__ import annotations

from postroom.auth import api as auth_api, model as auth_model, store as auth_store
from postroom.delivery import integrations as delivery_integrations, store as delivery_store
from postroom.platform.http import Call, Endpoint, workspace_from
from postroom.platform.errors import RuleError
from postroom.templates import model as templates_model, store as templates_store
from postroom.workspaces import model, store


async def _wire(conn, rows) -> list[dict]:
    """Workspace objects with their template blocks (templates contract 2.7) and their email
    integrations, secrets masked (delivery-contract 1.3): one query each for all the workspaces."""
    ids = [r["id"] for r in rows]
    blocks = await templates_store.blocks_of(conn, ids)
    integrations = await delivery_store.integrations_of(conn, ids)
    return [{**model.to_wire(row, [templates_model.block_wire(b) for b in blocks.get(row["id"], ())]),
             "integrations": [delivery_integrations.wire(i) for i in integrations.get(row["id"], ())]}
            for row in rows]


async def list_workspaces(call: Call):
    async with call.pool.acquire() as conn:
        rows = await store.list_for_user(conn, call.principal.user_id)
        return await _wire(conn, rows)  # a bare array: the Zapier connection test reads it so


async def get_workspace(call: Call):
    ws_id = workspace_from(call.param("id"), "id is required", "id")
    async with call.pool.acquire() as conn:
        if await auth_store.membership(conn, ws_id, call.principal.user_id) is None:
            raise RuleError("user is not a member of the workspace", 403)
        row = await store.get(conn, ws_id)
        (workspace,) = await _wire(conn, [row])
    return {"workspace": workspace}


async def create_workspace(call: Call):
    async with call.pool.acquire() as conn:
        user = await auth_store.user_by_id(conn, call.principal.user_id)
        if not auth_api.is_root(call.settings, user):
            raise RuleError("only the root user can create workspaces", 403)
        ws_id, name, settings = model.validate_new(call.body)
        row = await store.create_with_owner(conn, ws_id, name, settings, call.principal.user_id)
    if row is None:
        raise RuleError(f"workspace already exists: {ws_id}", 409)
    return {"workspace": model.to_wire(row)}


def _parse_update(call: Call):
    return model.validate_update(call.body)


async def update_workspace(call: Call):
    """Owners only. Provider ids must name an email integration of the workspace (or be "", which
    clears the choice). The answer is the workspace object itself, as Notifuse sends it."""
    if call.membership.role != "owner":
        raise RuleError("user is not an owner of the workspace", 403)
    name, settings = call.input
    async with call.pool.acquire() as conn:
        for key, label in model.PROVIDER_KEYS.items():
            chosen = (settings or {}).get(key)
            if chosen and (delivery_integrations.as_uuid(chosen) is None or
                           await delivery_store.get_integration(conn, call.workspace_id, chosen) is None):
                raise RuleError(f"{label} email provider not found: {chosen}")
        row = await store.update(conn, call.workspace_id, name, settings)
        if row is None:
            raise RuleError("Workspace not found", 404)
        (workspace,) = await _wire(conn, [row])
    return workspace


async def create_api_key(call: Call):
    if call.membership.role != "owner":
        raise RuleError("only an owner of the workspace can create API keys", 403)
    email = model.api_key_email(call.workspace_id, call.body.get("email_prefix"))
    async with call.pool.acquire() as conn:
        try:
            user_id = await store.create_api_key_user(conn, call.workspace_id, email,
                                                      auth_model.full_permissions())
        except ValueError as exc:
            raise RuleError(str(exc), 409) from None
    token = auth_model.issue_token(call.settings.key_bytes, user_id, "api_key", email=email)
    return {"token": token, "email": email}


ENDPOINTS = [
    Endpoint("/api/workspaces.list", "GET", list_workspaces, auth="user"),
    Endpoint("/api/workspaces.get", "GET", get_workspace, auth="user"),
    Endpoint("/api/workspaces.create", "POST", create_workspace, auth="user"),
    Endpoint("/api/workspaces.update", "POST", update_workspace, resource=None, write=True, workspace_param="id",
             missing_workspace="id is required", parse=_parse_update),
    Endpoint("/api/workspaces.createAPIKey", "POST", create_api_key, resource=None, write=True),
]
