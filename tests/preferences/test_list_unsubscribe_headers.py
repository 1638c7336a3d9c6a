"""The List-Unsubscribe pair of marketing mail (engagement contract 2.3, check 20) and, end to end,
Gmail's one-click POST to the URL of a message that went through the send queue."""

from __future__ import annotations

import dataclasses
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from postroom.delivery import mime, store as delivery_store
from postroom.delivery.model import Outgoing, Source, marketing_unsubscribe
from postroom.delivery.providers.fake import Fake
from postroom.delivery.worker import SendWorker
from postroom.templates.render.context import Sending, template_data

from helpers import provider_message
import prefkit
from prefkit import ANA, E, H

SENDER = {"id": "0d9a5b4e-0000-4000-8000-000000000001", "email": "noreply@acme.test", "name": "Acme",
          "is_default": True}


def wire(message) -> dict:
    parsed = message_from_bytes(mime.to_bytes(message), policy=default_policy)
    return {name: str(parsed[name]) for name in ("List-Unsubscribe", "List-Unsubscribe-Post") if parsed[name]}


def data(endpoint: str, with_list: bool = True) -> dict:
    return template_data(Sending("ws_1", endpoint, None, prefkit.SECRET_HEX, "m1", 1700000000,
                                 contact={"email": ANA}, list={"id": "news", "name": "Newsletter"} if with_list else None))


def test_marketing_mail_gets_the_one_click_pair():
    options = marketing_unsubscribe(data(E))
    assert options == {"list_unsubscribe_url": f"{E}/unsubscribe-oneclick?email=ana%40example.com&email_hmac={H}"
                                               "&lids=news&mid=m1&wid=ws_1"}
    headers = wire(provider_message(**options))
    assert headers == {"List-Unsubscribe": f"<{options['list_unsubscribe_url']}>",
                       "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def test_the_mailbox_of_an_inbound_address_is_added():
    options = marketing_unsubscribe(data(E), mailto="unsubscribe+tok@bounces.acme.test")
    headers = wire(provider_message(**options))
    assert headers["List-Unsubscribe"] == (f"<{options['list_unsubscribe_url']}>, "
                                           "<mailto:unsubscribe+tok@bounces.acme.test>")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("endpoint, with_list", [("http://t.example", True), (E, False)],
                         ids=["endpoint_not_https", "transactional"])
def test_no_pair_without_https_or_without_a_list(endpoint, with_list):
    options = marketing_unsubscribe(data(endpoint, with_list))
    assert options == {}
    assert wire(provider_message(**options)) == {}


async def test_a_queued_broadcast_carries_a_url_gmail_can_post(client, pool, settings, ws):
    fx = await prefkit.make(client, pool, settings, ws)
    async with pool.acquire() as conn:
        integration = await delivery_store.create_integration(conn, settings.key_bytes, ws.id, "Relay", "fake",
                                                              {"label": "x"}, {"api_key": "k"}, [SENDER], 6000, None)
    message_id = "5d1f0c3e-0000-4000-8000-0000000000aa"
    links = template_data(Sending(ws.id, E, None, prefkit.SECRET_HEX, message_id, 1700000000,
                                  contact={"email": ANA}, list={"id": "news", "name": "Newsletter"}))
    out = Outgoing(workspace_id=ws.id, integration_id=integration["id"], contact_email=ANA,
                   from_address="noreply@acme.test", from_name="Acme", subject="News", html="<p>News</p>",
                   template_id="tpl", template_version=1, source_type=Source.BROADCAST, source_id="b1",
                   message_id=message_id, list_id="news", email_options=marketing_unsubscribe(links))
    async with pool.acquire() as conn:
        await delivery_store.enqueue(conn, settings.key_bytes, out, "fake", 3)
    fake = Fake()
    worker = SendWorker(pool, dataclasses.replace(settings, delivery_fake_provider=True), provider_factory=fake.factory)
    try:
        for _ in range(50):      # the loop claims every workspace's rows: wait for this message's call
            await worker.run_once()
            if any(c.message.message_id == message_id for c in fake.calls):
                break
    finally:
        await worker.aclose()
    (call,) = [c for c in fake.calls if c.message.message_id == message_id]
    headers = wire(call.message)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"][1:-1]
    r = await client.post(prefkit.local(url), content=b"List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.status_of(pool, ws.id, "news") == "unsubscribed"
    assert await prefkit.unsubscribed_at(pool, ws.id, message_id) is not None
    assert fx.m1 != message_id
