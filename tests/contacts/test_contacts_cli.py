"""`postroom contacts import` and `postroom contacts export`, run as the real command against the test database."""

import csv
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from conftest import SECRET

from postroom.contacts import model

_SCRIPT = Path(sys.executable).with_name("postroom")
POSTROOM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "postroom.cli"]


def env_for(dsn):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATABASE_URL=dsn, POSTROOM_SECRET_KEY=SECRET)
    return env


def postroom(dsn, *args, **kw):
    return subprocess.run([*POSTROOM, *args], env=env_for(dsn), capture_output=True, text=True, timeout=120, **kw)


def read_csv(text):
    return list(csv.reader(io.StringIO(text)))


async def stored(pool, ws_id, email):
    row = await pool.fetchrow("SELECT * FROM contacts WHERE workspace_id = $1 AND email = $2", ws_id, email)
    return None if row is None else dict(row)


async def make_list(pool, ws_id, list_id):
    await pool.execute("INSERT INTO lists (workspace_id, id, name) VALUES ($1, $2, $3)", ws_id, list_id, list_id)


CSV_TEXT = (
    "email,first_name,lifetime_value,orders_count,custom_json_1,last_order_at,shoe_size\r\n"
    'ann@example.com,Ann,12.5,3,"{""tier"": ""gold""}",2023-05-15T14:30:00Z,38\r\n'
    "not-an-email,Bob,,,,,\r\n"
    "cy@example.com,Cy,lots,,,,\r\n"
    "\r\n"
    "ANN@example.com,,,4,,,\r\n"
    'di@example.com,"Di, ""the"" second",,,{oops,,\r\n'
    "ed@example.com,Ed,,1.5,,,\r\n"
    "fay@example.com,Fay,,,,yesterday,\r\n"
    "gus@example.com,  Gus  ,-1e2,0,[1],,\r\n"
)


async def test_csv_import_bad_rows_duplicates_rejects_and_export(dsn, pool, ws, tmp_path, client):
    await make_list(pool, ws.id, "news")
    path = tmp_path / "people.csv"
    path.write_text(CSV_TEXT)
    out = postroom(dsn, "contacts", "import", str(path), "--workspace", ws.id, "--list", "news", "--chunk-size", "2")
    assert out.returncode == 3, out.stderr
    assert out.stdout.strip() == (f"created 2, updated 1, failed 5 (rejected rows with their reasons: "
                                  f"{path}.rejected.csv)")
    assert "ignoring columns that name no contact field: shoe_size" in out.stderr

    ann = await stored(pool, ws.id, "ann@example.com")
    assert (ann["first_name"], ann["lifetime_value"], ann["orders_count"], ann["custom_json_1"]) == \
        ("Ann", 12.5, 4, {"tier": "gold"})        # the second row kept the first's values, set orders_count
    gus = await stored(pool, ws.id, "gus@example.com")
    assert (gus["first_name"], gus["lifetime_value"], gus["orders_count"], gus["custom_json_1"]) == ("Gus", -100, 0, [1])
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id) == 2
    r = await client.get("/api/contacts.count", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.json()["total_contacts"] == 2
    assert await pool.fetchval("SELECT count(*) FROM contact_lists WHERE workspace_id = $1 AND list_id = 'news' "
                               "AND status = 'active'", ws.id) == 2

    rejected = read_csv((tmp_path / "people.csv.rejected.csv").read_text())
    assert rejected[0] == ["line", "error", "email", "first_name", "lifetime_value", "orders_count", "custom_json_1",
                           "last_order_at", "shoe_size"]
    assert [(r[0], r[1], r[2]) for r in rejected[1:5]] == [
        ("3", "invalid contact: invalid email format", "not-an-email"),
        ("4", 'invalid contact: invalid number for lifetime_value: "lots"', "cy@example.com"),
        ("7", "invalid contact: invalid JSON text for custom_json_1: JSON is malformed: object keys must be strings "
              "(byte 1)", "di@example.com"),
        ("8", "invalid contact: invalid type for orders_count: expected integer, got Number", "ed@example.com"),
    ]
    assert rejected[3][3] == 'Di, "the" second'   # the row as it was, ready to fix and import again
    assert rejected[5][0] == "9" and rejected[5][1].startswith("invalid contact: invalid time format for last_order_at")
    assert len(rejected) == 6

    exported = postroom(dsn, "contacts", "export", "--workspace", ws.id)
    assert exported.returncode == 0, exported.stderr
    rows = read_csv(exported.stdout)
    assert rows[0] == list(model.FIELDS)
    assert [r[0] for r in rows[1:]] == ["ann@example.com", "gus@example.com"]
    ann_out = dict(zip(rows[0], rows[1]))
    assert (ann_out["lifetime_value"], ann_out["orders_count"], ann_out["custom_json_1"], ann_out["last_order_at"],
            ann_out["phone"]) == ("12.5", "4", '{"tier":"gold"}', "2023-05-15T14:30:00Z", "")


async def test_export_then_import_elsewhere_is_the_same(dsn, pool, ws, new_workspace, client, tmp_path):
    contacts = [
        {"email": "x@example.com", "first_name": "X", "custom_json_2": {"deep": [1, 2.5, None, "a\nb"]},
         "custom_number_1": 0.1, "custom_datetime_3": "2023-06-01T09:00:00.25Z", "timezone": "Asia/Tokyo",
         "created_at": "2020-01-01T00:00:00Z"},
        {"email": "y@example.com", "last_name": "Why, \"quoted\"", "orders_count": 12, "custom_number_5": 1e21},
    ]
    r = await client.post("/api/contacts.import", headers=ws.headers, json={"workspace_id": ws.id, "contacts": contacts})
    assert r.status_code == 200
    first = postroom(dsn, "contacts", "export", "--workspace", ws.id)
    path = tmp_path / "export.csv"
    path.write_text(first.stdout)
    other = await new_workspace()
    out = postroom(dsn, "contacts", "import", str(path), "--workspace", other.id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "created 2, updated 0, failed 0"
    assert not (tmp_path / "export.csv.rejected.csv").exists()   # no rejected row, no file
    second = postroom(dsn, "contacts", "export", "--workspace", other.id)
    assert second.stdout == first.stdout     # created_at and updated_at too: given, they are stored


async def test_export_members_of_a_list(dsn, pool, ws, client):
    await make_list(pool, ws.id, "vip")
    await client.post("/api/contacts.import", headers=ws.headers, json={
        "workspace_id": ws.id, "contacts": [{"email": "in@example.com"}], "subscribe_to_lists": ["vip"]})
    await client.post("/api/contacts.import", headers=ws.headers, json={
        "workspace_id": ws.id, "contacts": [{"email": "out@example.com"}]})
    out = postroom(dsn, "contacts", "export", "--workspace", ws.id, "--list", "vip")
    assert [r[0] for r in read_csv(out.stdout)] == ["email", "in@example.com"]
    missing = postroom(dsn, "contacts", "export", "--workspace", ws.id, "--list", "nope")
    assert missing.returncode == 1 and "list not found: nope" in missing.stderr and missing.stdout == ""


async def test_jsonl_import(dsn, pool, ws, tmp_path):
    path = tmp_path / "people.jsonl"
    lines = [
        json.dumps({"email": "J@Example.com", "first_name": "Jo", "custom_json_1": {"a": 1}, "unknown": 1}),
        "this is not json",
        "",
        json.dumps({"email": 5}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"email": "j@example.com", "first_name": None, "last_name": "Doe"}),
        json.dumps({"email": "k@example.com", "orders_count": 2}),
    ]
    path.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "bad-rows.csv"
    out = postroom(dsn, "contacts", "import", str(path), "--workspace", ws.id, "--rejects", str(rejects))
    assert out.returncode == 3, out.stderr
    assert out.stdout.startswith("created 2, updated 1, failed 3 ")
    j = await stored(pool, ws.id, "j@example.com")
    assert (j["first_name"], j["last_name"], j["custom_json_1"]) == ("Jo", "Doe", {"a": 1})
    rows = read_csv(rejects.read_text())
    assert rows[0] == ["line", "error", "row"]
    assert [r[0] for r in rows[1:]] == ["2", "4", "5"]
    assert rows[1][1].startswith("invalid JSON line: ") and rows[1][2] == "this is not json"
    assert rows[2][1:] == ["invalid contact: invalid type for email: expected string, got Number", '{"email": 5}']
    assert rows[3][1] == "invalid contact: email is required"


async def test_bytes_that_are_not_utf8_reject_only_their_row(dsn, pool, ws, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"email,first_name\na@example.com,Ren\xe9\nb@example.com,Bea\n")
    out = postroom(dsn, "contacts", "import", str(path), "--workspace", ws.id)
    assert out.returncode == 3
    assert out.stdout.startswith("created 1, updated 0, failed 1")
    rejected = (tmp_path / "latin1.csv.rejected.csv").read_bytes()
    assert b"first_name contains invalid Unicode" in rejected and b"Ren\xe9" in rejected
    assert await stored(pool, ws.id, "b@example.com") is not None


async def test_errors_that_stop_the_import_before_writing(dsn, pool, ws, tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("email\na@example.com\n")
    cases = [
        (["--workspace", ws.id, "--list", "ghost"], "list not found: ghost"),
        (["--workspace", "no-such-ws"], "workspace not found: no-such-ws"),
    ]
    for args, message in cases:
        out = postroom(dsn, "contacts", "import", str(path), *args)
        assert out.returncode == 1 and f"postroom: {message}" in out.stderr, out.stderr
    missing = postroom(dsn, "contacts", "import", str(tmp_path / "nope.csv"), "--workspace", ws.id)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    headless = tmp_path / "headless.csv"
    headless.write_text("name,phone\nAnn,1\n")
    out = postroom(dsn, "contacts", "import", str(headless), "--workspace", ws.id)
    assert out.returncode == 1 and "the header has no email column" in out.stderr
    broken = tmp_path / "broken.csv"
    broken.write_text('email,first_name\na@example.com,"x"y\nb@example.com,ok\n')
    out = postroom(dsn, "contacts", "import", str(broken), "--workspace", ws.id)
    assert out.returncode == 1 and f"{broken}: line 2: ',' expected after" in out.stderr
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id) == 0


async def test_progress_bar_on_a_terminal(dsn, ws, tmp_path):
    path = tmp_path / "many.csv"
    path.write_text("email,custom_number_1\n" + "".join(f"p{i}@example.com,{i}\n" for i in range(300)))
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([*POSTROOM, "contacts", "import", str(path), "--workspace", ws.id, "--chunk-size", "100"],
                              env=env_for(dsn), stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
        os.close(slave)
        slave = None
        err = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not data:
                break
            err += data
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "created 300, updated 0, failed 0"
    assert b"\r" in err and b"100.0%" in err and b"300 rows" in err
