"""Tests of the embedded PostgreSQL supervisor, against real servers.

Self-contained: no fixtures from conftest.py; every server lives in tmp_path
(pytest's base temp dir is itself mode 0700, so every test here also runs
below a parent the unprivileged server user cannot enter).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import asyncpg
import pytest

from postroom.platform import embedded_pg
from postroom.platform.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, find_bin_dir

IS_ROOT = os.geteuid() == 0

# A helper process. argv: data_dir mode
HELPER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from postroom.platform.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

    data_dir, mode = Path(sys.argv[1]), sys.argv[2]
    pg = EmbeddedPostgres(data_dir)

    def say(**kw):
        print(json.dumps(kw), flush=True)

    if mode == "own":  # start (or attach), report, wait for stdin EOF, stop
        dsn = pg.start()
        say(owner=pg.owner, pid=pg.postmaster_pid, dsn=dsn)
        sys.stdin.read()
        pg.stop()
    elif mode == "attach":  # start, read the table the test made, stop
        import asyncio, asyncpg
        dsn = pg.start()
        async def rows():
            conn = await asyncpg.connect(dsn)
            try:
                return [r[0] for r in await conn.fetch("SELECT note FROM shared ORDER BY note")]
            finally:
                await conn.close()
        seen = asyncio.run(rows())
        pg.stop()
        say(owner=pg.owner, pid=pg.postmaster_pid, rows=seen)
    elif mode == "serve-lock":
        try:
            pg.acquire_serve_lock()
        except EmbeddedPostgresError as e:
            say(locked=False, error=str(e))
        else:
            say(locked=True)
    """
)


def helper(data_dir: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HELPER, str(data_dir), mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def read_json(proc: subprocess.Popen[str], timeout: float = 60.0) -> dict:
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("line", proc.stdout.readline()))
    t.start()
    t.join(timeout)
    assert "line" in box and box["line"], f"helper said nothing (exit code {proc.poll()})"
    return json.loads(box["line"])


def query(dsn: str, *sql: str) -> list:
    async def run() -> list:
        conn = await asyncpg.connect(dsn)
        try:
            out = []
            for s in sql:
                out.append(await conn.fetch(s) if s.lstrip().upper().startswith("SELECT")
                           else await conn.execute(s))
            return out
        finally:
            await conn.close()

    box: dict = {}

    def target() -> None:  # own thread: works whether or not a loop is running here
        try:
            box["v"] = asyncio.run(run())
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    if "e" in box:
        raise box["e"]
    return box["v"]


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a dead orphan may linger unreaped)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return raw[raw.rindex(")") + 2] not in "ZX"


def postgres_pids_for(pgdata: Path) -> list[int]:
    """Live postgres processes whose working directory is pgdata."""
    want = os.stat(pgdata)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            st = os.stat(entry / "cwd")
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        if comm == "postgres" and raw[raw.rindex(")") + 2] not in "ZX" and (
            st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            found.append(int(entry.name))
    return found


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def servers():
    """Stops every EmbeddedPostgres a test made, and kills leftovers."""
    made: list[EmbeddedPostgres] = []
    yield made
    for pg in made:
        pg.stop()
        if pg.pgdata.exists():
            for pid in postgres_pids_for(pg.pgdata):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One initialized, stopped data dir; tests not about initdb start from a
    copy of it (initdb with fsync costs seconds here)."""
    data = tmp_path_factory.mktemp("template") / "data"
    pg = EmbeddedPostgres(data)
    pg.start()
    pg.stop()
    return data


@pytest.fixture
def data(template, tmp_path) -> Path:
    dst = tmp_path / "data"
    subprocess.run(["cp", "-a", str(template), str(dst)], check=True)  # keeps owners
    return dst


# --------------------------------------------------------------------------


def test_find_bin_dir_has_an_executable_postgres():
    bin_dir = find_bin_dir()
    assert (bin_dir / "postgres").is_file()
    assert os.access(bin_dir / "postgres", os.X_OK)
    assert bin_dir.parent.name == "pginstall18"  # PostgreSQL 18 preferred
    assert embedded_pg._major_version(bin_dir) == 18


def test_find_bin_dir_without_the_wheel_says_what_to_do(monkeypatch):
    monkeypatch.setattr(embedded_pg.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddedPostgresError, match="POSTROOM_DATABASE_URL"):
        find_bin_dir()


def test_start_fresh_answers_and_stop_leaves_nothing(tmp_path, servers):
    pg = EmbeddedPostgres(tmp_path / "data")
    servers.append(pg)
    dsn = pg.start()
    assert dsn.startswith("postgresql://") and pg.owner
    assert ":5432/" not in dsn
    [one, dbs, listen] = query(dsn, "SELECT 1 AS one", "SELECT datname FROM pg_database",
                               "SELECT current_setting('listen_addresses') AS v")
    assert one[0]["one"] == 1
    assert "postroom" in {r["datname"] for r in dbs}
    assert listen[0]["v"] == "127.0.0.1"
    assert postgres_pids_for(pg.pgdata) != []
    pw_file = tmp_path / "data" / "pg_password"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert pw_file.read_text().strip() in dsn
    bad = dsn.replace(pw_file.read_text().strip(), "wrong")
    with pytest.raises(asyncpg.InvalidPasswordError):
        query(bad, "SELECT 1")

    pid = pg.postmaster_pid
    pg.stop()
    assert not pid_alive(pid)
    assert postgres_pids_for(pg.pgdata) == []
    assert not (pg.pgdata / "postmaster.pid").exists()
    pg.stop()  # idempotent
    assert pg.dsn is None


def test_restart_keeps_data(data, servers):
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    dsn = pg.start()
    query(dsn, "CREATE TABLE kept (x int)", "INSERT INTO kept VALUES (42)")
    pg.stop()
    dsn2 = pg.start()
    assert pg.owner
    [rows] = query(dsn2, "SELECT x FROM kept")
    assert [r["x"] for r in rows] == [42]


def test_server_survives_the_thread_that_started_it(data, servers):
    # PR_SET_PDEATHSIG fires when the forking *thread* ends; start() from a
    # short-lived thread must not take the server down with that thread.
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    t = threading.Thread(target=pg.start)
    t.start()
    t.join()
    time.sleep(1.0)
    assert pid_alive(pg.postmaster_pid)
    [rows] = query(pg.dsn, "SELECT 1 AS one")
    assert rows[0]["one"] == 1


def test_sigkilled_owner_takes_postgres_down_and_restart_recovers(data, servers):
    proc = helper(data, "own")
    try:
        info = read_json(proc)
        assert info["owner"] is True
        query(info["dsn"], "CREATE TABLE survived (x int)", "INSERT INTO survived VALUES (7)")
        pid = info["pid"]
        assert pid_alive(pid)
    finally:
        proc.kill()  # SIGKILL: no atexit, no stop()
        proc.wait()
    # PR_SET_PDEATHSIG made it a fast shutdown request.
    assert wait_until(lambda: not pid_alive(pid), 20), "postgres outlived its killed parent"
    assert postgres_pids_for(data / "pg") == []

    pg = EmbeddedPostgres(data)
    servers.append(pg)
    dsn = pg.start()
    assert pg.owner
    [rows] = query(dsn, "SELECT x FROM survived")
    assert [r["x"] for r in rows] == [7]


def _write_pidfile(pgdata: Path, pid: int) -> None:
    path = pgdata / "postmaster.pid"
    path.write_text(f"{pid}\n/proc/self/cwd\n1700000000\n5999\n\n127.0.0.1\n"
                    "  5999001     32768\nready   \n")
    st = pgdata.stat()
    os.chown(path, st.st_uid, st.st_gid)


def test_stale_postmaster_pid_is_recovered(data, servers):
    pg = EmbeddedPostgres(data)  # an initialized, stopped cluster
    servers.append(pg)
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_pidfile(pg.pgdata, dead.pid)
    dsn = pg.start()
    assert pg.owner and query(dsn, "SELECT 1 AS one")[0][0]["one"] == 1
    pg.stop()

    # A live process that is not a postgres of this data dir (pid reused),
    # owned by the server's user: PostgreSQL alone would refuse to start.
    owner = pg.pgdata.stat()
    as_owner = ({"user": owner.st_uid, "group": owner.st_gid, "extra_groups": []}
                if IS_ROOT else {})
    other = subprocess.Popen(["sleep", "60"], **as_owner)
    try:
        _write_pidfile(pg.pgdata, other.pid)
        dsn = pg.start()
        assert pg.owner and pg.postmaster_pid != other.pid
        assert query(dsn, "SELECT 1 AS one")[0][0]["one"] == 1
        assert other.poll() is None  # we did not touch it
    finally:
        other.kill()
        other.wait()


def test_second_process_attaches_and_does_not_stop_the_server(data, servers):
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    dsn = pg.start()
    query(dsn, "CREATE TABLE shared (note text)", "INSERT INTO shared VALUES ('from A')")

    proc = helper(data, "attach")
    info = read_json(proc)
    assert proc.wait(30) == 0
    assert info["owner"] is False
    assert info["rows"] == ["from A"]
    # Its stop() did nothing: our server still runs and answers.
    assert pid_alive(pg.postmaster_pid)
    assert postgres_pids_for(pg.pgdata) != []
    assert query(dsn, "SELECT count(*) AS n FROM shared")[0][0]["n"] == 1

    # Also in-process: a second object attaches, its stop() is a no-op.
    other = EmbeddedPostgres(data)
    assert other.start() == dsn
    assert other.owner is False and other.postmaster_pid == pg.postmaster_pid
    other.stop()
    assert query(dsn, "SELECT 1 AS one")[0][0]["one"] == 1


def test_concurrent_first_starts_initialize_once(tmp_path):
    data = tmp_path / "data"
    a, b = helper(data, "own"), helper(data, "own")
    try:
        ia, ib = read_json(a), read_json(b)
        assert sorted([ia["owner"], ib["owner"]]) == [False, True]
        assert ia["pid"] == ib["pid"]
        assert not (data / "pg.initdb").exists()
    finally:
        for p in (a, b):
            p.stdin.close()
        for p in (a, b):
            p.wait(60)
    assert wait_until(lambda: postgres_pids_for(data / "pg") == [], 20)


def test_serve_lock_refuses_a_second_serve_at_once(tmp_path):
    data = tmp_path / "data"
    pg = EmbeddedPostgres(data)
    pg.acquire_serve_lock()
    try:
        assert (data / "serve.lock").read_text().strip() == str(os.getpid())
        proc = helper(data, "serve-lock")
        out, _ = proc.communicate(timeout=20)  # a blocking lock would time out here
        info = json.loads(out)
        assert info["locked"] is False
        assert str(data) in info["error"]
        assert f"pid {os.getpid()}" in info["error"]
        assert "already running" in info["error"]
    finally:
        pg.release_serve_lock()
    proc = helper(data, "serve-lock")
    out, _ = proc.communicate(timeout=20)
    assert json.loads(out) == {"locked": True}


def test_failed_start_reports_the_log(data, servers):
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    with open(pg.pgdata / "postgresql.conf", "a") as f:
        f.write("\nthis is not a setting\n")
    with pytest.raises(EmbeddedPostgresError) as err:
        pg.start()
    msg = str(err.value)
    assert "postgres.log" in msg and "syntax error" in msg
    assert pg.owner is False and pg.dsn is None
    assert postgres_pids_for(pg.pgdata) == []


@pytest.mark.skipif(not IS_ROOT, reason="only meaningful when running as root")
def test_root_runs_postgres_unprivileged_below_a_private_parent(tmp_path, servers):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    inner = private / "inner"
    inner.mkdir(mode=0o700)
    data = inner / "data"
    watched = [tmp_path, private, inner]
    before = {p: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in watched}

    pg = EmbeddedPostgres(data)
    servers.append(pg)
    dsn = pg.start()
    assert query(dsn, "SELECT 1 AS one")[0][0]["one"] == 1

    user = pwd.getpwnam("postroom-pg")
    assert user.pw_shell.endswith(("nologin", "false"))
    status = Path(f"/proc/{pg.postmaster_pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(user.pw_uid)] * 4
    # Every postgres process of this data dir is unprivileged.
    for pid in postgres_pids_for(pg.pgdata):
        assert os.stat(f"/proc/{pid}").st_uid == user.pw_uid

    st = pg.pgdata.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, 0o700)
    assert {p: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in watched} == before
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    # The server user really cannot walk the path to its data dir...
    walk = subprocess.run(["ls", str(pg.pgdata)], user=user.pw_uid, group=user.pw_gid,
                          extra_groups=[], capture_output=True, text=True)
    assert walk.returncode != 0 and "Permission denied" in walk.stderr
    # ...and secrets/logs stay root's.
    assert pg.password_path.stat().st_uid == 0
    assert stat.S_IMODE(pg.password_path.stat().st_mode) == 0o600
    assert "ready to accept connections" in pg.log_path.read_text()

    query(dsn, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)")
    pg.stop()
    assert postgres_pids_for(pg.pgdata) == []
    dsn = pg.start()  # warm restart as root
    assert query(dsn, "SELECT x FROM t")[0][0]["x"] == 1


def test_an_orphaned_server_is_not_attached_to(data, servers, monkeypatch):
    # A postmaster whose owner died is shutting down (PR_SET_PDEATHSIG) even
    # if it still says "ready": attaching to it would hand out a dying DSN.
    pg = EmbeddedPostgres(data)
    servers.append(pg)
    pg.start()
    dead = subprocess.Popen(["true"])
    dead.wait()
    real_owner = pg.owner_path.read_text()
    pg.owner_path.write_text(f"{dead.pid} {pg.postmaster_pid}\n")
    monkeypatch.setattr(embedded_pg, "READY_TIMEOUT", 1.0)
    with pytest.raises(EmbeddedPostgresError, match="shutting down"):
        EmbeddedPostgres(data).start()
    pg.owner_path.write_text(real_owner)
    other = EmbeddedPostgres(data)
    other.start()
    assert other.owner is False and other.postmaster_pid == pg.postmaster_pid


def test_cluster_made_by_postgres_16_keeps_using_16(tmp_path, servers, monkeypatch):
    monkeypatch.setattr(embedded_pg, "_INSTALL_DIRS", ("pginstall",))
    pg = EmbeddedPostgres(tmp_path / "data")
    servers.append(pg)
    pg.start()
    pg.stop()
    assert (pg.pgdata / "PG_VERSION").read_text().strip() == "16"
    monkeypatch.undo()  # PostgreSQL 18 preferred again for new clusters
    dsn = pg.start()
    [rows] = query(dsn, "SELECT current_setting('server_version_num') AS v")
    assert rows[0]["v"].startswith("16")
    with pytest.raises(EmbeddedPostgresError, match="created by PostgreSQL 15"):
        embedded_pg._bin_dir_for_cluster(15)
