"""Postroom as real processes for the tests that need one: `postroom serve` on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

from conftest import SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`postroom serve --no-workers` on a free port, its stdout and stderr kept in files."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        self.env.update(POSTROOM_DATABASE_URL=database_url, POSTROOM_SECRET_KEY=SECRET, **env)
        self.proc: subprocess.Popen | None = None
        self.stdout = tempfile.TemporaryFile()
        self.stderr = tempfile.TemporaryFile()

    def start(self) -> "Serve":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postroom.cli", "serve", "--no-workers", "--port", str(self.port)],
            env=self.env, stdout=self.stdout, stderr=self.stderr, stdin=subprocess.DEVNULL,
            start_new_session=True)
        return self

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the server exited ({self.proc.returncode}):\n{self.output()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await c.get(self.url + "/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the server did not answer within {timeout} s:\n{self.output()}")

    def output(self, stream: str = "stderr") -> str:
        f = getattr(self, stream)
        f.seek(0)
        return f.read().decode(errors="replace")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no shutdown, no finally blocks
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
