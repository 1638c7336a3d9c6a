"""What the tracking tests share (imported as `trackkit`): the engagement contract's section 6
fixture as far as tracking needs it (tracking on, E = https://t.example, a fake transactional
provider, a template with the check-1 links), a send through transactional.send whose HTML is read
from the queue, the tokens found in it, and reads of what a hit recorded."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from postroom.auth import model as auth_model, store as auth_store
from postroom.delivery import store as delivery_store
from postroom.workspaces import store as ws_store

from conftest import Workspace

E = "https://t.example"
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Safari/537.36")
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"

# Check 1's links (a transactional send has no list, so the workspace's own link is the
# preference center's), a link with a query whose order must stay, one already tagged, and the
# template variable tracking_opens_url.
MJML = ("<mjml><mj-body><mj-section><mj-column><mj-text>"
        "<p>Hello {{ contact.first_name }}</p>"
        '<p><a href="https://x.test/a?b=2&amp;a=1">A</a> <a href="https://x.test/b?utm_campaign=x">B</a> '
        '<a href="mailto:a@b.c">M</a> <a href="#top">T</a> <a href="{{ notification_center_url }}">P</a></p>'
        "<p>o:[{{ tracking_opens_url }}]</p>"
        "</mj-text></mj-column></mj-section></mj-body></mjml>")

TOKEN_RE = re.compile(r'(?:href|src)="https://t\.example/([rt])/([A-Za-z0-9_-]+)"')


async def workspace(pool, settings, *, tracking: bool = True, utm: dict | None = None) -> Workspace:
    """A workspace with an owner key, template `news_tpl`, notification `news` (with `utm` as its
    tracking settings) and a fake integration as its transactional provider."""
    ws_id = f"ws_{secrets.token_hex(6)}"
    async with pool.acquire() as conn:
        await ws_store.create_with_owner(conn, ws_id, f"Workspace {ws_id}", {}, None)
        owner = await auth_store.upsert_user(conn, f"owner-{ws_id}@example.com", "Owner", "api_key")
        await auth_store.add_member(conn, ws_id, owner["id"], "owner", auth_model.full_permissions())
    ws = Workspace(ws_id, auth_model.issue_token(settings.key_bytes, owner["id"], "api_key"), settings, pool)
    async with pool.acquire() as conn:  # the in-memory provider kind the test settings accept
        integration_id = (await delivery_store.create_integration(
            conn, settings.key_bytes, ws_id, "Fake relay", "fake", {"label": "x"}, {"api_key": "k"},
            [{"email": "noreply@acme.test", "name": "Acme", "is_default": True}], 6000, None))["id"]
    await set_settings(pool, ws, {"email_tracking_enabled": tracking, "custom_endpoint_url": E + "/",
                                  "transactional_email_provider_id": integration_id})
    ws.integration_id = integration_id
    return ws


async def set_settings(pool, ws, values: dict) -> None:
    await pool.execute("UPDATE workspaces SET settings = coalesce(settings, '{}'::jsonb) || $2::jsonb"
                       " WHERE id = $1", ws.id, values)


async def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


async def add_notification(client, ws, utm: dict | None = None, mjml: str = MJML) -> None:
    await ok(await client.post("/api/templates.create", headers=ws.headers, json={
        "workspace_id": ws.id, "id": "news_tpl", "name": "News", "channel": "email", "category": "transactional",
        "email": {"editor_mode": "code", "mjml_source": mjml, "subject": "Hi"}}), 201)
    await ok(await client.post("/api/transactional.create", headers=ws.headers, json={
        "workspace_id": ws.id, "notification": {"id": "news", "name": "News",
                                                "channels": {"email": {"template_id": "news_tpl"}},
                                                "tracking_settings": {"enable_tracking": True, **(utm or {})}}}), 201)


async def send(client, pool, ws, email: str = "ana@example.com") -> tuple[str, str]:
    """transactional.send of `news` to `email`: (message id, the HTML the render made), unqueued."""
    body = await ok(await client.post("/api/transactional.send", headers=ws.headers, json={
        "workspace_id": ws.id, "notification": {"id": "news", "contact": {"email": email, "first_name": "Ana"},
                                                "channels": ["email"]}}))
    return body["message_id"], await unqueue(pool, ws, body["message_id"])


async def unqueue(pool, ws, message_id: str) -> str:
    """The rendered HTML of a queued message, its queue row taken away: the message stays in the
    history (all tracking needs), and no worker of another test meets a provider kind it lacks."""
    return await pool.fetchval("DELETE FROM email_queue WHERE workspace_id = $1 AND message_id = $2"
                               " RETURNING payload->>'html_content'", ws.id, message_id)


def tokens_of(html: str) -> dict[str, list[str]]:
    """The click tokens (in document order) and open tokens of a rendered message."""
    out: dict[str, list[str]] = {"r": [], "t": []}
    for kind, token in TOKEN_RE.findall(html):
        out[kind].append(token)
    return out


def path_of(url: str) -> str:
    return urlsplit(url).path


async def message(pool, ws, message_id: str):
    return await pool.fetchrow("SELECT * FROM message_history WHERE workspace_id = $1 AND id = $2", ws.id, message_id)


async def entries(pool, ws, message_id: str) -> list[tuple[str, dict]]:
    rows = await pool.fetch("SELECT kind, changes FROM contact_timeline WHERE workspace_id = $1"
                            " AND entity_type = 'message_history' AND entity_id = $2 ORDER BY id", ws.id, message_id)
    return [(r["kind"], r["changes"]) for r in rows]


async def events(pool, ws, message_id: str) -> list[tuple[str, dict]]:
    rows = await pool.fetch("SELECT type, data FROM events WHERE workspace_id = $1 AND type LIKE 'email.%'"
                            " AND data->>'message_id' = $2 ORDER BY id", ws.id, message_id)
    return [(r["type"], r["data"]) for r in rows]


async def recorded(pool, ws, message_id: str) -> tuple:
    """Everything a hit can write about a message: its times, timeline kinds, events, link counts."""
    m = await message(pool, ws, message_id)
    clicks = await pool.fetch("SELECT link_index, clicks FROM message_link_clicks WHERE workspace_id = $1"
                              " AND message_id = $2 ORDER BY link_index", ws.id, message_id)
    return (m["opened_at"], m["clicked_at"], [k for k, _ in await entries(pool, ws, message_id)],
            [t for t, _ in await events(pool, ws, message_id)], [tuple(c) for c in clicks])
