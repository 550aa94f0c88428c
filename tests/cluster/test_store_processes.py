"""The store's area for the cluster (store/processes.py and its PostgreSQL twins), on both engines:
process heartbeats, and the rate limit shared by the processes."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg

from store.core import PostgresStore, Store
from store.processes import PRUNE_AFTER, ProcessRecord
from tests.cluster.conftest import TIMEOUT


async def hit_rows(store) -> list[tuple[int, float]]:
    """command_hits as the database holds it, read beside the store."""
    if isinstance(store, Store):
        db = sqlite3.connect(store._path)
        try:
            return [tuple(row) for row in db.execute("SELECT user_id, at FROM command_hits ORDER BY user_id, at")]
        finally:
            db.close()
    conn = await asyncpg.connect(store._dsn, timeout=TIMEOUT)
    try:
        return [tuple(row) for row in await conn.fetch("SELECT user_id, at FROM command_hits ORDER BY user_id, at")]
    finally:
        await conn.close(timeout=TIMEOUT)


async def test_heartbeats_record_each_process_and_forget_the_stopped(any_store):
    await any_store.heartbeat("a", {"shard": 0, "lease": True}, 100.0)
    await any_store.heartbeat("b", {"shard": 1}, 105.0)
    await any_store.heartbeat("a", {"shard": 0, "lease": False}, 110.0)  # a known process keeps its start
    assert await any_store.processes(0.0) == [ProcessRecord("b", {"shard": 1}, 105.0, 105.0),
                                              ProcessRecord("a", {"shard": 0, "lease": False}, 100.0, 110.0)]
    assert await any_store.processes(106.0) == [ProcessRecord("a", {"shard": 0, "lease": False}, 100.0, 110.0)]
    await any_store.heartbeat("b", {}, 120.0, started_at=118.0)  # restarted under the same name
    assert (await any_store.processes(0.0))[0] == ProcessRecord("b", {}, 118.0, 120.0)
    await any_store.forget_process("b")
    await any_store.forget_process("nobody")
    assert [record.name for record in await any_store.processes(0.0)] == ["a"]


async def test_hit_rate_is_a_sliding_window_per_user(any_store):
    answers = [await any_store.hit_rate(1, 2, 10.0, now) for now in (0.0, 1.0, 2.0, 9.5)]
    assert answers == [0.0, 0.0, 8.0, 0.5]  # the refused hits are not counted
    assert await any_store.hit_rate(2, 2, 10.0, 2.0) == 0.0  # another person has a window of their own
    assert await any_store.hit_rate(1, 2, 10.0, 10.0) == 0.0  # the hit at 0 left the window
    assert await any_store.hit_rate(1, 2, 10.0, 10.5) == 0.5  # the one at 1 is still in it
    assert await hit_rows(any_store) == [(1, 1.0), (1, 10.0), (2, 2.0)]


async def test_hit_rate_forgets_everyones_stale_hits_as_it_goes(any_store):
    for user in range(5):
        await any_store.hit_rate(user, 3, 10.0, 0.0)
    await any_store.hit_rate(99, 3, 10.0, PRUNE_AFTER + 1)
    assert await hit_rows(any_store) == [(99, PRUNE_AFTER + 1)]


async def test_hit_rate_on_one_store_admits_count_per_window_however_many_ask_at_once(any_store):
    answers = await asyncio.wait_for(asyncio.gather(*(any_store.hit_rate(7, 5, 60.0, 1000.0) for _ in range(30))),
                                     TIMEOUT)
    assert answers.count(0.0) == 5 and all(answer == 60.0 for answer in answers if answer)


async def test_two_processes_never_admit_more_than_count_per_window_together(pg_dsn):
    stores = [PostgresStore(pg_dsn, pool_size=8), PostgresStore(pg_dsn, pool_size=8)]
    for store in stores:
        await store.open()
    try:
        for round_ in range(3):  # three windows; in each, both processes hammer the same person at once
            now = 1000.0 + round_ * 60.0
            calls = [store.hit_rate(7, 5, 60.0, now + i * 0.001) for i in range(20) for store in stores]
            answers = await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT * 3)
            assert sum(1 for answer in answers if answer == 0.0) == 5, answers
        assert len(await hit_rows(stores[0])) == 5  # only the last window's hits are kept
    finally:
        for store in stores:
            await store.close()
