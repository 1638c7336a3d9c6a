"""Template and template-block endpoints (permission resource `templates`).

Each endpoint's request is checked by its model parser before the membership and permission
checks (Endpoint.parse: the contract's 400-before-403 order); the handler gets the result as
`call.input`. Bodies nested deeper than model.BODY_MAX_DEPTH are refused undecoded.
"""

from __future__ import annotations

import asyncio
import time

from postroom.platform.errors import RuleError
from postroom.platform.http import Call, Endpoint, json_response
from postroom.templates import model, store
from postroom.workspaces import store as workspaces_store


async def _workspace_settings(conn, workspace_id: str) -> dict:
    row = await workspaces_store.get(conn, workspace_id)
    return (row["settings"] if row is not None else None) or {}


def _found(row, message: str = model.NOT_FOUND):
    if row is None:
        raise RuleError(message, 404)
    return row


# ---------------------------------------------------------------- templates

async def list_templates(call: Call):
    async with call.pool.acquire() as conn:
        rows = await store.list_latest(conn, call.workspace_id, call.input["category"], call.input["channel"])
    return {"templates": [model.template_wire(row) for row in rows]}


async def get_template(call: Call):
    template_id, version = call.input
    async with call.pool.acquire() as conn:
        row = _found(await store.get(conn, call.workspace_id, template_id, version))
    return {"template": model.template_wire(row)}


async def create_template(call: Call):
    draft: model.Draft = await asyncio.to_thread(model.with_previews, call.input)
    async with call.pool.acquire() as conn:
        model.check_languages("create", draft.fields["translations"], await _workspace_settings(conn, call.workspace_id))
        row = await store.create(conn, call.workspace_id, draft.fields)
    if row is None:
        raise RuleError(model.ID_TAKEN)
    return json_response({"template": model.template_wire(row)}, status=201)


async def update_template(call: Call):
    """The previews are computed before the head is locked (what is copied from the latest version
    has its own already), so the lock is held only to append the version (also on create: no
    connection is held meanwhile)."""
    draft: model.Draft = await asyncio.to_thread(model.with_previews, call.input)
    async with call.pool.acquire() as conn:
        settings = await _workspace_settings(conn, call.workspace_id)

        def revise(latest):
            fields = model.revise(draft, latest)
            if "translations" in draft.given:
                model.check_languages("update", fields["translations"], settings)
            return fields

        row = _found(await store.update(conn, call.workspace_id, draft.fields["id"], revise))
    return {"template": model.template_wire(row)}


async def delete_template(call: Call):
    async with call.pool.acquire() as conn:
        if not await store.delete(conn, call.workspace_id, call.input, model.check_deletable):
            raise RuleError(model.NOT_FOUND, 404)
    return {"success": True}


async def compile_template(call: Call):
    """Renders without storing (2.6): a template that does not render is a 200 with success false."""
    req: model.CompileRequest = call.input
    async with call.pool.acquire() as conn:
        settings = await _workspace_settings(conn, call.workspace_id)
        row = None
        if req.template_id is not None:
            row = await store.get(conn, call.workspace_id, req.template_id, req.version)
            if row is None or row["deleted_at"] is not None:
                raise RuleError(model.NOT_FOUND, 404)
    default_language = model.workspace_languages(settings)[1]
    if row is not None and row["channel"] == "web":
        return model.web_compile_wire(model.variant(row, req.language, default_language))
    endpoint = model.public_endpoint(settings, call.settings.api_endpoint or str(call.request.base_url))
    job = model.compile_job(req, row, default_language, endpoint, call.settings.key_bytes, int(time.time()))
    return await asyncio.to_thread(model.compile_answer, *job)  # up to Liquid's 5 s: off the event loop


# ---------------------------------------------------------------- template blocks

async def list_blocks(call: Call):
    async with call.pool.acquire() as conn:
        rows = (await store.blocks_of(conn, [call.workspace_id])).get(call.workspace_id, [])
    return {"blocks": [model.block_wire(row) for row in rows]}


def _block_key(value: str):
    key = model.block_key(value)
    if key is None:
        raise RuleError(model.BLOCK_NOT_FOUND, 404)
    return key


async def get_block(call: Call):
    key = _block_key(call.input)
    async with call.pool.acquire() as conn:
        row = _found(await store.get_block(conn, call.workspace_id, key), model.BLOCK_NOT_FOUND)
    return {"block": model.block_wire(row)}


async def create_block(call: Call):
    async with call.pool.acquire() as conn:
        row = await store.create_block(conn, call.workspace_id, call.input["name"], call.input["block"])
    return json_response({"block": model.block_wire(row)}, status=201)


async def update_block(call: Call):
    key = _block_key(call.input["id"])
    async with call.pool.acquire() as conn:
        row = _found(await store.update_block(conn, call.workspace_id, key, call.input["name"], call.input["block"]),
                     model.BLOCK_NOT_FOUND)
    return {"block": model.block_wire(row)}


async def delete_block(call: Call):
    key = _block_key(call.input)
    async with call.pool.acquire() as conn:
        if not await store.delete_block(conn, call.workspace_id, key):
            raise RuleError(model.BLOCK_NOT_FOUND, 404)
    return {"success": True}


# ---------------------------------------------------------------- the endpoint table

def _get(path: str, handler, parser) -> Endpoint:
    return Endpoint(path, "GET", handler, resource="templates", parse=lambda call: parser(call.param))


def _post(path: str, handler, parser, *args, write: bool = True) -> Endpoint:
    """A body's checks take up to a few hundred milliseconds for a tree of 10,000 blocks (its MJML
    generated and its Liquid parsed), and run before the caller is known to be a member: off the
    event loop."""
    return Endpoint(path, "POST", handler, resource="templates", write=write, max_depth=model.BODY_MAX_DEPTH,
                    parse=lambda call: asyncio.to_thread(parser, call.body, *args))


ENDPOINTS = [
    _get("/api/templates.list", list_templates, model.parse_list),
    _get("/api/templates.get", get_template, model.parse_get),
    _post("/api/templates.create", create_template, model.parse_template, "create"),
    _post("/api/templates.update", update_template, model.parse_template, "update"),
    _post("/api/templates.delete", delete_template, model.parse_delete),
    _post("/api/templates.compile", compile_template, model.parse_compile, write=False),
    _get("/api/templateBlocks.list", list_blocks, model.parse_block_list),
    _get("/api/templateBlocks.get", get_block, model.parse_block_get),
    _post("/api/templateBlocks.create", create_block, model.parse_block, "create"),
    _post("/api/templateBlocks.update", update_block, model.parse_block, "update"),
    _post("/api/templateBlocks.delete", delete_block, model.parse_block_delete),
]
