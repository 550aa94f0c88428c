"""The store's SQLite engine: one connection on one worker thread, and the schema's migrations.

sqlite3 blocks, so every call runs on one dedicated worker thread that alone creates and uses
the connection, and is awaited from the event loop. One thread also serialises the calls, so
no two of them ever interleave. The connection is in autocommit mode: each write is a single
statement and therefore atomic; only migrations need an explicit transaction.

Each area of the store (jobs, people, gallery, admin, api, processes, user_workflows) is a class of async
methods that hand a function of the connection to `_run`; store.Store joins them to this engine.
"""

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from store import admin as store_admin
from store import api as store_api
from store import gallery as store_gallery
from store import people as store_people
from store import processes as store_processes
from store import credits as store_credits
from store import moderation as store_moderation
from store import payments as store_payments
from store import pipelines as store_pipelines
from store import shares as store_shares
from store import user_workflows as store_user_workflows
from store.records import StoreError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds a write waits for another connection's lock (a backup tool, the sqlite3 shell).
_BUSY_TIMEOUT = 5.0

# Schema version N is the state after the first N scripts; `PRAGMA user_version` holds N.
# A shipped script never changes: a schema change is a new script at the end.
_MIGRATIONS = (
    # 1: jobs and the generations they produce.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        guild_id INTEGER,
        request TEXT NOT NULL,
        state TEXT NOT NULL,
        interaction_token TEXT,
        application_id INTEGER,
        interaction_created REAL,
        message_id INTEGER,
        prompt_id TEXT,
        server TEXT,
        error TEXT,
        generation_id INTEGER REFERENCES generations (id),
        source_generation_id INTEGER REFERENCES generations (id),
        source_index INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs (state, created_at, id);
    CREATE TABLE generations (
        id INTEGER PRIMARY KEY,
        job_id INTEGER REFERENCES jobs (id),
        kind TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER NOT NULL,
        params TEXT NOT NULL,
        files TEXT NOT NULL,
        server TEXT NOT NULL,
        duration REAL NOT NULL,
        message_id INTEGER,
        attachment_urls TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX generations_by_job ON generations (job_id);
    """,
    # 2: priorities and retries, and an index for the per-user limit on active jobs.
    """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_by_user ON jobs (user_id, state);
    """,
    # 3: facts about this installation, e.g. the id its ComfyUI clients are known by.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('instance_id', lower(hex(randomblob(16))));
    """,
    # 4: find the result a message shows (Apps -> Vary on one of the bot's own results).
    """
    CREATE INDEX generations_by_message ON generations (message_id);
    """,
    # 5: people's defaults and saved styles (store/people.py).
    store_people.MIGRATION,
    # 6: favorites, deleted results, and the prompts' full-text index (store/gallery.py).
    store_gallery.MIGRATION,
    # 7: audit log, admin switches (pause, block, drain, quotas, terms, mod-log), GPU time and cost per job.
    store_admin.MIGRATION,
    # 8: API keys, the jobs each key started, and webhook deliveries (store/api.py).
    store_api.MIGRATION,
    # 9: every hand-over of a job to a server that ended without a result, started or not.
    """
    ALTER TABLE jobs ADD COLUMN handovers INTEGER NOT NULL DEFAULT 0;
    """,
    # 10: the bot processes sharing the database, and recent commands for a shared rate limit (store/processes.py).
    store_processes.MIGRATION,
    # 11: the workflows people bring, their versions and ratings (store/user_workflows.py).
    store_user_workflows.MIGRATION,
    # 12: the pipelines people save (store/pipelines.py).
    store_pipelines.MIGRATION,
    # 13: credits: the ledger and each person's balance (store/credits.py).
    store_credits.MIGRATION,
    # 14: payments: Stripe Checkout sessions and the webhook events handled (store/payments.py).
    store_payments.MIGRATION,
    # 15: results held by moderation (store/moderation.py).
    store_moderation.MIGRATION,
    # 16: shared results' public pages (store/shares.py).
    store_shares.MIGRATION,
)

# Explanations of SQLite's primary result codes, as sentences naming the file.
_EXPLANATIONS = {
    sqlite3.SQLITE_NOTADB: "{path} is not a SQLite database",
    sqlite3.SQLITE_CORRUPT: "{path} is damaged; restore it from a backup",
    sqlite3.SQLITE_FULL: "{path} cannot be written: the disk is full",
    sqlite3.SQLITE_IOERR: "{path} cannot be read or written (disk input/output error)",
    sqlite3.SQLITE_READONLY: "{path} cannot be written: it is read-only",
    sqlite3.SQLITE_CANTOPEN: "{path} cannot be opened; check that its folder is writable",
    sqlite3.SQLITE_BUSY: "{path} stayed locked by another program for {timeout:g} seconds",
    sqlite3.SQLITE_CONSTRAINT: "{path} refused a change that breaks its rules ({error})",
}


class SQLiteEngine:
    """The database file at `path`; open() before use, close() when done."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # worker thread only; sqlite3 enforces it

    async def open(self) -> None:
        """Create the parent folders, connect, and bring the schema up to date.

        A database written by a newer version of the bot is refused rather than guessed at.
        """
        if self._executor is not None:
            raise StoreError(f"{self._path} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        try:
            found = await self._run(_migrate, self._path)
        except BaseException:
            await self.close()
            raise
        log.info("store_opened", path=str(self._path), schema=len(_MIGRATIONS), found=found)

    async def close(self) -> None:
        """Close the connection once the calls already queued are done, and end the thread.

        Idempotent. Calls made after close() has started fail instead of queuing behind it.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        closed = asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        executor.shutdown(wait=False)
        await closed
        log.info("store_closed", path=str(self._path))

    async def instance_id(self) -> str:
        """A random id made once per database: the bot's ComfyUI client ids derive from it,
        so a restarted bot still receives the events of prompts it submitted before."""
        return await self._run(_select_instance_id)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        """Await `work(connection, *args)` on the worker thread; SQLite errors become StoreError.

        A cancelled caller stops waiting, but the call already queued still runs.
        """
        if self._executor is None:
            raise StoreError(f"{self._path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, work, *args)
        except sqlite3.Error as exc:
            raise StoreError(_explain(self._path, exc)) from exc

    def _call(self, work: Callable[..., T], *args: Any) -> T:
        """Runs on the worker thread; the first call (open's) connects."""
        if self._db is None:
            self._db = _connect(self._path)
        return work(self._db, *args)

    def _disconnect(self) -> None:
        """Runs on the worker thread."""
        if self._db is not None:
            self._db.close()
            self._db = None


# --- everything below runs on the worker thread ---------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"The folder {path.parent} cannot be created ({exc.strerror})") from exc
    db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = NORMAL")
        # WAL: readers never wait for the writer, and a commit needs no fsync at NORMAL.
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            log.warning("store_not_wal", path=str(path), journal_mode=mode)
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> int:
    """Apply the missing migrations, each in its own transaction; return the version found."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > len(_MIGRATIONS):
        raise StoreError(
            f"{path} was written by a newer version of the bot "
            f"(schema {found}, this one knows {len(_MIGRATIONS)})"
        )
    for version in range(found + 1, len(_MIGRATIONS) + 1):
        # executescript() commits any open transaction first, so BEGIN goes inside the script.
        script = _MIGRATIONS[version - 1]
        try:
            db.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version = {version}; COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        log.info("store_migrated", path=str(path), schema=version)
    return found


def _select_instance_id(db: sqlite3.Connection) -> str:
    return db.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()[0]


def _explain(path: Path, exc: sqlite3.Error) -> str:
    # Extended result codes carry the primary code in the low byte; errors raised by the
    # sqlite3 module itself (a closed connection) have no code at all.
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    explanation = _EXPLANATIONS.get(code, "{path} cannot be used ({error})")
    return explanation.format(path=path, timeout=_BUSY_TIMEOUT, error=exc)
