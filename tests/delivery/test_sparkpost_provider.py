"""SparkPost (delivery-contract 1.2, 2.7, 2.8): the transmission (bare-key auth, tracking off,
copies through `header_to` and a CC header, inline images, the sandbox sink), its answers
(including 200 with no recipient accepted), its classification rows and its settings."""

from __future__ import annotations

import base64
import functools

import pytest

from fakes.http_providers import PDF, PNG, Answer, SparkPostFake, full_message, plain_message, provider_fixtures
from postroom.delivery.providers.base import THROTTLE_DEFAULT, THROTTLE_QUOTA
from postroom.delivery.providers.sparkpost import Settings

MESSAGE_ID = "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11"

served, fake, send = provider_fixtures(
    functools.partial(SparkPostFake, api_key="spk", endpoint="https://api.eu.sparkpost.com"))


async def test_the_transmission_carries_every_field_as_sparkpost_documents_it(fake, send):
    sent, request = await send.exchange(full_message())
    assert request.path == "/api/v1/transmissions"   # the integration's EU endpoint, rebased by the hook
    assert dict((k, request.headers[k]) for k in ("authorization", "content-type")) == {
        "authorization": "spk", "content-type": "application/json"}   # the bare key
    assert request.body == {
        "options": {"open_tracking": False, "click_tracking": False},
        "recipients": [{"address": {"email": "jane@example.com"}},
                       {"address": {"email": "c@example.com", "header_to": "jane@example.com"}},
                       {"address": {"email": "b@example.com", "header_to": "jane@example.com"}}],
        "content": {
            "from": {"name": "Acme, Inc.", "email": "noreply@acme.test"},
            "subject": "Hi Jane",
            "html": '<p>Hi Jane</p><img src="cid:logo_1.png">',
            "text": "Hi Jane",
            "reply_to": "r@acme.test",
            "headers": {"List-Unsubscribe": "<https://acme.test/u/1>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Message-ID": MESSAGE_ID,
                        "CC": "c@example.com"},   # the bcc appears nowhere
            "attachments": [{"name": "invoice.pdf", "type": "application/pdf",
                             "data": base64.b64encode(PDF).decode()}],
            "inline_images": [{"name": "logo_1.png", "type": "image/png", "data": base64.b64encode(PNG).decode()}],
        },
        "metadata": {"notifuse_message_id": MESSAGE_ID},
    }
    assert sent.provider_message_id == fake.ids[0]


async def test_the_least_message_has_no_cc_header_and_no_optional_field(fake, send):
    await send(plain_message(from_name=""))
    body = fake.requests[0].body
    assert body["recipients"] == [{"address": {"email": "jane@example.com"}}]
    assert body["content"] == {"from": {"email": "noreply@acme.test"}, "subject": "Hi Jane",
                               "html": "<p>Hi Jane</p>", "headers": {"X-Message-ID": MESSAGE_ID}}


async def test_sandbox_mode_sinks_every_recipient(fake, send):
    await send(plain_message(cc=("c1@example.com", "c2@example.com"), bcc=("b@example.com",)), sandbox_mode=True)
    body = fake.requests[0].body
    assert body["recipients"] == [
        {"address": {"email": "jane@example.com.sink.sparkpostmail.com"}},
        {"address": {"email": "c1@example.com.sink.sparkpostmail.com", "header_to": "jane@example.com"}},
        {"address": {"email": "c2@example.com.sink.sparkpostmail.com", "header_to": "jane@example.com"}},
        {"address": {"email": "b@example.com.sink.sparkpostmail.com", "header_to": "jane@example.com"}}]
    assert body["content"]["headers"]["CC"] == "c1@example.com, c2@example.com"


async def test_a_200_with_no_recipient_accepted_is_recipient(fake, send):
    results = {"total_rejected_recipients": 1, "total_accepted_recipients": 0, "id": "7"}
    failure = await send.answered(Answer(200, {"results": results}))
    assert failure.cls == "recipient"
    assert failure.status_info == "sparkpost: HTTP 200: no recipient accepted (1 rejected)"


async def test_a_200_with_some_recipients_rejected_is_sent_with_a_note(fake, send):
    fake.will(Answer(200, {"results": {"total_rejected_recipients": 1, "total_accepted_recipients": 1, "id": "42"}}))
    sent = await send(plain_message(cc=("c@example.com",)))
    assert (sent.provider_message_id, sent.note) == ("42", "sparkpost: 1 recipient(s) rejected")


@pytest.mark.parametrize("status, code, cls", [
    (400, "1902", "recipient"),   # Message generation rejected: the address is suppressed
    (422, "5002", "recipient"),   # no valid recipient
    (422, "1400", "message"),
    (400, "1200", "message"),
    (422, "3002", "message"),
    (413, "10001", "message"),
    (401, "1303", "provider"),
    (403, "1100", "provider"),
    (500, "1500", "provider"),
    (404, "1600", "message"),
])
async def test_classification_follows_the_status_and_the_error_code(fake, send, status, code, cls):
    failure = await send.answered(SparkPostFake.error(status, code, "Refused", "because"))
    assert (failure.cls, failure.status_info) == (cls, f"sparkpost: HTTP {status} {code}: Refused: because")


@pytest.mark.parametrize("status, retry_after, wait", [
    (420, None, THROTTLE_QUOTA), (420, "120", 120.0), (429, None, THROTTLE_DEFAULT), (429, "3", 3.0)])
async def test_sending_limits_and_rate_limits_are_throttled(fake, send, status, retry_after, wait):
    headers = {"Retry-After": retry_after} if retry_after else {}
    failure = await send.answered(SparkPostFake.error(status, "2101", "Exceed Sending Limit", headers=headers))
    assert (failure.cls, failure.retry_after) == ("throttled", wait)


async def test_a_sending_limit_without_sparkposts_json_is_throttled_for_10_minutes(fake, send):
    failure = await send.answered(Answer(420, "sending limit reached"))
    assert (failure.cls, failure.retry_after) == ("throttled", THROTTLE_QUOTA)
    assert failure.status_info == "sparkpost: HTTP 420: sending limit reached"


def test_an_https_endpoint_in_any_case_is_kept_as_given():
    assert Settings.parse({"endpoint": "HTTPS://api.sparkpost.com", "api_key": "k"}) == \
        Settings("HTTPS://api.sparkpost.com", "k", False)
    assert Settings.parse({"endpoint": "https://x.test", "api_key": "k", "sandbox_mode": True}).sandbox_mode
