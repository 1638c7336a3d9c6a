"""The pure rules of preferences.model: the HMAC check, the one-click request shapes, what a
link holder sees, the page's rows and its language."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from postroom.lists import model as lists_model
from postroom.preferences import model
from postroom.preferences.model import PreferencesError

SECRET = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
H = "d854a24c7a4bc28f5062e3517332e0b8c6f7ed618c888d283f85ebedc490d85f"


@pytest.mark.parametrize("email, given, ok", [
    ("ana@example.com", H, True), (" Ana@Example.COM ", H, True), ("ana@example.com", H.upper(), True),
    ("ana@example.com", H[:-1] + "0", False), ("ana@example.com", "", False), ("ana@example.com", None, False),
    ("ana@example.com", "é" * 64, False), ("bob@example.com", H, False)])
def test_hmac_valid(email, given, ok):
    assert model.hmac_valid(SECRET, email, given) is ok


def test_no_secret_never_verifies():
    assert model.hmac_valid(None, "ana@example.com", H) is False


def test_oneclick_query_takes_repeated_and_comma_separated_lists():
    click = model.parse_oneclick_query(QueryParams("wid=ws_1&email=Ana%40example.com&lids=news,%20vip&lids=news&lids=b%21d"))
    assert click.who == model.Identity("ws_1", "ana@example.com", None)
    assert click.list_ids == ("news", "vip")  # an id no list can have names nothing
    assert click.message_id is None


def test_oneclick_json_order_of_checks():
    with pytest.raises(PreferencesError, match="^Invalid request body$"):
        model.parse_oneclick_json([1])
    for body, message in [({}, "wid is required"), ({"wid": "w"}, "email is required"),
                          ({"wid": "w", "email": "a@b.c"}, "lids is required"),
                          ({"wid": "w", "email": "a@b.c", "lids": ["x"]}, "email_hmac is required"),
                          ({"wid": "w", "email": "a@b.c", "lids": ["x"], "email_hmac": "h", "mid": 5},
                           "mid must be a string")]:
        with pytest.raises(PreferencesError, match=f"^{message}$"):
            model.parse_oneclick_json(body)


@pytest.mark.parametrize("ua, bot", [("", True), (None, True), ("Mozilla/5.0 HeadlessChrome/120", True),
                                     ("curl/8.0", True), ("Mozilla/5.0 (Windows NT 10.0) Chrome/120 Safari/537.36", False)])
def test_bots(ua, bot):
    assert model.is_bot(ua) is bot


def test_message_vouches_only_for_its_contact_and_list():
    click = model.OneClick(model.Identity("w", "ana@example.com", None), ("news",), "m1")
    assert model.message_vouches({"contact_email": "ana@example.com", "list_id": "news"}, click)
    assert not model.message_vouches({"contact_email": "bob@example.com", "list_id": "news"}, click)
    assert not model.message_vouches({"contact_email": "ana@example.com", "list_id": None}, click)
    assert not model.message_vouches(None, click)


def test_contact_view_is_six_fields_without_nulls():
    contact = {"email": "a@b.c", "first_name": "Ana", "last_name": None, "phone": "+1", "language": "fr",
               "custom_string_1": "secret"}
    assert model.contact_view(contact) == {"email": "a@b.c", "first_name": "Ana", "language": "fr"}


def test_settings_spelled_as_iana():
    assert model.parse_settings(None, "europe/paris") == {"timezone": "Europe/Paris"}


@pytest.mark.parametrize("current, after", [
    ("active", "unsubscribed"), ("pending", "unsubscribed"), ("unsubscribed", None), ("bounced", None),
    ("complained", None), (None, None)])
def test_unsubscribe_is_guarded(current, after):
    change = lists_model.on_unsubscribe(current)
    assert (change.status if change else None) == after


def test_owner_subscribe_rules():
    assert lists_model.on_owner_subscribe("pending", True, False) == lists_model.Change("active", "list.confirmed")
    assert lists_model.on_owner_subscribe("unsubscribed", False, False) == lists_model.Change("active", "list.resubscribed")
    assert lists_model.on_owner_subscribe("unsubscribed", True, True) == lists_model.Change("pending", "list.pending")
    assert lists_model.on_owner_subscribe("bounced", False, True) is None
    with pytest.raises(lists_model.ListError, match="^list is not public$"):
        lists_model.on_owner_subscribe(None, False, False)


def test_page_rows_and_buttons():
    public = [{"id": "news", "name": "Newsletter", "description": "Monthly"}, {"id": "tips", "name": "Tips",
                                                                                "description": None}]
    members = [{"list_id": "vip", "list_name": "VIP", "status": "pending"},
               {"list_id": "news", "list_name": "old name", "status": "active"},
               {"list_id": "x", "list_name": "X", "status": "bounced"}]
    rows = model.page_rows(members, public)
    assert [(r.list_id, r.name, r.status, r.button) for r in rows] == [
        ("vip", "VIP", "pending", "confirm"), ("news", "Newsletter", "active", "unsubscribe"),
        ("x", "X", "bounced", None), ("tips", "Tips", None, "subscribe")]


def test_ui_language():
    choices = ["en", "fr", "de"]
    assert model.ui_language(choices, "de", "fr", "en", "en") == "de"
    assert model.ui_language(choices, None, "fr", "de", "en") == "fr"
    assert model.ui_language(choices, None, None, "it-IT, de;q=0.8, fr;q=0.9", "en") == "fr"
    assert model.ui_language(choices, "xx", None, "nl;q=1, *;q=0.1", "de") == "de"
    assert model.ui_language(choices, None, None, None, "pt") == "en"
