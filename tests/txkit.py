"""What the transactional tests share (imported as `txkit`): the delivery contract's section 8
fixture on a fresh workspace — template `welcome`, notification `welcome_email`, optionally the
SMTP integration `smtp1` on the sink as the transactional provider — and "Send S"."""

from __future__ import annotations

import copy

WELCOME_MJML = ("<mjml><mj-body><mj-section><mj-column>"
                "<mj-text><p>Hello {{ contact.first_name }}, your code is {{ code }}</p>"
                '<p><a href="https://shop.test/offer?x=1">Shop</a></p></mj-text>'
                "</mj-column></mj-section></mj-body></mjml>")
SENDERS = [{"email": "noreply@acme.test", "name": "Acme", "is_default": True},
           {"email": "second@acme.test", "name": "Second"}]


def welcome(ws_id: str, **email) -> dict:
    return {"workspace_id": ws_id, "id": "welcome", "name": "Welcome", "channel": "email",
            "category": "transactional",
            "email": {"editor_mode": "code", "mjml_source": WELCOME_MJML, "subject": "Hi {{ contact.first_name }}",
                      "reply_to": "tpl@acme.test", **email}}


def notification(notification_id: str = "welcome_email", template_id: str = "welcome", **extra) -> dict:
    return {"id": notification_id, "name": notification_id.title(),
            "channels": {"email": {"template_id": template_id}}, **extra}


async def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


async def setup(client, ws, *, smtp_port: int | None = None, settings: dict | None = None) -> str | None:
    """Template welcome and notification welcome_email; with `smtp_port`, the integration smtp1
    on the sink, named the transactional provider. Returns the integration id."""
    await ok(await client.post("/api/templates.create", headers=ws.headers, json=welcome(ws.id)), 201)
    await ok(await client.post("/api/transactional.create", headers=ws.headers,
                               json={"workspace_id": ws.id, "notification": notification()}), 201)
    integration_id = None
    if smtp_port is not None:
        r = await ok(await client.post("/api/workspaces.createIntegration", headers=ws.headers, json={
            "workspace_id": ws.id, "name": "smtp1", "type": "email",
            "provider": {"kind": "smtp", "senders": copy.deepcopy(SENDERS), "rate_limit_per_minute": 6000,
                         "smtp": {"host": "127.0.0.1", "port": smtp_port, "use_tls": False}}}), 201)
        integration_id = r["integration_id"]
    values = {"email_tracking_enabled": False, **(settings or {})}
    if integration_id:
        values["transactional_email_provider_id"] = integration_id
    await ws._pool.execute("UPDATE workspaces SET settings = coalesce(settings, '{}'::jsonb) || $2::jsonb"
                           " WHERE id = $1", ws.id, values)
    return integration_id


async def messages(client, ws, **params) -> list[dict]:
    """messages.list of the workspace with these filters."""
    r = await client.get("/api/messages.list", headers=ws.headers, params={"workspace_id": ws.id, **params})
    return (await ok(r))["messages"]


def send_s(ws_id: str, **changes) -> dict:
    n = {"id": "welcome_email", "contact": {"email": "jane@example.com", "first_name": "Jane"},
         "channels": ["email"], "data": {"code": "X1"}}
    for key, value in changes.items():
        if value is None:
            n.pop(key, None)
        else:
            n[key] = value
    return {"workspace_id": ws_id, "notification": n}
