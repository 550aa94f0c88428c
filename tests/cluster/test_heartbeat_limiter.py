"""cluster/heartbeat.py and cluster/limiter.py over a real store (both engines): what the store holds,
and that a failing store costs a log line, never the loop or the command."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from cluster import Heartbeat, SharedRateLimiter
from tests.cluster.conftest import TIMEOUT, eventually


async def test_the_heartbeat_records_this_process_until_it_stops(any_store):
    beats = iter(range(1000))
    heartbeat = Heartbeat(any_store, "shard-1", lambda: {"beat": next(beats)}, interval=0.05)
    heartbeat.start()
    try:
        async def beaten_twice() -> bool:
            records = await any_store.processes(0.0)
            return bool(records) and records[0].info["beat"] >= 1

        await eventually(beaten_twice)
        [record] = await any_store.processes(0.0)
        assert record.name == "shard-1" and record.started_at == heartbeat.started_at <= record.seen_at
    finally:
        await heartbeat.stop()
    assert await any_store.processes(0.0) == []  # a clean stop forgets the process
    await heartbeat.stop()  # idempotent


async def test_the_heartbeat_survives_a_failing_store_and_a_failing_description(any_store):
    def broken() -> dict:
        raise RuntimeError("no description")

    heartbeat = Heartbeat(any_store, "shard-1", broken, interval=0.05)
    with capture_logs() as logs:
        assert await heartbeat.beat()  # described as {}
    assert [entry["event"] for entry in logs] == ["heartbeat_info_failed"]
    assert (await any_store.processes(0.0))[0].info == {}
    await any_store.close()
    with capture_logs() as logs:
        heartbeat.start()
        await eventually(lambda: sum(entry["event"] == "heartbeat_failed" for entry in logs) >= 3)
        assert not heartbeat._task.done()  # still beating
        await heartbeat.stop()
    assert any(entry["event"] == "heartbeat_forget_failed" for entry in logs)


async def test_the_shared_limiter_answers_as_the_in_memory_one_and_lets_commands_through_when_the_store_fails(
        any_store):
    now = [100.0]
    limiter = SharedRateLimiter(any_store, 2, 10.0, clock=lambda: now[0])
    assert [await limiter.hit(1), await limiter.hit(1)] == [0.0, 0.0]
    now[0] = 104.0
    assert await limiter.hit(1) == 6.0
    assert await limiter.hit(2) == 0.0
    await any_store.close()
    with capture_logs() as logs:
        assert await asyncio.wait_for(limiter.hit(1), TIMEOUT) == 0.0
    assert [entry["event"] for entry in logs] == ["rate_limit_unavailable"]
