"""Fixtures of the store's tests: `any_store`, each test on both engines (the PostgreSQL server is
tests/conftest.py's `postgres`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.core import PostgresStore, Store
from tests.postgres import create_database, drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store | PostgresStore]:
    """An open, empty store on each engine in turn: the SQLite file, then a new PostgreSQL database.
    Tests that take it run twice, and assert the same behaviour of both."""
    dsn = None
    if request.param == "sqlite":
        opened: Store | PostgresStore = Store(tmp_path / "bot.sqlite3")
    else:
        dsn = await create_database(request.getfixturevalue("postgres"))
        opened = PostgresStore(dsn)
    try:
        await opened.open()
        yield opened
    finally:
        await opened.close()
        if dsn is not None:
            await drop_database(dsn)
