"""Bounces for plain SMTP senders, the pure part (engagement-contract 3.9): VERP return paths and
DSN (RFC 3464) and ARF (RFC 5965) reports read into provider events."""

from __future__ import annotations

import datetime

from postroom.inbound import dsn

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
M2 = "5b7c0f0e-2d2a-4c59-9b7e-2f4f6a0b9f11"
KEY = dsn.verp_key(b"k" * 32)


def test_verp_round_trip():
    address = dsn.verp_address(KEY, M2, "bounce.acme.test")
    local = address.split("@")[0]
    assert local.startswith("bounces+") and len(local) == 43
    assert dsn.parse_verp(KEY, address, "bounce.acme.test") == ("bounces", M2)
    assert dsn.parse_verp(KEY, address.upper(), "BOUNCE.acme.test") == ("bounces", M2)   # case-insensitive
    wrong_tag = local[:-1] + ("a" if local[-1] != "a" else "b") + "@bounce.acme.test"
    assert dsn.parse_verp(KEY, wrong_tag, "bounce.acme.test") is None
    assert dsn.parse_verp(KEY, address, "other.test") is None
    assert dsn.parse_verp(dsn.verp_key(b"x" * 32), address, "bounce.acme.test") is None
    assert dsn.parse_verp(KEY, "postmaster@bounce.acme.test", "bounce.acme.test") is None


def report(kind: str, status_part: str, returned: str = "X-Message-ID: " + M2 + "\r\nTo: ana@example.com\r\n") -> bytes:
    ctype = "message/delivery-status" if kind == "delivery-status" else "message/feedback-report"
    return (f"From: MAILER-DAEMON@mx.example\r\nTo: bounces@bounce.acme.test\r\nMessage-ID: <dsn-1@mx.example>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type={kind}; boundary=\"b\"\r\n\r\n"
            f"--b\r\nContent-Type: text/plain\r\n\r\nSomething happened.\r\n"
            f"--b\r\nContent-Type: {ctype}\r\n\r\n{status_part}\r\n"
            f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n{returned}\r\n--b--\r\n").encode()


DSN_FAILED = ("Reporting-MTA: dns; mx.example\r\n\r\n"
              "Final-Recipient: rfc822; Ana@Example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
              "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n")


def test_failed_dsn_is_a_hard_bounce():
    [event] = dsn.parse_report(report("delivery-status", DSN_FAILED), NOW)
    assert (event.type, event.source, event.recipient_email, event.message_id) == ("bounce", "smtp", "ana@example.com", M2)
    assert (event.bounce_type, event.bounce_category, event.bounce_classification) == ("failed", "5.1.1", "hard")
    assert event.bounce_diagnostic == "smtp; 550 5.1.1 user unknown"
    assert event.dedupe_key == "<dsn-1@mx.example>:ana@example.com"


def test_dsn_classes_and_actions():
    full = DSN_FAILED.replace("5.1.1", "5.2.2")
    [event] = dsn.parse_report(report("delivery-status", full), NOW, message_id="from-verp")
    assert event.bounce_classification == "soft_count" and event.message_id == "from-verp"
    big = DSN_FAILED.replace("Status: 5.1.1", "Status: 5.3.4")
    assert dsn.parse_report(report("delivery-status", big), NOW)[0].bounce_classification == "soft_ignore"
    delayed = DSN_FAILED.replace("Action: failed", "Action: delayed").replace("5.1.1", "4.4.1")
    assert dsn.parse_report(report("delivery-status", delayed), NOW) == []
    delivered = DSN_FAILED.replace("Action: failed", "Action: delivered").replace("5.1.1", "2.0.0")
    assert [e.type for e in dsn.parse_report(report("delivery-status", delivered), NOW)] == ["delivered"]


def test_arf_is_a_complaint():
    arf = "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
    [event] = dsn.parse_report(report("feedback-report", arf), NOW)
    assert (event.type, event.recipient_email, event.complaint_feedback_type, event.message_id) == (
        "complaint", "ana@example.com", "abuse", M2)


def test_other_mail_is_ignored():
    auto_reply = b"From: ana@example.com\r\nSubject: Out of office\r\nContent-Type: text/plain\r\n\r\nAway.\r\n"
    assert dsn.parse_report(auto_reply, NOW) == []
