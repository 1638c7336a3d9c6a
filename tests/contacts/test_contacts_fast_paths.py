"""The fast paths of postroom.contacts.model held to the rules as written.

contacts.import validates and encodes tens of thousands of contacts a second, so model.py checks
the common values inline (`_parse`) and formats UTC times with msgspec (`format_time`). These
tests compare them, value by value, with the plain implementations they stand for: the same
result (value, type and key order) or the same error message, on random contacts built from
awkward values of every kind.
"""

import datetime as dt
import random

import pytest

from postroom.contacts import model as m

UTC = dt.timezone.utc

TEXT = ["Ann", "  Ann  ", "", "   ", "\u00a0Zoë\u3000", "José", "日本語", "a\x00b", "a\ud800b", "x" * 255,
        " " + "x" * 255 + " ", "x" * 256, "x" * 50, "x" * 51, "x" * 20, "x" * 21, "y" * 100, "y" * 101,
        "é" * 255, "é" * 256, "\t\n", "ok\x00", "\u2003mid dle\u2003"]
NUMBERS = [0, 1, -1, -7, 42, 2**53, 2**63 - 1, 2**63, -(2**70), 10**400, 0.0, -0.0, 0.5, 42.0, 1250.5, 1e300,
           -1e-7, 1.5, 5.0, float("inf"), float("-inf"), float("nan"), True, False]
TIMES = ["2023-05-15T14:30:00Z", " 2023-05-15T14:30:00Z\u00a0", "2023-05-15t14:30:00z", "2023-05-15T14:30:00z",
         "2023-05-15T16:30:00+02:00", "2023-05-15T09:00:00-05:30", "2023-05-15T14:30:00-00:00",
         "2023-05-15T14:30:00+00:00", "2023-05-15T14:30:00.5Z", "2023-05-15T14:30:00.123456Z",
         "2023-05-15T14:30:00.1234567Z", "2023-05-15T14:30:59.9999996Z", "2023-05-15T14:30:00.Z",
         "2024-01-01T00:30:00+01:00", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
         "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00Z", "2023-13-01T00:00:00Z",
         "2023-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2023-02-30T00:00:00Z", "2023-05-15T24:00:00Z",
         "2023-05-15T14:60:00Z", "2023-05-15T14:30:60Z", "2023-05-15T14:30:00+24:00",
         "2023-05-15T14:30:00+01:60", "2023-05-15T14:30:00+23:59", "2023-05-15T14:30:00", "2023-05-15",
         "2023-05-15 14:30:00Z", "20230515T143000Z", "2023-W20-1T14:30:00Z", "2023-05-15T14:30:00+0200",
         "٢٠٢٣-05-15T14:30:00Z", "2023-05-15T14:30Z", "2023-05-15T14:30:00.000000Z", "2023-05-15T14:30:00,5Z",
         "", "yesterday", "2023-05-15T14:30:00.1234560+02:00"]
ZONES = ["Europe/Paris", "europe/paris", " UTC ", "", "  ", "Mars/Base", "Factory", "localtime", "utc\x00",
         "America/New_York", "EST5EDT", "Etc/GMT+5"]
JSONS = [{}, [], {"a": 1}, [1, 2.0, {"b": None}], {"x": "\x00"}, {"\ud800": 1}, {"n": float("inf")}, "text",
         1, True, {"deep": [[[[1.5]]]]}]
EMAILS = ["a@example.com", " A.B+c@Example.COM ", "bad", "", "  ", None, 42, "a@localhost", "a@x.test",
          "a@b.example", "a@sub.invalid", "a@b--c.com", "üser@example.com", "a@" + "b" * 63 + ".com",
          "x" * 64 + "@" + "d" * 63 + "." + "e" * 63 + "." + "f" * 60 + ".com", "a\x00@x.com", "a@x.c0m",
          "a@x.1", "a..b@x.com", '"q"@x.com', "a@[127.0.0.1]", "a@localhost.com", "a@onion"]
OTHER = [None, True, False, "1", 1, 1.5, {}, []]
# values every field of the kind accepts
GOOD = {"string": ["Ann", " Ann ", "", "José", None], "timezone": ["europe/paris", "", None],
        "number": [0, 42, 1.5, -0.0, None], "integer": [0, 5, 5.0, None],
        "datetime": ["2023-05-15T14:30:00Z", "2023-05-15T16:30:00.5+02:00", None],
        "stamp": ["2020-01-01T00:00:00Z", None], "json": [{}, [1.0], {"a": {"b": 2}}, None]}


def values_for(kind: str) -> list:
    return {"string": TEXT, "timezone": ZONES, "number": NUMBERS, "integer": NUMBERS, "datetime": TIMES,
            "stamp": TIMES, "json": JSONS}[kind] + OTHER


def outcome(fn, raw):
    try:
        return "ok", fn(raw)
    except m.ContactError as exc:
        return "error", exc.message


def same(a, b) -> bool:
    """Equal results down to types, key order and tzinfo (None, int, float, str, datetime, JSON)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo is b.tzinfo
    return a == b


def random_contact(rnd: random.Random) -> dict:
    raw = {"email": rnd.choice(EMAILS)} if rnd.random() < 0.97 else {}
    for name, kind, _ in m._SPECS:
        if rnd.random() < 0.6:
            raw[name] = rnd.choice(values_for(kind))
    if rnd.random() < 0.1:
        raw["shoe_size"] = 44
    return raw


@pytest.mark.parametrize("keep_nulls", [True, False])
def test_fast_parse_equals_the_rules_as_written(keep_nulls):
    rnd = random.Random(20240601 + keep_nulls)
    seen = {"ok": 0, "error": 0}
    for _ in range(20000):
        raw = random_contact(rnd)
        # mostly valid contacts too (at most one awkward value), so that the fast path runs to the end
        if rnd.random() < 0.6:
            awkward = rnd.choice([None, *raw])
            raw = {name: raw[name] if name == awkward else rnd.choice(GOOD[kind])
                   for name, kind, _ in m._SPECS if name in raw} | {"email": rnd.choice(EMAILS[:2])}
        fast, slow = outcome(lambda r: m._parse(r, keep_nulls), raw), outcome(lambda r: m._parse_slow(r, keep_nulls), raw)
        assert fast[0] == slow[0] and same(fast[1], slow[1]), (raw, fast, slow)
        seen[fast[0]] += 1
    assert seen["ok"] > 2000 and seen["error"] > 2000


@pytest.mark.parametrize("kind", ["string", "timezone", "number", "integer", "datetime", "stamp", "json"])
def test_each_value_alone_takes_the_same_path_result(kind):
    fields = [name for name, k, _ in m._SPECS if k == kind]
    for name in fields:
        for value in values_for(kind):
            raw = {"email": "a@example.com", name: value}
            for keep in (True, False):
                fast, slow = outcome(lambda r: m._parse(r, keep), raw), outcome(lambda r: m._parse_slow(r, keep), raw)
                assert fast[0] == slow[0] and same(fast[1], slow[1]), (name, value, fast, slow)


def test_non_dict_contacts_and_public_functions_use_the_rules():
    for raw in (None, "x", [], 42):
        assert outcome(m.parse_contact, raw) == ("error", "invalid contact: email is required")
    assert m.parse_contact({"email": "A@Example.com", "first_name": None}) == {"email": "a@example.com",
                                                                                "first_name": None}
    assert m.parse_contact_for_import({"email": "A@Example.com", "first_name": None}) == {"email": "a@example.com"}


def reference_format_time(t: dt.datetime) -> str:
    if t.tzinfo is None:
        s = t.isoformat()
    else:
        if t.tzinfo is not UTC:
            t = t.astimezone(UTC)
        s = t.isoformat()[:-6]
    return (s.rstrip("0") if t.microsecond else s) + "Z"


def test_format_time_equals_the_isoformat_rule():
    rnd = random.Random(11)
    zones = [UTC, None, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]
    micros = [0, 1, 10, 100, 120, 500000, 999999, 123456, 100000, 10]
    for _ in range(20000):
        t = dt.datetime(rnd.randint(2, 9998), rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(0, 23),
                        rnd.randint(0, 59), rnd.randint(0, 59),
                        rnd.choice(micros) if rnd.random() < 0.5 else rnd.randint(0, 999999), rnd.choice(zones))
        assert m.format_time(t) == reference_format_time(t), t
    for t in (dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              dt.datetime(5, 1, 2, 3, 4, 5, 60, tzinfo=UTC)):
        assert m.format_time(t) == reference_format_time(t)


def test_merge_equals_the_field_by_field_rule():
    rnd = random.Random(5)
    now = dt.datetime(2024, 1, 1, tzinfo=UTC)

    def reference(existing, incoming):
        row = dict(m.EMPTY) if existing is None else {f: existing.get(f) for f in m.FIELDS}
        for f in m.DATA_FIELDS:
            if f in incoming:
                row[f] = incoming[f]
        if incoming.get("email") is not None:
            row["email"] = incoming["email"]
        row["created_at"] = incoming.get("created_at") or row["created_at"] or now
        row["updated_at"] = incoming.get("updated_at") or now
        return row

    def valid(rnd):
        raw = {name: rnd.choice(GOOD[kind]) for name, kind, _ in m._SPECS if rnd.random() < 0.5}
        return m.parse_contact({**raw, "email": "a@example.com"})

    for _ in range(3000):
        incoming = valid(rnd)
        incoming["not_a_field"] = 1
        existing = None if rnd.random() < 0.3 else {**m.merge(None, valid(rnd), now), "workspace_id": "w"}
        assert same(m.merge(existing, incoming, now), reference(existing, incoming))


def reference_to_wire(row) -> dict:
    """to_wire as first written: every value through _field_wire unless it is an int, a plain
    string of a text field or a float."""
    out = {}
    for f in m.FIELDS:
        v = row.get(f)
        if v is None:
            continue
        t = type(v)
        if t is int or (t is str and f not in m.JSON_FIELDS):
            out[f] = v
        elif t is float:
            out[f] = int(v) if v.is_integer() and -(2.0**53) < v < 2.0**53 else v
        else:
            out[f] = m._field_wire(f, v)
    return out


def test_to_wire_equals_the_value_by_value_rule():
    from decimal import Decimal

    rnd = random.Random(3)
    pool = [None, "", "x", 0, 7, -1.0, 2.5, 1e300, 2.0**53, float("inf"), True, Decimal("1.50"), Decimal("3"),
            dt.datetime(2023, 5, 15, 14, 30, tzinfo=UTC), dt.datetime(2023, 5, 15, 14, 30, 0, 120000, tzinfo=UTC),
            dt.datetime(2023, 5, 15, 16, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), dt.datetime(2023, 5, 15),
            {}, [], {"a": 1.0, "b": [2.0, {"c": 3.5}], "d": True}, [1.0, "s", None], '{"x": [1.0]}', b"[2.0]"]
    for _ in range(5000):
        row = {f: rnd.choice(pool) for f in m.FIELDS if rnd.random() < 0.6} | {"workspace_id": "w"}
        results = []
        for fn in (m.to_wire, reference_to_wire):
            try:
                results.append(("ok", fn(row)))
            except Exception as exc:  # e.g. a text that is not JSON in a custom_json field
                results.append(("raised", type(exc)))
        assert results[0][0] == results[1][0] and same(results[0][1], results[1][1]), row
