"""Fixtures of the cluster's tests: the real PostgreSQL server (tests/conftest.py), and helpers
to act on its sessions from the outside, as a crash or a network fault would."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from tests.store.conftest import any_store

__all__ = ["any_store"]  # the fixture, for the tests of this folder (postgres and pg_dsn: tests/conftest.py)

TIMEOUT = 10.0  # seconds for any one call to the server


async def terminate(dsn: str, application_name: str) -> int:
    """End the sessions with that application_name from a third connection (pg_terminate_backend, as when
    the server ends a crashed client's session); how many."""
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        return await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            application_name, timeout=TIMEOUT)
    finally:
        await conn.close(timeout=TIMEOUT)


async def lease_holders(dsn: str, key: tuple[int, int]) -> list[str]:
    """The application_name of each session holding the advisory lock `key` (two-int form)."""
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        rows = await conn.fetch(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid "
            "AND l.objid = $2::bigint::oid AND l.objsubid = 2", key[0], key[1], timeout=TIMEOUT)
        return [row[0] for row in rows]
    finally:
        await conn.close(timeout=TIMEOUT)


async def eventually(check, timeout: float = TIMEOUT, step: float = 0.05) -> None:
    """Wait until `check()` (a coroutine function or a function) is true, at most `timeout` seconds."""
    async def poll() -> None:
        for _ in range(int(timeout / step) + 1):
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(step)
        raise AssertionError("still false")
    await asyncio.wait_for(poll(), timeout + 1)


class FreezableProxy:
    """A Unix-socket proxy in front of the server (for a DSN of its own) that can stop passing bytes
    either way while keeping every socket open: to the client, a server that vanished without a FIN, and
    to the server, a client that did."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.frozen = False
        self._folder = tempfile.mkdtemp(prefix="pgproxy-")
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task] = set()

    def dsn(self) -> str:
        parts = urlsplit(self._dsn)
        query = dict(parse_qsl(parts.query))
        self._target = os.path.join(query["host"], f".s.PGSQL.{query.get('port', '5432')}")
        return urlunsplit(parts._replace(query=urlencode({**query, "host": self._folder})))

    async def start(self) -> str:
        dsn = self.dsn()
        self._server = await asyncio.start_unix_server(self._accept, os.path.join(self._folder, ".s.PGSQL.5432"))
        return dsn

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(self._target)
        self._writers += [writer, upstream_writer]
        for source, target in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        while not self.frozen:
            data = await source.read(65536)
            if not data or self.frozen:
                break
            target.write(data)
            await target.drain()
        if not self.frozen:
            target.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
        shutil.rmtree(self._folder, ignore_errors=True)
