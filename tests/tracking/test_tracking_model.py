"""Tracking rules without a database (engagement contract 1.4-1.7): tokens, legacy tokens, bot user
agents, the too-early rule, the pixel, the redirect's Location and the interstitial page."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postroom.platform.errors import RuleError
from postroom.templates.render import signed_tracking, tokens
from postroom.tracking import model

KEY = b"installation-key-material-32-bytes!!"
OTHER = b"another-installation-key-material!!!"
E = "https://t.example"


def tracker(sent_at: int = 1_700_000_000, key: bytes = KEY, ws: str = "ws_1", mid: str = "m1"):
    return signed_tracking(key, E + "/", mid, ws, sent_at)


def click_token(destination: str = "https://x.test/a?b=2&a=1", index: int = 0, **kw) -> str:
    return tracker(**kw).click_url(destination, index).rsplit("/", 1)[1]


def open_token(**kw) -> str:
    return tracker(**kw).open_url().rsplit("/", 1)[1]


def legacy(plaintext: str) -> str:
    """A token as Notifuse mints it: anyone can, its key ships in its source."""
    nonce = os.urandom(12)
    sealed = AESGCM(hashlib.sha256(b"nf-tracking-obfuscation-2024").digest()).encrypt(nonce, plaintext.encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def refused(token: str) -> str:
    with pytest.raises(RuleError) as info:
        model.read_click([KEY], token)
    assert info.value.status == 400
    return info.value.message


# ---------------------------------------------------------------- Postroom tokens (1.4)

def test_urls_are_built_on_the_endpoint_without_its_trailing_slash():
    t = tracker()
    assert t.open_url().startswith(E + "/t/") and t.click_url("https://x.test/", 0).startswith(E + "/r/")
    assert t.open_url() == t.open_url()  # one open token per message: pixel and tracking_opens_url agree


def test_a_click_token_carries_what_the_contract_binds():
    hit = model.read_click([KEY], click_token("https://x.test/a?b=2&a=1#f", 3))
    assert hit == model.Hit("r", "m1", "ws_1", 1_700_000_000, 3, "https://x.test/a?b=2&a=1#f")
    raw = base64.urlsafe_b64decode(click_token() + "==")
    assert raw[0] == 1 and len(raw) > 1 + 12 + 16
    assert b"x.test" not in raw and b"m1" not in raw  # encrypted: pixel blockers see no ids or destination


def test_an_open_token_reads_back_and_only_as_an_open():
    assert model.read_open([KEY], open_token()) == model.Hit("t", "m1", "ws_1", 1_700_000_000)
    assert model.read_open([KEY], click_token()) is None  # the kind is bound as associated data
    assert refused(open_token()) == "Invalid token"


def test_every_changed_character_is_refused():
    token = click_token()
    for i in range(len(token)):
        for c in ("A", "_"):
            if token[i] != c:
                changed = token[:i] + c + token[i + 1:]
                assert tokens.decrypt([KEY], "r", changed) is None, i
    # also where the last character's unused low bits change: one spelling per token
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for c in alphabet.replace(last, ""):
        assert tokens.decrypt([KEY], "r", token[:-1] + c) is None


def test_truncated_extended_and_malformed_tokens_are_refused():
    token = click_token()
    for n in range(len(token)):
        assert tokens.decrypt([KEY], "r", token[:n]) is None, n
    for bad in (token + "A", token + "=", token[:5] + "+" + token[6:], " " + token, token + "%00", "garbage", "x" * 5000):
        assert tokens.decrypt([KEY], "r", bad) is None, bad
    assert refused("garbage") == "Invalid token" and refused("") == "Missing token"
    long_destination = click_token("https://x.test/" + "a" * 4000)
    assert len(long_destination) > tokens.MAX_TOKEN and tokens.decrypt([KEY], "r", long_destination) is None


def test_another_installations_token_is_refused_and_retired_keys_still_read():
    foreign = click_token(key=OTHER)
    assert refused(foreign) == "Invalid token"
    assert model.read_open([KEY], open_token(key=OTHER)) is None
    assert model.read_click([KEY, OTHER], foreign).url == "https://x.test/a?b=2&a=1"  # rotation: previous key


def test_field_rules():
    def sealed(kind: str, plaintext: str) -> str:
        return tokens.mint(KEY, kind, [plaintext])

    assert refused(sealed("r", "m1\nws_1\n1700000000\nhttps://x.test/")) == "Invalid token format"  # 4 fields
    assert refused(sealed("r", "m1\nws_1\nsoon\n0\nhttps://x.test/")) == "Invalid token format"
    assert refused(sealed("r", "m1\nws_1\n1700000000\n-1\nhttps://x.test/")) == "Invalid token format"
    assert refused(sealed("r", "m1\nws_1\n1700000000\n0\n")) == "Missing redirect URL"
    assert model.read_click([KEY], sealed("r", "m1\nws_1\n1\n0\nhttps://x.test/a\nb")).url == "https://x.test/a\nb"
    assert model.read_open([KEY], sealed("t", "m1\nws_1")) is None


# ---------------------------------------------------------------- Notifuse's tokens (1.4, 1.6)

def test_legacy_tokens_are_recognised_but_never_followed():
    assert model.read_click([KEY], legacy("m1\nws_1\n0\nhttps://evil.test")) == model.Legacy("https://evil.test")
    assert model.read_open([KEY], legacy("m1\nws_1\n0")) is None
    assert refused(legacy("m1\nws_1\n0")) == "Invalid token format"
    assert refused(legacy("m1\nws_1\n0\n")) == "Missing redirect URL"


# ---------------------------------------------------------------- whether a hit is recorded (1.7)

@pytest.mark.parametrize("agent", [
    None, "", "  ", "Mozilla/5.0 (compatible; Googlebot/2.1)", "Mozilla/5.0 HeadlessChrome/120", "curl/8.4.0",
    "python-requests/2.31", "Java/17", "Go-http-client/1.1", "PostmanRuntime/7.3", "Barracuda Sentinel",
    "Mozilla/5.0 (Microsoft Office Protocol Discovery) SafeLinks", "Proofpoint URL Defense", "Cisco IronPort",
])
def test_bot_user_agents(agent):
    assert model.is_bot(agent)


@pytest.mark.parametrize("agent", [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
])
def test_people_are_not_bots(agent):
    assert not model.is_bot(agent)


def test_the_seven_second_rule_and_skew():
    hit = model.Hit("t", "m1", "ws_1", 1000)
    browser = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"
    assert model.recordable("GET", hit, browser, 1007)
    assert not model.recordable("GET", hit, browser, 1006.99)
    assert not model.recordable("GET", hit, browser, 990)  # a send time in the future
    assert not model.recordable("HEAD", hit, browser, 2000)  # link checkers
    assert not model.recordable("GET", None, browser, 2000)
    assert not model.recordable("GET", hit, "", 2000)


def test_the_workspace_switch_is_read_with_unset_meaning_on():
    assert model.workspace_tracks({}) and model.workspace_tracks({"email_tracking_enabled": True})
    assert not model.workspace_tracks({"email_tracking_enabled": False}) and not model.workspace_tracks(None)


# ---------------------------------------------------------------- answers (1.6)

def test_the_pixel_is_a_valid_padded_transparent_png():
    png = model.PIXEL
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) == 825  # not the 67-68 byte fingerprint
    at, chunks = 8, {}
    while at < len(png):
        (length,) = struct.unpack(">I", png[at:at + 4])
        kind, data = png[at + 4:at + 8], png[at + 8:at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + data)
        chunks[kind] = data
        at += 12 + length
    assert list(chunks)[0] == b"IHDR" and list(chunks)[-1] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, color) == (1, 1, 8, 6)
    assert zlib.decompress(chunks[b"IDAT"]) == b"\x00\x00\x00\x00\x00"  # one fully transparent pixel


def test_location_keeps_the_destination_as_encoded():
    assert model.location("https://x.test/a?b=2&a=1&utm_source=nl#f") == "https://x.test/a?b=2&a=1&utm_source=nl#f"
    assert model.location("https://x.test/a%20b?q=%2F") == "https://x.test/a%20b?q=%2F"
    assert model.location("https://x.test/ü é\r\nX: y") == "https://x.test/%C3%BC%20%C3%A9%0D%0AX:%20y"


def test_the_interstitial_escapes_and_links_only_http():
    page = model.interstitial('https://evil.test/"><script>alert(1)</script>')
    assert "You are being taken to" in page and "<script>" not in page
    assert '<a href="https://evil.test/&quot;&gt;&lt;script&gt;' in page
    other = model.interstitial("javascript:alert(1)")
    assert "<a " not in other and "javascript:alert(1)" in other
