"""Which PostgreSQL function stands in for which SQLite one.

Each area of the store (store/jobs.py, people.py, gallery.py, admin.py, api.py) hands a function of a
sqlite3 connection to the engine's `_run`. The PostgreSQL engine runs that function's twin instead: a
coroutine of an asyncpg connection, declared next to its siblings in store/postgres/<area>.py with
`@twin_of(<the SQLite function>)`. The areas' methods (their checks, their docstrings) are shared by both
engines; only the SQL differs. tests/store/test_interface.py checks that every SQLite function has a twin.
"""

from collections.abc import Awaitable, Callable
from typing import Any

TWINS: dict[Callable[..., Any], Callable[..., Awaitable[Any]]] = {}


def twin_of(sqlite_function: Callable[..., Any]) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register the decorated coroutine as the PostgreSQL twin of `sqlite_function`."""

    def register(function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if sqlite_function in TWINS:
            raise RuntimeError(f"{sqlite_function.__qualname__} already has a twin")
        TWINS[sqlite_function] = function
        return function

    return register
