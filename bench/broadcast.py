"""A broadcast end to end: a list of `--recipients` contacts, a personalised template, `postroom
worker` resolving, rendering and feeding the send queue and sending to a local SMTP sink, against
raw aiosmtplib sending pre-built messages to the same kind of sink.

    python bench/broadcast.py [--recipients 200000] [--connections 8] [--workers 1]

What it does:
1. a throw-away database (bench/_common.py), `postroom serve --no-workers` for the API, an SMTP
   sink in this process that notes when each recipient's mail arrived;
2. the list's contacts and active memberships written straight into the database in one
   statement each (what an import would leave behind), then through the API: an SMTP integration
   on the sink as the marketing provider, a code-mode template with Liquid in subject and body,
   a broadcast to the list;
3. `--workers` worker processes started, `broadcasts.schedule` with send_now, and the wait until
   the sink has every recipient;
4. the baseline, measured in this run: the same number of messages built once with Postroom's MIME
   builder, sent by aiosmtplib over `--connections` connections to a fresh sink;
5. prints the time from schedule to the first email, emails/s sustained (first to last arrival),
   worker peak RSS, the ratio to the raw rate, the broadcast's final `delivery` object, and
   PASS/MISS.

Targets (issue 13): >= 1,000 emails/s per node with per-recipient rendering. On 2 shared cores the
sink, the worker, the server and PostgreSQL compete for the same CPU: the ratio is the figure that
transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import _common as bench
from transactional import FROM, FROM_NAME, api, raw_smtp, serve_smtp

SUBJECT = "{{ contact.first_name }}, the spring sale starts today"
SOURCE = ("<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ contact.first_name | default: 'there' }},"
          " everything is 20% off until Sunday.</mj-text>"
          "<mj-button href=\"https://shop.example.com/sale\">See the sale</mj-button>"
          "</mj-column></mj-section></mj-body></mjml>")
TARGET_RATE = 1000.0

SEED = """
WITH c AS (
    INSERT INTO contacts (workspace_id, email, first_name, created_at, updated_at)
    SELECT 'bench', 'r' || i || '@bench.example.com', 'Ann' || i, now(), now() FROM generate_series(1, $1) AS i
    RETURNING email, created_at
)
INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)
SELECT 'bench', 'news', email, 'active', created_at FROM c
"""


async def set_up(server, pool, port: int, connections: int, recipients: int):
    """Workspace, marketing integration on the sink, template, list and its members, broadcast;
    returns (an httpx client on the API, the broadcast id)."""
    import httpx

    server.cli("workspace", "create", "bench", "--name", "Bench")
    token = server.cli("apikey", "create", "--workspace", "bench", "--name", "bench")
    await pool.execute("UPDATE user_workspaces SET role = 'owner' WHERE workspace_id = 'bench'")
    c = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    made = await api(c, "/api/workspaces.createIntegration", {
        "workspace_id": "bench", "name": "Sink", "type": "email", "provider": {
            "kind": "smtp", "smtp": {"host": "127.0.0.1", "port": port, "use_tls": False},
            "senders": [{"email": FROM, "name": FROM_NAME, "is_default": True}],
            "rate_limit_per_minute": 6_000_000, "max_concurrency": connections}}, 201)
    await api(c, "/api/workspaces.update", {"id": "bench", "settings": {
        "marketing_email_provider_id": made["integration_id"], "email_tracking_enabled": False}})
    await api(c, "/api/templates.create", {
        "workspace_id": "bench", "id": "sale", "name": "Sale", "channel": "email", "category": "marketing",
        "email": {"editor_mode": "code", "subject": SUBJECT, "mjml_source": SOURCE}}, 201)
    await api(c, "/api/lists.create", {"workspace_id": "bench", "id": "news", "name": "News"}, 201)
    started = time.monotonic()
    await pool.execute(SEED, recipients)
    await pool.execute("ANALYZE contacts; ANALYZE contact_lists")
    print(f"seeded {recipients} contacts with memberships in {time.monotonic() - started:.1f} s")
    b = await api(c, "/api/broadcasts.create", {
        "workspace_id": "bench", "name": "Spring sale", "audience": {"list": "news"},
        "test_settings": {"variations": [{"template_id": "sale"}]}}, 201)
    return c, b["broadcast"]["id"]


async def main(args) -> None:
    from postroom.platform import db

    print(f"machine: {bench.machine()}")
    n = args.recipients
    async with serve_smtp(n) as (arrivals, port), bench.fresh_database("postroom_bench_bc") as dsn:
        server = bench.Server(dsn)
        server.start()
        workers, client = [], None
        pool = await db.create_pool(dsn, min_size=1, max_size=2)
        try:
            await server.ready()
            client, bid = await set_up(server, pool, port, args.connections, n)
            workers = bench.start_workers(server.env, args.workers)
            await asyncio.sleep(2.0)  # let the workers connect and settle
            scheduled = time.time()
            await api(client, "/api/broadcasts.schedule", {"workspace_id": "bench", "id": bid, "send_now": True})
            rss_kb = 0
            deadline = time.monotonic() + max(300.0, n / 100)
            while not arrivals.done.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                rss_kb = max([rss_kb] + [bench.proc_status(w.pid, "VmRSS") or 0 for w in workers])
            peak_kb = max(bench.proc_status(w.pid, "VmHWM") or 0 for w in workers)
            await asyncio.sleep(1.5)   # the last outcomes recorded
            b = (await client.get("/api/broadcasts.get", params={"workspace_id": "bench", "id": bid})).json()
        finally:
            if client is not None:
                await client.aclose()
            bench.stop_processes(workers)
            await pool.close()
            server.stop()
    raw_rate = await raw_smtp(min(n, 20000), args.connections)
    times = sorted(arrivals.at.values())
    first, last = (times[0], times[-1]) if times else (scheduled, scheduled)
    rate = (len(times) - 1) / (last - first) if len(times) > 1 else float("nan")
    print(f"time to first email {first - scheduled:8.2f} s")
    print(f"delivered  {rate:9.0f} emails/s   ({len(times)} of {n} at the sink, first to last arrival)")
    print(f"raw        {raw_rate:9.0f} emails/s   (aiosmtplib, {args.connections} connections, pre-built) [baseline]")
    print(f"ratio delivered/raw {rate / raw_rate:.2f}")
    print(f"worker RSS: peak {peak_kb / 1024:.1f} MiB (largest sampled while sending {rss_kb / 1024:.1f} MiB)")
    print(f"broadcast: status {b['broadcast']['status']}, delivery {b['broadcast']['delivery']}")
    print()
    print(f"{bench.verdict(len(times) == n and rate >= TARGET_RATE)} >= {TARGET_RATE:.0f} emails/s, all delivered")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=200000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    bench.run_main(main(parser.parse_args()))
