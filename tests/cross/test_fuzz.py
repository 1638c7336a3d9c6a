"""Schemathesis against a live server on 127.0.0.1: every documented operation, bounded.

The server is the real app under uvicorn in a thread of this process (its own event loop and
pool), on the test database. Requests carry a real owner key of a workspace of this test, and
most generated workspace_id values are replaced by that workspace's id (and ids and emails by
ones that exist there), so the fuzzing reaches the handlers rather than stopping at 403/404.
Every webhook URL the server would accept is replaced by one of this server (workers are off, and
webhookSubscriptions.test then posts here), so no name is resolved and nothing leaves the machine.

Each operation is run with Schemathesis's positive and negative generation (valid requests, and
requests the document refuses). Checks: no 5xx, every status documented, the documented
Content-Type, the body valid against its schema, documented required headers present.

Bounds: FUZZ_EXAMPLES examples per operation and mode (POSTROOM_FUZZ_EXAMPLES), no shrinking,
and a total budget of FUZZ_BUDGET seconds (POSTROOM_FUZZ_BUDGET) after which the remaining
operations are reported as not run. Generation is derandomized, so a run is repeatable; set
POSTROOM_FUZZ_SEED to explore other inputs. POSTROOM_FUZZ_VERBOSE=1 prints the statuses of each
operation, =2 also every 4xx body.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import zlib
from dataclasses import dataclass

import hypothesis
import hypothesis.errors
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance)

from postroom.app import create_app
from postroom import app as app_module
from postroom.platform import observability
from postroom.webhooks import delivery, model as webhooks_model

FUZZ_EXAMPLES = int(os.environ.get("POSTROOM_FUZZ_EXAMPLES", "25"))
FUZZ_BUDGET = float(os.environ.get("POSTROOM_FUZZ_BUDGET", "150"))
FUZZ_SEED = os.environ.get("POSTROOM_FUZZ_SEED")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
REQUEST_TIMEOUT = 10.0


class LiveServer:
    """uvicorn serving `app` on a free port of 127.0.0.1, in a daemon thread; stopped in bounded time."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@dataclass
class Pins:
    """Values of this test's workspace that generated requests are steered to."""

    workspace_id: str
    list_id: str
    email: str
    subscription_id: str
    hook_url: str


def _share(value, percent: int) -> bool:
    """Deterministically true for about `percent`% of generated values (Hypothesis can replay it)."""
    return zlib.crc32(repr(value).encode()) % 100 < percent


def _reachable(url) -> bool:
    """A URL the server would accept, and so could resolve or send to (webhookSubscriptions.test)."""
    try:
        webhooks_model.parse_url(url)
    except webhooks_model.WebhookError:
        return False
    return True


def pin(case, pins: Pins) -> None:
    path = case.operation.path
    resource = path.removeprefix("/api/").partition(".")[0]
    for values in (case.query, case.body):
        if not isinstance(values, dict):
            continue
        if "workspace_id" in values and _share(values["workspace_id"], 90):
            values["workspace_id"] = pins.workspace_id
        if "email" in values and _share(values["email"], 50):
            values["email"] = pins.email
        if resource in ("lists", "contactLists"):
            for key in ("id", "list_id"):
                if key in values and _share(values[key], 60):
                    values[key] = pins.list_id
        for key in ("list_ids", "subscribe_to_lists"):
            if key in values and _share(values[key], 60):
                values[key] = [pins.list_id]
        if resource == "webhookSubscriptions":
            for key in ("id", "subscription_id"):
                if key in values and _share(values[key], 60):
                    values[key] = pins.subscription_id
        if resource == "workspaces" and "id" in values and _share(values["id"], 50):
            values["id"] = pins.workspace_id
    contact = case.body.get("contact") if isinstance(case.body, dict) else None
    if isinstance(contact, dict) and isinstance(contact.get("timezone"), str) and _share(contact["timezone"], 70):
        contact["timezone"] = "Europe/Paris"  # the document cannot list the IANA names; most strings are none
    if isinstance(case.body, dict) and _reachable(case.body.get("url")):
        case.body["url"] = pins.hook_url  # no DNS, no traffic beyond this machine


def _order(operation) -> tuple[int, str]:
    """Deletions last, so the pinned list, contact and subscription live through the others."""
    destructive = operation.path.endswith((".delete", ".removeContact"))
    return (1 if destructive else 0, operation.label)


def run_fuzz(base_url: str, token: str, pins: Pins) -> tuple[list[str], list[str], dict]:
    schema = schemathesis.openapi.from_dict(app_module.document())
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=_order)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    not_run: list[str] = []
    stats = {"operations": len(operations), "requests": 0, "statuses": {}, "by_operation": {}}
    started = time.monotonic()
    settings = hypothesis.settings(
        max_examples=FUZZ_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
        derandomize=FUZZ_SEED is None, suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.label} [{mode.value}]"
            if time.monotonic() - started > FUZZ_BUDGET:
                not_run.append(label)
                continue
            found: list = []

            @settings
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                pin(case, pins)
                response = case.call(base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT)
                stats["requests"] += 1
                stats["statuses"][response.status_code] = stats["statuses"].get(response.status_code, 0) + 1
                per_op = stats["by_operation"].setdefault(operation.label, {})
                per_op[response.status_code] = per_op.get(response.status_code, 0) + 1
                if os.environ.get("POSTROOM_FUZZ_VERBOSE") == "2" and 400 <= response.status_code < 500:
                    print(f"  {operation.label} {response.status_code} {response.text[:150]}")
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except Exception as exc:
                    if not found:
                        found.append((case, exc))
                    raise

            if FUZZ_SEED is not None:
                fuzz = hypothesis.seed(int(FUZZ_SEED))(fuzz)
            try:
                fuzz()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to negate: an operation without parameters or body
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - all are reported at the end
                case, error = found[0] if found else (None, exc)
                curl = case.as_curl_command(headers={"Authorization": "Bearer <token>"}, base_url=base_url) \
                    if case is not None else ""
                failures.append(f"{label}: {str(error).strip()[:1500]}\n    {curl[:1500]}")
    return failures, not_run, stats


async def leave_no_queue(client, ws, pool, settings) -> None:
    """The outbox and the delivery queue are shared by every workspace: the fuzzing's subscriptions
    go (with their deliveries), and its events are fanned out (to nobody), so that the tests after
    this one find the queues as they would without it."""
    r = await client.get("/api/webhookSubscriptions.list", headers=ws.headers, params={"workspace_id": ws.id})
    for sub in r.json()["subscriptions"]:
        r = await client.post("/api/webhookSubscriptions.delete", headers=ws.headers,
                              json={"workspace_id": ws.id, "id": sub["id"]})
        assert r.status_code == 200, r.text
    for _ in range(1000):
        events, _ = await delivery.dispatch_once(pool, settings)
        if events == 0:
            return
    raise AssertionError("the outbox did not drain")


async def test_fuzz_every_operation(client, ws, pool, settings, dsn):
    # what the pinned values name: a public list with a subscribed contact, a webhook subscription
    list_id, email = "fuzz_list", "fuzz@example.com"
    r = await client.post("/api/lists.create", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": list_id, "name": "Fuzz", "is_public": True})
    assert r.status_code == 201, r.text
    r = await client.post("/api/lists.subscribe", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": {"email": email}, "list_ids": [list_id]})
    assert r.status_code == 200, r.text

    app = create_app(settings, dsn)  # its own pool, opened by the lifespan on the server's loop
    access = logging.getLogger(observability.ACCESS_LOGGER)
    level = access.level
    access.setLevel(logging.WARNING)  # a thousand access-log lines would only bury a failure
    try:
        with LiveServer(app) as server:
            hook_url = f"{server.url}/healthz"  # answers a POST quickly (405), on this machine
            r = await client.post("/api/webhookSubscriptions.create", headers=ws.headers, json={
                "workspace_id": ws.id, "name": "fuzz", "url": hook_url, "event_types": ["contact.created"]})
            assert r.status_code == 201, r.text
            pins = Pins(ws.id, list_id, email, r.json()["subscription"]["id"], hook_url)
            started = time.monotonic()
            failures, not_run, stats = await asyncio.to_thread(run_fuzz, server.url, ws.token, pins)
            elapsed = time.monotonic() - started
    finally:
        access.setLevel(level)
        await leave_no_queue(client, ws, pool, settings)
    print(f"\nfuzz: {stats['operations']} operations x 2 modes, {FUZZ_EXAMPLES} examples each at most, "
          f"{stats['requests']} requests in {elapsed:.1f} s; statuses {dict(sorted(stats['statuses'].items()))}")
    if os.environ.get("POSTROOM_FUZZ_VERBOSE"):
        for label, statuses in stats["by_operation"].items():
            print(f"  {label}: {dict(sorted(statuses.items()))}")
    if not_run:
        print(f"fuzz: budget of {FUZZ_BUDGET:.0f} s spent; not run: {', '.join(not_run)}")
    assert stats["requests"] > 0
    assert not failures, "\n\n".join(failures)
    # the pinning worked: a good share of the requests got through to a successful answer
    assert sum(n for status, n in stats["statuses"].items() if 200 <= status < 300) > stats["requests"] // 10
