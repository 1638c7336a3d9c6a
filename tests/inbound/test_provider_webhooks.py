"""POST /webhooks/email (engagement-contract 3, checks 36-58 and 60 of section 6): each provider's
payloads, authenticated as its provider documents, stored once, with their effects on the message,
the memberships, the timeline and the outbox."""

from __future__ import annotations

import base64
import datetime
import json
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fakes.sns_fake import TOPIC
import inboundkit
from inboundkit import ANA, S, SENDGRID_KEY, fresh_contact
from helpers import assert_json_error, snapshot

from postroom.delivery.model import Source
from postroom.inbound import store

UTC = datetime.timezone.utc


sns_fake, inbound_client, world = inboundkit.fixtures()


class Unchanged:
    def __init__(self, world):
        self.world = world

    async def __aenter__(self):
        self.before = await snapshot(self.world.pool, self.world.id)

    async def __aexit__(self, *exc):
        if exc[0] is None:
            assert await snapshot(self.world.pool, self.world.id) == self.before, "stored data changed"


def ses_event(kind: str, message_id: str, email: str = ANA, **fields) -> dict:
    mail = {"messageId": "ses-0001", "tags": {"notifuse_message_id": [message_id]}}
    if kind == "Bounce":
        body = {"bounceType": fields.get("type", "Permanent"), "bounceSubType": fields.get("sub", "General"),
                "timestamp": fields.get("at", "2026-01-02T03:04:05.000Z"),
                "bouncedRecipients": [{"emailAddress": email,
                                       "diagnosticCode": fields.get("diag", "smtp; 550 5.1.1 user unknown")}]}
        return {"eventType": "Bounce", "bounce": body, "mail": mail}
    if kind == "Complaint":
        return {"eventType": "Complaint", "mail": mail, "complaint": {
            "complainedRecipients": [{"emailAddress": email}], "complaintFeedbackType": "abuse",
            "timestamp": "2026-01-02T03:04:05.000Z"}}
    return {"eventType": "Delivery", "mail": mail, "delivery": {
        "recipients": [email], "timestamp": fields.get("at", "2026-01-02T03:04:05.000Z")}}


# ---------------------------------------------------------------- the request (36-38)

async def test_request_checks(world, inbound_client):
    c = inbound_client
    pm = world.integrations["postmark"]
    assert_json_error(await c.post(f"/webhooks/email?workspace_id={world.id}&integration_id={pm}", content=b"{}"),
                      400, "Provider is required")
    assert_json_error(await c.post("/webhooks/email?provider=postmark", content=b"{}"), 400,
                      "Workspace ID and integration ID are required")
    r = await c.get(world.url("postmark"))
    assert_json_error(r, 405, "Method not allowed")
    assert r.headers["allow"] == "POST"
    unknown = f"/webhooks/email?provider=postmark&workspace_id={world.id}&integration_id={uuid.uuid4()}"
    assert_json_error(await c.post(unknown, content=b"{}"), 404, "integration not found")
    other = f"/webhooks/email?provider=postmark&workspace_id=nope&integration_id={pm}"
    assert_json_error(await c.post(other, content=b"{}"), 404, "integration not found")
    assert_json_error(await c.post(f"/webhooks/email?provider=x&workspace_id={world.id}&integration_id=junk",
                                   content=b"{}"), 404, "integration not found")


POSTMARK_DELIVERY = {"RecordType": "Delivery", "MessageID": "pm-1", "Recipient": ANA,
                     "DeliveredAt": "2026-01-02T03:04:05.1234567Z", "Metadata": {"notifuse_message_id": "m1"}}


async def test_unauthenticated_changes_nothing(world):
    body = {**POSTMARK_DELIVERY, "Metadata": {"notifuse_message_id": world.m1}}
    async with Unchanged(world):
        assert_json_error(await world.post("postmark", body, token=None), 401, "invalid webhook signature")
        assert_json_error(await world.post("postmark", body, token="wrong"), 401, "invalid webhook signature")
        wrong_basic = {"Authorization": "Basic " + base64.b64encode(b"postroom:wrong").decode()}
        assert_json_error(await world.post("postmark", body, headers=wrong_basic), 401, "invalid webhook signature")
        # a right token with a wrong second credential is refused too
        assert_json_error(await world.post("postmark", body, headers={"X-Postroom-Webhook-Token": "x"}), 401,
                          "invalid webhook signature")


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b'{"RecordType": "Bounce"}'])
async def test_malformed_body_with_the_right_token(world, raw):
    async with Unchanged(world):
        assert_json_error(await world.post("postmark", None, content=raw), 400, "Failed to process webhook")


async def test_secret_in_basic_password_or_header(world):
    body = {**POSTMARK_DELIVERY, "Metadata": {"notifuse_message_id": world.m1}}
    basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{S}".encode()).decode()}
    r = await world.post("postmark", body, token=None, headers=basic)
    assert r.status_code == 200 and r.json() == {"success": True}
    r = await world.post("postmark", {**body, "Recipient": "ANA@example.com "}, token=None,
                         headers={"X-Postroom-Webhook-Token": S, "Content-Type": "application/json"})
    assert r.status_code == 200
    [event] = await world.stored()      # one provider delivery (its dedupe key holds the normalised address)
    assert event["recipient_email"] == ANA


# ---------------------------------------------------------------- SES through SNS (39-47)

async def test_ses_subscription_confirmation(world, sns_fake):
    sns_fake.gets.clear()
    r = await world.post("ses", sns_fake.confirmation())
    assert r.status_code == 200, r.text
    assert [g for g in sns_fake.gets if "ConfirmSubscription" in g] == ["/?Action=ConfirmSubscription&Token=2336"]
    async with Unchanged(world):
        before = list(sns_fake.gets)
        r = await world.post("ses", sns_fake.confirmation(subscribe_url="http://169.254.169.254/latest/meta-data"))
        assert r.status_code == 400 and sns_fake.gets == before
        evil = sns_fake.sign({**sns_fake.confirmation(), "Signature": ""}, cert_url="https://evil.test/cert.pem")
        assert_json_error(await world.post("ses", evil), 401, "invalid webhook signature")
        assert sns_fake.gets == before      # neither certificate nor link fetched


async def test_ses_topic_must_be_ours_without_the_secret(world, sns_fake):
    notification = sns_fake.notification(ses_event("Delivery", world.m1))
    async with Unchanged(world):
        assert_json_error(await world.post("ses", notification, token=None), 401, "invalid webhook signature")
    async with world.pool.acquire() as conn:
        await store.set_topics(conn, world.id, world.integrations["ses"], [TOPIC])
    assert (await world.post("ses", notification, token=None)).status_code == 200
    assert (await world.message())["delivered_at"] is not None


async def test_ses_bad_signatures(world, sns_fake):
    notification = sns_fake.notification(ses_event("Bounce", world.m1))
    corrupted = {**notification, "Signature": base64.b64encode(b"\x00" * 256).decode()}
    tampered = {**notification, "Message": notification["Message"].replace("General", "Generic")}
    async with Unchanged(world):
        for body in (corrupted, tampered, ses_event("Bounce", world.m1)):
            assert_json_error(await world.post("ses", body), 401, "invalid webhook signature")


async def test_ses_hard_bounce(world, sns_fake, inbound_client):
    r = await world.post("ses", sns_fake.notification(ses_event("Bounce", world.m1)))
    assert r.status_code == 200, r.text
    r = await inbound_client.get("/api/inboundWebhookEvents.list", params={"workspace_id": world.id},
                                 headers=world.ws.headers)
    [event] = r.json()["events"]
    assert {k: event[k] for k in ("type", "source", "bounce_type", "bounce_category", "bounce_classification",
                                  "message_id", "recipient_email")} == {
        "type": "bounce", "source": "ses", "bounce_type": "Permanent", "bounce_category": "General",
        "bounce_classification": "hard", "message_id": world.m1, "recipient_email": ANA}
    assert json.loads(event["raw_payload"])["Type"] == "Notification"   # the whole SNS envelope
    m = await world.message()
    assert m["bounced_at"] == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert m["status_info"] == "Permanent General smtp; 550 5.1.1 user unknown"
    assert await world.statuses() == {"news": "bounced", "vip": "bounced"}
    outbox = await world.outbox()
    assert [t for t, _ in outbox if t.startswith(("email.", "list."))] == ["email.bounced", "list.bounced",
                                                                           "list.bounced"]
    bounced = dict(outbox)["email.bounced"]
    assert bounced["message_id"] == world.m1 and bounced["reason"] == m["status_info"]
    assert bounced["list_id"] == "news" and bounced["event_timestamp"] == "2026-01-02T03:04:05Z"
    [entry] = await world.timeline("insert_inbound_webhook_event")
    assert entry[1:] == ("inbound_webhook_event", world.m1, {
        "type": {"new": "bounce"}, "source": {"new": "ses"}, "bounce_type": {"new": "Permanent"},
        "bounce_category": {"new": "General"}, "bounce_diagnostic": {"new": "smtp; 550 5.1.1 user unknown"}})
    assert [e[0] for e in await world.timeline() if e[0].startswith("list.")] == ["list.bounced", "list.bounced"]
    assert ("bounced_at" in (await world.timeline("update_message_history"))[-1][3])


async def test_ses_expired_is_hard_too_large_is_ignored(world, sns_fake):
    big = await world.send()
    r = await world.post("ses", sns_fake.notification(ses_event("Bounce", big, type="Transient",
                                                                 sub="MessageTooLarge", diag="552 too big")))
    assert r.status_code == 200
    [event] = await world.stored()
    assert event["bounce_classification"] == "soft_ignore"
    assert (await world.message(big))["bounced_at"] is None
    assert await world.statuses() == {"news": "active", "vip": "active"}
    r = await world.post("ses", sns_fake.notification(ses_event(
        "Bounce", world.m1, type="Transient", sub="General", diag="smtp; 4.4.7 Message expired")))
    assert r.status_code == 200
    assert (await world.message())["bounced_at"] is not None
    assert await world.statuses() == {"news": "bounced", "vip": "bounced"}


async def test_soft_bounces_in_a_row(world, sns_fake):
    messages = [await world.send() for _ in range(5)]
    for i, message_id in enumerate(messages):
        notification = sns_fake.notification(ses_event("Bounce", message_id, type="Transient", sub="MailboxFull",
                                                       diag="452 4.2.2 mailbox full"))
        assert (await world.post("ses", notification)).status_code == 200
        expected = "bounced" if i == 4 else "active"
        assert await world.statuses() == {"news": expected, "vip": expected}, i
    for message_id in messages:
        assert (await world.message(message_id))["bounced_at"] is None
    assert [t for t, _ in await world.outbox("list.")] == ["list.bounced", "list.bounced"]


async def test_a_delivery_resets_the_soft_bounce_count(world, sns_fake):
    for i in range(4):
        notification = sns_fake.notification(ses_event("Bounce", await world.send(), type="Transient",
                                                       sub="MailboxFull", at=f"2026-01-02T03:0{i}:00Z"))
        assert (await world.post("ses", notification)).status_code == 200
    delivered = sns_fake.notification(ses_event("Delivery", world.m1, at="2026-01-02T04:00:00Z"))
    assert (await world.post("ses", delivered)).status_code == 200
    later = sns_fake.notification(ses_event("Bounce", await world.send(), type="Transient", sub="MailboxFull",
                                            at="2026-01-02T05:00:00Z"))
    assert (await world.post("ses", later)).status_code == 200
    assert await world.statuses() == {"news": "active", "vip": "active"}


async def test_soft_bounce_threshold_setting(world, sns_fake):
    await world.pool.execute("UPDATE workspaces SET settings = settings || '{\"soft_bounce_threshold\": 2}'"
                             " WHERE id = $1", world.id)
    for _ in range(2):
        notification = sns_fake.notification(ses_event("Bounce", await world.send(), type="Transient",
                                                       sub="MailboxFull"))
        assert (await world.post("ses", notification)).status_code == 200
    assert await world.statuses() == {"news": "bounced", "vip": "bounced"}


async def test_repeated_notification_counted_once(world, sns_fake):
    notification = sns_fake.notification(ses_event("Bounce", world.m1, type="Transient", sub="MailboxFull"))
    for _ in range(5):
        assert (await world.post("ses", notification)).status_code == 200
    [event] = await world.stored()
    assert event["bounce_classification"] == "soft_count"
    assert len(await world.timeline("insert_inbound_webhook_event")) == 1
    assert await world.pool.fetchval(store.SOFT_BOUNCES, world.id, ANA) == 1


async def test_ses_complaint(world, sns_fake):
    await world.pool.execute("UPDATE contact_lists SET status = 'bounced' WHERE workspace_id = $1 AND list_id = 'vip'",
                             world.id)
    assert (await world.post("ses", sns_fake.notification(ses_event("Complaint", world.m1)))).status_code == 200
    m = await world.message()
    assert m["complained_at"] is not None and m["status_info"] == "abuse"
    assert await world.statuses() == {"news": "complained", "vip": "complained"}
    assert [t for t, _ in await world.outbox() if t.startswith(("email.", "list."))] == [
        "email.complained", "list.complained", "list.complained"]


async def test_complaint_on_transactional_mail(world, sns_fake):
    tx = await world.send(list_id=None, source=Source.TRANSACTIONAL)
    assert (await world.post("ses", sns_fake.notification(ses_event("Complaint", tx)))).status_code == 200
    assert await world.statuses() == {"news": "complained", "vip": "complained"}


async def test_ses_delivery_set_once(world, sns_fake):
    first = sns_fake.notification(ses_event("Delivery", world.m1, at="2026-01-02T03:04:05.250Z"))
    assert (await world.post("ses", first)).status_code == 200
    later = sns_fake.notification(ses_event("Delivery", world.m1, at="2026-01-03T00:00:00Z"))
    assert (await world.post("ses", later)).status_code == 200
    assert (await world.message())["delivered_at"] == datetime.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    assert [t for t, _ in await world.outbox("email.")] == ["email.delivered"]
    assert len(await world.stored()) == 2
    assert await world.statuses() == {"news": "active", "vip": "active"}


async def test_ses_identity_notification(world, sns_fake):
    event = ses_event("Bounce", world.m1)
    event["notificationType"] = event.pop("eventType")
    assert (await world.post("ses", sns_fake.notification(event))).status_code == 200
    assert (await world.message())["bounced_at"] is not None
    assert await world.statuses() == {"news": "bounced", "vip": "bounced"}


async def test_ses_skipped_kinds_store_nothing(world, sns_fake):
    async with Unchanged(world):
        for message in ({"eventType": "Open", "mail": {}}, "not json"):
            body = json.dumps(message) if isinstance(message, dict) else message
            assert (await world.post("ses", sns_fake.notification({}, Message=body))).status_code == 200


async def test_an_event_for_a_cc_address_leaves_the_message_alone(world, sns_fake):
    await fresh_contact(world, "cc@example.com", lists=("news",))
    r = await world.post("ses", sns_fake.notification(ses_event("Bounce", world.m1, email="cc@example.com")))
    assert r.status_code == 200
    assert (await world.message())["bounced_at"] is None
    assert await world.statuses("cc@example.com") == {"news": "bounced"}
    assert await world.statuses() == {"news": "active", "vip": "active"}


# ---------------------------------------------------------------- Postmark (48, 49)

def postmark_bounce(message_id, kind="HardBounce", record_id=4323372036854775807, record="Bounce"):
    return {"RecordType": record, "ID": record_id, "Type": kind, "TypeCode": 1, "Email": ANA,
            "BouncedAt": "2019-11-05T16:33:54.9070259Z", "Details": "smtp;550 5.1.1 unknown",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {"notifuse_message_id": message_id}}


async def test_postmark_bounce(world, inbound_client):
    assert (await world.post("postmark", postmark_bounce(world.m1))).status_code == 200
    [event] = await world.stored()
    assert event["bounce_classification"] == "hard"
    assert event["timestamp"] == datetime.datetime(2019, 11, 5, 16, 33, 54, 907026, tzinfo=UTC)
    r = await inbound_client.get("/api/inboundWebhookEvents.list", params={"workspace_id": world.id},
                                 headers=world.ws.headers)
    assert r.json()["events"][0]["timestamp"].startswith("2019-11-05T16:33:54.907")
    assert await world.statuses() == {"news": "bounced", "vip": "bounced"}


async def test_postmark_kinds(world):
    assert (await world.post("postmark", postmark_bounce(await world.send(), "SoftBounce", 1))).status_code == 200
    assert (await world.post("postmark", postmark_bounce(await world.send(), "AutoResponder", 2))).status_code == 200
    assert (await world.post("postmark", {"RecordType": "Open", "Recipient": ANA, "MessageID": "x"})).status_code == 200
    classes = [e["bounce_classification"] for e in await world.stored()]
    assert sorted(classes) == ["soft_count", "soft_ignore"]
    assert (await world.post("postmark", postmark_bounce(world.m1, "SpamComplaint", 3, "SpamComplaint"))
            ).status_code == 200
    assert (await world.message())["complained_at"] == datetime.datetime(2019, 11, 5, 16, 33, 54, 907026, tzinfo=UTC)
    assert await world.statuses() == {"news": "complained", "vip": "complained"}


# ---------------------------------------------------------------- Mailgun (50, 51)

MAILGUN_SIGNATURE = {"timestamp": "1700000000", "token": "8f3c2a1b",
                     "signature": "54cd98e277f562cb1790226dfbd2c8f9a3391b9ba0641c686678b840034d0516"}


def mailgun(event, message_id, event_id="ev-1", severity="permanent", signature=MAILGUN_SIGNATURE):
    return {"signature": signature, "event-data": {
        "event": event, "severity": severity, "id": event_id, "recipient": ANA, "timestamp": 1700000000.25,
        "reason": "bounce", "delivery-status": {"message": "550 5.1.1 no such user", "code": 550},
        "user-variables": {"notifuse_message_id": message_id}}}


async def test_mailgun_signed(world):
    # the signature alone authenticates (no token)
    assert (await world.post("mailgun", mailgun("failed", world.m1), token=None)).status_code == 200
    [event] = await world.stored()
    assert (event["bounce_category"], event["bounce_classification"]) == ("HardBounce", "hard")
    broken = {**MAILGUN_SIGNATURE, "signature": MAILGUN_SIGNATURE["signature"][:-1] + "7"}
    async with Unchanged(world):
        assert_json_error(await world.post("mailgun", mailgun("failed", world.m1, "ev-2", signature=broken)), 401,
                          "invalid webhook signature")


async def test_mailgun_retries_of_one_message_count_once(world):
    for i in range(3):
        body = mailgun("failed", world.m1, f"ev-{i}", severity="temporary")
        assert (await world.post("mailgun", body)).status_code == 200
    assert await world.pool.fetchval(store.SOFT_BOUNCES, world.id, ANA) == 1
    assert (await world.post("mailgun", mailgun("failed", world.m1, "ev-0", severity="temporary"))).status_code == 200
    assert len(await world.stored()) == 3
    async with Unchanged(world):
        assert (await world.post("mailgun", mailgun("opened", world.m1, "ev-9"))).status_code == 200


# ---------------------------------------------------------------- SparkPost (52, 53)

def sparkpost(kind, event_id, message_id, **fields):
    return {"msys": {"message_event": {"type": kind, "event_id": event_id, "rcpt_to": ANA,
                                       "timestamp": "1700000000", "rcpt_meta": {"notifuse_message_id": message_id},
                                       **fields}}}


async def test_sparkpost_batch(world):
    body = [sparkpost("delivery", "1", world.m1), sparkpost("bounce", "2", world.m1, bounce_class="10"),
            sparkpost("spam_complaint", "3", world.m1, fbtype="abuse")]
    assert (await world.post("sparkpost", body)).status_code == 200
    assert sorted((e["type"], e["bounce_classification"]) for e in await world.stored()) == [
        ("bounce", "hard"), ("complaint", None), ("delivered", None)]
    m = await world.message()
    assert m["delivered_at"] and m["bounced_at"] and m["complained_at"]


async def test_sparkpost_classes_and_skips(world):
    body = [sparkpost("bounce", "22", await world.send(), bounce_class="22"),
            sparkpost("bounce", "23", await world.send(), bounce_class="23")]
    assert (await world.post("sparkpost", body)).status_code == 200
    assert sorted(e["bounce_classification"] for e in await world.stored()) == ["soft_count", "soft_ignore"]
    async with Unchanged(world):
        assert (await world.post("sparkpost", [{"msys": {}}])).status_code == 200
    mixed = [{"msys": {"track_event": {"type": "open", "event_id": "o", "rcpt_to": ANA}}},
             sparkpost("delivery", "d", world.m1)]
    assert (await world.post("sparkpost", mixed)).status_code == 200
    assert len(await world.stored()) == 3


# ---------------------------------------------------------------- Mailjet (54, 55)

async def test_mailjet(world):
    body = {"event": "bounce", "hard_bounce": True, "email": ANA, "CustomID": world.m1, "MessageID": 1, "time": 1700000000,
            "comment": "user unknown", "error": "user unknown", "error_related_to": "recipient"}
    assert (await world.post("mailjet", body)).status_code == 200
    [event] = await world.stored()
    assert (event["bounce_type"], event["bounce_classification"]) == ("HardBounce", "hard")
    other = await world.send()
    batch = [{"event": "sent", "email": ANA, "CustomID": other, "MessageID": 2, "time": 1700000001},
             {"event": "spam", "email": ANA, "CustomID": other, "MessageID": 2, "time": 1700000002}]
    assert (await world.post("mailjet", batch)).status_code == 200
    assert sorted(e["type"] for e in await world.stored()) == ["bounce", "complaint", "delivered"]


async def test_mailjet_unsub_unsubscribes(world):
    body = {"event": "unsub", "email": ANA, "CustomID": world.m1, "MessageID": 1, "time": 1700000000}
    assert (await world.post("mailjet", body)).status_code == 200
    assert await world.statuses() == {"news": "unsubscribed", "vip": "active"}
    assert (await world.message())["unsubscribed_at"] is not None
    assert [t for t, _ in await world.outbox() if t.startswith(("email.", "list."))] == [
        "email.unsubscribed", "list.unsubscribed"]


# ---------------------------------------------------------------- SendGrid (56, 57)

def sendgrid_headers(raw: bytes, timestamp: str = "1700000000") -> dict:
    signature = SENDGRID_KEY.sign(timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


async def test_sendgrid_signed(world):
    raw = json.dumps([{"event": "delivered", "email": ANA, "sg_event_id": "d1", "timestamp": 1700000000,
                       "notifuse_message_id": world.m1}]).encode()
    headers = sendgrid_headers(raw)
    async with Unchanged(world):
        r = await world.post("sendgrid", None, content=raw.replace(b"d1", b"d2"), headers=headers)
        assert_json_error(r, 401, "invalid webhook signature")
    assert (await world.post("sendgrid", None, content=raw, headers=headers, token=None)).status_code == 200
    assert (await world.message())["delivered_at"] is not None


async def test_sendgrid_batch(world):
    base = {"email": ANA, "timestamp": 1700000000}
    body = [{**base, "event": "delivered", "sg_event_id": "1", "notifuse_message_id": await world.send()},
            {**base, "event": "bounce", "type": "bounce", "sg_event_id": "2", "status": "5.1.1", "reason": "no"},
            {**base, "event": "bounce", "type": "blocked", "bounce_classification": "Technical", "sg_event_id": "3"},
            {**base, "event": "dropped", "sg_event_id": "4", "reason": "Bounced Address"},
            {**base, "event": "spamreport", "sg_event_id": "5"},
            {**base, "event": "open", "sg_event_id": "6"}]
    raw = json.dumps(body).encode()
    assert (await world.post("sendgrid", None, content=raw, headers=sendgrid_headers(raw))).status_code == 200
    stored = await world.stored()
    assert sorted((e["type"], e["bounce_classification"] or "") for e in stored) == [
        ("bounce", "hard"), ("bounce", "soft_count"), ("bounce", "soft_count"), ("complaint", ""), ("delivered", "")]
    assert (await world.post("sendgrid", None, content=raw, headers=sendgrid_headers(raw))).status_code == 200
    assert len(await world.stored()) == 5


# ---------------------------------------------------------------- SMTP JSON (58)

async def test_smtp_json(world):
    body = {"event": "bounce", "bounce_category": "hard", "recipient": ANA, "message_id": world.m1, "event_id": "1",
            "timestamp": "2026-01-02T00:00:00Z"}
    assert (await world.post("smtp", body)).status_code == 200
    assert (await world.post("smtp", [{"event": "bounce", "diagnostic_code": "5.1.1 unknown", "recipient": ANA,
                                       "event_id": "2"},
                                      {"event": "bounce", "diagnostic_code": "4.2.2 mailbox full", "recipient": ANA,
                                       "event_id": "3"}])).status_code == 200
    assert sorted(e["bounce_classification"] for e in await world.stored()) == ["hard", "hard", "soft_count"]
    async with Unchanged(world):
        assert_json_error(await world.post("smtp", {"event": "opened", "recipient": ANA}), 400,
                          "Failed to process webhook")


# ---------------------------------------------------------------- the migration aid (3.2)

async def test_unauthenticated_mode_accepts_only_no_credential(world, settings, dsn, pool, contract):
    import dataclasses

    import httpx

    from postroom.app import create_app

    app = create_app(dataclasses.replace(settings, allow_unauthenticated_provider_webhooks=True), dsn, pool=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://postroom.test") as c:
        body = json.dumps({**POSTMARK_DELIVERY, "Metadata": {"notifuse_message_id": world.m1}}).encode()
        assert (await c.post(world.url("postmark", token="wrong"), content=body)).status_code == 401
        assert (await c.post(world.url("postmark", token=None), content=body)).status_code == 200
    assert len(await world.stored()) == 1


async def test_concurrent_deliveries_of_one_event_apply_once(world, sns_fake):
    import asyncio

    notification = sns_fake.notification(ses_event("Bounce", world.m1))
    answers = await asyncio.gather(*(world.post("ses", notification) for _ in range(8)))
    assert [r.status_code for r in answers] == [200] * 8
    assert len(await world.stored()) == 1
    assert [t for t, _ in await world.outbox() if t.startswith(("email.", "list."))] == [
        "email.bounced", "list.bounced", "list.bounced"]
    assert len(await world.timeline("insert_inbound_webhook_event")) == 1


async def test_certificates_are_cached_and_tls_is_verified(sns_fake):
    from postroom.inbound import sns
    from postroom.platform import outbound

    trusting = sns.Sns(sns_fake.url, outbound.Client(sns.TIMEOUT, body_limit=sns.CERT_MAX, ssl_context=sns_fake.trust))
    try:
        for _ in range(3):
            assert await trusting.authentic(sns_fake.notification({}))
        assert trusting.fetches == 1
        evil = sns_fake.sign({**sns_fake.notification({}), "Signature": ""}, cert_url="https://evil.test/x.pem")
        assert evil["SigningCertURL"] == "https://evil.test/x.pem"
        assert not await trusting.authentic(evil)
        assert trusting.fetches == 1
    finally:
        await trusting.aclose()
    default = sns.Sns(sns_fake.url)     # the system's trust store: the fake's throwaway CA is not in it
    try:
        assert not await default.authentic(sns_fake.notification({}))
    finally:
        await default.aclose()
