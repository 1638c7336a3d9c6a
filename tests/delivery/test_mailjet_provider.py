"""Mailjet (delivery-contract 1.2, 2.5, 2.8): the v3.1 request, sandbox mode, its answer, its
classification rows (by `ErrorRelatedTo`) and its settings, against the local fake."""

from __future__ import annotations

import base64
import functools

import pytest

from fakes.http_providers import PDF, PNG, MailjetFake, basic, full_message, plain_message, provider_fixtures
from postroom.delivery.providers.mailjet import Settings

MESSAGE_ID = "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"

served, fake, send = provider_fixtures(functools.partial(MailjetFake, api_key="key", secret_key="secret"))


async def test_the_request_carries_every_field_as_mailjet_documents_it(fake, send):
    sent, request = await send.exchange(full_message(), sandbox_mode=True)
    assert request.path == "/v3.1/send"
    assert request.headers["authorization"] == basic("key", "secret")   # HTTP Basic, key:secret
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"Messages": [{
        "From": {"Email": "noreply@acme.test", "Name": "Acme, Inc."},   # a separate name field: raw
        "To": [{"Email": "jane@example.com"}],
        "Cc": [{"Email": "c@example.com"}],
        "Bcc": [{"Email": "b@example.com"}],
        "Subject": "Hi Jane",
        "HTMLPart": '<p>Hi Jane</p><img src="cid:logo_1.png">',
        "TextPart": "Hi Jane",
        "CustomID": MESSAGE_ID,
        "ReplyTo": {"Email": "r@acme.test"},
        "Headers": {"List-Unsubscribe": "<https://acme.test/u/1>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Message-ID": MESSAGE_ID},
        "Attachments": [{"ContentType": "application/pdf", "Filename": "invoice.pdf",
                         "Base64Content": base64.b64encode(PDF).decode()}],
        "InlinedAttachments": [{"ContentType": "image/png", "Filename": "logo 1.png",
                                "Base64Content": base64.b64encode(PNG).decode(), "ContentID": "logo_1.png"}],
    }], "SandboxMode": True}
    assert sent.provider_message_id == fake.ids[0]


async def test_the_least_message_omits_every_optional_field_and_sandbox_mode(fake, send):
    await send(plain_message(from_name=""))
    assert fake.requests[0].body == {"Messages": [{
        "From": {"Email": "noreply@acme.test"}, "To": [{"Email": "jane@example.com"}], "Subject": "Hi Jane",
        "HTMLPart": "<p>Hi Jane</p>", "CustomID": MESSAGE_ID, "Headers": {"X-Message-ID": MESSAGE_ID}}]}


@pytest.mark.parametrize("related, cls", [
    (["To[0].Email"], "recipient"), (["Cc[0].Email"], "recipient"), (["Bcc[1].Email"], "recipient"),
    (["To"], "recipient"), (["HTMLPart", "To[0]"], "recipient"),
    (["From.Email"], "message"), (["HTMLPart", "TemplateID"], "message"), ([], "message"),
    (["ToName"], "message"),   # not a recipient property, though it starts with "To"
])
async def test_a_400_is_recipient_only_when_an_error_relates_to_a_recipient(fake, send, related, cls):
    failure = await send.answered(MailjetFake.error(400, "mj-0013", "Invalid value.", related))
    assert failure.cls == cls
    where = f" ({', '.join(related)})" if related else ""
    assert failure.status_info == f"mailjet: HTTP 400 mj-0013: Invalid value.{where}"


@pytest.mark.parametrize("status, cls", [(401, "provider"), (403, "provider"), (429, "throttled"),
                                         (500, "provider"), (404, "message")])
async def test_other_statuses(fake, send, status, cls):
    failure = await send.answered(MailjetFake.error(status, "mj-0000", "Refused."))
    assert failure.cls == cls
    assert failure.status_info == f"mailjet: HTTP {status} mj-0000: Refused."


def test_sandbox_mode_is_on_only_for_json_true():
    assert Settings.parse({"api_key": "k", "secret_key": "s"}) == Settings("k", "s", False)
    assert Settings.parse({"api_key": "k", "secret_key": "s", "sandbox_mode": True}).sandbox_mode is True
    assert Settings.parse({"api_key": "k", "secret_key": "s", "sandbox_mode": "false"}).sandbox_mode is False
