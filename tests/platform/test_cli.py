"""The `postroom` command against a real database: migrate, workspace, apikey, and serve's first start."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import asyncpg
import httpx
from processes import free_port

from conftest import SECRET


def run(args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "postroom.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def env_for(url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATABASE_URL=url, POSTROOM_SECRET_KEY=SECRET)
    return env


async def test_migrate_workspace_and_apikey(empty_db):
    env = env_for(empty_db.url)
    out = run(["migrate"], env)
    assert out.returncode == 0, out.stderr
    assert "0001_foundation.sql" in out.stdout
    assert run(["migrate"], env).stdout.strip() == "database is up to date"

    out = run(["workspace", "create", "acme", "--name", "Acme Inc"], env)
    assert out.returncode == 0, out.stderr
    ws = json.loads(out.stdout)
    assert ws["id"] == "acme" and ws["name"] == "Acme Inc" and ws["created_at"].endswith("Z")

    again = run(["workspace", "create", "acme", "--name", "Again"], env)
    assert again.returncode == 1 and "workspace already exists: acme" in again.stderr

    out = run(["apikey", "create", "--workspace", "acme", "--permissions", "contacts:r"], env)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token)   # only the token on stdout
    assert re.search(r"SMTP bridge\): cli-[0-9a-f]{6}@acme\.api\.postroom$", out.stderr, re.M), out.stderr

    conn = await asyncpg.connect(empty_db.url)
    try:
        perms = await conn.fetchval("SELECT permissions::text FROM user_workspaces WHERE workspace_id = 'acme'")
    finally:
        await conn.close()
    assert json.loads(perms)["contacts"] == {"read": True, "write": False}

    missing = run(["apikey", "create", "--workspace", "nope"], env)
    assert missing.returncode == 1 and "workspace not found: nope" in missing.stderr
    bad = run(["apikey", "create", "--workspace", "acme", "--permissions", "contacts:z"], env)
    assert bad.returncode == 1 and "--permissions" in bad.stderr


def test_unreachable_database_is_a_clear_message():
    env = env_for("postgresql://postgres@127.0.0.1:1/none")
    out = run(["migrate"], env)
    assert out.returncode == 1
    assert out.stderr.startswith("postroom: cannot reach the database")
    assert "Traceback" not in out.stderr


def test_external_database_needs_a_secret_key():
    env = env_for("postgresql://postgres@127.0.0.1:1/none")
    del env["POSTROOM_SECRET_KEY"]
    out = run(["apikey", "create", "--workspace", "x"], env)
    assert out.returncode == 1 and "POSTROOM_SECRET_KEY is not set" in out.stderr


def output_until_running(proc, timeout: float = 30) -> str:
    """What a starting `postroom serve` printed, up to uvicorn's line saying it serves (or its exit)."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Uvicorn running" in line or proc.poll() is not None:
            break
    return "".join(lines)


async def test_serve_first_start_prints_a_working_key_once(empty_db):
    env = env_for(empty_db.url)
    port = free_port()
    args = [sys.executable, "-m", "postroom.cli", "serve", "--no-workers", "--port", str(port)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text = output_until_running(proc)
        assert "shown only once" in text, text
        token = re.search(r"Bearer ([\w.-]+)'", text).group(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.post("/api/contacts.upsert", headers={"Authorization": f"Bearer {token}"},
                                  json={"workspace_id": "demo", "contact": {"email": "user@example.com"}})
        assert r.status_code == 200 and r.json()["action"] == "created"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0

    # a second start of the same installation does not print a key again
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "shown only once" not in output_until_running(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
