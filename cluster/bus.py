"""Small messages between the bot processes sharing a PostgreSQL database: LISTEN/NOTIFY on a dedicated
connection (LISTEN belongs to a session, so not the store's pool).

Each topic is the channel `bot_<topic>`. publish() sends `pg_notify` over the same connection, so a
message reaches every process listening, this one included. The connection is checked every
PING_INTERVAL; when it drops (the database restarted, pg_terminate_backend, a network fault) the bus
connects again with a backoff (RETRY, forever while running), listens again, and then calls the
on_reconnect callbacks: notifications sent meanwhile are lost, so their subscribers look at the
store again. Callbacks run as tasks; their exceptions are logged, never raised.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from cluster.connection import (CONNECT_TIMEOUT, LOST, QUERY_TIMEOUT, BusError, ClusterError, cancel_all, close,
                                connect, guarded, spawn)
from store.postgres.engine import describe

log = structlog.get_logger(__name__)

CHANNEL_PREFIX = "bot_"
TOPIC = re.compile(r"[a-z0-9_]{1,40}")  # a topic: it becomes part of a channel name
MAX_PAYLOAD = 7000  # bytes of UTF-8 (PostgreSQL allows a little under 8000)
PING_INTERVAL = 2.0  # seconds between checks of the connection
PING_TIMEOUT = 3.0  # seconds a check may take before the connection counts as lost
PUBLISH_TIMEOUT = 5.0  # seconds publish() may take, waiting for a reconnection included
RETRY = (0.1, 3.0)  # seconds before connecting again: first, and at most (doubling)

Callback = Callable[[str], Awaitable[None]]


def check_message(topic: str, payload: str | None = None) -> None:
    """ValueError for a topic that cannot be a channel name, or a payload over MAX_PAYLOAD bytes."""
    if not TOPIC.fullmatch(topic):
        raise ValueError(f"a topic is 1 to 40 of a-z, 0-9 and _, not {topic!r}")
    if payload is not None and len(payload.encode()) > MAX_PAYLOAD:
        raise ValueError(f"a payload is at most {MAX_PAYLOAD} bytes, not {len(payload.encode())}")


class PgBus:
    """The bus of the database at `dsn` for process `process`; start() before use, close() when done."""

    def __init__(self, dsn: str, process: str, *, ping_interval: float = PING_INTERVAL,
                 ping_timeout: float = PING_TIMEOUT, retry: tuple[float, float] = RETRY,
                 connect_timeout: float = CONNECT_TIMEOUT, publish_timeout: float = PUBLISH_TIMEOUT) -> None:
        self.connected = False
        self._connect_timeout, self._publish_timeout = connect_timeout, publish_timeout
        self._dsn, self._process = dsn, process
        self._ping_interval, self._ping_timeout, self._retry = ping_interval, ping_timeout, retry
        self._subscribers: dict[str, list[Callback]] = {}
        self._reconnected: list[Callable[[], Awaitable[None]]] = []
        self._conn: asyncpg.Connection | None = None
        self._listening: set[str] = set()  # the topics the current connection listens to
        self._use = asyncio.Lock()  # one statement at a time on the connection
        self._up = asyncio.Event()
        self._down = asyncio.Event()  # the current connection was lost
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._starting = True  # the first connection is start()'s: nothing can have been missed before it

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call `callback(payload)` (as a task) for every message published on `topic`, from now on."""
        check_message(topic)
        self._subscribers.setdefault(topic, []).append(callback)
        if self.connected and topic not in self._listening:
            spawn(self._tasks, self._listen_late(topic), f"bus-listen-{topic}")

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call `callback()` (as a task) after each reconnection: messages may have been missed."""
        self._reconnected.append(callback)

    async def publish(self, topic: str, payload: str) -> None:
        """Send `payload` to the subscribers of `topic` in every process, this one included. Waits for a
        reconnection if need be; BusError when not sent within PUBLISH_TIMEOUT; ValueError for a bad
        topic or a payload over MAX_PAYLOAD bytes."""
        check_message(topic, payload)
        if self._runner is None:
            raise BusError("the bus is not running")
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(self._publish_timeout):
                while True:
                    await self._up.wait()
                    conn = self._conn
                    if conn is not None and not conn.is_closed():
                        try:
                            async with self._use:
                                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL_PREFIX + topic, payload)
                            return
                        except LOST as exc:  # the connection failed: again on the next one
                            failure = exc
                    await asyncio.sleep(0.05)
        except TimeoutError as exc:
            cause = failure or exc
            raise BusError(f"could not publish on {topic} to {describe(self._dsn)} within {self._publish_timeout:g} "
                           f"seconds ({cause.__class__.__name__}: {cause})") from cause

    async def start(self, timeout: float | None = None) -> None:
        """Connect and listen, within `timeout` seconds (default: the connect timeout; ClusterError
        otherwise, and nothing runs)."""
        timeout = self._connect_timeout if timeout is None else timeout
        if self._runner is not None:
            return
        self._runner = asyncio.create_task(self._run(), name="bus")
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            await self.close()
            raise ClusterError(f"the message bus could not connect to {describe(self._dsn)} "
                               f"within {timeout:g} seconds") from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening and disconnect; idempotent, bounded."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.wait([runner], timeout=QUERY_TIMEOUT)
        await cancel_all(self._tasks)
        conn, self._conn = self._conn, None
        self._mark_down()
        await close(conn)

    async def _run(self) -> None:
        delay = self._retry[0]
        while True:
            try:
                conn = await self._connect()
            except LOST as exc:
                log.warning("bus_connect_failed", database=describe(self._dsn), retry_in=delay,
                            error=f"{exc.__class__.__name__}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry[1])
                continue
            delay = self._retry[0]
            missed, self._starting = not self._starting, False
            if missed:
                log.info("bus_reconnected", database=describe(self._dsn))
                for callback in list(self._reconnected):
                    spawn(self._tasks, guarded(callback, event="bus_reconnect_callback_failed"), "bus-reconnected")
            reason = await self._watch(conn)
            log.warning("bus_disconnected", database=describe(self._dsn), reason=reason, retry_in=delay)
            self._conn = None
            self._mark_down()
            conn.terminate()
            await asyncio.sleep(delay)

    async def _connect(self) -> asyncpg.Connection:
        """A new connection listening to every topic subscribed to, made the current one."""
        conn = await connect(self._dsn, "bus", self._process, timeout=self._connect_timeout)
        try:
            self._down.clear()
            conn.add_termination_listener(lambda _conn: self._lost(conn))
            listening = set()
            for topic in list(self._subscribers):
                await conn.add_listener(CHANNEL_PREFIX + topic, self._deliver)
                listening.add(topic)
        except BaseException:
            conn.terminate()
            raise
        self._conn, self._listening = conn, listening
        self.connected = True
        self._up.set()
        for topic in set(self._subscribers) - listening:  # subscribed while connecting
            spawn(self._tasks, self._listen_late(topic), f"bus-listen-{topic}")
        return conn

    async def _watch(self, conn: asyncpg.Connection) -> str:
        """Return why `conn` is no longer usable: its end, or a failed check."""
        while True:
            try:
                async with asyncio.timeout(self._ping_interval):
                    await self._down.wait()
                return "its connection closed"
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(self._ping_timeout):
                    async with self._use:
                        await conn.fetchval("SELECT 1")
            except (TimeoutError, *LOST) as exc:
                return f"{exc.__class__.__name__}: {exc}"

    async def _listen_late(self, topic: str) -> None:
        async with self._use:
            conn = self._conn
            if conn is None or conn.is_closed() or topic in self._listening:
                return
            try:
                await conn.add_listener(CHANNEL_PREFIX + topic, self._deliver)
            except LOST as exc:
                log.warning("bus_listen_failed", topic=topic, error=f"{exc.__class__.__name__}: {exc}")
                return  # the connection is failing: the next one listens to it
            self._listening.add(topic)

    def _lost(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._down.set()

    def _mark_down(self) -> None:
        self.connected = False
        self._up.clear()

    def _deliver(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        topic = channel.removeprefix(CHANNEL_PREFIX)
        for callback in list(self._subscribers.get(topic, ())):
            spawn(self._tasks, guarded(callback, payload, event="bus_callback_failed", topic=topic), f"bus-{topic}")
