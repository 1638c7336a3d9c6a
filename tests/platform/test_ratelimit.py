"""postroom.platform.ratelimit for any caller: its own buckets, limits and window (the public
subscribe form's use of it is tested in test_subscribe.py)."""

import secrets

import pytest

from postroom.platform import ratelimit

WINDOW = 3600


async def window_number(conn) -> int:
    return await conn.fetchval("SELECT floor(extract(epoch FROM now()) / $1)::bigint", WINDOW)


async def test_a_caller_counts_in_its_own_buckets_and_window(pool):
    limits = {"api:key1": 2, "send:smtp": 3}
    async with pool.acquire() as conn:
        for _ in range(3):  # a run that crosses a window's end counts in two: run it again
            ws, other = f"ws_{secrets.token_hex(6)}", f"ws_{secrets.token_hex(6)}"
            before = await window_number(conn)
            waits = [await ratelimit.count_attempt(conn, ws, limits, WINDOW) for _ in range(4)]
            elsewhere = await ratelimit.count_attempt(conn, other, limits, WINDOW)
            if await window_number(conn) == before:
                break
        hits = dict(await conn.fetch("SELECT bucket, hits FROM subscribe_rate_limits WHERE workspace_id = $1", ws))
    assert waits[:2] == [None, None] and all(1 <= w <= WINDOW for w in waits[2:]), waits
    assert elsewhere is None
    assert hits == {"api:key1": 4, "send:smtp": 4}


@pytest.mark.parametrize("window", [0, ratelimit.MAX_WINDOW + 1])
async def test_a_window_outlasting_the_sweep_is_refused(pool, window):
    async with pool.acquire() as conn:
        with pytest.raises(ValueError):
            await ratelimit.count_attempt(conn, "ws_any", {"b": 1}, window)
