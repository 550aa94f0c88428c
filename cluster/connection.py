"""The dedicated PostgreSQL connections of cluster/ (the lease's, the bus's): opened and closed within
bounds, with the server-side settings that make a vanished peer noticed, and the errors they raise.

These connections are not the store's pool: a pooled connection is handed to whoever asks next, while
the lease lives exactly as long as its session, and LISTEN belongs to its session too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import structlog


log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
CLOSE_TIMEOUT = 3.0  # seconds for a polite close before the socket is cut
QUERY_TIMEOUT = 5.0  # seconds for one small statement (a ping, a NOTIFY, a LISTEN)

# Connection errors: the database went away, or the connection was cut (pg_terminate_backend, a crash).
LOST = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ConnectionError, asyncio.TimeoutError)

# Server-side TCP keepalives: a client whose machine vanished (no FIN) is dropped after about
# idle + interval * count = 10 seconds of silence. (Ignored on Unix sockets, where the kernel knows.)
KEEPALIVES = {"tcp_keepalives_idle": "4", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}


class ClusterError(Exception):
    """The cluster cannot do what was asked (the database cannot be reached, it was closed); str() is a
    sentence for logs and operators."""


class BusError(ClusterError):
    """A message could not be published within its bound."""


async def connect(dsn: str, role: str, process: str, *, settings: dict[str, str] | None = None,
                  timeout: float = CONNECT_TIMEOUT) -> asyncpg.Connection:
    """A new connection for `role` ("lease", "bus") of process `process`, within `timeout` seconds.
    Its application_name says which, for pg_stat_activity (and for the tests, which cut it)."""
    server_settings = {"application_name": application_name(role, process), **KEEPALIVES, **(settings or {})}
    async with asyncio.timeout(timeout + 1.0):  # (asyncio.wait_for may swallow a cancellation in 3.11)
        return await asyncpg.connect(dsn, timeout=timeout, command_timeout=QUERY_TIMEOUT,
                                     server_settings=server_settings)


def application_name(role: str, process: str) -> str:
    """'comfybot-lease:<process>': PostgreSQL keeps 63 bytes of it."""
    return f"comfybot-{role}:{process}"[:63]


async def close(conn: asyncpg.Connection | None) -> None:
    """Close `conn` politely within CLOSE_TIMEOUT, else cut it; never raises."""
    if conn is None or conn.is_closed():
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT + 0.5):
            await conn.close(timeout=CLOSE_TIMEOUT)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:
        conn.terminate()


def spawn(tasks: set[asyncio.Task[Any]], coroutine: Awaitable[Any], name: str) -> asyncio.Task[Any]:
    """A task kept in `tasks` until it ends (so it is not garbage collected mid-way)."""
    task = asyncio.ensure_future(coroutine)
    task.set_name(name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def guarded(callback: Callable[..., Awaitable[None]], *args: Any, event: str, **fields: Any) -> None:
    """Await a subscriber's callback; its exception is logged, never raised."""
    try:
        await callback(*args)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(event, **fields)


async def cancel_all(tasks: Iterable[asyncio.Task[Any] | None], timeout: float | None = CLOSE_TIMEOUT) -> None:
    """Cancel the tasks (None: never started) and wait for them to end, at most `timeout` seconds (None: until
    they have); how each ended is read, so none is reported as an exception never retrieved."""
    pending = [task for task in tasks if task is not None and not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        done, _ = await asyncio.wait(pending, timeout=timeout)
        for task in done:
            if not task.cancelled():
                task.exception()
