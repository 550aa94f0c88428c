"""`python bot.py migrate --from sqlite:///… --to postgresql://…`: copy the store's SQLite file into a
PostgreSQL database, once, when an installation moves to PostgreSQL, and prove the copy by counting every
table's rows on both sides.

The source is only read: opened read-only, and immutable when no -wal file beside it says a bot still has
it open (SQLite then leaves no -wal or -shm file behind). A file of an older schema is copied into a
temporary folder and brought up to date there by the SQLite engine itself; a newer one is refused. The
target gets its schema from store/postgres/schema.py (the same numbered history), must hold no rows yet,
and receives everything in one transaction: a failure leaves it as it was. Ids are kept (old results'
buttons name them), and so is the instance_id (the bot's ComfyUI client ids derive from it, so jobs
submitted before the move are found again); each identity then continues past the largest copied id.

Every table of the latest schema must be named in TABLES, on both engines, or nothing is copied: a new
migration's table cannot be silently left behind. PostgreSQL's text cannot hold NUL: each one becomes
U+FFFD (store/postgres/text.py), in JSON text too (the \\u0000 escape, which PostgreSQL's json refuses).

Exit codes: 0 copied and verified; 1 a database failed or refused (a newer schema, rows in the target, an
unreachable server, counts that differ); 2 the arguments name nothing to copy (a URL's scheme, a file).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import asyncpg

from store import engine as sqlite_engine
from store.core import Store
from store.postgres.engine import describe, explain
from store.postgres.schema import MIGRATIONS, migrate
from store.postgres.text import clean
from store.records import StoreError

CONNECT_TIMEOUT = 10.0  # seconds to connect to the target
STATEMENT_TIMEOUT = 300.0  # seconds for one statement or one batch of rows
LOCK_TIMEOUT = 30.0  # seconds to wait for a table another session (a running bot) holds
BATCH = 2000  # rows per copy_records_to_table

# Every table of the latest schema, in an order in which each foreign key finds its row, but for the
# columns in LATER: jobs and generations refer to each other, so jobs' references to generations are
# filled in a second pass, once the generations are there.
TABLES = ("meta", "jobs", "generations", "favorites", "preferences", "styles", "saved_queries", "audit",
          "controls", "api_keys", "api_jobs", "webhook_deliveries", "processes", "command_hits", "user_workflows",
          "workflow_versions", "workflow_ratings", "pipelines", "credit_entries", "credit_balances",
          "checkout_sessions", "payment_events", "moderation_holds", "shares")
LATER = {"jobs": ("generation_id", "source_generation_id")}
SQLITE_SKIPPED = ("sqlite_", "generations_text")  # SQLite's own tables; the prompts' FTS5 index and its shadows
POSTGRES_SKIPPED = ("schema_version",)  # each engine keeps its version its own way
KEPT_ROW = "key = 'instance_id'"  # the target's only row before the copy (migration 3), replaced by the source's

# The JSON escape of NUL, where it is one (preceded by an even number of backslashes).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_PASSWORD = re.compile(r"^[^:/?#]+://[^/?#@:]*:([^/?#@]*)@")  # the password of a URL's user:password@


class Refused(Exception):
    """Nothing (or not all) could be copied; str() is a sentence for the operator, `code` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Table:
    """A table as the target has it: its copied columns (generated ones left out), their types, its identity."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    identity: str | None


async def run_migrate(source_url: str, target_url: str) -> int:
    """Copy and verify; progress and the counts go to stdout, a refusal to stderr. The exit code."""
    def say(line: str) -> None:
        print(_mask(line, target_url), flush=True)

    try:
        path = sqlite_path(source_url)
        where = target_where(target_url)
        with tempfile.TemporaryDirectory(prefix="bot-migrate-") as temp:
            with closing(await open_source(path, Path(temp), say)) as source:
                counts = await copy(source, target_url, where, say)
    except Refused as exc:
        print(_mask(f"Not migrated: {exc}", target_url), file=sys.stderr, flush=True)
        return exc.code
    return report(counts, say)


def sqlite_path(url: str) -> Path:
    """The file of a sqlite:/// URL, as SQLAlchemy reads them: sqlite:///relative, sqlite:////absolute."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or not url[len(prefix):]:
        raise Refused("--from must be a sqlite:/// URL naming the bot's database file, e.g. "
                      "sqlite:////srv/bot/data/bot.sqlite3", 2)
    return Path(unquote(url[len(prefix):])).resolve()


def target_where(url: str) -> str:
    """The target as the output names it (no user, no password); refuses another scheme than postgresql."""
    try:
        if (scheme := urlsplit(url).scheme) not in ("postgresql", "postgres"):
            raise Refused(f"--to must be a postgresql:// URL, not {f'{scheme}://…' if scheme else 'that'}", 2)
        return describe(url)
    except ValueError as exc:  # a port that is not a number, a host in brackets that is not IPv6
        raise Refused(f"--to is not a URL that can be used ({exc})", 2) from exc


async def open_source(path: Path, temp: Path, say: Callable[[str], None]) -> sqlite3.Connection:
    """The source, read-only and at the latest schema (an older one: a copy in `temp`, upgraded there),
    in an open read transaction, so that the copy and the counts see one state of it."""
    if not path.is_file():
        raise Refused(f"{path} is not a file" if path.exists() else f"{path} does not exist", 2)
    wal = path.with_name(path.name + "-wal")
    db = _open(path, immutable=not wal.exists())
    try:
        found, latest = _schema(db, path), len(sqlite_engine._MIGRATIONS)
        if found > latest:
            raise Refused(f"{path} was written by a newer version of the bot (schema {found}, this one knows "
                          f"{latest}); migrate it with that version")
        if wal.exists():
            say(f"Warning: {wal.name} exists: if a bot still uses {path.name}, stop it first; "
                "what it writes from now on is not copied")
        if found == latest:
            say(f"Source: {path} (schema {found}), read only")
            db.execute("BEGIN")
            return db  # the caller closes it
        upgraded = temp / "bot.sqlite3"
        with closing(sqlite3.connect(upgraded)) as copied:
            db.backup(copied)
        db.close()
    except sqlite3.Error as exc:
        db.close()
        raise Refused(sqlite_engine._explain(path, exc)) from exc
    except BaseException:
        db.close()
        raise
    store = Store(upgraded)
    try:
        await store.open()
    except StoreError as exc:
        raise Refused(f"the temporary copy of {path} cannot be brought up to date: {exc}") from exc
    finally:
        await store.close()
    say(f"Source: {path} has schema {found}, this bot's is {latest}: copying from a temporary copy brought up "
        f"to date (the file itself is unchanged)")
    db = _open(upgraded, immutable=True)
    db.execute("BEGIN")
    return db


def _open(path: Path, *, immutable: bool) -> sqlite3.Connection:
    """A read-only connection; immutable: SQLite neither locks the file nor makes -wal and -shm files."""
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro{'&immutable=1' if immutable else ''}", uri=True,
                           timeout=5.0, isolation_level=None)


def _schema(db: sqlite3.Connection, path: Path) -> int:
    """The schema version of the bot's database at `path`; refuses any other file."""
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_NOTADB:
            raise Refused(f"{path} is not a SQLite database", 2) from exc
        raise
    if found == 0 or "jobs" not in tables:
        raise Refused(f"{path} is a SQLite database, but not the bot's (it has no schema version or no jobs)", 2)
    return found


async def copy(source: sqlite3.Connection, url: str, where: str,
               say: Callable[[str], None]) -> list[tuple[str, int, int]]:
    """Bring the target's schema up to date, copy every table in one transaction, then count both sides."""
    with _explained(where, "nothing was copied"):
        async with asyncio.timeout(CONNECT_TIMEOUT + 5):
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, command_timeout=STATEMENT_TIMEOUT)
    try:
        with _explained(where, "nothing was copied"):
            await conn.execute(f"SET statement_timeout = '{int(STATEMENT_TIMEOUT * 1000)}ms'; "
                               f"SET lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms'")
            found = await migrate(conn)
            tables = plan(_sqlite_tables(source), await _postgres_tables(conn))
            say(f"Target: {where} (schema {found}, now {len(MIGRATIONS)})")
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN SHARE ROW EXCLUSIVE MODE")
                await _refuse_rows(conn, where)
                await conn.execute(f"DELETE FROM meta WHERE {KEPT_ROW}")
                for table in tables:
                    copied = await copy_table(conn, source, table)
                    say(f"  {table.name:<20} {copied:>9} {'row' if copied == 1 else 'rows'} copied")
                for name, columns in LATER.items():
                    await copy_references(conn, source, name, columns)
                nexts = [f"{table.name} {await _move_identity(conn, table)}" for table in tables if table.identity]
                say(f"  next ids: {', '.join(nexts)}")
        say("Committed. Counting the rows of every table on both sides:")
        with _explained(where, "the copy is committed, but its rows could not be counted"):
            return [(name, source.execute(f"SELECT count(*) FROM {name}").fetchone()[0],
                     await conn.fetchval(f"SELECT count(*) FROM {name}")) for name in TABLES]
    finally:
        try:
            await conn.close(timeout=CONNECT_TIMEOUT)
        except (OSError, asyncpg.InterfaceError, TimeoutError):
            conn.terminate()


def plan(sqlite_side: dict[str, list[str]], postgres_side: dict[str, list[tuple[str, str, bool, bool]]]) -> list[Table]:
    """The tables to copy, in TABLES' order; refuses when either engine has a table TABLES does not name
    (or lacks one it does), or a table's columns differ between the engines."""
    problems = []
    for engine, found in (("SQLite", set(sqlite_side)), ("PostgreSQL", set(postgres_side))):
        if unknown := sorted(found - set(TABLES)):
            problems.append(f"the {engine} schema has tables store/copy.py does not copy: {', '.join(unknown)}")
        if missing := sorted(set(TABLES) - found):
            problems.append(f"the {engine} schema lacks tables store/copy.py copies: {', '.join(missing)}")
    tables = []
    for name in TABLES:
        if name not in sqlite_side or name not in postgres_side:
            continue
        kept = [column for column in postgres_side[name] if not column[3]]  # not generated
        if sorted(column[0] for column in kept) != sorted(sqlite_side[name]):
            problems.append(f"the columns of {name} differ: SQLite has {', '.join(sqlite_side[name])}; "
                            f"PostgreSQL has {', '.join(column[0] for column in kept)}")
            continue
        identity = next((column[0] for column in kept if column[2]), None)
        tables.append(Table(name, tuple(column[0] for column in kept), tuple(column[1] for column in kept), identity))
    if problems:
        raise Refused("; ".join(problems) + " (a migration this copy does not know? Name its tables in "
                      "store/copy.py's TABLES); nothing was copied")
    return tables


def _sqlite_tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {name: [column[1] for column in db.execute(f'PRAGMA table_info("{name}")')]
            for name in names if not name.startswith(SQLITE_SKIPPED)}


async def _postgres_tables(conn: asyncpg.Connection) -> dict[str, list[tuple[str, str, bool, bool]]]:
    """Each table's columns: (name, data type, is an identity, is generated), in their order."""
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name, c.data_type, c.is_identity = 'YES', c.is_generated <> 'NEVER'"
        " FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
        " ORDER BY c.table_name, c.ordinal_position")
    found: dict[str, list[tuple[str, str, bool, bool]]] = {}
    for table, *column in rows:
        if table not in POSTGRES_SKIPPED:
            found.setdefault(table, []).append(tuple(column))
    return found


async def _refuse_rows(conn: asyncpg.Connection, where: str) -> None:
    """Refuse a target that holds rows already (but the instance_id its migration made)."""
    held = []
    for name in TABLES:
        unless = f" WHERE NOT ({KEPT_ROW})" if name == "meta" else ""
        count = await conn.fetchval(f"SELECT count(*) FROM {name}{unless}")
        if count:
            held.append(f"{name} ({count} {'row' if count == 1 else 'rows'})")
    if held:
        raise Refused(f"{where} already holds rows: {', '.join(held)}; nothing was copied. "
                      "Point --to at a new, empty database")


async def copy_table(conn: asyncpg.Connection, source: sqlite3.Connection, table: Table) -> int:
    """Copy a table's rows in batches, ids kept; the columns of LATER stay NULL for now. How many rows."""
    later = LATER.get(table.name, ())
    converters = [(lambda value: None) if column in later else _converter(table.name, column, kind)
                  for column, kind in zip(table.columns, table.types)]
    cursor = source.execute(f"SELECT {', '.join(table.columns)} FROM {table.name}")
    copied = 0
    while rows := cursor.fetchmany(BATCH):
        await conn.copy_records_to_table(table.name, columns=list(table.columns), timeout=STATEMENT_TIMEOUT,
                                         records=[tuple(convert(value) for convert, value in zip(converters, row))
                                                  for row in rows])
        copied += len(rows)
    return copied


async def copy_references(conn: asyncpg.Connection, source: sqlite3.Connection, name: str,
                          columns: tuple[str, ...]) -> None:
    """The second pass: fill `columns` of `name`'s rows (by id), now that the rows they refer to are there."""
    temp = f"copied_{name}_references"
    await conn.execute(f"CREATE TEMPORARY TABLE {temp} (id BIGINT PRIMARY KEY, "
                       f"{', '.join(f'{column} BIGINT' for column in columns)}) ON COMMIT DROP")
    to_int = _converter(name, "id", "bigint")
    cursor = source.execute(f"SELECT id, {', '.join(columns)} FROM {name} "
                            f"WHERE {' OR '.join(f'{column} IS NOT NULL' for column in columns)}")
    while rows := cursor.fetchmany(BATCH):
        await conn.copy_records_to_table(temp, records=[tuple(map(to_int, row)) for row in rows],
                                         columns=["id", *columns], timeout=STATEMENT_TIMEOUT)
    assignments = ", ".join(f"{column} = {temp}.{column}" for column in columns)
    await conn.execute(f"UPDATE {name} SET {assignments} FROM {temp} WHERE {name}.id = {temp}.id")


async def _move_identity(conn: asyncpg.Connection, table: Table) -> int:
    """Move the table's identity past its largest id, so that new rows do not collide; the next id."""
    return await conn.fetchval(f"SELECT setval(pg_get_serial_sequence($1, $2), coalesce(max({table.identity}), 0) + 1,"
                               f" false) FROM {table.name}", table.name, table.identity)


def _converter(table: str, column: str, kind: str) -> Callable[[Any], Any]:
    """The function that makes a SQLite value the Python value asyncpg writes into a column of `kind`."""

    def refuse(value: Any) -> None:
        raise Refused(f"{table}.{column} holds {value!r} ({type(value).__name__}), which a {kind} column cannot; "
                      "nothing was copied")

    def bigint(value: Any) -> int | None:
        if value is None or isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        refuse(value)

    def double(value: Any) -> float | None:
        if value is None or isinstance(value, int | float):
            return None if value is None else float(value)
        refuse(value)

    def text(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return None if value is None else clean(without_json_nul(value))
        refuse(value)

    converters = {"bigint": bigint, "integer": bigint, "double precision": double, "text": text}
    if kind not in converters:
        raise Refused(f"{table}.{column} is of type {kind}, which store/copy.py does not copy; nothing was copied")
    return converters[kind]


def without_json_nul(value: str) -> str:
    """JSON text with U+FFFD's escape for each escaped NUL (which PostgreSQL's json refuses); other text as it is."""
    if "\\u0000" not in value:
        return value
    try:
        json.loads(value)
    except ValueError:
        return value
    return _JSON_NUL.sub(lambda match: match.group(1) + "\\ufffd", value)


def report(counts: list[tuple[str, int, int]], say: Callable[[str], None]) -> int:
    """Print the counts of both sides, table by table; 0 when every one matches, else 1."""
    say(f"  {'table':<20} {'SQLite':>9} {'PostgreSQL':>11}")
    for name, source, target in counts:
        say(f"  {name:<20} {source:>9} {target:>11}  {'ok' if source == target else 'DIFFERS'}")
    differ = [name for name, source, target in counts if source != target]
    if differ:
        say(f"The counts differ for {', '.join(differ)}: the copy is committed but incomplete; "
            "drop the target database and run migrate again")
        return 1
    say(f"Copied and verified: {len(counts)} tables, {sum(source for _, source, _ in counts)} rows.")
    return 0


@contextmanager
def _explained(where: str, outcome: str) -> Iterator[None]:
    """Database failures inside become Refused: a sentence naming the target (never its password) and `outcome`."""
    try:
        yield
    except StoreError as exc:
        raise Refused(f"{exc}; {outcome}") from exc
    except sqlite3.Error as exc:
        raise Refused(f"the source cannot be read ({exc}); {outcome}") from exc
    except asyncpg.InvalidPasswordError as exc:
        raise Refused(f"{where} refused the user name or password in --to; {outcome}") from exc
    except asyncpg.LockNotAvailableError as exc:
        raise Refused(f"another session (a running bot?) kept a table of {where} locked for {LOCK_TIMEOUT:g} "
                      f"seconds; {outcome}") from exc
    except (TimeoutError, asyncpg.QueryCanceledError) as exc:
        raise Refused(f"{where} did not answer in time ({exc.__class__.__name__}); {outcome}") from exc
    except asyncpg.ClientConfigurationError as exc:  # asyncpg's reading of the URL's options
        raise Refused(f"--to is not a URL that can be used ({exc}); {outcome}", 2) from exc
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Refused(f"{explain(where, exc)}; {outcome}") from exc
    except ValueError as exc:  # asyncpg's reading of the URL (a value it cannot encode: InterfaceError)
        raise Refused(f"--to is not a URL that can be used ({exc}); {outcome}", 2) from exc


def _mask(text: str, url: str) -> str:
    """`text` with *** for the password of the target's URL: as written, decoded, or as its ?password=."""
    written = _PASSWORD.findall(url)  # not urlsplit: it refuses some URLs, and this must never fail
    for secret in (*written, *map(unquote, written), *parse_qs(url.partition("?")[2]).get("password", [])):
        text = text.replace(secret, "***") if secret else text
    return text
