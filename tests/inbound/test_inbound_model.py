"""The pure rules of provider events: per-provider parsing (engagement-contract 3.4), the bounce
classifier (3.5), the credential checks (3.2), SNS signatures, and the list parameters (3.8)."""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fakes.sns_fake import CERT_URL, SnsFake

from postroom.inbound import model, sns
from postroom.platform.errors import RuleError

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def parse(kind, body):
    return model.parse(kind, body, json.dumps(body), NOW)


# ---------------------------------------------------------------- classifier (3.5)

@pytest.mark.parametrize("kind, t, c, d, expected", [
    ("ses", "Permanent", "General", "", "hard"),
    ("ses", "Transient", "General", "smtp; 4.4.7 Message expired", "hard"),
    ("ses", "Transient", "MessageTooLarge", "", "soft_ignore"),
    ("ses", "Transient", "MailboxFull", "", "soft_count"),
    ("ses", "Undetermined", "", "", "soft_count"),
    ("mailgun", "Failed", "HardBounce", "", "hard"),
    ("mailgun", "Failed", "SoftBounce", "", "soft_count"),
    ("postmark", "HardBounce", "HardBounce", "", "hard"),
    ("postmark", "SoftBounce", "SoftBounce", "", "soft_count"),
    ("postmark", "AutoResponder", "AutoResponder", "", "soft_ignore"),
    ("postmark", "BadEmailAddress", "BadEmailAddress", "", "hard"),
    ("postmark", "DnsError", "DnsError", "", "soft_count"),
    ("sparkpost", "Bounce", "10", "", "hard"),
    ("sparkpost", "Bounce", "22", "", "soft_count"),
    ("sparkpost", "Bounce", "23", "", "soft_ignore"),
    ("sendgrid", "bounce", "", "", "hard"),
    ("sendgrid", "blocked", "Technical", "", "soft_count"),
    ("sendgrid", "blocked", "Content", "", "soft_ignore"),
    ("sendgrid", "blocked", "Invalid Address", "", "hard"),
    ("sendgrid", "dropped", "Dropped", "", "soft_count"),
    ("mailjet", "HardBounce", "Permanent", "", "hard"),
    ("mailjet", "SoftBounce", "Temporary", "", "soft_count"),
    ("smtp", "Bounce", "hard", "", "hard"),
    ("smtp", "Bounce", "", "5.1.1 unknown", "hard"),
    ("smtp", "Bounce", "", "4.2.2 mailbox full", "soft_count"),
    ("smtp", "Bounce", "", "5.2.2 mailbox full", "soft_count"),
    ("smtp", "Bounce", "", "5.3.4 too big", "soft_ignore"),
    ("smtp", "Bounce", "", "4.4.7 expired", "hard"),
    ("smtp", "Bounce", "policy", "5.1.1", "soft_ignore"),
    ("smtp", "Bounce", "", "", "soft_count"),
])
def test_classifier(kind, t, c, d, expected):
    assert model.classify(kind, t, c, d) == expected


def test_mailjet_blocked_about_content_is_ignored():
    assert model.classify("mailjet", "Blocked", "Blocked", "", "content") == "soft_ignore"
    assert model.classify("mailjet", "Blocked", "Blocked", "", "recipient") == "soft_count"


# ---------------------------------------------------------------- parsing (3.4)

def ses_bounce(kind="Permanent", sub="General", diag="smtp; 550 5.1.1 user unknown", recipients=("ana@example.com",)):
    return {"eventType": "Bounce",
            "bounce": {"bounceType": kind, "bounceSubType": sub, "timestamp": "2026-01-02T03:04:05.678Z",
                       "bouncedRecipients": [{"emailAddress": r, "diagnosticCode": diag} for r in recipients]},
            "mail": {"messageId": "ses-id", "tags": {"notifuse_message_id": ["m1"]}}}


def test_ses_bounce_one_event_per_recipient():
    envelope = {"Type": "Notification", "MessageId": "sns-1", "Message": json.dumps(ses_bounce(
        recipients=("Ana@Example.com ", "bo@example.com")))}
    events = model.parse("ses", envelope, "raw", NOW)
    assert [e.recipient_email for e in events] == ["ana@example.com", "bo@example.com"]
    e = events[0]
    assert (e.type, e.bounce_type, e.bounce_category, e.bounce_classification, e.message_id) == \
        ("bounce", "Permanent", "General", "hard", "m1")
    assert e.dedupe_key == "sns-1:ana@example.com" and e.raw_payload == "raw"
    assert e.timestamp == datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
    assert e.status_info == "Permanent General smtp; 550 5.1.1 user unknown"


def test_ses_identity_notification_and_header_id():
    event = {"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "a@x.test"}],
                                                             "complaintFeedbackType": "abuse"},
             "mail": {"messageId": "ses-id", "headers": [{"name": "x-message-id", "value": "m9"}]}}
    [e] = model.parse("ses", {"Type": "Notification", "MessageId": "s", "Message": json.dumps(event)}, "", NOW)
    assert (e.type, e.message_id, e.complaint_feedback_type, e.status_info) == ("complaint", "m9", "abuse", "abuse")


@pytest.mark.parametrize("message", ["not json", json.dumps({"eventType": "Open"}), "Successfully validated SNS topic"])
def test_ses_skips(message):
    assert model.parse("ses", {"Type": "Notification", "MessageId": "s", "Message": message}, "", NOW) == []


def test_postmark_numeric_id_and_seven_fraction_digits():
    [e] = parse("postmark", {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce",
                             "Email": "ana@example.com", "BouncedAt": "2019-11-05T16:33:54.9070259Z",
                             "Details": "x", "Metadata": {"notifuse_message_id": "m1"}, "MessageID": "pm"})
    assert e.dedupe_key == "Bounce:4323372036854775807" and e.message_id == "m1"
    assert e.timestamp == datetime.datetime(2019, 11, 5, 16, 33, 54, 907026, tzinfo=datetime.timezone.utc)
    assert e.bounce_classification == "hard"


def test_postmark_complaint_time_and_skips():
    [e] = parse("postmark", {"RecordType": "SpamComplaint", "ID": 1, "Type": "SpamComplaint", "Email": "a@x.test",
                             "BouncedAt": "2020-01-01T00:00:00Z", "MessageID": "pm"})
    assert (e.type, e.timestamp.year, e.message_id) == ("complaint", 2020, "pm")
    assert parse("postmark", {"RecordType": "Open", "Recipient": "a@x.test"}) == []
    with pytest.raises(model.Malformed):
        parse("postmark", [1])
    with pytest.raises(model.Malformed):
        parse("postmark", {"RecordType": "Delivery"})   # no recipient


def test_mailgun_failed():
    [e] = parse("mailgun", {"signature": {}, "event-data": {
        "event": "failed", "severity": "permanent", "id": "ev1", "recipient": "ana@example.com",
        "timestamp": 1700000000.5, "delivery-status": {"message": "550 no such user"},
        "user-variables": {"notifuse_message_id": "m1"}}})
    assert (e.bounce_type, e.bounce_category, e.bounce_diagnostic, e.bounce_classification) == \
        ("Failed", "HardBounce", "550 no such user", "hard")
    assert e.timestamp.microsecond == 500000 and e.dedupe_key == "ev1"
    assert parse("mailgun", {"event-data": {"event": "opened"}}) == []
    [u] = parse("mailgun", {"event-data": {"event": "unsubscribed", "recipient": "a@x.test", "id": "u"}})
    assert u.type == "unsubscribe"


def test_sparkpost_batch():
    body = [{"msys": {"message_event": {"type": "delivery", "rcpt_to": "a@x.test", "event_id": "1",
                                        "timestamp": "1700000000", "rcpt_meta": {"notifuse_message_id": "m1"}}}},
            {"msys": {"message_event": {"type": "bounce", "bounce_class": "10", "rcpt_to": "a@x.test",
                                        "event_id": "2", "reason": "550"}}},
            {"msys": {"message_event": {"type": "spam_complaint", "fbtype": "abuse", "rcpt_to": "a@x.test",
                                        "event_id": "3"}}},
            {"msys": {"track_event": {"type": "open", "rcpt_to": "a@x.test", "event_id": "4"}}},
            {"msys": {}}]
    events = parse("sparkpost", body)
    assert [(e.type, e.bounce_classification) for e in events] == [("delivered", ""), ("bounce", "hard"),
                                                                    ("complaint", "")]
    assert json.loads(events[1].raw_payload) == body[1]     # the element's own JSON
    assert events[0].message_id == "m1"


def test_mailjet_single_and_array():
    [e] = parse("mailjet", {"event": "bounce", "hard_bounce": True, "email": "a@x.test", "CustomID": "m1",
                            "MessageID": 19421777835146490, "time": 1700000000, "comment": "no", "error": "user"})
    assert (e.bounce_type, e.bounce_category, e.bounce_diagnostic, e.message_id) == \
        ("HardBounce", "Permanent", "no: user", "m1")
    events = parse("mailjet", [{"event": "sent", "email": "a@x.test", "MessageID": 5},
                               {"event": "spam", "email": "a@x.test", "MessageID": 5, "source": "JMRPP"}])
    assert [(e.type, e.message_id) for e in events] == [("delivered", "5"), ("complaint", "5")]
    assert events[1].complaint_feedback_type == "JMRPP"
    [u] = parse("mailjet", {"event": "unsub", "email": "a@x.test", "CustomID": "m1"})
    assert u.type == "unsubscribe"


def test_sendgrid_events():
    body = [{"event": "delivered", "email": "a@x.test", "sg_event_id": "1", "notifuse_message_id": "m1"},
            {"event": "bounce", "type": "bounce", "email": "a@x.test", "sg_event_id": "2", "status": "5.1.1",
             "reason": "unknown"},
            {"event": "bounce", "type": "blocked", "bounce_classification": "Technical", "email": "a@x.test",
             "sg_event_id": "3"},
            {"event": "dropped", "email": "a@x.test", "sg_event_id": "4", "reason": "Bounced Address"},
            {"event": "spamreport", "email": "a@x.test", "sg_event_id": "5"},
            {"event": "open", "email": "a@x.test", "sg_event_id": "6"}]
    events = parse("sendgrid", body)
    assert [(e.type, e.bounce_classification) for e in events] == [
        ("delivered", ""), ("bounce", "hard"), ("bounce", "soft_count"), ("bounce", "soft_count"), ("complaint", "")]
    assert events[1].bounce_diagnostic == "5.1.1: unknown"


def test_smtp_json():
    [e] = parse("smtp", {"event": "bounce", "recipient": "a@x.test", "diagnostic_code": "5.1.1 unknown",
                         "message_id": "m1", "timestamp": "2026-01-01T00:00:00Z"})
    assert (e.bounce_type, e.bounce_classification, e.message_id) == ("Bounce", "hard", "m1")
    with pytest.raises(model.Malformed):
        parse("smtp", {"event": "opened", "recipient": "a@x.test"})


def test_event_ids_are_deterministic():
    [a] = parse("smtp", {"event": "delivered", "recipient": "a@x.test", "event_id": "e1"})
    [b] = parse("smtp", {"event": "delivered", "recipient": "a@x.test", "event_id": "e1", "extra": 1})
    assert a.id_for("i1") == b.id_for("i1") != a.id_for("i2")


def test_nul_never_reaches_the_store():
    [e] = parse("smtp", {"event": "delivered", "recipient": "a\u0000@x.test", "event_id": "e\u00001"})
    assert "\x00" not in e.recipient_email + e.dedupe_key + e.raw_payload


# ---------------------------------------------------------------- credentials (3.2)

def test_mailgun_signature_vector():
    sig = {"timestamp": "1700000000", "token": "8f3c2a1b",
           "signature": "54cd98e277f562cb1790226dfbd2c8f9a3391b9ba0641c686678b840034d0516"}
    assert model.mailgun_signature("whsk-test", sig) == model.VALID
    assert model.mailgun_signature("whsk-test", {**sig, "signature": sig["signature"][:-1] + "7"}) == model.WRONG
    assert model.mailgun_signature("whsk-test", {}) == model.NONE


def test_sendgrid_signature():
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    raw, ts = b'[{"event":"delivered"}]', "1700000000"
    signature = base64.b64encode(key.sign(ts.encode() + raw, ec.ECDSA(hashes.SHA256()))).decode()
    assert model.public_key_ok(public) and not model.public_key_ok("bm9wZQ==")
    assert model.sendgrid_signature(public, signature, ts, raw) == model.VALID
    assert model.sendgrid_signature(public, signature, ts, raw + b" ") == model.WRONG
    assert model.sendgrid_signature(public, None, ts, raw) == model.NONE


def test_secret_state_and_basic():
    assert model.secret_state([None, "", None], "s") == model.NONE
    assert model.secret_state(["s", None], "s") == model.VALID
    assert model.secret_state(["s", "t"], "s") == model.WRONG
    assert model.secret_state(["s"], None) == model.WRONG
    header = "Basic " + base64.b64encode(b"anyone:pw").decode()
    assert model.basic_password(header) == "pw" and model.basic_password("Bearer x") is None


# ---------------------------------------------------------------- SNS

@pytest.mark.parametrize("url, ok", [
    (CERT_URL, True), ("https://sns.cn-north-1.amazonaws.com.cn/x.pem", True),
    ("http://sns.eu-west-1.amazonaws.com/x.pem", False), ("https://evil.test/x.pem", False),
    ("https://sns.eu-west-1.amazonaws.com.evil.test/x.pem", False), ("https://sns.eu-west-1.amazonaws.com:8443/x", False),
    ("https://user@sns.eu-west-1.amazonaws.com/x", False), ("https://169.254.169.254/latest/meta-data", False),
    (None, False)])
def test_trusted_sns_urls(url, ok):
    assert sns.trusted_url(url) is ok


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signatures(version):
    fake = SnsFake()
    message = fake.sign({"Type": "Notification", "MessageId": "1", "TopicArn": "t", "Message": "m",
                         "Timestamp": "2026-01-01T00:00:00Z"}, version)
    assert sns.verify(message, fake.pem)
    assert not sns.verify({**message, "Message": "n"}, fake.pem)
    assert not sns.verify({**message, "SignatureVersion": "3"}, fake.pem)
    assert not sns.verify({**message, "Signature": "!!"}, fake.pem)


# ---------------------------------------------------------------- inboundWebhookEvents.list (3.8)

def query(**params):
    params = {"workspace_id": "w", **params}
    return model.parse_event_query(params.get, lambda e: "@" in e and "." in e)


@pytest.mark.parametrize("params, message", [
    ({"workspace_id": None}, "Invalid parameters: workspace_id is required"),
    ({"event_type": "open"}, "Invalid parameters: invalid event type: open"),
    ({"limit": "abc"}, "Invalid parameters: invalid limit value: abc"),
    ({"limit": "-1"}, "Invalid parameters: limit cannot be negative"),
    ({"recipient_email": "bad"}, "Invalid parameters: invalid contact email format"),
    ({"timestamp_after": "2026-02-01T00:00:00Z", "timestamp_before": "2026-01-01T00:00:00Z"},
     "Invalid parameters: timestamp_after must be before timestamp_before"),
    ({"cursor": "!!"}, "Invalid parameters: invalid cursor"),
])
def test_query_errors(params, message):
    with pytest.raises(RuleError) as caught:
        query(**params)
    assert caught.value.message == message


def test_query_defaults_and_cursor():
    assert query().limit == 20 and query(limit="0").limit == 20 and query(limit="500").limit == 100
    assert query(recipient_email=" Ana@Example.com").exact == {"recipient_email": "ana@example.com"}
    when = datetime.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    cursor = model.encode_cursor(when, "6f1b1a3c-0000-5000-8000-000000000000")
    assert query(cursor=cursor).cursor == (when, "6f1b1a3c-0000-5000-8000-000000000000")
    whole = base64.b64encode(b"2026-01-01T00:00:00Z~6f1b1a3c-0000-5000-8000-000000000000").decode()
    assert query(cursor=whole).cursor[0] == when.replace(microsecond=0)   # Notifuse's whole-second form
