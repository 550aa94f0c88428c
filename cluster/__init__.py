"""The bot processes sharing one store: which of them dispatches jobs, and how they tell each other.

Several processes (the same bot on different Discord shards) may share one PostgreSQL database. Exactly
one at a time holds the dispatcher's `Lease` and hands jobs to the ComfyUI servers; the others accept
interactions, write jobs into the store and tell the holder over the `Bus`. When the holder dies, another
acquires the lease within seconds and resumes the jobs from the store.

`make_cluster` picks the kind from the settings: `PgCluster` (pg.py: lease.py's advisory lock and bus.py's
LISTEN/NOTIFY, each on a dedicated connection) when DATABASE_URL is set, else `LocalCluster` (local.py:
one process, a lease never lost, a bus within the process). Beside them: heartbeat.py (each process
records that it is alive, store.heartbeat) and limiter.py (a rate limit shared by the processes,
store.hit_rate).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cluster.bus import MAX_PAYLOAD, PgBus
from cluster.connection import BusError, ClusterError
from cluster.heartbeat import Heartbeat
from cluster.lease import PgLease
from cluster.limiter import SharedRateLimiter
from cluster.local import LocalBus, LocalCluster, LocalLease
from cluster.pg import PgCluster
from config import Settings


class Lease(Protocol):
    """The dispatcher's lease: at most one process per database holds it."""

    held: bool

    async def acquire(self) -> None:
        """Return once held; wait (each wait bounded, retried; cancellable) while another process holds it."""
        ...

    async def lost(self) -> None:
        """Return when the lease is not held: lost (its connection died, the database went away) or
        released. The holder must stop dispatching at once."""
        ...

    async def release(self) -> None:
        ...


class Bus(Protocol):
    """Small messages between processes (PostgreSQL LISTEN/NOTIFY on a dedicated connection)."""

    connected: bool

    def subscribe(self, topic: str, callback: Callable[[str], Awaitable[None]]) -> None:
        ...

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Called after a reconnection: notifications may have been missed while disconnected."""
        ...

    async def publish(self, topic: str, payload: str) -> None:
        """To every process, itself included; payload at most MAX_PAYLOAD bytes. BusError when not sent
        within its bound."""
        ...


class Cluster(Protocol):
    name: str  # this process: PROCESS_NAME, or <hostname>-<pid>
    shared: bool  # True when several processes may share the store (PostgreSQL)
    lease: Lease
    bus: Bus

    async def start(self) -> None:
        """Connect (bounded) and start the bus."""
        ...

    async def close(self) -> None:
        """Release the lease, stop listening; idempotent, bounded."""
        ...


def process_name(settings: Settings) -> str:
    """This process's name: PROCESS_NAME, or <hostname>-<pid>."""
    return settings.process_name or f"{socket.gethostname()}-{os.getpid()}"


def make_cluster(settings: Settings, store: Any) -> Cluster:
    """PgCluster on DATABASE_URL when it is set (the store is the PostgreSQL one), else LocalCluster."""
    name = process_name(settings)
    if settings.database_url is not None:
        return PgCluster(settings.database_url.get_secret_value(), name)
    return LocalCluster(name)


__all__ = ["MAX_PAYLOAD", "Bus", "BusError", "Cluster", "ClusterError", "Heartbeat", "Lease", "LocalBus",
           "LocalCluster", "LocalLease", "PgBus", "PgCluster", "PgLease", "SharedRateLimiter", "make_cluster",
           "process_name"]
