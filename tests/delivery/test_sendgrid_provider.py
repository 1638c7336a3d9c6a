"""SendGrid (delivery-contract 1.2, 2.6, 2.8): the v3 request, the 202 answer with `X-Message-Id`,
its classification rows (by the error's `field`) and its settings, against the local fake."""

from __future__ import annotations

import base64
import functools

import pytest

from fakes.http_providers import PDF, PNG, Answer, SendGridFake, full_message, plain_message, provider_fixtures
from postroom.delivery.providers.sendgrid import Settings

MESSAGE_ID = "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"

served, fake, send = provider_fixtures(functools.partial(SendGridFake, api_key="SG.k"))


async def test_the_request_carries_every_field_as_sendgrid_documents_it(fake, send):
    sent, request = await send.exchange(full_message())
    assert (request.path, request.headers["authorization"]) == ("/v3/mail/send", "Bearer SG.k")
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        # The cc equal to `to` and the bcc equal to the cc are gone: SendGrid refuses duplicates.
        "personalizations": [{"to": [{"email": "jane@example.com"}], "cc": [{"email": "c@example.com"}],
                              "bcc": [{"email": "b@example.com"}]}],
        "from": {"email": "noreply@acme.test", "name": "Acme, Inc."},
        "reply_to": {"email": "r@acme.test"},
        "subject": "Hi Jane",
        "content": [{"type": "text/plain", "value": "Hi Jane"},
                    {"type": "text/html", "value": '<p>Hi Jane</p><img src="cid:logo_1.png">'}],
        "custom_args": {"notifuse_message_id": MESSAGE_ID},
        "headers": {"List-Unsubscribe": "<https://acme.test/u/1>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Message-ID": MESSAGE_ID},
        "attachments": [
            {"content": base64.b64encode(PDF).decode(), "filename": "invoice.pdf", "type": "application/pdf",
             "disposition": "attachment"},
            {"content": base64.b64encode(PNG).decode(), "filename": "logo 1.png", "type": "image/png",
             "disposition": "inline", "content_id": "logo_1.png"}],
    }
    assert sent.provider_message_id == fake.ids[0]   # from the X-Message-Id header of the 202


async def test_the_contracts_check_55_cc_equal_to_to_is_dropped(fake, send):
    await send(plain_message(cc=("jane@example.com",), bcc=("b@example.com",)))
    assert fake.requests[0].body["personalizations"] == [{"to": [{"email": "jane@example.com"}],
                                                          "bcc": [{"email": "b@example.com"}]}]


async def test_the_least_message_has_html_content_only(fake, send):
    await send(plain_message(from_name=""))
    body = fake.requests[0].body
    assert body["content"] == [{"type": "text/html", "value": "<p>Hi Jane</p>"}]
    assert body["from"] == {"email": "noreply@acme.test"}
    assert "reply_to" not in body and "attachments" not in body
    assert body["headers"] == {"X-Message-ID": MESSAGE_ID}


async def test_a_success_without_an_id_header_is_still_a_success(fake, send):
    fake.will(Answer(202))
    sent = await send(plain_message())
    assert sent.provider_message_id is None


@pytest.mark.parametrize("status, field, cls", [
    (400, "personalizations.0.to.0.email", "recipient"),
    (400, "personalizations.0.bcc", "recipient"),
    (400, "from.email", "message"),
    (400, None, "message"),
    (413, None, "message"),
    (413, "personalizations", "message"),   # only a 400 names a recipient
    (403, "personalizations.0.to", "provider"),
    (401, None, "provider"),
    (403, "from", "provider"),   # the from address is not a verified sender identity
    (429, None, "throttled"),
    (500, None, "provider"),
    (404, None, "message"),
])
async def test_classification_follows_the_status_and_the_errors_field(fake, send, status, field, cls):
    failure = await send.answered(SendGridFake.error(status, "Refused.", field))
    where = f" ({field})" if field else ""
    assert (failure.cls, failure.status_info) == (cls, f"sendgrid: HTTP {status}: Refused.{where}")


async def test_every_error_is_kept_in_status_info(fake, send):
    failure = await send.answered(Answer(400, {"errors": [
        {"message": "Bad subject.", "field": "subject", "help": None},
        {"message": "Invalid email.", "field": "personalizations.0.cc.0.email"}]}))
    assert failure.cls == "recipient"
    assert failure.status_info == ("sendgrid: HTTP 400: Bad subject. (subject); "
                                   "Invalid email. (personalizations.0.cc.0.email)")


def test_the_key_is_kept_without_surrounding_blanks():
    assert Settings.parse({"api_key": " SG.k "}) == Settings("SG.k")
