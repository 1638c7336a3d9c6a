"""Postmark (delivery-contract 1.2, 2.3, 2.8): the exact request, its answer, its classification
rows and its settings, against the local fake."""

from __future__ import annotations

import base64
import functools

import pytest

from fakes.http_providers import PDF, PNG, PostmarkFake, full_message, plain_message, provider_fixtures
from postroom.delivery.providers.postmark import Settings

served, fake, send = provider_fixtures(functools.partial(PostmarkFake, server_token="tok"))


async def test_the_request_carries_every_field_as_postmark_documents_it(fake, send):
    sent, request = await send.exchange(full_message())
    assert request.path == "/email"
    assert {name: request.headers[name] for name in ("x-postmark-server-token", "accept", "content-type")} == {
        "x-postmark-server-token": "tok", "accept": "application/json", "content-type": "application/json"}
    assert request.body == {
        "From": '"Acme, Inc." <noreply@acme.test>',
        "To": "jane@example.com",
        "Cc": "c@example.com",
        "Bcc": "b@example.com",
        "Subject": "Hi Jane",
        "HtmlBody": '<p>Hi Jane</p><img src="cid:logo_1.png">',
        "TextBody": "Hi Jane",
        "ReplyTo": "r@acme.test",
        "MessageStream": "outbound",
        "Metadata": {"notifuse_message_id": "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"},
        "Headers": [{"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
                    {"Name": "List-Unsubscribe", "Value": "<https://acme.test/u/1>"},
                    {"Name": "X-Message-ID", "Value": "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"}],
        "Attachments": [
            {"Name": "invoice.pdf", "Content": base64.b64encode(PDF).decode(), "ContentType": "application/pdf"},
            {"Name": "logo 1.png", "Content": base64.b64encode(PNG).decode(), "ContentType": "image/png",
             "ContentID": "cid:logo_1.png"}],
    }
    assert sent.provider_message_id == fake.ids[0]


async def test_the_least_message_omits_every_optional_field(fake, send):
    await send(plain_message(from_name="", cc=("jane@EXAMPLE.com",)))
    assert fake.requests[0].body == {
        "From": "noreply@acme.test", "To": "jane@example.com", "Subject": "Hi Jane", "HtmlBody": "<p>Hi Jane</p>",
        "MessageStream": "outbound", "Metadata": {"notifuse_message_id": "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"},
        "Headers": [{"Name": "X-Message-ID", "Value": "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"}]}


async def test_copies_are_comma_joined_and_a_mailto_unsubscribe_has_no_post_header(fake, send):
    await send(plain_message(cc=("c1@example.com", "c2@example.com"), bcc=("b1@example.com", "b2@example.com"),
                             list_unsubscribe_url="mailto:u@acme.test", from_name="Zoë"))
    body = fake.requests[0].body
    assert (body["Cc"], body["Bcc"]) == ("c1@example.com,c2@example.com", "b1@example.com,b2@example.com")
    assert [h["Name"] for h in body["Headers"]] == ["List-Unsubscribe", "X-Message-ID"]
    assert body["From"] == "=?utf-8?b?Wm/Dqw==?= <noreply@acme.test>"


async def test_the_message_stream_is_the_integrations(fake, send):
    await send(plain_message(), message_stream="broadcasts")
    assert fake.requests[0].body["MessageStream"] == "broadcasts"


# Code 300 is recipient only for Postmark's own address-parsing texts about To, Cc or Bcc.
CODE_300 = {
    "Invalid 'To' address: 'jane@example'.": "recipient",
    "Error parsing 'Cc': Illegal email address 'x'. It must contain the '@' symbol.": "recipient",
    "Invalid 'Bcc' address: 'y'.": "recipient",
    "Invalid 'From' address: 'noreply@acme.test' is not a verified sender signature.": "message",
    "Provide either email TextBody or HtmlBody or both.": "message",
    "Header 'X' is invalid; To and Cc look fine.": "message",            # To named, not as a quoted field
    "Metadata value is invalid: \"Invalid 'To' address\".": "message",   # not at the start
}


@pytest.mark.parametrize("text", CODE_300)
async def test_code_300_is_recipient_only_when_it_opens_on_a_recipient_field(send, text):
    failure = await send.answered(PostmarkFake.error(422, 300, text))
    assert (failure.cls, failure.status_info) == (CODE_300[text], f"postmark: HTTP 422 300: {text}")


@pytest.mark.parametrize("status, code, cls", [
    (422, 406, "recipient"),                                           # inactive recipient
    (422, 412, "message"), (422, 411, "message"), (422, 402, "message"),
    (422, 400, "provider"), (422, 401, "provider"), (422, 405, "provider"),   # sender signature, account
    (401, 10, "provider"), (429, 429, "throttled"), (500, 0, "provider"),
    (404, 0, "message"),                                               # any other 4xx
])
async def test_the_other_codes_and_statuses(send, status, code, cls):
    failure = await send.answered(PostmarkFake.error(status, code, "Postmark says no."))
    assert (failure.cls, failure.status_info) == (cls, f"postmark: HTTP {status} {code}: Postmark says no.")


async def test_the_contracts_example_status_info(send):
    text = "You tried to send to recipient(s) that have been marked as inactive."
    failure = await send.answered(PostmarkFake.error(422, 406, text))
    assert failure.status_info == f"postmark: HTTP 422 406: {text}"


def test_the_message_stream_defaults_to_outbound():
    assert Settings.parse({"server_token": "t"}) == Settings("t", "outbound")
    assert Settings.parse({"server_token": "t", "message_stream": ""}).message_stream == "outbound"
    assert Settings.parse({"server_token": "t", "message_stream": "broadcasts"}).message_stream == "broadcasts"
