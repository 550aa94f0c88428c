"""Fixtures of the store's tests: a real PostgreSQL server (tests/postgres.py) for the PostgreSQL engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.postgres import PostgresServer, PostgresUnavailable, create_database, drop_database


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The URL (DSN) of the `postgres` database of a throwaway server, started once for the session.

    The server listens only on a Unix socket in its temporary folder; it is stopped (pg_ctl stop -m
    fast) and the folder deleted when the session ends. Missing binaries fail the tests, as missing
    Chromium does: `make test` installs them (`make postgres`).
    """
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        unavailable = str(exc)
    else:
        unavailable = None
    if unavailable is not None:
        pytest.fail(unavailable, pytrace=False)
    try:
        yield server.dsn()
    finally:
        server.stop()


@pytest.fixture
async def pg_dsn(postgres: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on that server, dropped after the test."""
    dsn = await create_database(postgres)
    try:
        yield dsn
    finally:
        await drop_database(dsn)
