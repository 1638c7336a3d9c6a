"""Template data (templates contract 5.1, 5.2): key order, what callers cannot fake, and the exact
signed links."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit

from postroom.templates.render import context
from postroom.templates.render.context import Sending, template_data

SECRET = "9f" * 32
END = "https://links.acme.test"


def sending(**over) -> Sending:
    base = dict(workspace_id="ws1", endpoint=END, website_url="https://acme.test/", secret=SECRET,
                message_id="m-1", now=1700000000, contact={"email": "jane+x@example.com", "first_name": "Jane",
                                                          "contact_lists": [], "contact_segments": []})
    return Sending(**{**base, **over})


def expected_hmac(email: str) -> str:
    return hmac.new(SECRET.encode(), email.encode(), hashlib.sha256).hexdigest()


def test_keys_follow_the_contract_order_and_system_keys_win_over_caller_data():
    data = template_data(sending(data={"order_id": 7, "contact": {"email": "fake@evil.test"},
                                       "unsubscribe_url": "https://evil.test", "message_id": "forged"},
                                 list={"id": "news", "name": "News & Offers"},
                                 broadcast={"id": "b1", "name": "Spring"},
                                 utm={"utm_source": "news", "utm_medium": "", "utm_campaign": "spring"}))
    assert list(data) == ["order_id", "contact", "unsubscribe_url", "message_id", "notification_center_url",
                          "broadcast", "utm_source", "utm_campaign", "list", "oneclick_unsubscribe_url",
                          "confirm_subscription_url", "workspace", "tracking_opens_url"]
    assert data["contact"] == {"email": "jane+x@example.com", "first_name": "Jane"}  # no lists or segments
    assert data["message_id"] == "m-1" and "evil" not in data["unsubscribe_url"]
    assert data["workspace"] == {"base_url": END, "website_url": "https://acme.test"}
    assert data["broadcast"] == {"id": "b1", "name": "Spring"} and "utm_medium" not in data


def test_links_are_form_encoded_with_sorted_keys_and_the_workspace_hmac():
    data = template_data(sending(list={"id": "news", "name": "News & Offers"}))
    mac = expected_hmac("jane+x@example.com")
    assert data["notification_center_url"] == (
        f"{END}/notification-center?email=jane%2Bx%40example.com&email_hmac={mac}&wid=ws1")
    assert data["unsubscribe_url"] == (
        f"{END}/notification-center?action=unsubscribe&email=jane%2Bx%40example.com&email_hmac={mac}"
        "&lid=news&lname=News+%26+Offers&mid=m-1&wid=ws1")
    assert data["confirm_subscription_url"].startswith(f"{END}/notification-center?action=confirm&")
    oneclick = urlsplit(data["oneclick_unsubscribe_url"])
    assert oneclick.path == "/unsubscribe-oneclick"
    assert parse_qsl(oneclick.query) == [("email", "jane+x@example.com"), ("email_hmac", mac), ("lids", "news"),
                                         ("mid", "m-1"), ("wid", "ws1")]
    assert data["tracking_opens_url"] == ""  # tracking off (engagement contract 1.5)


def test_without_a_contact_there_are_no_signed_links_and_contact_is_empty():
    data = template_data(sending(contact=None, list={"id": "news", "name": "News"}, website_url=None))
    assert data["contact"] == {} and "notification_center_url" not in data
    assert "list" not in data and "unsubscribe_url" not in data  # a list needs a known contact
    assert data["workspace"]["website_url"] == ""


def test_the_hmac_is_of_the_normalised_email():
    assert context.email_hmac(" Jane@Example.COM ", SECRET) == expected_hmac("jane@example.com")


def test_feeds_are_passed_through_when_fetched():
    data = template_data(sending(broadcast={"id": "b", "name": "B"}, global_feed={"items": [1]},
                                 recipient_feed={"score": 3}))
    assert data["global_feed"] == {"items": [1]} and data["recipient_feed"] == {"score": 3}
    assert list(data)[-1] == "recipient_feed"
