"""The fixture of the engagement contract's checks (section 6) for the preference center: a
workspace whose email_hmac secret is the contract's test key, E = https://t.example, lists `news`
("Newsletter", public, single opt-in) and `vip` (private, double opt-in), ana active on news, and
a broadcast message m1 to ana on news."""

from __future__ import annotations

import dataclasses
import uuid

from postroom.platform import secrets as sealing
from postroom.templates.render.context import Sending, template_data
from postroom.workspaces import secrets as ws_secrets

from helpers import add, make_list, snapshot

SECRET_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
H = "d854a24c7a4bc28f5062e3517332e0b8c6f7ed618c888d283f85ebedc490d85f"
E = "https://t.example"
ANA = "ana@example.com"


@dataclasses.dataclass
class Fixture:
    ws: object
    m1: str

    @property
    def id(self) -> str:
        return self.ws.id


async def set_secret(pool, settings, ws_id: str, secret_hex: str = SECRET_HEX) -> None:
    sealed = sealing.encrypt(settings.key_bytes, bytes.fromhex(secret_hex), ws_secrets.secret_context(ws_id, "email_hmac"))
    await pool.execute("INSERT INTO workspace_secrets (workspace_id, name, sealed) VALUES ($1, 'email_hmac', $2)"
                       " ON CONFLICT (workspace_id, name) DO UPDATE SET sealed = EXCLUDED.sealed", ws_id, sealed)


async def add_message(pool, ws_id: str, email: str, list_id: str | None, message_id: str | None = None,
                      broadcast_id: str | None = "b1") -> str:
    message_id = message_id or str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO message_history (workspace_id, id, contact_email, broadcast_id, list_id, template_id,"
        " template_version, channel, status) VALUES ($1, $2, $3, $4, $5, 'tpl', 1, 'email', 'sent')",
        ws_id, message_id, email, broadcast_id, list_id)
    return message_id


async def make(client, pool, settings, ws, message_id: str | None = None) -> Fixture:
    await pool.execute("UPDATE workspaces SET settings = settings || $2::jsonb WHERE id = $1", ws.id,
                       {"custom_endpoint_url": E, "website_url": "https://acme.example/",
                        "logo_url": "https://acme.example/logo.png", "email_tracking_enabled": True})
    await set_secret(pool, settings, ws.id)
    await make_list(client, ws, "news", name="Newsletter", is_public=True, description="Monthly news")
    await make_list(client, ws, "vip", name="VIP", is_public=False, is_double_optin=True)
    r = await client.post("/api/contacts.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": ANA, "first_name": "Ana", "phone": "+15550100"}})
    assert r.status_code == 200, r.text
    await add(pool, ws, "news", ANA, "active")
    m1 = await add_message(pool, ws.id, ANA, "news", message_id)
    return Fixture(ws, m1)


def links(fx: Fixture, email: str = ANA, list_id: str = "news", list_name: str = "Newsletter",
          secret: str = SECRET_HEX) -> dict:
    """The template data of m1 as every sender builds it."""
    return template_data(Sending(fx.id, E, "https://acme.example/", secret, fx.m1, 1700000000,
                                 contact={"email": email}, list={"id": list_id, "name": list_name}))


def local(url: str) -> str:
    """path?query of a URL on E, for the test client."""
    assert url.startswith(E + "/"), url
    return url[len(E):]


async def status_of(pool, ws_id: str, list_id: str, email: str = ANA):
    return await pool.fetchval("SELECT status FROM contact_lists WHERE workspace_id = $1 AND list_id = $2"
                               " AND email = $3 AND deleted_at IS NULL", ws_id, list_id, email)


async def outbox(pool, ws_id: str) -> list[str]:
    return [r["type"] for r in await pool.fetch("SELECT type FROM events WHERE workspace_id = $1 ORDER BY id", ws_id)]


async def timeline(pool, ws_id: str) -> list[str]:
    return [r["kind"] for r in await pool.fetch("SELECT kind FROM contact_timeline WHERE workspace_id = $1 ORDER BY id",
                                                ws_id)]


async def unsubscribed_at(pool, ws_id: str, message_id: str):
    return await pool.fetchval("SELECT unsubscribed_at FROM message_history WHERE workspace_id = $1 AND id = $2",
                               ws_id, message_id)


async def stored(pool, ws_id: str) -> dict:
    """Every row of the workspace but the rate-limit counters (which count every attempt)."""
    out = await snapshot(pool, ws_id)
    out.pop("subscribe_rate_limits", None)
    return out
