"""The outbox's consumer protocol (postroom.events.dispatch) on the real database."""

from __future__ import annotations

from postroom.events import dispatch, store as events_store


async def _emit(pool, workspace_id: str, n: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for i in range(n):
            await events_store.emit(conn, workspace_id, "contact.created", f"c{i}@example.com", {"i": i})


async def _unconsumed(pool, workspace_id: str) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM events WHERE workspace_id = $1 AND webhooks_dispatched_at IS NULL", workspace_id)


async def test_claim_in_event_order_marks_and_rollback_gives_back(pool, ws):
    await _emit(pool, ws.id, 5)
    assert ws.id in await dispatch.pending_workspaces(pool, "webhooks", 10_000)

    class Undo(Exception):
        pass

    try:
        async with dispatch.locked(pool, "webhooks", ws.id) as conn:
            rows = await dispatch.claim_batch(conn, "webhooks", ws.id, 3)
            assert [r["data"]["i"] for r in rows] == [0, 1, 2]
            raise Undo
    except Undo:
        pass
    assert await _unconsumed(pool, ws.id) == 5  # rolled back: nothing was consumed

    async with dispatch.locked(pool, "webhooks", ws.id) as conn:
        first = await dispatch.claim_batch(conn, "webhooks", ws.id, 3)
    async with dispatch.locked(pool, "webhooks", ws.id) as conn:
        rest = await dispatch.claim_batch(conn, "webhooks", ws.id, 3)
    assert [r["data"]["i"] for r in first + rest] == [0, 1, 2, 3, 4]
    assert await _unconsumed(pool, ws.id) == 0
    assert ws.id not in await dispatch.pending_workspaces(pool, "webhooks", 10_000)


async def test_one_pass_per_workspace_at_a_time(pool, ws):
    async with dispatch.locked(pool, "webhooks", ws.id) as held:
        assert held is not None
        async with dispatch.locked(pool, "webhooks", ws.id) as second:
            assert second is None  # tried, never waited for
    async with dispatch.locked(pool, "webhooks", ws.id) as again:
        assert again is not None  # released at the end of the first transaction


async def test_notify_wakes_a_listener_at_commit(pool, ws):
    heard = []

    def hear(conn, pid, channel, payload):
        heard.append(channel)

    listener = await pool.acquire()
    try:
        await listener.add_listener(dispatch.channel("webhooks"), hear)
        async with dispatch.locked(pool, "webhooks", ws.id) as conn:
            await dispatch.notify(conn, "webhooks")
            assert heard == []
        for _ in range(50):
            if heard:
                break
            await listener.execute("SELECT 1")  # lets the notification arrive
        assert heard == [dispatch.channel("webhooks")]
    finally:
        await listener.remove_listener(dispatch.channel("webhooks"), hear)
        await pool.release(listener)
