"""The cluster of the processes sharing a PostgreSQL database: the dispatcher's lease (lease.py) and the
message bus (bus.py), each on its own dedicated connection."""

from __future__ import annotations

import structlog

from cluster.bus import PgBus
from cluster.lease import PgLease
from store.postgres.engine import describe

log = structlog.get_logger(__name__)


class PgCluster:
    """Process `name` among those sharing the database at `dsn`; start() before use, close() when done."""

    shared = True

    def __init__(self, dsn: str, name: str, *, lease: PgLease | None = None, bus: PgBus | None = None) -> None:
        self.name = name
        self._dsn = dsn
        self.lease = lease or PgLease(dsn, name)
        self.bus = bus or PgBus(dsn, name)
        self._closed = False

    async def start(self, timeout: float | None = None) -> None:
        """Start the bus: connected and listening within `timeout` seconds (default CONNECT_TIMEOUT), else
        ClusterError. The lease connects when acquired."""
        await self.bus.start(timeout)
        log.info("cluster_started", process=self.name, database=describe(self._dsn))

    async def close(self) -> None:
        """Release the lease and stop listening; idempotent, bounded."""
        if self._closed:
            return
        self._closed = True
        await self.lease.close()
        await self.bus.close()
        log.info("cluster_closed", process=self.name, database=describe(self._dsn))
