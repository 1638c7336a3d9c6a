"""Unit tests of the pure contact rules (postroom.contacts.model): no database, no fixtures."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import email_validator
import pytest

from postroom.contacts import model as m
from postroom.contacts.model import ContactError

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
EMAIL = "user@example.com"

# The founding page's request contact; its response contact is the same object, key for key.
SEED = {
    "email": "user@example.com",
    "external_id": "user_12345",
    "timezone": "America/New_York",
    "language": "en-US",
    "first_name": "John",
    "last_name": "Doe",
    "phone": "+15551234567",
    "address_line_1": "123 Main St",
    "address_line_2": "Apt 4B",
    "country": "US",
    "postcode": "10001",
    "state": "NY",
    "job_title": "Software Engineer",
    "lifetime_value": 1250.5,
    "orders_count": 5,
    "last_order_at": "2023-05-15T14:30:00Z",
    "custom_string_1": "Premium tier",
    "custom_string_2": "<string>",
    "custom_string_3": "<string>",
    "custom_string_4": "<string>",
    "custom_string_5": "<string>",
    "custom_number_1": 42,
    "custom_number_2": 123,
    "custom_number_3": 123,
    "custom_number_4": 123,
    "custom_number_5": 123,
    "custom_datetime_1": "2023-06-01T09:00:00Z",
    "custom_datetime_2": "2023-11-07T05:31:56Z",
    "custom_datetime_3": "2023-11-07T05:31:56Z",
    "custom_datetime_4": "2023-11-07T05:31:56Z",
    "custom_datetime_5": "2023-11-07T05:31:56Z",
    "custom_json_1": {"preferences": {"theme": "dark", "notifications": True}},
    "custom_json_2": {},
    "custom_json_3": {},
    "custom_json_4": {},
    "custom_json_5": {},
    "created_at": "2023-01-15T10:30:00Z",
    "updated_at": "2023-04-22T15:45:00Z",
}

STRING_LIMITS = {
    "external_id": 255, "language": 50, "first_name": 255, "last_name": 255, "full_name": 255,
    "phone": 50, "address_line_1": 255, "address_line_2": 255, "country": 100, "postcode": 20,
    "state": 100, "job_title": 255, **{f"custom_string_{i}": 255 for i in range(1, 6)},
}
NUMBER_FIELDS = ["lifetime_value", *(f"custom_number_{i}" for i in range(1, 6))]
DATETIME_FIELDS = ["last_order_at", *(f"custom_datetime_{i}" for i in range(1, 6))]
JSON_FIELDS = [f"custom_json_{i}" for i in range(1, 6)]
# One value of each JSON type, with the name Notifuse gives it.
OF_EACH_TYPE = [("x", "String"), (1, "Number"), (1.5, "Number"), (True, "True"), (False, "False"),
                ({}, "JSON"), ([], "JSON")]


def parse(**fields):
    return m.parse_contact({"email": EMAIL, **fields})


def error_of(raw, parser=m.parse_contact) -> str:
    with pytest.raises(ContactError) as info:
        parser(raw)
    assert str(info.value) == info.value.message
    return info.value.message


def bad(**fields) -> str:
    return error_of({"email": EMAIL, **fields})


def email_of_length(n: int, local: str = "a") -> str:
    """A well-formed address of exactly n characters (a long local part is valid, if unusual)."""
    return local * (n - len("@example.com")) + "@example.com"


# ---------------------------------------------------------------- the field table

def test_fields_in_output_order():
    # The seed lists every field but full_name, in output order.
    expected = [*SEED][:6] + ["full_name"] + [*SEED][6:]
    assert m.FIELDS == tuple(expected)
    assert len(m.FIELDS) == 39
    assert m.DATA_FIELDS == tuple(expected)[1:-2]
    assert m.JSON_FIELDS == frozenset(JSON_FIELDS)
    assert m.NUMBER_FIELDS == frozenset(NUMBER_FIELDS)
    assert m.DATETIME_FIELDS == frozenset(DATETIME_FIELDS)
    assert m.STRING_FIELDS == frozenset(STRING_LIMITS) | {"timezone"}
    assert "orders_count" not in m.NUMBER_FIELDS | m.STRING_FIELDS | m.DATETIME_FIELDS
    assert m.EMPTY == dict.fromkeys(m.FIELDS)


@pytest.mark.parametrize("value, name", [(None, "Null"), *OF_EACH_TYPE, ({"a": 1}, "JSON"), ([1], "JSON")])
def test_json_type_name(value, name):
    assert m.json_type_name(value) == name


def test_contact_error_is_a_value_error_with_message():
    err = ContactError("invalid contact: x")
    assert isinstance(err, ValueError)
    assert err.message == str(err) == "invalid contact: x"


# ---------------------------------------------------------------- the seed

def test_seed_parses_and_round_trips_to_the_seed_response():
    parsed = m.parse_contact(SEED)
    assert parsed["lifetime_value"] == 1250.5 and isinstance(parsed["custom_number_1"], float)
    assert parsed["orders_count"] == 5 and type(parsed["orders_count"]) is int
    assert parsed["last_order_at"] == dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC)
    assert parsed["created_at"] == dt.datetime(2023, 1, 15, 10, 30, tzinfo=UTC)
    row = m.merge(None, parsed, NOW)
    assert row["created_at"] == dt.datetime(2023, 1, 15, 10, 30, tzinfo=UTC)  # stored as given
    assert row["updated_at"] == dt.datetime(2023, 4, 22, 15, 45, tzinfo=UTC)
    wire = m.to_wire(row)
    assert wire == SEED
    assert list(wire) == list(SEED)
    assert type(wire["custom_number_1"]) is int and wire["lifetime_value"] == 1250.5


def test_parse_does_not_mutate_its_input():
    raw = {"email": " User@Example.COM ", "first_name": " John ", "custom_json_1": {"a": [1]}}
    copy = {"email": " User@Example.COM ", "first_name": " John ", "custom_json_1": {"a": [1]}}
    m.parse_contact(raw)
    assert raw == copy


# ---------------------------------------------------------------- email

@pytest.mark.parametrize("raw", [None, [], "user@example.com", 5, {}, {"email": None}, {"email": ""},
                                 {"email": "   "}, {"email": "\u00a0\u2003\t\n"}, {"EMAIL": EMAIL}])
def test_email_is_required(raw):
    assert error_of(raw) == "invalid contact: email is required"


@pytest.mark.parametrize("value, name", [v for v in OF_EACH_TYPE if v[1] != "String"])
def test_email_of_wrong_type(value, name):
    assert error_of({"email": value}) == f"invalid contact: invalid type for email: expected string, got {name}"


@pytest.mark.parametrize("value", [
    "plainaddress", "a@b", "a@@b.com", "a b@c.com", "a..b@x.com", ".a@x.com", "a.@x.com", "@x.com",
    "a@", "a@-x.com", "a@x-.com", "a@x..com", "a@x.com.", "a@1.2.3.4", "a@[1.2.3.4]", '"a b"@x.com',
    "John <john@x.com>", "user@localhost", "a@ab--cd.com", "a@-x.local", "a@x..test",
    "a@x.c1", "a" * 300,
])
def test_invalid_email_format(value):
    assert error_of({"email": value}) == "invalid contact: invalid email format"


@pytest.mark.parametrize("value, stored", [
    ("User@Example.COM", "user@example.com"),
    ("\u00a0 User@Example.com\u2003\n", "user@example.com"),
    ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ("o'hara_x{y}@a-b.example", "o'hara_x{y}@a-b.example"),
    ("ÜSER@Bücher.ch", "üser@bücher.ch"),  # internationalised: the slow path
    ("user@xn--bcher-kva.ch", "user@xn--bcher-kva.ch"),
    ("a@123.com", "a@123.com"),
    ("User@Shop.TEST", "user@shop.test"),  # special-use domains are valid (Notifuse takes them)
    ("a@b.local", "a@b.local"),
    ("Ü@b.local", "ü@b.local"),  # the slow path too
])
def test_valid_email_is_trimmed_and_lower_cased(value, stored):
    assert m.validate_email(value) == stored
    assert m.parse_contact({"email": value})["email"] == stored


def test_normalize_email():
    assert m.normalize_email("  Foo@BAR.com\u3000") == "foo@bar.com"
    assert m.normalize_email("") == ""


@pytest.mark.parametrize("local", ["a", "ü"])  # ASCII (fast path) and internationalised (email_validator)
def test_email_length_limit(local):
    assert len(email_of_length(255, local)) == 255
    at_limit = email_of_length(255, local)
    assert m.validate_email(at_limit) == at_limit
    assert error_of({"email": email_of_length(256, local)}) == "invalid contact: email exceeds 255 characters"
    assert error_of({"email": email_of_length(1000, local)}) == "invalid contact: email exceeds 255 characters"


def test_email_format_is_checked_before_length():
    # The domain's own limits (253 characters, 63 per label) are format, not the 255 limit.
    assert error_of({"email": "a@" + "b" * 300 + ".com"}) == "invalid contact: invalid email format"
    assert error_of({"email": "a@" + "b" * 64 + ".com"}) == "invalid contact: invalid email format"
    assert m.validate_email("a@" + "b" * 63 + ".com") == "a@" + "b" * 63 + ".com"


def test_email_limit_counts_after_trimming():
    address = email_of_length(255)
    assert m.validate_email("  " + address.upper() + "\u00a0") == address


def test_email_nul_and_invalid_unicode():
    assert error_of({"email": "a\x00b@x.com"}) == "invalid contact: email contains a NUL character"
    assert error_of({"email": "a\ud800@x.com"}) == "invalid contact: email contains invalid Unicode"


def test_fast_email_pattern_never_accepts_what_email_validator_rejects():
    rnd = random.Random(7)
    local_chars, domain_chars = "ab0-._+!#$%&'*/=?^`{|}~@", "ab0-.x"
    tlds = ["com", "c0", "1", "a", "x-y", "test", "localhost", "co.uk", ""]
    checked = 0
    for _ in range(20000):
        local = "".join(rnd.choice(local_chars) for _ in range(rnd.randint(1, 6)))
        domain = "".join(rnd.choice(domain_chars) for _ in range(rnd.randint(1, 10)))
        tld = rnd.choice(tlds)
        address = f"{local}@{domain}.{tld}" if tld else f"{local}@{domain}"
        if not m._FAST_EMAIL.fullmatch(address):
            continue
        checked += 1
        # special-use names are valid here (email_validator refuses them in every mode): the
        # oracle judges the same name's syntax under an ordinary top-level name
        special = address.rpartition("@")[2].endswith(m._SPECIAL_SUFFIXES)
        try:
            email_validator.validate_email(address + ".com" if special else address,
                                           check_deliverability=False, allow_smtputf8=True)
            expected = True
        except email_validator.EmailNotValidError:
            expected = False
        assert m._email_format_ok(address) is expected, address
    assert checked > 1000


# ---------------------------------------------------------------- strings

@pytest.mark.parametrize("field", [*STRING_LIMITS, "timezone"])
@pytest.mark.parametrize("value, name", [v for v in OF_EACH_TYPE if v[1] != "String"])
def test_string_fields_reject_other_types(field, value, name):
    assert bad(**{field: value}) == f"invalid contact: invalid type for {field}: expected string, got {name}"


@pytest.mark.parametrize("value, stored", [
    ("  John  ", "John"), ("\u00a0John\u2003", "John"), ("\t\r\n x y \u3000", "x y"),
    ("", ""), ("   ", ""), ("\u00a0", ""),
])
def test_strings_are_trimmed_and_empty_stays_empty(value, stored):
    assert parse(first_name=value, custom_string_3=value)["first_name"] == stored
    assert parse(custom_string_3=value)["custom_string_3"] == stored


@pytest.mark.parametrize("field, limit", STRING_LIMITS.items())
def test_string_limits(field, limit):
    assert parse(**{field: "x" * limit})[field] == "x" * limit
    assert parse(**{field: "é" * limit + "  "})[field] == "é" * limit  # characters, not bytes
    assert bad(**{field: "x" * (limit + 1)}) == f"invalid contact: {field} exceeds {limit} characters"


def test_limit_is_counted_after_trimming():
    assert parse(postcode="  " + "1" * 20 + "\u00a0")["postcode"] == "1" * 20


@pytest.mark.parametrize("field", ["external_id", "first_name", "custom_string_5", "timezone"])
def test_nul_and_lone_surrogates_are_rejected(field):
    assert bad(**{field: "a\x00b"}) == f"invalid contact: {field} contains a NUL character"
    assert bad(**{field: "a\udc80b"}) == f"invalid contact: {field} contains invalid Unicode"


def test_unicode_text_is_kept():
    assert parse(first_name="Zoë 🎉 名前")["first_name"] == "Zoë 🎉 名前"


# ---------------------------------------------------------------- timezone

@pytest.mark.parametrize("value, stored", [
    ("America/New_York", "America/New_York"), ("  Europe/Paris\u00a0", "Europe/Paris"),
    ("UTC", "UTC"), ("Etc/GMT+5", "Etc/GMT+5"), ("US/Eastern", "US/Eastern"),
    ("america/new_york", "America/New_York"), ("EUROPE/PARIS", "Europe/Paris"),
    ("", ""),  # kept as "": Notifuse stores any string and clients may send "" for "none"
])
def test_valid_timezones(value, stored):
    assert parse(timezone=value)["timezone"] == stored


@pytest.mark.parametrize("value", ["Mars/Phobos", "../etc/passwd", "/usr/share/zoneinfo/UTC", "localtime",
                                   "posixrules", "Factory", "America/", "America/New York", "+05:00"])
def test_invalid_timezones(value):
    assert bad(timezone=value) == f"invalid contact: invalid timezone: {value}"


def test_invalid_timezone_echoes_the_trimmed_value():
    assert bad(timezone=" Nowhere\u2003") == "invalid contact: invalid timezone: Nowhere"


def test_a_long_invalid_value_is_not_echoed_whole():
    message = bad(timezone="x" * 5000)
    assert message == "invalid contact: invalid timezone: " + "x" * 100 + "..."


# ---------------------------------------------------------------- numbers

@pytest.mark.parametrize("field", NUMBER_FIELDS)
@pytest.mark.parametrize("value, name", [v for v in OF_EACH_TYPE if v[1] != "Number"])
def test_number_fields_reject_other_types(field, value, name):
    assert bad(**{field: value}) == f"invalid contact: invalid type for {field}: expected number, got {name}"


@pytest.mark.parametrize("field", NUMBER_FIELDS)
def test_numbers_become_floats(field):
    for value in (42, 42.0, -3, 0, 1250.5, 1e300, 2**70):
        parsed = parse(**{field: value})[field]
        assert type(parsed) is float and parsed == value


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10**400])
def test_numbers_must_be_finite(value):
    assert bad(lifetime_value=value) == "invalid contact: lifetime_value must be a finite number"
    assert bad(custom_number_4=value) == "invalid contact: custom_number_4 must be a finite number"


@pytest.mark.parametrize("value, stored", [(5, 5), (5.0, 5), (0, 0), (-0.0, 0), (2**63 - 1, 2**63 - 1)])
def test_orders_count_is_an_integer(value, stored):
    parsed = parse(orders_count=value)["orders_count"]
    assert parsed == stored and type(parsed) is int


@pytest.mark.parametrize("value, message", [
    (1.5, "invalid type for orders_count: expected integer, got Number"),
    ("5", "invalid type for orders_count: expected integer, got String"),
    (True, "invalid type for orders_count: expected integer, got True"),
    (False, "invalid type for orders_count: expected integer, got False"),
    ({}, "invalid type for orders_count: expected integer, got JSON"),
    ([5], "invalid type for orders_count: expected integer, got JSON"),
    (-1, "orders_count must be >= 0"),
    (-1.0, "orders_count must be >= 0"),
    (-1.5, "invalid type for orders_count: expected integer, got Number"),  # type before limit
    (2**63, f"orders_count must be <= {2**63 - 1}"),
    (float("inf"), "orders_count must be a finite number"),
    (float("nan"), "orders_count must be a finite number"),
])
def test_orders_count_errors(value, message):
    assert bad(orders_count=value) == "invalid contact: " + message


# ---------------------------------------------------------------- datetimes

@pytest.mark.parametrize("field", [*DATETIME_FIELDS, "created_at", "updated_at"])
@pytest.mark.parametrize("value, name", [v for v in OF_EACH_TYPE if v[1] != "String"])
def test_datetime_fields_reject_other_types(field, value, name):
    assert bad(**{field: value}) == f"invalid contact: invalid type for {field}: expected string, got {name}"


@pytest.mark.parametrize("value, expected", [
    ("2023-05-15T14:30:00Z", dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC)),
    ("2023-05-15t14:30:00z", dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC)),
    ("2023-05-15T16:30:00+02:00", dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC)),
    ("2023-05-15T09:00:00-05:30", dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC)),
    ("2023-05-15T14:30:00-00:00", dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC)),
    ("2023-05-15T14:30:00.5Z", dt.datetime(2023, 5, 15, 14, 30, 0, 500000, tzinfo=UTC)),
    ("2023-05-15T14:30:00.123456789Z", dt.datetime(2023, 5, 15, 14, 30, 0, 123457, tzinfo=UTC)),
    ("2023-05-15T14:30:59.9999996Z", dt.datetime(2023, 5, 15, 14, 31, tzinfo=UTC)),  # rounds up a second
    ("2024-01-01T00:30:00+01:00", dt.datetime(2023, 12, 31, 23, 30, tzinfo=UTC)),  # crosses a year
    (" 2023-05-15T14:30:00Z\u00a0", dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC)),
])
def test_parse_time_gives_aware_utc(value, expected):
    parsed = m.parse_time(value, "last_order_at")
    assert parsed == expected and parsed.tzinfo is UTC
    assert parse(custom_datetime_2=value)["custom_datetime_2"] == expected


@pytest.mark.parametrize("value, reason", [
    ("2023-05-15T14:30:00", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),  # naive
    ("2023-05-15", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ("2023-05-15 14:30:00Z", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ("20230515T143000Z", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ("2023-05-15T14:30:00+0200", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ("2023-05-15T14:30:00.Z", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ("٢٠٢٣-05-15T14:30:00Z", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),  # non-ASCII digits
    ("", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ("yesterday", "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ("0000-01-01T00:00:00Z", "year out of range"),
    ("2023-13-01T00:00:00Z", "month out of range"),
    ("2023-00-01T00:00:00Z", "month out of range"),
    ("2023-02-30T00:00:00Z", "day out of range"),
    ("2023-02-00T00:00:00Z", "day out of range"),
    ("2023-05-15T24:00:00Z", "hour out of range"),
    ("2023-05-15T14:60:00Z", "minute out of range"),
    ("2023-05-15T14:30:60Z", "second out of range"),
    ("2023-05-15T14:30:00+24:00", "time zone offset out of range"),
    ("2023-05-15T14:30:00+01:60", "time zone offset out of range"),
    ("0001-01-01T00:00:00+01:00", "time out of range"),
])
def test_invalid_times(value, reason):
    shown = value.strip()
    assert bad(last_order_at=value) == (
        f'invalid contact: invalid time format for last_order_at: parsing time "{shown}": {reason}')
    with pytest.raises(ContactError) as info:
        m.parse_time(value, "custom_datetime_3")
    assert info.value.message.startswith("invalid contact: invalid time format for custom_datetime_3: ")


@pytest.mark.parametrize("t, text", [
    (dt.datetime(2023, 1, 15, 10, 30, tzinfo=UTC), "2023-01-15T10:30:00Z"),
    (dt.datetime(2023, 1, 15, 10, 30, 0, 500000, tzinfo=UTC), "2023-01-15T10:30:00.5Z"),
    (dt.datetime(2023, 1, 15, 10, 30, 0, 123456, tzinfo=UTC), "2023-01-15T10:30:00.123456Z"),
    (dt.datetime(2023, 1, 15, 10, 30, 0, 120, tzinfo=UTC), "2023-01-15T10:30:00.00012Z"),
    (dt.datetime(2023, 1, 15, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2023-01-15T10:30:00Z"),
    (dt.datetime(2023, 1, 15, 10, 30), "2023-01-15T10:30:00Z"),  # naive: taken as UTC
    (dt.datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC), "0005-01-02T03:04:05Z"),
])
def test_format_time(t, text):
    assert m.format_time(t) == text


def test_time_round_trip():
    for text in ("2023-01-15T10:30:00Z", "2023-01-15T10:30:00.5Z", "1999-12-31T23:59:59.999999Z"):
        assert m.format_time(m.parse_time(text, "x")) == text


# ---------------------------------------------------------------- custom JSON

@pytest.mark.parametrize("field", JSON_FIELDS)
@pytest.mark.parametrize("value, name", [v for v in OF_EACH_TYPE if v[1] != "JSON"])
def test_json_fields_reject_scalars(field, value, name):
    assert bad(**{field: value}) == f"invalid contact: invalid JSON value for {field}, got {name}"


def test_json_values_are_kept_as_given():
    value = {"a": [1, 2.5, {"b": None, "c": True}], "d": "x"}
    assert parse(custom_json_2=value)["custom_json_2"] is value
    assert parse(custom_json_3=[])["custom_json_3"] == []


@pytest.mark.parametrize("value", [
    {"a\x00": 1}, {"a": "b\x00"}, [{"x": [["deep\x00"]]}], {"a": {"b": {"c\x00": None}}},
])
def test_json_with_nul_anywhere_is_rejected(value):
    assert bad(custom_json_1=value) == "invalid contact: custom_json_1 contains a NUL character"


def test_json_with_invalid_unicode_or_non_finite_numbers_is_rejected():
    assert bad(custom_json_5={"k": ["\ud800"]}) == "invalid contact: custom_json_5 contains invalid Unicode"
    assert bad(custom_json_5={"\udfff": 1}) == "invalid contact: custom_json_5 contains invalid Unicode"
    assert bad(custom_json_4=[1, [float("nan")]]) == "invalid contact: custom_json_4 contains a non-finite number"


def nested(depth: int, leaf):
    value = [leaf]
    for _ in range(depth - 1):
        value = [value]
    return value


def test_json_nesting_limit():
    assert parse(custom_json_1=nested(128, 1))["custom_json_1"] == nested(128, 1)
    assert parse(custom_json_1={"a": nested(127, 1)})["custom_json_1"] == {"a": nested(127, 1)}
    assert bad(custom_json_1=nested(129, 1)) == "invalid contact: custom_json_1 is nested more than 128 levels deep"
    assert bad(custom_json_2=nested(100_000, 1)) == (
        "invalid contact: custom_json_2 is nested more than 128 levels deep")


def test_to_wire_json_rebuild_does_not_recurse():
    wired = m.to_wire({"email": EMAIL, "custom_json_1": nested(5000, 1.0)})["custom_json_1"]
    for _ in range(4999):
        wired = wired[0]
    assert wired == [1] and type(wired[0]) is int


# ---------------------------------------------------------------- the whole contact

def test_only_present_known_keys_are_returned():
    parsed = m.parse_contact({"email": EMAIL, "first_name": "A", "nickname": "x", "First_Name": "B",
                              "phone": None, "custom_json_1": None})
    assert parsed == {"email": EMAIL, "first_name": "A", "phone": None, "custom_json_1": None}


def test_null_timestamps_count_as_absent():
    assert parse(created_at=None, updated_at=None) == {"email": EMAIL}


@pytest.mark.parametrize("contact, message", [
    ({"email": "nope", "first_name": 5}, "invalid email format"),
    ({"email": EMAIL, "first_name": 5, "external_id": 5},
     "invalid type for external_id: expected string, got Number"),
    ({"email": EMAIL, "timezone": "Nowhere", "language": "x" * 51}, "invalid timezone: Nowhere"),
    ({"email": EMAIL, "orders_count": -1, "lifetime_value": "x"},
     "invalid type for lifetime_value: expected number, got String"),
    ({"email": EMAIL, "custom_json_1": "x", "custom_datetime_5": 1},
     "invalid type for custom_datetime_5: expected string, got Number"),
    ({"email": EMAIL, "updated_at": "bad", "created_at": 1},
     "invalid type for created_at: expected string, got Number"),
    ({"email": EMAIL, "custom_string_1": 1, "last_order_at": "bad"},
     'invalid time format for last_order_at: parsing time "bad": '
     "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
])
def test_first_failure_in_field_order_wins(contact, message):
    # Whatever order the keys arrive in.
    assert error_of(contact) == "invalid contact: " + message
    assert error_of(dict(reversed(list(contact.items())))) == "invalid contact: " + message


def test_import_variant_drops_nulls_and_keeps_every_other_rule():
    raw = {"email": " A@B.com ", "first_name": None, "last_name": "", "custom_json_1": None,
           "lifetime_value": None, "phone": " 1 ", "created_at": None}
    assert m.parse_contact_for_import(raw) == {"email": "a@b.com", "last_name": "", "phone": "1"}
    assert error_of({"email": None}, m.parse_contact_for_import) == "invalid contact: email is required"
    assert error_of({"email": EMAIL, "phone": 1}, m.parse_contact_for_import) == (
        "invalid contact: invalid type for phone: expected string, got Number")
    assert error_of("x", m.parse_contact_for_import) == "invalid contact: email is required"


# ---------------------------------------------------------------- merge

def stored_row(**fields):
    row = dict(m.EMPTY)
    row.update(email=EMAIL, created_at=dt.datetime(2020, 1, 1, tzinfo=UTC),
               updated_at=dt.datetime(2021, 1, 1, tzinfo=UTC), **fields)
    return row


def test_merge_creates_a_full_row():
    row = m.merge(None, parse(first_name="John", phone=None), NOW)
    assert list(row) == list(m.FIELDS)
    assert row["email"] == EMAIL and row["first_name"] == "John"
    assert row["phone"] is None and row["last_name"] is None
    assert row["created_at"] == NOW and row["updated_at"] == NOW


def test_merge_rule_on_an_existing_contact():
    existing = stored_row(first_name="John", last_name="Doe", phone="123", country="US",
                          custom_json_1={"a": 1}, lifetime_value=10.0)
    before = dict(existing)
    incoming = parse(last_name=None, phone="", country="FR", custom_json_1={"b": 2})
    row = m.merge(existing, incoming, NOW)
    assert row["first_name"] == "John"  # absent: unchanged
    assert row["lifetime_value"] == 10.0
    assert row["last_name"] is None  # null: cleared
    assert row["phone"] == ""  # "": stored as ""
    assert row["country"] == "FR"  # value: set
    assert row["custom_json_1"] == {"b": 2}  # replaced whole, not deep-merged
    assert existing == before  # the stored row is not modified
    assert set(row) == set(m.FIELDS)


def test_merge_timestamps():
    given_created = dt.datetime(2019, 5, 5, tzinfo=UTC)
    given_updated = dt.datetime(2019, 6, 6, tzinfo=UTC)
    existing = stored_row()
    # update, timestamps absent: created_at unchanged, updated_at now
    row = m.merge(existing, parse(first_name="x"), NOW)
    assert row["created_at"] == existing["created_at"] and row["updated_at"] == NOW
    # update, timestamps given: both stored
    row = m.merge(existing, parse(created_at="2019-05-05T00:00:00Z", updated_at="2019-06-06T00:00:00Z"), NOW)
    assert row["created_at"] == given_created and row["updated_at"] == given_updated
    # create, timestamps given / absent
    row = m.merge(None, parse(created_at="2019-05-05T00:00:00Z"), NOW)
    assert row["created_at"] == given_created and row["updated_at"] == NOW
    row = m.merge(None, parse(updated_at="2019-06-06T00:00:00Z"), NOW)
    assert row["created_at"] == NOW and row["updated_at"] == given_updated
    # null timestamps are absent
    row = m.merge(existing, parse(created_at=None, updated_at=None), NOW)
    assert row["created_at"] == existing["created_at"] and row["updated_at"] == NOW


def test_merge_ignores_extra_keys_of_the_stored_row():
    existing = {**stored_row(first_name="A"), "workspace_id": "ws_1"}
    assert "workspace_id" not in m.merge(existing, parse(), NOW)


# ---------------------------------------------------------------- diff

def test_no_diff_between_equal_rows():
    row = m.merge(None, m.parse_contact(SEED), NOW)
    copy = {k: (dict(v) if isinstance(v, dict) else v) for k, v in row.items()}
    assert m.diff(row, copy) == {}
    assert m.changed(row, copy) is False


def test_diff_reports_wire_values_of_changed_data_fields_only():
    old = stored_row(first_name="John", lifetime_value=42.0, last_order_at=dt.datetime(2023, 1, 1, tzinfo=UTC),
                     phone="1", custom_json_1={"a": 1})
    new = {**old, "first_name": "Jane", "lifetime_value": 43.0, "phone": None, "last_name": "",
           "last_order_at": dt.datetime(2023, 1, 2, 0, 0, 0, 500000, tzinfo=UTC),
           "created_at": NOW, "updated_at": NOW}
    assert m.diff(old, new) == {
        "first_name": {"old": "John", "new": "Jane"},
        "last_name": {"old": None, "new": ""},
        "phone": {"old": "1", "new": None},
        "lifetime_value": {"old": 42, "new": 43},
        "last_order_at": {"old": "2023-01-01T00:00:00Z", "new": "2023-01-02T00:00:00.5Z"},
    }
    assert type(m.diff(old, new)["lifetime_value"]["old"]) is int
    assert m.changed(old, new) is True


def test_diff_ignores_timestamps_and_email():
    old = stored_row()
    assert m.diff(old, {**old, "email": "other@example.com", "created_at": NOW, "updated_at": NOW}) == {}


def test_diff_equalities_by_value():
    old = stored_row(custom_number_1=42, orders_count=5, custom_json_1={"a": 1, "b": [1, {"c": "d"}]},
                     lifetime_value=Decimal("0.1"), custom_datetime_1=dt.datetime(2023, 1, 1, 12, tzinfo=UTC))
    new = {**old, "custom_number_1": 42.0, "orders_count": 5.0, "custom_json_1": {"b": [1.0, {"c": "d"}], "a": 1},
           "lifetime_value": 0.1,
           "custom_datetime_1": dt.datetime(2023, 1, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))}
    assert m.diff(old, new) == {}


def test_json_diff_tells_true_from_one_and_order_of_arrays():
    old = stored_row(custom_json_1={"a": 1}, custom_json_2=[1, 2])
    new = {**old, "custom_json_1": {"a": True}, "custom_json_2": [2, 1]}
    assert m.diff(old, new) == {"custom_json_1": {"old": {"a": 1}, "new": {"a": True}},
                                "custom_json_2": {"old": [1, 2], "new": [2, 1]}}
    assert m.diff(stored_row(custom_json_3={}), stored_row(custom_json_3=[])) == {
        "custom_json_3": {"old": {}, "new": []}}


def test_diff_of_a_creation_lists_every_set_field():
    row = m.merge(None, parse(first_name="A", custom_json_1={"x": 1}, custom_string_1=""), NOW)
    assert m.diff(m.EMPTY, row) == {"first_name": {"old": None, "new": "A"},
                                    "custom_string_1": {"old": None, "new": ""},
                                    "custom_json_1": {"old": None, "new": {"x": 1}}}
    assert m.diff(None, row) == m.diff(m.EMPTY, row)


# ---------------------------------------------------------------- to_wire

def test_to_wire_omits_nulls_keeps_empty_strings_and_orders_fields():
    row = {"updated_at": NOW, "phone": "", "first_name": None, "email": EMAIL, "custom_json_2": None,
           "created_at": NOW, "lifetime_value": 0.0, "workspace_id": "ws_1", "contact_lists": []}
    assert list(m.to_wire(row).items()) == [
        ("email", EMAIL), ("phone", ""), ("lifetime_value", 0),
        ("created_at", "2024-03-01T12:00:00Z"), ("updated_at", "2024-03-01T12:00:00Z")]


def test_to_wire_numbers():
    wire = m.to_wire({"email": EMAIL, "lifetime_value": 42.0, "custom_number_1": 1250.5,
                      "custom_number_2": -7.0, "custom_number_3": 1e300, "custom_number_4": Decimal("12.50"),
                      "custom_number_5": Decimal("3"), "orders_count": 5})
    assert wire["lifetime_value"] == 42 and type(wire["lifetime_value"]) is int
    assert wire["custom_number_1"] == 1250.5 and type(wire["custom_number_1"]) is float
    assert wire["custom_number_2"] == -7 and type(wire["custom_number_2"]) is int
    assert wire["custom_number_3"] == 1e300  # too large to be an exact integer: stays a float
    assert wire["custom_number_4"] == 12.5 and wire["custom_number_5"] == 3 and type(wire["custom_number_5"]) is int
    assert wire["orders_count"] == 5


def test_to_wire_times():
    wire = m.to_wire({"email": EMAIL,
                      "last_order_at": dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC),
                      "custom_datetime_1": dt.datetime(2023, 5, 15, 14, 30, 0, 250000, tzinfo=UTC),
                      "custom_datetime_2": dt.datetime(2023, 5, 15, 16, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))})
    assert wire["last_order_at"] == "2023-05-15T14:30:00Z"
    assert wire["custom_datetime_1"] == "2023-05-15T14:30:00.25Z"
    assert wire["custom_datetime_2"] == "2023-05-15T14:30:00Z"


def test_to_wire_json():
    value = {"a": {"b": [1.0, 2.5, True, None, "s"]}, "c": 3}
    wire = m.to_wire({"email": EMAIL, "custom_json_1": value, "custom_json_2": '{"x": [1]}',
                      "custom_json_3": b"[]", "custom_json_4": {"plain": [1, "x"]}})
    assert wire["custom_json_1"] == {"a": {"b": [1, 2.5, True, None, "s"]}, "c": 3}
    assert type(wire["custom_json_1"]["a"]["b"][0]) is int and wire["custom_json_1"]["a"]["b"][2] is True
    assert value == {"a": {"b": [1.0, 2.5, True, None, "s"]}, "c": 3}  # the row is not modified
    assert wire["custom_json_2"] == {"x": [1]}  # raw JSON text from a driver is decoded
    assert wire["custom_json_3"] == []
    assert wire["custom_json_4"] == {"plain": [1, "x"]}
