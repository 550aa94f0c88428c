"""Each process records that it is alive: store.heartbeat(name, info, now) every INTERVAL seconds, so
any process (/status, the dashboard) can list the processes sharing the store and when each was last
seen. A failing store costs a log line and one beat, never the loop; a process that stops cleanly
forgets its row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from store.records import StoreError

log = structlog.get_logger(__name__)

INTERVAL = 5.0  # seconds between beats
TIMEOUT = 5.0  # seconds one beat (or the final forget) may take


class Heartbeat:
    """Beats for process `name` with `info()` (a JSON-able dict) as its description; start(), then stop()."""

    def __init__(self, store: Any, name: str, info: Callable[[], dict[str, Any]], *, interval: float = INTERVAL,
                 timeout: float = TIMEOUT, clock: Callable[[], float] = time.time) -> None:
        self.store, self.name = store, name
        self._info, self._interval, self._timeout, self._clock = info, interval, timeout, clock
        self.started_at = clock()
        self._first = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Beat now and every interval, in a task, until stop()."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self, *, forget: bool = True) -> None:
        """Stop beating; with `forget`, remove this process's row (bounded, errors logged). Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task], timeout=self._timeout)
        if forget:
            try:
                async with asyncio.timeout(self._timeout):
                    await self.store.forget_process(self.name)
            except (StoreError, asyncio.TimeoutError) as exc:
                log.warning("heartbeat_forget_failed", process=self.name, error=str(exc) or exc.__class__.__name__)

    async def beat(self) -> bool:
        """One beat, bounded; False (logged) when it failed."""
        try:
            info = self._info()
        except Exception:
            log.exception("heartbeat_info_failed", process=self.name)
            info = {}
        try:
            # The first beat sets started_at: a restarted process with the same name starts anew.
            async with asyncio.timeout(self._timeout):
                await self.store.heartbeat(self.name, info, self._clock(),
                                           started_at=self.started_at if self._first else None)
        except (StoreError, asyncio.TimeoutError) as exc:
            log.warning("heartbeat_failed", process=self.name, error=str(exc) or exc.__class__.__name__)
            return False
        self._first = False
        return True

    async def _loop(self) -> None:
        while self._task is asyncio.current_task():  # stop() may have found it between a beat's end and a sleep
            await self.beat()
            await asyncio.sleep(self._interval)
