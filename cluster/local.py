"""The cluster of one process (SQLite: the database is a file only this process opens): the lease is
held at once and never lost, and the bus hands each message to this process's subscribers through
the event loop (as tasks, never inside publish)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.bus import Callback, check_message
from cluster.connection import BusError, ClusterError, cancel_all, guarded, spawn


class LocalLease:
    """Held from acquire() until release() or close()."""

    def __init__(self) -> None:
        self.held = False
        self._free = asyncio.Event()
        self._free.set()
        self._closed = False

    async def acquire(self) -> None:
        """Hold the lease (at once); ClusterError once closed."""
        if self._closed:
            raise ClusterError("the lease was closed")
        self.held = True
        self._free.clear()

    async def lost(self) -> None:
        """Return once the lease is not held (released or closed): it is never lost otherwise."""
        await self._free.wait()

    async def release(self) -> None:
        self.held = False
        self._free.set()

    async def close(self) -> None:
        self._closed = True
        await self.release()


class LocalBus:
    """Messages of this process to its own subscribers."""

    def __init__(self) -> None:
        self.connected = False
        self._subscribers: dict[str, list[Callback]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def subscribe(self, topic: str, callback: Callback) -> None:
        check_message(topic)
        self._subscribers.setdefault(topic, []).append(callback)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Never called: this bus cannot lose its connection."""

    async def publish(self, topic: str, payload: str) -> None:
        check_message(topic, payload)
        if not self.connected:
            raise BusError("the bus is not running")
        for callback in list(self._subscribers.get(topic, ())):
            spawn(self._tasks, guarded(callback, payload, event="bus_callback_failed", topic=topic), f"bus-{topic}")

    async def start(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        await cancel_all(self._tasks)


class LocalCluster:
    """The one process using the store: see the module's docstring."""

    shared = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.lease = LocalLease()
        self.bus = LocalBus()

    async def start(self) -> None:
        await self.bus.start()

    async def close(self) -> None:
        await self.lease.close()
        await self.bus.close()
