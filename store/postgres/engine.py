"""The store's PostgreSQL engine: a bounded pool of asyncpg connections, and the schema's migrations
(store/postgres/schema.py, the same history as the SQLite engine's).

The areas of the store hand `_run` a function of a sqlite3 connection; this engine awaits that
function's PostgreSQL twin (store/postgres/twins.py) on a connection of the pool instead. Every wait is
bounded: for a connection (CONNECT_TIMEOUT) and for each statement (STATEMENT_TIMEOUT). A twin that
reads and then writes opens its own transaction and takes the locks it needs, since several bot
processes may share the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import structlog

from store import engine as sqlite_engine
from store.postgres import (admin, api, credits, gallery, jobs, moderation,  # noqa: F401  (they register the twins)
                            payments, people, pipelines, processes, shares, user_workflows)
from store.postgres.schema import MIGRATIONS, migrate
from store.postgres.twins import TWINS, twin_of
from store.records import LimitReached, StoreError

log = structlog.get_logger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0  # seconds to get a connection (a new one included)
STATEMENT_TIMEOUT = 30.0  # seconds for one statement, as the client sees it


class PostgresEngine:
    """The database at `dsn` (postgresql://…); open() before use, close() when done."""

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    @property
    def where(self) -> str:
        """The server and database, for logs and errors: no user name, no password."""
        return describe(self._dsn)

    async def open(self) -> None:
        """Connect (a pool of at most `pool_size` connections) and bring the schema up to date."""
        if self._pool is not None:
            raise StoreError(f"{self.where} is already open")
        try:
            pool = await asyncio.wait_for(
                asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size, timeout=CONNECT_TIMEOUT,
                                    command_timeout=STATEMENT_TIMEOUT),
                CONNECT_TIMEOUT * 2)
        except Exception as exc:
            raise StoreError(explain(self.where, exc)) from exc
        try:
            found = await migrate(pool)
        except BaseException:
            await _close_pool(pool)
            raise
        self._pool = pool
        log.info("store_opened", database=self.where, schema=len(MIGRATIONS), found=found)

    async def close(self) -> None:
        """Close every connection once its call is done. Idempotent; later calls fail."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        await _close_pool(pool)
        log.info("store_closed", database=self.where)

    async def instance_id(self) -> str:
        """A random id made once per database (schema migration 3), shared by every bot process on it."""
        return await self._run(sqlite_engine._select_instance_id)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        """Await the PostgreSQL twin of `work` on a pooled connection; database failures become StoreError."""
        if self._pool is None:
            raise StoreError(f"{self.where} is not open")
        twin = TWINS.get(work)
        if twin is None:
            raise StoreError(f"{work.__qualname__} has no PostgreSQL twin")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                return await twin(conn, *args)
        except (StoreError, LimitReached):
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as exc:
            raise StoreError(explain(self.where, exc)) from exc


@twin_of(sqlite_engine._select_instance_id)
async def _select_instance_id(conn: asyncpg.Connection) -> str:
    return await conn.fetchval("SELECT value FROM meta WHERE key = 'instance_id'")


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
    except (asyncio.TimeoutError, OSError, asyncpg.InterfaceError):
        pool.terminate()


def describe(dsn: str) -> str:
    """'PostgreSQL database bot on db.example:5432': the DSN without its user, password or options."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/") or "postgres"
    where = parts.hostname or "a local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL database {name} on {where}{port}"


def explain(where: str, exc: BaseException) -> str:
    """A sentence for operators: what went wrong, naming the database but never its password."""
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return f"{where} refused the user name or password in DATABASE_URL"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"{where} does not exist; create it first (createdb)"
    if isinstance(exc, asyncpg.QueryCanceledError | asyncio.TimeoutError):
        return f"{where} did not answer within {STATEMENT_TIMEOUT:g} seconds"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{where} refused a change or query ({exc.__class__.__name__}: {exc})"
    if isinstance(exc, OSError | asyncpg.InterfaceError | ConnectionError):
        return f"{where} cannot be reached ({exc.__class__.__name__}: {exc})"
    return f"{where} cannot be used ({exc.__class__.__name__}: {exc})"
