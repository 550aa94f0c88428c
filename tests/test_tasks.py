"""A supervised loop that crashes or returns is logged and started again; cancelling stops it."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

import tasks


async def test_a_crashing_loop_is_restarted_and_a_cancel_stops_it():
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("boom")
        if len(runs) == 2:
            return
        await asyncio.sleep(60)

    with capture_logs() as logs:
        task = tasks.start("test-loop", loop, restart_delay=0.01)
        async with asyncio.timeout(5):
            while len(runs) < 3:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert [(entry["event"], entry["task"]) for entry in logs] == [("task_crashed", "test-loop"),
                                                                   ("task_ended", "test-loop")]
