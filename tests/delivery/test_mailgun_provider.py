"""Mailgun (delivery-contract 1.2, 2.4, 2.8): the form request (urlencoded, multipart with files),
the region, its answer, its classification rows and its settings, against the local fake."""

from __future__ import annotations

import functools

import pytest

from fakes.http_providers import PDF, PNG, MailgunFake, Upload, basic, full_message, plain_message, provider_fixtures
from postroom.delivery.providers.base import Context
from postroom.delivery.providers.mailgun import MailgunProvider, Settings

MESSAGE_ID = "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"

served, fake, send = provider_fixtures(functools.partial(MailgunFake, domain="mg.acme.test", api_key="k"))


async def test_without_files_the_request_is_a_urlencoded_form(fake, send):
    sent, request = await send.exchange(full_message(attachments=()))
    assert request.path == "/v3/mg.acme.test/messages"
    assert (request.headers["authorization"], request.headers["content-type"]) == (
        basic("api", "k"), "application/x-www-form-urlencoded")
    assert request.body == {
        "from": ['"Acme, Inc." <noreply@acme.test>'],
        "to": ["jane@example.com"],
        "cc": ["c@example.com"],
        "bcc": ["b@example.com"],
        "subject": ["Hi Jane"],
        "html": ['<p>Hi Jane</p><img src="cid:logo_1.png">'],
        "text": ["Hi Jane"],
        "h:Reply-To": ["r@acme.test"],
        "h:List-Unsubscribe": ["<https://acme.test/u/1>"],
        "h:List-Unsubscribe-Post": ["List-Unsubscribe=One-Click"],
        "h:X-Message-ID": [MESSAGE_ID],
        "v:notifuse_message_id": [MESSAGE_ID],
    }
    assert sent.provider_message_id == fake.ids[0]


async def test_with_files_the_request_is_multipart_with_attachment_and_inline_parts(fake, send):
    _, request = await send.exchange(full_message())
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    files = {name: values for name, values in request.body.items() if name in ("attachment", "inline")}
    assert files == {"attachment": [Upload("invoice.pdf", "application/pdf", PDF)],
                     "inline": [Upload("logo_1.png", "image/png", PNG)]}   # the cid the HTML names
    fields = {name: values for name, values in request.body.items() if name not in files}
    assert fields["v:notifuse_message_id"] == [MESSAGE_ID]
    assert fields["html"] == ['<p>Hi Jane</p><img src="cid:logo_1.png">']
    assert list(fields) == ["from", "to", "cc", "bcc", "subject", "html", "text", "h:Reply-To",
                            "h:List-Unsubscribe", "h:List-Unsubscribe-Post", "h:X-Message-ID",
                            "v:notifuse_message_id"]


async def test_each_copy_is_a_field_of_its_own(fake, send):
    await send(plain_message(cc=("c1@example.com", "c2@example.com"), bcc=("b1@example.com", "b2@example.com")))
    body = fake.requests[0].body
    assert (body["cc"], body["bcc"]) == (["c1@example.com", "c2@example.com"], ["b1@example.com", "b2@example.com"])
    assert "text" not in body and "h:Reply-To" not in body and "h:List-Unsubscribe" not in body


@pytest.mark.parametrize("region, host", [("EU", "api.eu.mailgun.net"), ("eu", "api.eu.mailgun.net"),
                                          ("US", "api.mailgun.net"), ("", "api.mailgun.net"),
                                          ("europe", "api.mailgun.net")])
def test_region_eu_in_any_case_is_the_eu_host_and_anything_else_is_us(region, host):
    provider = MailgunProvider(Settings.parse({"domain": "d.test", "region": region, "api_key": "k"}),
                               Context(client=None, base_urls={}))
    assert provider.url == f"https://{host}/v3/d.test/messages"


# A 400 is recipient only when Mailgun's text opens on the to, cc or bcc parameter.
TEXTS_400 = {
    "'to' parameter is not a valid address. please check documentation": "recipient",
    "'cc' parameter is not a valid address. please check documentation": "recipient",
    "'bcc' parameter is not a valid address. please check documentation": "recipient",
    "to parameter is missing": "recipient",
    "'from' parameter is not a valid address. please check documentation": "message",
    "Too many recipients; max is 1000": "message",
    "Send options (parameters starting with o:, h:, or v:) are limited to 16 kB total": "message",
}


@pytest.mark.parametrize("text", TEXTS_400)
async def test_a_400_is_recipient_only_when_it_names_a_recipient_parameter(send, text):
    failure = await send.answered(MailgunFake.error(400, text))
    assert (failure.cls, failure.status_info) == (TEXTS_400[text], f"mailgun: HTTP 400: {text}")


@pytest.mark.parametrize("status, cls", [(413, "message"), (403, "provider"), (404, "provider"), (429, "throttled"),
                                         (500, "provider"), (409, "message")])
async def test_the_other_statuses(send, status, cls):
    failure = await send.answered(MailgunFake.error(status, "Domain not found: mg.acme.test"))
    assert failure.cls == cls
    assert failure.status_info == f"mailgun: HTTP {status}: Domain not found: mg.acme.test"   # the text is kept


def test_settings_keep_the_region_as_given():
    assert Settings.parse({"domain": "d.test", "api_key": "k"}) == Settings("d.test", "", "k")
    assert Settings.parse({"domain": "d.test", "region": "EU", "api_key": "k"}).region == "EU"
