"""The MIME message of a send (delivery-contract 2.0, 2.1): headers, shape, encodings, refusals."""

from __future__ import annotations

import base64
import datetime
import email
import email.policy

import pytest

from helpers import provider_message
from postroom.delivery import mime
from postroom.delivery.providers.base import Attachment, Message, SendFailed

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 300
WHEN = datetime.datetime(2025, 1, 10, 9, 0, tzinfo=datetime.timezone.utc)


def message(**changes) -> Message:
    return provider_message(**{"message_id": "6f1c2b9e-0000-4000-8000-000000000001", **changes})


def parsed(msg: Message):
    return email.message_from_bytes(mime.to_bytes(msg, WHEN), policy=email.policy.default)


def raw_headers(msg: Message) -> dict[str, str]:
    head = mime.to_bytes(msg, WHEN).split(b"\r\n\r\n", 1)[0].decode("ascii")
    lines = head.replace("\r\n ", " ").split("\r\n")
    return dict(line.split(": ", 1) for line in lines)


def tree(part):
    if not part.is_multipart():
        return part.get_content_type()
    return [part.get_content_type(), *(tree(p) for p in part.iter_parts())]


# ---------------------------------------------------------------- headers


def test_headers_of_a_plain_message_in_order_and_nothing_else():
    head = raw_headers(message())
    assert list(head) == ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "X-Message-ID",
                          "Content-Type"]
    assert head["From"] == "Acme <noreply@acme.test>"
    assert head["To"] == "jane@example.com"
    assert head["Date"] == "Fri, 10 Jan 2025 09:00:00 +0000"
    assert head["Message-ID"] == "<6f1c2b9e-0000-4000-8000-000000000001@acme.test>"
    assert head["X-Message-ID"] == "6f1c2b9e-0000-4000-8000-000000000001"
    assert head["MIME-Version"] == "1.0"


def test_cc_reply_to_and_never_a_bcc_header():
    msg = message(cc=("c@example.com", "JANE@example.com", ""), bcc=("b@example.com",), reply_to="r@acme.test")
    head = raw_headers(msg)
    assert head["Cc"] == "c@example.com"          # the duplicate of `to` and the empty string gone
    assert head["Reply-To"] == "r@acme.test"
    assert "Bcc" not in head
    assert b"b@example.com" not in mime.to_bytes(msg, WHEN)


def test_display_names_quoted_and_encoded_as_the_shared_rule_says():
    assert raw_headers(message(from_name="Acme, Inc."))["From"] == '"Acme, Inc." <noreply@acme.test>'
    encoded = raw_headers(message(from_name="Zoë Café"))["From"]
    assert encoded.startswith("=?utf-8?b?") and encoded.endswith(" <noreply@acme.test>")
    assert str(parsed(message(from_name="Zoë Café"))["From"]) == "Zoë Café <noreply@acme.test>"
    assert raw_headers(message(from_name=""))["From"] == "noreply@acme.test"


def test_a_non_ascii_subject_is_encoded_words_and_reads_back_whole():
    subject = "Votre commande n° 4412 est expédiée — suivez-la ici, c'est très simple ✓" * 2
    head = raw_headers(message(subject=subject))
    assert head["Subject"].startswith("=?utf-8?b?")
    words = head["Subject"].split(" ")
    assert len(words) > 1 and all(len(w) <= 75 for w in words)   # RFC 2047: an encoded word is at most 75
    assert str(parsed(message(subject=subject))["Subject"]) == subject


def test_list_unsubscribe_post_only_for_http_urls():
    head = raw_headers(message(list_unsubscribe_url="https://acme.test/u/1"))
    assert head["List-Unsubscribe"] == "<https://acme.test/u/1>"
    assert head["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    head = raw_headers(message(list_unsubscribe_url="mailto:unsub@acme.test"))
    assert head["List-Unsubscribe"] == "<mailto:unsub@acme.test>"
    assert "List-Unsubscribe-Post" not in head


def test_idna_domains_in_headers_and_message_id():
    head = raw_headers(message(from_address="noreply@bücher.test", to="jane@exämple.com"))
    assert head["From"] == "Acme <noreply@xn--bcher-kva.test>"
    assert head["To"] == "jane@xn--exmple-cua.com"
    assert head["Message-ID"].endswith("@xn--bcher-kva.test>")


def test_a_non_ascii_local_part_cannot_be_sent():
    with pytest.raises(mime.MessageError, match="jöhn@example.com has a non-ASCII local part"):
        mime.to_bytes(message(to="jöhn@example.com"))
    with pytest.raises(SendFailed) as failed:
        mime.render("ses", message(cc=("zoë@example.com",)))
    assert failed.value.cls == "message" and failed.value.status_info.startswith("ses: address zoë@")


# ---------------------------------------------------------------- CR/LF refused


@pytest.mark.parametrize("field, changes", [
    ("subject", {"subject": "Hi\r\nBcc: victim@example.com"}),
    ("from_name", {"from_name": "Acme\nX-Evil: 1"}),
    ("from_address", {"from_address": "noreply@acme.test\r"}),
    ("to", {"to": "jane@example.com\nBcc: x@example.com"}),
    ("cc", {"cc": ("c@example.com\r\nX: 1",)}),
    ("bcc", {"bcc": ("b@example.com\n",)}),
    ("reply_to", {"reply_to": "r@acme.test\r\nX: 1"}),
    ("list_unsubscribe_url", {"list_unsubscribe_url": "https://acme.test/u\r\nX: 1"}),
    ("attachment 0 filename", {"attachments": (Attachment("a\r\nb.pdf", PDF),)}),
])
def test_cr_or_lf_in_any_header_value_is_refused_naming_the_field(field, changes):
    with pytest.raises(mime.MessageError) as refused:
        mime.to_bytes(message(**changes))
    assert refused.value.message == f"{field} must not contain CR or LF characters"
    assert refused.value.status == 400
    with pytest.raises(SendFailed) as failed:
        mime.render("smtp", message(**changes))
    assert failed.value.cls == "message"
    assert failed.value.status_info == f"smtp: {field} must not contain CR or LF characters"


def test_check_header_value_is_the_rule_the_api_can_call():
    mime.check_header_value("subject", "fine: a tab\tis not a line break")
    with pytest.raises(mime.MessageError, match="^subject must not contain CR or LF characters$"):
        mime.check_header_value("subject", "a\rb")


# ---------------------------------------------------------------- body shapes


def test_text_then_html_as_alternative_both_quoted_printable():
    msg = parsed(message(text="Prix : 10 €\n.dot line", html="<p>Prix&nbsp;: 10 €</p>"))
    assert tree(msg) == ["multipart/alternative", "text/plain", "text/html"]
    plain, html = msg.iter_parts()
    assert plain["Content-Transfer-Encoding"] == html["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content_charset() == "utf-8"
    assert plain.get_content() == "Prix : 10 €\r\n.dot line\r\n"   # lines end in CRLF on the wire
    assert "10 €" in html.get_content()
    assert b"=E2=82=AC" in mime.to_bytes(message(text="10 €"))   # the bytes on the wire are 7-bit


@pytest.mark.parametrize("text", [None, ""])
def test_html_alone_without_a_text_part(text):
    msg = parsed(message(text=text))
    assert tree(msg) == "text/html"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content() == "<p>Code X1</p>\r\n"


def test_attachments_make_mixed_and_inline_parts_go_with_the_html_in_related():
    msg = parsed(message(attachments=(Attachment("invoice.pdf", PDF), Attachment("logo.png", PNG, disposition="inline"))))
    assert tree(msg) == ["multipart/mixed",
                         ["multipart/alternative", "text/plain", ["multipart/related", "text/html", "image/png"]],
                         "application/pdf"]


def test_inline_only_without_text():
    msg = parsed(message(text=None, attachments=(Attachment("logo.png", PNG, disposition="inline"),)))
    assert tree(msg) == ["multipart/mixed", ["multipart/related", "text/html", "image/png"]]


def test_attached_file_is_base64_in_76_character_lines_with_its_disposition():
    msg = message(attachments=(Attachment("invoice.pdf", PDF),))
    part = next(p for p in parsed(msg).walk() if p.get_content_type() == "application/pdf")
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part["Content-Disposition"] == 'attachment; filename="invoice.pdf"'
    lines = part.get_payload().split()
    assert all(len(line) == 76 for line in lines[:-1]) and 0 < len(lines[-1]) <= 76
    assert base64.b64decode("".join(lines)) == PDF
    assert part.get_payload(decode=True) == PDF


def test_inline_part_has_its_content_id_with_spaces_as_underscores():
    msg = message(attachments=(Attachment("company logo.png", PNG, disposition="inline"),))
    part = next(p for p in parsed(msg).walk() if p.get_content_type() == "image/png")
    assert part["Content-ID"] == "<company_logo.png>"
    assert part.get_content_disposition() == "inline"
    assert part.get_filename() == "company logo.png"


def test_a_non_ascii_filename_is_written_with_rfc_2231():
    msg = message(attachments=(Attachment("facture n° 12 é.pdf", PDF),))
    raw = mime.to_bytes(msg).decode("ascii")
    assert "filename*=utf-8''facture%20n%C2%B0%2012%20%C3%A9.pdf" in raw
    part = next(p for p in parsed(msg).walk() if p.get_content_type() == "application/pdf")
    assert part.get_filename() == "facture n° 12 é.pdf"


def test_content_type_given_detected_or_octet_stream():
    msg = parsed(message(attachments=(Attachment("report", PDF), Attachment("data.bin2", b"xx"),
                                      Attachment("notes.txt", b"hello", content_type="text/plain"),
                                      Attachment("odd", b"xx", content_type="multipart/mixed"))))
    files = [p for p in msg.walk() if p.get_filename()]
    assert [p.get_content_type() for p in files] == ["application/pdf", "application/octet-stream", "text/plain",
                                                     "application/octet-stream"]
    assert files[2]["Content-Transfer-Encoding"] == "base64"


def test_the_same_message_id_on_every_build():
    # a retry after a crash sends the same Message-ID, so receivers can tell a duplicate
    first, second = raw_headers(message()), raw_headers(message())
    assert first["Message-ID"] == second["Message-ID"]


def test_quoted_printable_lines_stay_within_76_characters_and_decode_back():
    html = "<p>" + "Ünïcode = and spaces   " * 40 + "</p>\n<p>short</p>\n" + "x" * 500 + " \t"
    raw = mime.to_bytes(provider_message(html=html, text=html))
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    parts = {p.get_content_type(): p.get_content().replace("\r\n", "\n") for p in parsed.walk()
             if not p.is_multipart()}
    assert parts["text/html"].rstrip("\n") == html and parts["text/plain"].rstrip("\n") == html
