"""What the provider-event tests share (imported as `inboundkit`): an app whose SNS fetches go to a
local SNS fake (the POSTROOM_SNS_BASE_URL hook), and the contract's fixture (engagement-contract
6): contact ana active on `news` and `vip`, one integration per provider with a known webhook
secret S, and broadcast message m1 to ana on `news`."""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl
from urllib.parse import urlencode

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fakes.asgi_server import serve
from fakes.sns_fake import SnsFake
from helpers import add, make_contacts, make_list

from postroom.app import create_app
from postroom.delivery import store as delivery_store
from postroom.delivery.model import Outgoing, Source
from postroom.inbound import sns, store
from postroom.platform import outbound

S = "S-known-webhook-secret-0123456789abcdefghij"
ANA = "ana@example.com"
SIGNING_KEY = "whsk-test"
SENDERS = [{"email": "noreply@acme.test", "name": "Acme", "is_default": True}]
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(SENDGRID_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()

PROVIDERS = {
    "ses": {"region": "eu-west-1", "access_key": "AKIDTEST", "secret_key": "ses-secret"},
    "postmark": {"server_token": "pm-token"},
    "mailgun": {"domain": "mg.acme.test", "api_key": "mg-key", "webhook_signing_key": SIGNING_KEY},
    "sparkpost": {"endpoint": "https://api.sparkpost.com", "api_key": "sp-key"},
    "mailjet": {"api_key": "mj-key", "secret_key": "mj-secret"},
    "sendgrid": {"api_key": "sg-key", "webhook_public_key": SENDGRID_PUBLIC},
    "smtp": {"host": "smtp.acme.test", "port": 587},
}


@dataclasses.dataclass
class World:
    ws: object
    client: httpx.AsyncClient
    pool: object
    integrations: dict
    m1: str

    @property
    def id(self) -> str:
        return self.ws.id

    def url(self, kind: str, token: str | None = S, **extra) -> str:
        params = {"provider": kind, "workspace_id": self.id, "integration_id": self.integrations[kind]}
        if token is not None:
            params["token"] = token
        return "/webhooks/email?" + urlencode({**params, **extra})

    async def post(self, kind: str, body, token: str | None = S, headers: dict | None = None,
                   content: bytes | None = None, **extra) -> httpx.Response:
        raw = content if content is not None else json.dumps(body).encode()
        return await self.client.post(self.url(kind, token, **extra), content=raw,
                                      headers={"Content-Type": "application/json", **(headers or {})})

    async def message(self, message_id: str | None = None):
        return await self.pool.fetchrow("SELECT * FROM message_history WHERE workspace_id = $1 AND id = $2",
                                        self.id, message_id or self.m1)

    async def stored(self) -> list:
        return await self.pool.fetch("SELECT * FROM inbound_webhook_events WHERE workspace_id = $1"
                                     " ORDER BY timestamp, id", self.id)

    async def statuses(self, email: str = ANA) -> dict:
        rows = await self.pool.fetch("SELECT list_id, status FROM contact_lists WHERE workspace_id = $1"
                                     " AND email = $2 AND deleted_at IS NULL", self.id, email)
        return {r["list_id"]: r["status"] for r in rows}

    async def outbox(self, prefix: str = "") -> list:
        rows = await self.pool.fetch("SELECT type, data FROM events WHERE workspace_id = $1 AND type LIKE $2"
                                     " ORDER BY id", self.id, prefix + "%")
        return [(r["type"], r["data"]) for r in rows]

    async def timeline(self, kind: str | None = None) -> list:
        rows = await self.pool.fetch("SELECT kind, entity_type, entity_id, changes FROM contact_timeline"
                                     " WHERE workspace_id = $1 AND ($2::text IS NULL OR kind = $2) ORDER BY id",
                                     self.id, kind)
        return [tuple(r) for r in rows]

    async def send(self, email: str = ANA, list_id: str | None = "news", kind: str = "postmark",
                   source: Source = Source.BROADCAST) -> str:
        """A message in the history (as a send records it)."""
        out = Outgoing(workspace_id=self.id, integration_id=self.integrations[kind], contact_email=email,
                       from_address="noreply@acme.test", from_name="Acme", subject="Hi", html="<p>Hi</p>",
                       template_id="news", template_version=1, source_type=source, source_id="b1", list_id=list_id)
        async with self.pool.acquire() as conn:
            message_id, _ = await delivery_store.enqueue(conn, self.ws._settings.key_bytes, out, kind)
            await conn.execute("DELETE FROM email_queue WHERE workspace_id = $1", self.id)
        return message_id


async def integration(client, ws, kind: str, settings: dict | None = None) -> str:
    body = {"workspace_id": ws.id, "name": f"{kind} relay", "type": "email",
            "provider": {"kind": kind, kind: settings or PROVIDERS[kind], "senders": SENDERS,
                         "rate_limit_per_minute": 600}}
    r = await client.post("/api/workspaces.createIntegration", headers=ws.headers, json=body)
    assert r.status_code == 201, r.text
    return r.json()["integration_id"]


async def make_world(client, pool, settings, ws) -> World:
    await client.post("/api/contacts.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": ANA, "first_name": "Ana", "phone": "+33100000000"}})
    await make_list(client, ws, "news", name="Newsletter", is_public=True)
    await make_list(client, ws, "vip", is_double_optin=True)
    await add(pool, ws, "news", ANA, "active")
    await add(pool, ws, "vip", ANA, "active")
    ids = {kind: await integration(client, ws, kind) for kind in PROVIDERS}
    async with pool.acquire() as conn:
        for integration_id in ids.values():
            await store.set_secret(conn, settings.key_bytes, ws.id, integration_id, S)
    world = World(ws, client, pool, ids, "")
    world.m1 = await world.send()
    return world


async def fresh_contact(world: World, email: str, lists=("news", "vip")) -> None:
    await make_contacts(world.pool, world.ws, [email])
    for list_id in lists:
        await add(world.pool, world.ws, list_id, email, "active")


def fixtures():
    """The fixtures of a provider-event test module, taken as
    `sns_fake, inbound_client, world = inboundkit.fixtures()` (a conftest.py here would shadow
    tests/conftest.py): the SNS fake served once per module, a client of an app hooked to it, and
    the contract's fixture in a new workspace for each test."""

    @pytest.fixture(scope="module")
    async def sns_fake():
        """Served over HTTPS with a certificate of a throwaway CA, as the real host is."""
        fake = SnsFake()
        ca = trustme.CA()
        with ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.tempfile() as pem:
            async with serve(fake, ssl_certfile=pem) as server:
                fake.url = f"https://127.0.0.1:{server.port}"
                fake.trust = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
                ca.configure_trust(fake.trust)
                yield fake

    @pytest.fixture(scope="module")
    async def inbound_client(settings, dsn, pool, contract, sns_fake):
        """httpx on an app whose SNS fetches go to the fake (the POSTROOM_SNS_BASE_URL hook, on a
        guarded client that trusts the fake's CA), every exchange checked against the document."""
        app = create_app(dataclasses.replace(settings, sns_base_url=sns_fake.url), dsn, pool=pool)
        app.state.inbound_sns = sns.Sns(sns_fake.url, outbound.Client(sns.TIMEOUT, body_limit=sns.CERT_MAX,
                                                                      ssl_context=sns_fake.trust))

        async def check(response: httpx.Response) -> None:
            await response.aread()
            request = response.request
            contract.check(request.method, request.url.path, request.url.query.decode("ascii", "replace"),
                           request.content, response.status_code, response.headers, response.content)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://postroom.test",
                                     event_hooks={"response": [check]}) as c:
            yield c
        await app.state.inbound_sns.aclose()

    @pytest.fixture
    async def world(inbound_client, pool, settings, ws):
        return await make_world(inbound_client, pool, settings, ws)

    return sns_fake, inbound_client, world
