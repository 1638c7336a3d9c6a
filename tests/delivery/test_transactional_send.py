"""transactional.send (delivery-contract 3.7, 3.7.1, 3.8; checks 29-46) and testTemplate (3.9,
checks 66-67), end to end: through the API, drained by the worker to the SMTP sink; and the
render-path equality of templates-contract checks 58-60."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
from fakes.smtp_sink import Sink, serving
from helpers import assert_json_error, snapshot
from sendkit import deliver
from txkit import messages, ok, send_s, setup, welcome

V = "validation error: "


@pytest.fixture(autouse=True)
async def only_this_tests_queue(pool):
    await pool.execute("DELETE FROM email_queue")


@pytest.fixture
async def sink():
    async with serving(Sink()) as s:
        yield s


async def send(client, ws, body, headers=None):
    return await client.post("/api/transactional.send", headers=headers or ws.headers, json=body)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_send_s_reaches_the_sink(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    body = await ok(await send(client, ws, send_s(ws.id)))
    assert list(body) == ["message_id", "success"] and body["success"] is True
    mid = body["message_id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", mid)
    await deliver(pool, settings)
    (mail,) = sink.received
    assert mail.rcpt_tos == ["jane@example.com"]
    assert mail.header("From") == "Acme <noreply@acme.test>" and mail.header("Subject") == "Hi Jane"
    assert mail.header("X-Message-ID") == mid and mail.header("Reply-To") == "tpl@acme.test"
    assert "X1" in mail.html and "X1" in mail.text
    (m,) = await messages(client, ws, id=mid)
    template = await pool.fetchrow("SELECT max(version) AS v FROM templates WHERE workspace_id = $1", ws.id)
    assert m["status"] == "sent" and m["attempts"] == 1
    assert m["transactional_notification_id"] == "welcome_email" and m["template_version"] == template["v"]
    assert m["message_data"]["data"]["contact"]["email"] == "jane@example.com"
    assert m["message_data"]["data"]["code"] == "X1" and "channel_options" not in m


async def test_contact_is_upserted_with_the_normalised_email(client, ws, pool, sink):
    await setup(client, ws, smtp_port=sink.port)
    body = send_s(ws.id, contact={"email": "Jane@Example.COM", "first_name": "Jane"})
    mid = (await ok(await send(client, ws, body)))["message_id"]
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "jane@example.com"})
    assert (await ok(r))["contact"]["first_name"] == "Jane"
    (m,) = await messages(client, ws, id=mid)
    assert m["contact_email"] == "jane@example.com"


async def test_external_id_replays_without_writing(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    first = await ok(await send(client, ws, send_s(ws.id, external_id="e1")))
    changed = send_s(ws.id, external_id="e1", contact={"email": "jane@example.com", "first_name": "Changed"})
    second = await ok(await send(client, ws, changed))
    assert first == second
    await deliver(pool, settings)
    assert len(sink.received) == 1
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "jane@example.com"})
    assert (await ok(r))["contact"]["first_name"] == "Jane"


async def test_fifty_concurrent_sends_of_one_external_id(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    answers = await asyncio.gather(*[send(client, ws, send_s(ws.id, external_id="e2")) for _ in range(50)])
    ids = {(await ok(r))["message_id"] for r in answers}
    assert len(ids) == 1
    assert await pool.fetchval("SELECT count(*) FROM message_history WHERE workspace_id = $1 AND external_id = 'e2'",
                               ws.id) == 1
    assert await pool.fetchval("SELECT count(*) FROM email_queue WHERE workspace_id = $1", ws.id) == 1
    await deliver(pool, settings)
    assert len(sink.received) == 1
    assert len(await messages(client, ws, external_id="e2")) == 1


async def test_email_options(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    options = {"from_name": "Billing", "subject": "Code {{ code }}", "reply_to": "r@acme.test",
               "cc": ["c@example.com", "JANE@example.com"], "bcc": ["b@example.com"]}
    mid = (await ok(await send(client, ws, send_s(ws.id, email_options=options))))["message_id"]
    await deliver(pool, settings)
    (mail,) = sink.received
    assert mail.header("From") == "Billing <noreply@acme.test>" and mail.header("Subject") == "Code X1"
    assert mail.header("Reply-To") == "r@acme.test" and mail.header("Cc") == "c@example.com"
    assert mail.header("Bcc") is None
    assert sorted(mail.rcpt_tos) == ["b@example.com", "c@example.com", "jane@example.com"]
    (m,) = await messages(client, ws, id=mid)
    assert m["channel_options"] == {"from_name": "Billing", "subject": "Code {{ code }}",
                                    "cc": ["c@example.com"], "bcc": ["b@example.com"], "reply_to": "r@acme.test"}


async def test_attachments_are_stored_and_sent(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    pdf, png = b"%PDF-1.4\n%test\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    options = {"attachments": [{"filename": "invoice.pdf", "content": b64(pdf)},
                               {"filename": "logo.png", "content": b64(png), "disposition": "inline"}]}
    mid = (await ok(await send(client, ws, send_s(ws.id, email_options=options))))["message_id"]
    await deliver(pool, settings)
    (mail,) = sink.received
    assert mail.message.get_content_type() == "multipart/mixed"
    files = {f.filename: f for f in mail.files}
    assert files["invoice.pdf"].content_type == "application/pdf" and files["invoice.pdf"].disposition == "attachment"
    assert files["invoice.pdf"].content == pdf and files["logo.png"].content_id == "<logo.png>"
    (m,) = await messages(client, ws, id=mid)
    assert [(a["filename"], a["content_type"]) for a in m["attachments"]] == \
        [("invoice.pdf", "application/pdf"), ("logo.png", "image/png")]
    assert all(re.fullmatch("[0-9a-f]{64}", a["checksum"]) for a in m["attachments"])


def _attachment(filename="a.pdf", content=b"x", **extra) -> dict:
    return {"filename": filename, "content": b64(content) if isinstance(content, bytes) else content, **extra}


REFUSED = [
    ({"channels": None}, V + "notification must have at least one channel"),
    ({"channels": ["sms"]}, "no valid channels to send notification"),
    ({"contact": None}, V + "notification.contact is required"),
    ({"contact": {"first_name": "x"}}, V + "notification.contact is invalid"),
    ({"contact": {"email": "jane@example.com", "first_name": "x" * 256}},
     V + "notification.contact is invalid: invalid contact: first_name exceeds 255 characters"),
    ({"email_options": {"cc": ["nope"]}}, V + "cc 'nope' must be a valid email address"),
    ({"email_options": {"bcc": ["nope"]}}, V + "bcc 'nope' must be a valid email address"),
    ({"email_options": {"reply_to": "nope"}}, V + "replyTo 'nope' must be a valid email address"),
    ({"email_options": {"subject": "s" * 256}}, V + "subject length must not exceed 255 characters"),
    ({"email_options": {"subject_preview": "s" * 256}}, V + "subject_preview length must not exceed 255 characters"),
    ({"email_options": {"subject": "a\r\nBcc: x@evil.test"}}, V + "subject must not contain CR or LF characters"),
    ({"email_options": {"from_name": "a\nb"}}, V + "from_name must not contain CR or LF characters"),
    ({"email_options": {"attachments": [_attachment()] * 21}},
     V + "invalid attachments: maximum 20 attachments allowed, got 21"),
    ({"email_options": {"attachments": [_attachment("run.exe")]}},
     V + "invalid attachments: attachment 0: file extension .exe is not supported by email service providers"),
    ({"email_options": {"attachments": [_attachment("big.pdf", b"x" * 3_145_729)]}},
     V + "invalid attachments: attachment 0 (big.pdf): size 3145729 bytes exceeds maximum of 3145728 bytes (3MB)"),
    ({"email_options": {"attachments": [_attachment(f"p{i}.pdf", b"x" * 2_700_000) for i in range(4)]}},
     V + "invalid attachments: total attachment size 10800000 bytes exceeds maximum of 10485760 bytes (10MB)"),
    ({"email_options": {"attachments": [_attachment(content="@@@")]}},
     V + "invalid attachments: attachment 0: content must be valid base64"),
    ({"email_options": {"attachments": [_attachment("a/b.pdf")]}},
     V + "invalid attachments: attachment 0: filename must not contain path separators"),
    ({"email_options": {"attachments": [_attachment(disposition="x")]}},
     V + "invalid attachments: attachment 0: disposition must be 'attachment' or 'inline'"),
    ({"email_options": {"list_unsubscribe_url": "javascript:alert(1)"}},
     V + "list_unsubscribe_url must be an absolute http, https or mailto URL"),
    ({"email_options": {"cc": [f"c{i}@example.com" for i in range(51)]}},
     V + "at most 50 cc and bcc addresses are allowed"),
    ({"id": "nope"}, "notification not found: transactional notification not found: nope"),
]


async def test_bad_sends_change_nothing_and_send_nothing(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    before = await snapshot(pool, ws.id)
    for changes, message in REFUSED:
        r = await send(client, ws, send_s(ws.id, **changes))
        assert r.status_code == 400, (changes, r.text)
        assert r.json()["error"].startswith(message), (r.json(), message)
    assert await snapshot(pool, ws.id) == before
    await deliver(pool, settings)
    assert sink.received == []


async def test_no_transactional_integration_and_broken_liquid(client, ws, pool):
    await setup(client, ws)
    before = await snapshot(pool, ws.id)
    assert_json_error(await send(client, ws, send_s(ws.id)), 400,
                      "no email provider configured for transactional notifications")
    await pool.execute("UPDATE workspaces SET settings = settings || '{\"transactional_email_provider_id\": \"x\"}'"
                       " WHERE id = $1", ws.id)
    assert_json_error(await send(client, ws, send_s(ws.id)), 400, "integration with ID x not found")
    await pool.execute("UPDATE workspaces SET settings = settings - 'transactional_email_provider_id'"
                       " WHERE id = $1", ws.id)
    assert await snapshot(pool, ws.id) == before


async def test_broken_subject_liquid_writes_no_contact(client, ws, pool, sink):
    await setup(client, ws, smtp_port=sink.port)
    # a subject that can no longer be saved (templates refuse it at save): as an older version stored it
    await pool.execute("UPDATE templates SET email = jsonb_set(email, '{subject}', '\"{{ contact.first_name \"')"
                       " WHERE workspace_id = $1", ws.id)
    before = await snapshot(pool, ws.id)
    r = await send(client, ws, send_s(ws.id))
    assert r.status_code == 400 and r.json()["error"].startswith("failed to process subject with Liquid: "), r.text
    r = await send(client, ws, send_s(ws.id, email_options={"subject": "{{ x "}))
    assert r.status_code == 400 and r.json()["error"].startswith("failed to process subject override with Liquid: ")
    assert await snapshot(pool, ws.id) == before


async def test_permissions(client, ws, sink):
    await setup(client, ws, smtp_port=sink.port)
    reader = {"Authorization": f"Bearer {await ws.key('transactional:r,message_history:r')}"}
    assert_json_error(await send(client, ws, send_s(ws.id), reader), 403,
                      "Insufficient permissions: write access to transactional notifications required")
    no_contacts = {"Authorization": f"Bearer {await ws.key('transactional:rw')}"}
    assert_json_error(await send(client, ws, send_s(ws.id), no_contacts), 403,
                      "Insufficient permissions: write access to contacts required")
    assert_json_error(await client.post("/api/transactional.send", json=send_s(ws.id)), 401,
                      "Authorization header is required")
    assert_json_error(await client.get("/api/transactional.send", headers=ws.headers), 405, "Method not allowed")
    assert_json_error(await client.post("/api/transactional.send", headers=ws.headers, content=b"not json"), 400,
                      "Invalid request body")


async def test_renamed_and_deleted_notifications(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    await ok(await client.post("/api/transactional.update", headers=ws.headers, json={
        "workspace_id": ws.id, "id": "welcome_email", "updates": {"name": "Renamed"}}))
    await ok(await send(client, ws, send_s(ws.id)))
    await ok(await client.post("/api/transactional.delete", headers=ws.headers,
                               json={"workspace_id": ws.id, "id": "welcome_email"}))
    assert_json_error(await send(client, ws, send_s(ws.id)), 400,
                      "notification not found: transactional notification not found: welcome_email")
    await deliver(pool, settings)   # queued before the delete: still sent
    assert len(sink.received) == 1


# ---------------------------------------------------------------- one render path (templates checks 58-60)

async def _compile(client, ws, data, tracking: bool) -> dict:
    return await ok(await client.post("/api/templates.compile", headers=ws.headers, json={
        "workspace_id": ws.id, "message_id": "p", "template_id": "welcome", "test_data": data,
        "tracking_settings": {"enable_tracking": tracking}}))


TOKENS = re.compile(r"/[rt]/[A-Za-z0-9_-]+")


def unwired(part: str) -> str:
    """A text part as the render produced it: SMTP carries lines ending in CRLF, and a MIME text
    part ends with a line break; nothing else differs."""
    return part.replace("\r\n", "\n").removesuffix("\n")


@pytest.mark.parametrize("tracking", [False, True], ids=["check58", "check59"])
async def test_the_sent_mail_is_what_compile_renders(client, ws, pool, settings, sink, tracking):
    await setup(client, ws, smtp_port=sink.port, settings={"email_tracking_enabled": tracking})
    mid = (await ok(await send(client, ws, send_s(ws.id))))["message_id"]
    await deliver(pool, settings)
    (mail,) = sink.received
    (m,) = await messages(client, ws, id=mid)
    compiled = await _compile(client, ws, m["message_data"]["data"], tracking)
    html, text = unwired(mail.html), unwired(mail.text)
    if tracking:
        assert TOKENS.search(html)
        assert TOKENS.sub("/x/T", html) == TOKENS.sub("/x/T", compiled["html"])
    else:
        assert html == compiled["html"].removesuffix("\n")
    assert mail.header("Subject") == compiled["subject"]
    assert TOKENS.sub("/x/T", text) == TOKENS.sub("/x/T", compiled["text"].removesuffix("\n"))


async def test_translation_inherits_the_sender(client, ws, pool, settings, sink):
    """Check 60: the fr variant, resolved from fr-CA, is sent from the base's sender."""
    iid = await setup(client, ws, smtp_port=sink.port, settings={"languages": ["en", "fr"], "default_language": "en"})
    senders = (await pool.fetchval("SELECT senders FROM email_integrations WHERE workspace_id = $1 AND id = $2",
                                   ws.id, iid))
    second = next(s for s in senders if s["email"] == "second@acme.test")
    body = welcome(ws.id, sender_id=second["id"])
    body["translations"] = {"fr": {"email": {"editor_mode": "code", "mjml_source": body["email"]["mjml_source"],
                                             "subject": "Salut {{ contact.first_name }}"}}}
    await ok(await client.post("/api/templates.update", headers=ws.headers, json=body))
    contact = {"email": "jane@example.com", "first_name": "Jane", "language": "fr-CA"}
    await ok(await send(client, ws, send_s(ws.id, contact=contact)))
    await deliver(pool, settings)
    (mail,) = sink.received
    assert mail.header("Subject") == "Salut Jane" and mail.header("From") == "Second <second@acme.test>"


# ---------------------------------------------------------------- transactional.testTemplate (3.9)

async def try_template(client, ws, body: dict, headers=None):
    return await client.post("/api/transactional.testTemplate", headers=headers or ws.headers,
                             json={"workspace_id": ws.id, **body})


async def _sender_id(pool, ws, integration_id: str, email: str = "noreply@acme.test") -> str:
    senders = await pool.fetchval("SELECT senders FROM email_integrations WHERE workspace_id = $1 AND id = $2",
                                  ws.id, integration_id)
    return next(s["id"] for s in senders if s["email"] == email)


async def test_test_template_sends_now_and_writes_no_contact(client, ws, pool, sink):
    """Check 66: sent synchronously, one history row without a notification, no contact."""
    iid = await setup(client, ws, smtp_port=sink.port)
    before = await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id)
    body = {"template_id": "welcome", "integration_id": iid, "sender_id": await _sender_id(pool, ws, iid),
            "recipient_email": "new@example.com", "email_options": {"subject": "Test {{ list.name }}"}}
    assert await ok(await try_template(client, ws, body)) == {"success": True}
    (mail,) = sink.received
    assert mail.rcpt_tos == ["new@example.com"] and mail.header("Subject") == "Test bar"
    assert mail.header("From") == "Acme <noreply@acme.test>" and mail.header("Reply-To") == "tpl@acme.test"
    (m,) = await messages(client, ws)
    assert m["status"] == "sent" and m["template_version"] >= 1 and "transactional_notification_id" not in m
    assert m["contact_email"] == "new@example.com"
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id) == before
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "new@example.com"})
    assert r.status_code == 404


async def test_test_template_refusals(client, ws, pool, sink):
    """Check 67, and a provider's refusal reported as success false."""
    iid = await setup(client, ws, smtp_port=sink.port)
    good = {"template_id": "welcome", "integration_id": iid, "sender_id": await _sender_id(pool, ws, iid),
            "recipient_email": "new@example.com"}
    before = await snapshot(pool, ws.id)
    assert_json_error(await try_template(client, ws, {**good, "sender_id": ""}), 400, "sender_id is required")
    assert_json_error(await try_template(client, ws, {**good, "recipient_email": "x"}), 400,
                      "invalid recipient_email format")
    assert_json_error(await try_template(client, ws, {**good, "email_options": {"cc": ["nope"]}}), 400,
                      "invalid CC email format: nope")
    assert_json_error(await try_template(client, ws, {**good, "template_id": "missing"}), 404, "Template not found")
    assert await ok(await try_template(client, ws, {**good, "integration_id": "nope"})) == \
        {"success": False, "error": "integration not found: nope"}
    assert await snapshot(pool, ws.id) == before
    sink.reject("RCPT", "550 5.1.1 no such user")
    answer = await ok(await try_template(client, ws, good))
    assert answer["success"] is False and answer["error"].startswith("failed to send test email: ")
    # nothing recorded for a test the provider refused (the workspace's link secret may now exist)
    assert await pool.fetchval("SELECT count(*) FROM message_history WHERE workspace_id = $1", ws.id) == 0
    reader = {"Authorization": f"Bearer {await ws.key('transactional:rw')}"}
    assert_json_error(await try_template(client, ws, good, reader), 403,
                      "Insufficient permissions: read access to templates required")
