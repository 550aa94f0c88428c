"""The dispatcher's lease on PostgreSQL: a session-level advisory lock held on a dedicated connection.

At most one session holds an advisory lock, so at most one process holds the lease. A standby waits
inside pg_advisory_lock, each wait bounded by the session's lock_timeout (WAIT_TIMEOUT) and then
retried, so it is granted the lock the moment the holder's session ends. A holder killed with
SIGKILL takes its socket with it: the server ends the session at once and frees the lock. A holder
whose machine vanished (no FIN) is ended by the server after IDLE_TIMEOUT seconds without a statement
(idle_session_timeout; the holder pings every PING_INTERVAL) or by TCP keepalives (connection.py) —
while the holder, whose pings then fail within PING_TIMEOUT, has already given the lease up: it
notices first (PING_INTERVAL + PING_TIMEOUT < IDLE_TIMEOUT), so two processes never dispatch at once.

The lock's key is the two-int form (LEASE_LOCK): PostgreSQL keeps two-int keys apart from the
single-bigint keys of the store (the migrations' lock, per-user locks), and the classid "CLUS" is
cluster/'s own (store/postgres/processes.py uses "RATE").
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from cluster.connection import LOST, QUERY_TIMEOUT, ClusterError, close, connect
from store.postgres.engine import describe

log = structlog.get_logger(__name__)

LEASE_LOCK = (0x434C5553, 1)  # ("CLUS", 1): the dispatcher's lease
WAIT_TIMEOUT = 5.0  # seconds of each wait in pg_advisory_lock (the session's lock_timeout)
PING_INTERVAL = 2.0  # seconds between the holder's checks of its connection
PING_TIMEOUT = 3.0  # seconds a check may take before the lease counts as lost
IDLE_TIMEOUT = 7.0  # seconds of silence after which the server ends the holder's session
RETRY = (0.2, 3.0)  # seconds before connecting again after a failure: first, and at most (doubling)


class PgLease:
    """The lease of the database at `dsn` for process `process`; see the module's docstring."""

    def __init__(self, dsn: str, process: str, *, wait_timeout: float = WAIT_TIMEOUT,
                 ping_interval: float = PING_INTERVAL, ping_timeout: float = PING_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, lock: tuple[int, int] = LEASE_LOCK) -> None:
        self.held = False
        self._dsn, self._process, self._lock = dsn, process, lock
        self._wait_timeout, self._ping_interval = wait_timeout, ping_interval
        self._ping_timeout, self._idle_timeout = ping_timeout, idle_timeout
        self._conn: asyncpg.Connection | None = None
        self._free = asyncio.Event()
        self._free.set()
        self._watchdog: asyncio.Task[None] | None = None
        self._acquiring = asyncio.Lock()
        self._closed = False

    async def acquire(self) -> None:
        """Return once this process holds the lease; wait (in bounded, retried waits) while another does.
        Cancellable; ClusterError once closed."""
        async with self._acquiring:
            delay = RETRY[0]
            while not self.held:
                if self._closed:
                    raise ClusterError("the lease was closed")
                try:
                    if await self._attempt():
                        return
                    delay = RETRY[0]  # another process holds it: wait again at once
                    continue
                except asyncio.CancelledError:
                    self._cut()  # the lock may have been granted as the wait was cancelled
                    raise
                except LOST as exc:
                    self._cut()
                    log.warning("lease_wait_failed", database=describe(self._dsn), retry_in=delay,
                                error=f"{exc.__class__.__name__}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY[1])

    async def lost(self) -> None:
        """Return when the lease is not held: lost (its connection died, the database went away) or
        released; at once when it is not held now."""
        await self._free.wait()

    async def release(self) -> None:
        """Give the lease up (end its session); idempotent, bounded."""
        conn, self._conn = self._conn, None
        was_held = self.held
        self._set_free()
        await self._stop_watchdog()
        await close(conn)
        if was_held:
            log.info("lease_released", process=self._process, database=describe(self._dsn))

    async def close(self) -> None:
        """Release, and make every acquire (a waiting one too) fail from now on."""
        self._closed = True
        self._cut()
        await self.release()

    async def _attempt(self) -> bool:
        """One bounded wait for the lock; True once held, False when another session kept it."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        conn = self._conn
        try:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", *self._lock,
                               timeout=self._wait_timeout + QUERY_TIMEOUT)
        except asyncpg.LockNotAvailableError:
            return False
        if self._closed:
            self._cut()
            raise ClusterError("the lease was closed")
        self.held = True
        self._free.clear()
        conn.add_termination_listener(lambda _conn: self._lose(conn, "its connection closed"))
        self._watchdog = asyncio.create_task(self._watch(conn), name="lease-watchdog")
        log.info("lease_acquired", process=self._process, database=describe(self._dsn))
        return True

    async def _connect(self) -> asyncpg.Connection:
        conn = await connect(self._dsn, "lease", self._process,
                             settings={"lock_timeout": str(int(self._wait_timeout * 1000))})
        try:
            if conn.get_server_version().major >= 14:  # idle_session_timeout is new in PostgreSQL 14
                await conn.execute(f"SET idle_session_timeout = {int(self._idle_timeout * 1000)}")
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """While held: a statement every ping_interval, so the server sees the holder alive and the
        holder sees the server; a failure loses the lease."""
        while self._conn is conn and not conn.is_closed():
            await asyncio.sleep(self._ping_interval)
            try:
                await conn.fetchval("SELECT 1", timeout=self._ping_timeout)
            except LOST as exc:
                self._lose(conn, f"{exc.__class__.__name__}: {exc}")
                return
        self._lose(conn, "its connection closed")

    def _lose(self, conn: asyncpg.Connection, reason: str) -> None:
        if conn is not self._conn:
            return  # released, or an older connection
        self._conn = None
        conn.terminate()
        self._set_free()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None
        log.warning("lease_lost", process=self._process, database=describe(self._dsn), reason=reason)

    def _set_free(self) -> None:
        self.held = False
        self._free.set()

    def _cut(self) -> None:
        """End the session at once (the server frees whatever lock it holds)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        if self.held:
            self._set_free()
            log.warning("lease_lost", process=self._process, database=describe(self._dsn), reason="closed")

    async def _stop_watchdog(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task], timeout=QUERY_TIMEOUT)
