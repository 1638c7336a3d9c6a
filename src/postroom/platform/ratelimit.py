"""Rate limits shared through the database: fixed-window counters that every API process counts
in, on the database's clock.

A caller names its buckets within a workspace and gives each the most attempts a window allows,
and the window's length in seconds. Bucket names are the caller's keys: each user prefixes its
own so that no two share one (the public subscribe form counts in "email:<address>" and
"ip:<address>", lists.model.rate_buckets; the SMTP bridge's AUTH in "smtp-user:" and "smtp-ip:"
under a scope no workspace id can be, delivery.bridge.RATE_SCOPE, and clears them on a success).
Next users: API rate limits, provider send rates.

The counters live in subscribe_rate_limits (migration 0003), named after its first user: one row
per (workspace, bucket) for the current window, restarted at 1 by a hit in a later window.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

# Windows long gone are swept now and then (SWEEP_CHANCE of the attempts, for their workspace);
# a window may not last longer than a sweep waits, or its counter would be forgotten early.
MAX_WINDOW = 3600
SWEEP_CHANCE = 0.01

# One atomic upsert per attempt counts it in every bucket at once, on the database's clock, so
# all API processes share the counters. Buckets come sorted: one lock order for everyone.
HIT = """
WITH w AS (SELECT to_timestamp(floor(extract(epoch FROM now()) / $3) * $3) AS start)
INSERT INTO subscribe_rate_limits AS r (workspace_id, bucket, window_start, hits)
SELECT $1, b, w.start, 1 FROM unnest($2::text[]) AS b, w
ON CONFLICT (workspace_id, bucket) DO UPDATE
   SET hits = CASE WHEN r.window_start = EXCLUDED.window_start THEN r.hits + 1 ELSE 1 END,
       window_start = EXCLUDED.window_start
RETURNING r.bucket, r.hits,
          greatest(1, ceil(extract(epoch FROM r.window_start - now()) + $3))::int AS retry_after
"""

FORGET = "DELETE FROM subscribe_rate_limits WHERE workspace_id = $1 AND bucket = ANY($2::text[])"

SWEEP = f"""
DELETE FROM subscribe_rate_limits WHERE workspace_id = $1 AND window_start < now() - interval '{MAX_WINDOW} seconds'
"""


async def count_attempt(conn, workspace_id: str, limits: Mapping[str, int], window: int) -> int | None:
    """Counts one attempt in each bucket of `limits` (bucket -> the most attempts a window of
    `window` seconds allows it); the seconds to wait when any is over its limit, else None."""
    if not 0 < window <= MAX_WINDOW:
        raise ValueError(f"a rate-limit window lasts 1 to {MAX_WINDOW} seconds, not {window}")
    names = sorted(limits)
    rows = await conn.fetch(HIT, workspace_id, names, window)
    if random.random() < SWEEP_CHANCE:  # now and then, forget the windows long gone
        await conn.execute(SWEEP, workspace_id)
    over = [row["retry_after"] for row in rows if row["hits"] > limits[row["bucket"]]]
    return max(over) if over else None


async def forget(conn, workspace_id: str, buckets) -> None:
    """Clears the counters of `buckets`: for limits that a success resets (the SMTP bridge's AUTH)."""
    await conn.execute(FORGET, workspace_id, sorted(buckets))
