"""Broadcast rules without a server (broadcasts-contract): request validation in the contract's
order, the merge rule, schedules and their instants, the state machine, the A/B split, winners and
the delivery object."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter

import pytest

from postroom.broadcasts import model as m
from postroom.broadcasts.model import BroadcastError

UTC = dt.timezone.utc


def refused(fn, *args) -> str:
    with pytest.raises(BroadcastError) as e:
        fn(*args)
    return e.value.message


def create(**extra):
    return {"workspace_id": "ws", "name": "Spring", "audience": {"list": "news"}, **extra}


def ab(**settings):
    base = {"enabled": True, "sample_percentage": 20,
            "variations": [{"template_id": "a"}, {"template_id": "b"}]}
    return {**base, **settings}


# ---------------------------------------------------------------- create (checks 1-9)

def test_a_minimal_create_is_a_draft_shape():
    out = m.parse_create(create())
    assert out["audience"] == {"list": "news", "segments": [], "exclude_unsubscribed": False}
    assert out["test_settings"]["variations"] == [] and out["utm_parameters"] == {} and out["data_feed"] is None


@pytest.mark.parametrize("body, message", [
    ({"name": "x", "audience": {"list": "l"}}, "workspace_id is required"),
    (create(name=""), "name is required"),
    (create(name="   "), "name is required"),
    (create(name="n" * 256), "name must be less than 255 characters"),
    (create(audience={}), "list is required"),
    (create(test_settings=ab(sample_percentage=0, variations=[{"template_id": "a"}])),
     "test sample percentage must be between 1 and 100"),
    (create(test_settings=ab(sample_percentage=101)), "test sample percentage must be between 1 and 100"),
    (create(test_settings=ab(variations=[{"template_id": "a"}])), "at least 2 variations are required for A/B testing"),
    (create(test_settings=ab(variations=[{"template_id": str(i)} for i in range(9)])),
     "maximum 8 variations are allowed for A/B testing"),
    (create(test_settings=ab(auto_send_winner=True, test_duration_hours=0, auto_send_winner_metric="open_rate")),
     "test duration must be greater than 0 hours when auto winner is enabled"),
    (create(test_settings=ab(auto_send_winner=True, test_duration_hours=169, auto_send_winner_metric="open_rate")),
     "test duration cannot exceed 168 hours (7 days)"),
    (create(test_settings=ab(auto_send_winner=True, test_duration_hours=2)),
     "auto send winner metric must be specified when auto winner is enabled"),
    (create(test_settings=ab(auto_send_winner=True, test_duration_hours=2, auto_send_winner_metric="ctr")),
     "invalid test winner metric: ctr"),
    (create(test_settings=ab(variations=[{"template_id": "a"}, {"variation_name": "B"}])),
     "template_id is required for variation 2"),
    (create(name=5), "Invalid request body"),
    (create(test_settings=ab(sample_percentage="20")), "Invalid request body"),
    (create(test_settings=ab(enabled="yes")), "Invalid request body"),
    (create(audience={"list": ["news"]}), "Invalid request body"),
    ([], "Invalid request body"),
])
def test_create_refusals_in_the_contracts_order(body, message):
    assert refused(m.parse_create, body) == message


def test_a_255_character_name_and_the_legacy_lists_are_accepted():
    out = m.parse_create(create(name="n" * 255, audience={"lists": ["news", "other"], "skip_duplicate_emails": True}))
    assert out["audience"] == {"list": "news", "segments": [], "exclude_unsubscribed": False}


def test_ignored_fields_of_create():
    out = m.parse_create(create(schedule={"is_scheduled": True}, status="processing", tracking_enabled=False))
    assert "schedule" not in out and "status" not in out and "tracking_enabled" not in out


def test_segments_are_deduplicated_and_utm_keeps_only_given_keys():
    out = m.parse_create(create(audience={"list": "l", "segments": ["s1", "s1", "s2"]},
                                utm_parameters={"source": "news", "medium": ""}))
    assert out["audience"]["segments"] == ["s1", "s2"] and out["utm_parameters"] == {"source": "news"}


# ---------------------------------------------------------------- feeds (check 7)

@pytest.mark.parametrize("feed, message", [
    ({"recipient_feed": {"enabled": True, "url": "http://feeds.example.com/x"}},
     "recipient feed: URL must use https scheme"),
    ({"global_feed": {"enabled": True, "url": "http://localhost/x"}},
     "global feed: global feed URL: URL must not use localhost or local domain"),
    ({"global_feed": {"enabled": True, "url": "https://10.1.2.3/x"}},
     "global feed: global feed URL: URL must not use private or restricted IP address"),
    ({"global_feed": {"enabled": True, "url": "https://169.254.169.254/x"}},
     "global feed: global feed URL: URL must not use private or restricted IP address"),
    ({"global_feed": {"enabled": True, "url": "https://[::ffff:127.0.0.1]/x"}},
     "global feed: global feed URL: URL must not use private or restricted IP address"),
    ({"global_feed": {"enabled": True, "url": "https://100.64.0.1/x"}},
     "global feed: global feed URL: URL must not use private or restricted IP address"),
    ({"global_feed": {"enabled": True, "url": "https://a.example.com/x?k=1"}},
     "global feed: global feed URL: URL must not contain query parameters"),
    ({"global_feed": {"enabled": True, "url": "https://a.example.com/x#f"}},
     "global feed: global feed URL: URL must not contain fragment"),
    ({"global_feed": {"enabled": True, "url": "https://metadata.google.internal/x"}},
     "global feed: global feed URL: URL must not use internal domain"),
    ({"global_feed": {"enabled": True, "url": "ftp://a.example.com/x"}},
     "global feed: global feed URL: URL must use http or https scheme"),
    ({"global_feed": {"enabled": True}}, "global feed: URL is required when global feed is enabled"),
    ({"recipient_feed": {"enabled": True, "url": "https://a.example.com/x", "headers": [{"value": "v"}]}},
     "recipient feed: header name is required"),
])
def test_feed_settings_refusals(feed, message):
    assert refused(m.parse_create, create(data_feed=feed)) == message


def test_a_disabled_feed_is_not_checked_and_update_keeps_what_it_does_not_name():
    stored = {"global_feed": {"enabled": True, "url": "https://a.example.com/g", "headers": []},
              "global_feed_data": {"title": "T"}}
    merged = m.parse_data_feed({"recipient_feed": {"enabled": False, "url": "http://127.0.0.1/"}}, stored)
    assert merged["global_feed"] == stored["global_feed"] and merged["global_feed_data"] == {"title": "T"}
    assert merged["recipient_feed"]["enabled"] is False
    assert m.parse_data_feed(None, stored) == stored


@pytest.mark.parametrize("url, https_only, message", [
    ("", False, "url is required"),
    ("http://127.0.0.1:9/x", False, "url: URL must not use private or restricted IP address"),
    ("http://a.example.com/x", True, "url must use https scheme"),
    ("gopher://a.example.com/", False, "url: URL must use http or https scheme"),
    ("https:///x", False, "url: URL must have a host"),
    ("http://[bad/", False, "url: invalid URL: Invalid IPv6 URL"),
])
def test_feed_test_route_urls(url, https_only, message):
    assert refused(lambda: m.test_route_url(url, https_only=https_only)) == message


# ---------------------------------------------------------------- update's merge rule (check 13)

def stored_broadcast():
    b = m.parse_create(create(utm_parameters={"source": "x"}, data_feed={
        "global_feed": {"enabled": True, "url": "https://a.example.com/g"}}))
    b["schedule"] = {**m.EMPTY_SCHEDULE, "is_scheduled": True, "scheduled_date": "2027-01-02",
                     "scheduled_time": "09:00", "timezone": "Europe/Paris"}
    return b


def test_update_clears_what_it_omits_but_keeps_schedule_and_feed():
    stored = stored_broadcast()
    out = m.merge_update(stored, m.parse_update({"workspace_id": "ws", "id": "b1", "name": "New",
                                                 "audience": {"list": "news"}}), started=False)
    assert out["utm_parameters"] == {} and out["name"] == "New"
    assert out["schedule"] == stored["schedule"] and out["data_feed"] == stored["data_feed"]


def test_update_refusals():
    assert refused(m.parse_update, {"workspace_id": "ws"}) == "broadcast id is required"
    assert refused(m.parse_update, {"id": "b"}) == "workspace_id is required"
    stored = stored_broadcast()
    changed = m.parse_update({"workspace_id": "ws", "id": "b1", "name": "N", "audience": {"list": "other"}})
    assert refused(m.merge_update, stored, changed, True) == \
        "cannot change audience or test_settings after sending has started"
    bad_time = m.parse_update({"workspace_id": "ws", "id": "b1", "name": "N", "audience": {"list": "news"},
                               "schedule": {"is_scheduled": True, "scheduled_date": "2027-01-02",
                                            "scheduled_time": "24:00"}})
    assert refused(m.merge_update, stored, bad_time, False) == "scheduled time must be in HH:MM format"


# ---------------------------------------------------------------- schedule (check 16)

def sched(**extra):
    return {"workspace_id": "ws", "id": "b1", **extra}


@pytest.mark.parametrize("body, message", [
    ({"id": "b1"}, "workspace_id is required"),
    ({"workspace_id": "ws"}, "broadcast id is required"),
    (sched(scheduled_time="10:00"), "scheduled_date and scheduled_time are required when not sending immediately"),
    (sched(scheduled_date="2024-02-30", scheduled_time="10:00"), "scheduled date must be in YYYY-MM-DD format"),
    (sched(scheduled_date="2024-2-3", scheduled_time="10:00"), "scheduled date must be in YYYY-MM-DD format"),
    (sched(scheduled_date="2024-02-28", scheduled_time="24:00"), "scheduled time must be in HH:MM format"),
    (sched(scheduled_date="2024-02-28", scheduled_time="9:00"), "scheduled time must be in HH:MM format"),
    (sched(scheduled_date="2024-02-28", scheduled_time="09:00", timezone="Mars/Base"),
     "invalid timezone: unknown time zone Mars/Base"),
    (sched(scheduled_date="2024-02-28", scheduled_time="09:00", timezone="../../etc/passwd"),
     "invalid timezone: unknown time zone ../../etc/passwd"),
    (sched(send_now="yes"), "Invalid request body"),
])
def test_schedule_refusals(body, message):
    assert refused(m.parse_schedule, body) == message


def test_send_now_ignores_the_date_fields():
    req = m.parse_schedule(sched(send_now=True, scheduled_date="garbage"))
    assert req.send_now and req.schedule == {}


def test_instants_in_dst_gaps_and_overlaps():
    assert m.local_instant("2026-03-08", "02:30", "America/New_York") == dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert m.local_instant("2026-11-01", "01:30", "America/New_York") == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert m.local_instant("2026-06-01", "09:00", "") == dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def test_recipient_timezones():
    s = {"scheduled_date": "2027-01-02", "scheduled_time": "09:00", "timezone": "Europe/Paris"}
    assert m.recipient_instant(s, "Asia/Tokyo") == dt.datetime(2027, 1, 2, 0, 0, tzinfo=UTC)
    assert m.recipient_instant(s, "Not/AZone") == dt.datetime(2027, 1, 2, 8, 0, tzinfo=UTC)
    assert m.recipient_instant(s, None) == dt.datetime(2027, 1, 2, 8, 0, tzinfo=UTC)
    assert m.earliest_instant(s) == dt.datetime(2027, 1, 1, 19, 0, tzinfo=UTC)   # UTC+14


# ---------------------------------------------------------------- the state machine (checks 18, 24, 27, 30, 35, 42)

def test_state_machine_refusals_with_the_contracts_messages():
    assert refused(m.check_schedule, "scheduled") == \
        "only broadcasts with draft status can be scheduled, current status: scheduled"
    assert refused(m.check_pause, "draft", "pending") == ("only broadcasts with processing, testing, winner_selected "
                                                         "or processed status can be paused, current status: draft")
    assert refused(m.check_pause, "processed", "sent") == "broadcast has already finished sending"
    assert refused(m.check_resume, "processing") == \
        "only broadcasts with paused status can be resumed, current status: processing"
    assert refused(m.check_cancel, "draft", "pending") == (
        "only broadcasts with scheduled, paused, processing, testing, test_completed, winner_selected or processed "
        "status can be cancelled, current status: draft")
    assert refused(m.check_cancel, "processed", "partially_failed") == "broadcast has already finished sending"
    assert refused(m.check_update, "processing") == "cannot update broadcast with status: processing"
    for status in ("processing", "testing", "winner_selected"):
        assert refused(m.check_delete, status) == "broadcasts in 'sending' status cannot be deleted"
    assert refused(m.check_select_winner, "draft", {"enabled": True}) == "broadcast is not in test completed state"
    assert refused(m.check_select_winner, "testing", {"enabled": True, "auto_send_winner": True}) == \
        "broadcast is not in test completed state"
    assert refused(m.check_retry_failed, "processed", "sent") == (
        "only broadcasts that finished with failures can retry failed recipients, current status: processed")
    assert refused(m.check_test_results, "draft") == "broadcast test results not available for status: draft"


def test_allowed_transitions():
    m.check_pause("processed", "sending")
    m.check_cancel("testing", "sending")
    m.check_select_winner("testing", {"enabled": True, "auto_send_winner": False})
    m.check_select_winner("test_completed", {"enabled": True, "auto_send_winner": True})
    for status in ("draft", "scheduled", "paused", "cancelled", "failed", "processed", "test_completed"):
        m.check_delete(status)
    assert m.resumed_status("testing") == "testing" and m.resumed_status(None) == "processing"


# ---------------------------------------------------------------- sendToIndividual, selectWinner, retryFailed

def test_individual_requests():
    req = m.parse_individual({"workspace_id": "ws", "id": "b1", "recipient_email": " Ann@Example.COM "})
    assert (req.broadcast_id, req.recipient, req.template_id) == ("b1", "ann@example.com", "")
    assert refused(m.parse_individual, {"workspace_id": "ws", "broadcast_id": "b1"}) == "recipient_email is required"
    assert refused(m.parse_individual, {"workspace_id": "ws", "recipient_email": "a@b.co"}) == \
        "broadcast_id is required"
    assert refused(m.parse_individual, {"workspace_id": "ws", "broadcast_id": "b", "recipient_email": "x"}) == \
        "invalid recipient_email format"
    settings = {"variations": [{"template_id": "a"}, {"template_id": "b"}]}
    assert m.individual_template(settings, "") == "a" and m.individual_template(settings, "b") == "b"
    assert refused(m.individual_template, settings, "z") == "variation with ID z not found in broadcast"
    assert refused(m.individual_template, {"variations": []}, "") == "broadcast has no variations"


def test_winner_and_retry_requests():
    assert refused(m.parse_select_winner, {"workspace_id": "ws", "id": "b"}) == "template_id is required"
    assert refused(m.check_winner_template, {"variations": [{"template_id": "a"}]}, "z") == "invalid template ID"
    assert m.parse_retry_failed({"workspace_id": "ws", "id": "b", "include_permanent": True}) == ("b", True)
    assert refused(m.send_variations, {"enabled": False, "variations": []}) == "broadcast has no variations"
    assert m.send_variations({"enabled": False, "variations": [{"template_id": "a"}, {"template_id": "b"}]}) == ["a"]


# ---------------------------------------------------------------- list and get queries (checks 10, 12, 37)

def q(**values):
    return lambda name: values.get(name)


def test_list_queries():
    assert m.parse_list(q(workspace_id="ws")) == m.ListQuery(None, 50, 0, False)
    assert m.parse_list(q(workspace_id="ws", limit="500", offset="-3")) == m.ListQuery(None, 100, 0, False)
    assert m.parse_list(q(workspace_id="ws", limit="10abc", with_templates="T")).limit == 10
    assert m.parse_list(q(workspace_id="ws", limit="0")).limit == 50
    assert refused(m.parse_list, q()) == "workspace_id is required"
    assert refused(m.parse_list, q(workspace_id="ws", limit="abc")) == "invalid limit parameter: expected integer"
    assert refused(m.parse_list, q(workspace_id="ws", offset="x")) == "invalid offset parameter: expected integer"
    assert refused(m.parse_list, q(workspace_id="ws", with_templates="maybe")) == \
        "invalid with_templates parameter: syntax error scanning boolean"
    assert refused(m.parse_get, q(workspace_id="ws")) == "id is required"
    assert refused(m.parse_results_query, q(workspace_id="ws")) == "broadcast id is required"


# ---------------------------------------------------------------- A/B (checks 33, 34)

def test_rank_key_is_the_contracts_function():
    digest = hashlib.sha256(b"b1:ann@example.com").digest()
    assert m.rank_key("b1", "ann@example.com") == int.from_bytes(digest[:8], "big", signed=True)


def test_split_of_1000_recipients_at_20_percent_over_two_variations():
    emails = [f"r{i}@example.com" for i in range(1000)]
    rows = m.split("bc", emails, ab())
    phases = Counter(p for _, p, _ in rows)
    assert phases == {"test": 200, "winner": 800}
    assert Counter(v for _, p, v in rows if p == "test") == {0: 100, 1: 100}
    expected = sorted(emails, key=lambda e: m.rank_key("bc", e))[:200]
    assert [e for e, p, _ in rows if p == "test"] == expected
    assert m.split("bc", list(reversed(emails)), ab()) == rows           # order of input does not matter


def test_sample_sizes_and_single_phase():
    assert [m.sample_size(t, 10) for t in (0, 1, 5, 10, 99)] == [0, 1, 1, 1, 9]
    assert m.sample_size(7, 100) == 7
    assert {p for _, p, _ in m.split("b", ["a@x.co", "b@x.co"], {"enabled": False})} == {"single"}
    three = m.split("b", [f"{i}@x.co" for i in range(10)], ab(sample_percentage=100, variations=[
        {"template_id": "a"}, {"template_id": "b"}, {"template_id": "c"}]))
    assert sorted(Counter(v for _, _, v in three).values()) == [3, 3, 4]


def test_winners():
    f = [m.VariationFigures("a", 100, 0, 10, 1), m.VariationFigures("b", 100, 0, 20, 0)]
    assert m.automatic_winner(f, "open_rate") == "b" and m.automatic_winner(f, "click_rate") == "a"
    zeros = [m.VariationFigures("a", 0, 0, 0, 0), m.VariationFigures("b", 0, 0, 0, 0)]
    assert m.automatic_winner(zeros, "open_rate") == "a" and m.recommended_winner(zeros) == "a"
    assert m.recommended_winner(f) == "b"          # 0.7 x 0.01 + 0.3 x 0.1 < 0.3 x 0.2
    t = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert not m.winner_due(t, 2, t + dt.timedelta(hours=1)) and m.winner_due(t, 2, t + dt.timedelta(hours=2))


# ---------------------------------------------------------------- the delivery object (checks 23, 43)

def test_delivery_status():
    assert m.delivery_status("draft", {}) == "pending"
    assert m.delivery_status("processed", {"recipients": 0}) == "sent"
    assert m.delivery_status("processing", {"recipients": 5, "queued": 2, "sent": 3}) == "sending"
    assert m.delivery_status("test_completed", {"recipients": 5, "held": 4, "sent": 1}) == "waiting_for_winner"
    assert m.delivery_status("processed", {"recipients": 5, "sent": 4, "failed": 1}) == "partially_failed"
    assert m.delivery_status("cancelled", {"recipients": 5, "sent": 1, "cancelled": 4}) == "cancelled"
    wire = m.delivery_wire("processed", {"recipients": 2, "sent": 2}, "2026-01-01T00:00:00Z")
    assert wire["status"] == "sent" and wire["finished_at"] == "2026-01-01T00:00:00Z"
    assert sum(wire[k] for k in ("held", "waiting", "queued", "sent", "failed", "skipped", "cancelled")) == \
        wire["recipients"]
