"""What every sender of delivery shares on the way to the queue (transactional sends, test sends,
double opt-in confirmations): the workspace's settings, the secret behind `email_hmac` in
notification-center and unsubscribe links, and a render through the one render path off the
event loop."""

from __future__ import annotations

import asyncio
from typing import Mapping

from postroom.templates import render as engine
from postroom.workspaces import secrets as ws_secrets, store as workspaces_store

# The workspace secret behind `email_hmac` in notification-center and unsubscribe links (1.4):
# the preference center checks links with the same name. Used as its hex string (5.2).
EMAIL_HMAC_SECRET = "email_hmac"


async def workspace_settings(conn, workspace_id: str) -> dict:
    """The workspace's settings object ({} when it has none or does not exist)."""
    workspace = await workspaces_store.get(conn, workspace_id)
    return (workspace["settings"] if workspace else None) or {}


async def email_hmac_secret(conn, workspace_id: str, key_bytes: bytes) -> str:
    return (await ws_secrets.workspace_secret(conn, workspace_id, key_bytes, EMAIL_HMAC_SECRET)).hex()


async def render(content: engine.Content, data: Mapping, options: engine.Options) -> engine.Result:
    """engine.render in a thread: Liquid may take up to its 5 s limit, and must not hold the loop."""
    return await asyncio.to_thread(engine.render, content, data, options)
