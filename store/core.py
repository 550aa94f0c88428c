"""The bot's SQLite database: jobs and the generations they produce, kept across restarts.

A button on a result posted a month ago must still work, and jobs that were waiting or running
when the bot stopped must be resumable, so everything lives here and nothing is cached in
memory. Callers get dataclasses; no SQL leaves this module and its parts (store_people.py for
people's defaults and styles, store_gallery.py for favorites and search, store_admin.py for admin
controls, audit and usage, store_api.py for API keys and webhooks).

sqlite3 blocks, so every call runs on one dedicated worker thread that alone creates and uses
the connection, and is awaited from the event loop. One thread also serialises the calls, so
no two of them ever interleave. The connection is in autocommit mode: each write is a single
statement and therefore atomic; only migrations need an explicit transaction.
"""

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from store import admin as store_admin
from store import api as store_api
from store import gallery as store_gallery
from store import people as store_people
from store.admin import AdminStore
from store.api import ApiStore
from store.gallery import GalleryStore
from store.people import PeopleStore

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R", "Job", "Generation")

JOB_STATES = ("waiting", "submitted", "running", "delivering", "done", "failed", "cancelled")
ACTIVE_STATES = ("waiting", "submitted", "running", "delivering")

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
    # 5: people's defaults and saved styles (store_people.py).
    store_people.MIGRATION,
    # 6: favorites, deleted results, and the prompts' full-text index (store_gallery.py).
    store_gallery.MIGRATION,
    # 7: audit log, admin switches (pause, block, drain, quotas, terms, mod-log), GPU time and cost per job.
    store_admin.MIGRATION,
    # 8: API keys, the jobs each key started, and webhook deliveries (store_api.py).
    store_api.MIGRATION,
    # 9: every hand-over of a job to a server that ended without a result, started or not.
    """
    ALTER TABLE jobs ADD COLUMN handovers INTEGER NOT NULL DEFAULT 0;
    """,
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


class StoreError(Exception):
    """The database cannot do what was asked; str() is a sentence for logs and operators."""


class LimitReached(Exception):
    """add_job refused: the user already has `count` active jobs."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the user already has {count} active jobs")
        self.count = count


@dataclass
class Job:
    """A user's request and how far it got."""

    id: int | None  # assigned by add_job
    kind: str  # "txt2img" | "upscale" | "animate"
    user_id: int
    channel_id: int
    guild_id: int | None
    request: dict[str, Any]  # JSON-able parameters of the request
    state: str = "waiting"
    # Edits the deferred response and sends followups for 15 minutes; a secret, so not in repr.
    interaction_token: str | None = field(default=None, repr=False)
    application_id: int | None = None
    interaction_created: float | None = None  # epoch seconds; the token expires 900 s later
    message_id: int | None = None  # the message that shows this job's progress
    prompt_id: str | None = None  # ComfyUI prompt id once submitted
    server: str | None = None  # which ComfyUI server runs it
    error: str | None = None  # the user-facing failure text
    generation_id: int | None = None  # set when done
    source_generation_id: int | None = None  # upscale/animate: where the input image came from
    source_index: int | None = None
    priority: int = 0
    attempts: int = 0  # runs that may have happened on a server (started, or posted twice), for at most two
    handovers: int = 0  # hand-overs to a server that ended without a result, started or not
    created_at: float = 0.0  # epoch seconds, set by add_job
    updated_at: float = 0.0


@dataclass
class Generation:
    """A finished result, and the Discord message it was posted in."""

    id: int | None
    job_id: int | None
    kind: str
    user_id: int
    guild_id: int | None
    channel_id: int
    params: dict[str, Any]  # everything shown in the embed
    files: list[str]  # file names inside the output folder, never paths
    server: str
    duration: float  # seconds
    message_id: int | None = None
    attachment_urls: list[str] = field(default_factory=list)  # one per file, same order
    created_at: float = 0.0
    deleted_at: float | None = None  # removed by its owner or a moderator: out of history and the gallery


_JSON_FIELDS = frozenset({"request", "params", "files", "attachment_urls"})
_JOB_COLUMNS = ", ".join(f.name for f in fields(Job))
_GENERATION_COLUMNS = ", ".join(f.name for f in fields(Generation))
_UPDATABLE = frozenset(f.name for f in fields(Job)) - {"id", "created_at", "updated_at"}


class Store(PeopleStore, GalleryStore, AdminStore, ApiStore):
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

    # --- jobs -----------------------------------------------------------------------------

    async def add_job(self, job: Job, *, active_limit: int | None = None) -> Job:
        """Store a new job; return a copy with id, created_at and updated_at set.

        With `active_limit`, the user's active jobs are counted and the job inserted in one
        step on the store's thread, so concurrent calls cannot both pass the count: past
        the limit, LimitReached.
        """
        if job.id is not None:
            raise StoreError(f"Job {job.id} is already stored")
        _check_states((job.state,))
        return await self._run(_insert_job, job, active_limit)

    async def get_job(self, job_id: int) -> Job | None:
        return await self._run(_select_job, job_id)

    async def update_job(self, job_id: int, *, only_from: Iterable[str] | None = None, **changes: Any) -> Job:
        """Change some of a job's fields in one UPDATE, set updated_at, and return the job. With
        `only_from`, only while the job is in one of those states: otherwise it is returned unchanged
        (a job cancelled meanwhile stays cancelled).

        id, created_at and updated_at cannot be changed; a state must be one of JOB_STATES.
        """
        if unknown := sorted(changes.keys() - _UPDATABLE):
            raise StoreError(f"These job fields cannot be updated: {', '.join(unknown)}")
        if "state" in changes:
            _check_states((changes["state"],))
        states = tuple(only_from) if only_from is not None else None
        if states:
            _check_states(states)
        return await self._run(_update_job, job_id, changes, states)

    async def jobs_in(self, states: Iterable[str]) -> list[Job]:
        """The jobs in any of `states`, oldest first (by created_at, then id)."""
        wanted = tuple(states)
        _check_states(wanted)
        return await self._run(_select_jobs_in, wanted)

    async def active_job_count(self, user_id: int) -> int:
        """How many of the user's jobs are in ACTIVE_STATES, for the per-user limit."""
        return await self._run(_count_active, user_id)

    async def job_counts(self) -> dict[str, int]:
        """The number of jobs in each of JOB_STATES, zero included, for /status and logs."""
        return await self._run(_count_by_state)

    # --- generations ----------------------------------------------------------------------

    async def add_generation(self, generation: Generation) -> Generation:
        """Store a new generation; return a copy with id and created_at set."""
        if generation.id is not None:
            raise StoreError(f"Generation {generation.id} is already stored")
        return await self._run(_insert_generation, generation)

    async def get_generation(self, generation_id: int) -> Generation | None:
        return await self._run(_select_generation, generation_id)

    async def generation_by_message(self, message_id: int) -> Generation | None:
        """The result first posted in that message, if any."""
        return await self._run(_select_generation_by_message, message_id)

    async def set_generation_message(
        self, generation_id: int, message_id: int, attachment_urls: list[str]
    ) -> None:
        """Record the message a generation was posted in and its files' CDN urls."""
        await self._run(_update_generation_message, generation_id, message_id, attachment_urls)

    async def pending_files(self) -> list[str]:
        """File names of generations whose job is still delivering, oldest first.

        After a restart the output folder pins these, so they survive until delivered.
        """
        return await self._run(_select_pending_files)

    async def instance_id(self) -> str:
        """A random id made once per database: the bot's ComfyUI client ids derive from it,
        so a restarted bot still receives the events of prompts it submitted before."""
        return await self._run(_select_instance_id)

    # --- the worker thread ----------------------------------------------------------------

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


def _insert_job(db: sqlite3.Connection, job: Job, active_limit: int | None = None) -> Job:
    if active_limit is not None and (count := _count_active(db, job.user_id)) >= active_limit:
        raise LimitReached(count)
    now = time.time()
    job = replace(job, created_at=now, updated_at=now)
    return replace(job, id=_insert(db, "jobs", job))


def _select_job(db: sqlite3.Connection, job_id: int) -> Job | None:
    row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _record(Job, row)


def _update_job(db: sqlite3.Connection, job_id: int, changes: dict[str, Any], states: tuple[str, ...] | None) -> Job:
    values = {name: _encode(name, value) for name, value in changes.items()}
    values["updated_at"] = time.time()
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    marks = {f"s{index}": state for index, state in enumerate(states or ())}
    only = f" AND state IN ({', '.join(':' + mark for mark in marks)})" if marks else ""
    cursor = db.execute(f"UPDATE jobs SET {assignments} WHERE id = :id{only}", {**values, **marks, "id": job_id})
    job = _select_job(db, job_id)
    if job is None or (cursor.rowcount == 0 and not marks):
        raise StoreError(f"There is no job {job_id}")
    return job


def _select_jobs_in(db: sqlite3.Connection, states: tuple[str, ...]) -> list[Job]:
    marks = ", ".join("?" * len(states))
    rows = db.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created_at, id", states
    )
    return [_record(Job, row) for row in rows]


def _count_active(db: sqlite3.Connection, user_id: int) -> int:
    marks = ", ".join("?" * len(ACTIVE_STATES))
    sql = f"SELECT count(*) FROM jobs WHERE user_id = ? AND state IN ({marks})"
    return db.execute(sql, (user_id, *ACTIVE_STATES)).fetchone()[0]


def _count_by_state(db: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys(JOB_STATES, 0)
    counts.update(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    return counts


def _insert_generation(db: sqlite3.Connection, generation: Generation) -> Generation:
    generation = replace(generation, created_at=time.time())
    return replace(generation, id=_insert(db, "generations", generation))


def _select_generation(db: sqlite3.Connection, generation_id: int) -> Generation | None:
    sql = f"SELECT {_GENERATION_COLUMNS} FROM generations WHERE id = ?"
    row = db.execute(sql, (generation_id,)).fetchone()
    return None if row is None else _record(Generation, row)


def _select_generation_by_message(db: sqlite3.Connection, message_id: int) -> Generation | None:
    sql = f"SELECT {_GENERATION_COLUMNS} FROM generations WHERE message_id = ? ORDER BY id LIMIT 1"
    row = db.execute(sql, (message_id,)).fetchone()
    return None if row is None else _record(Generation, row)


def _update_generation_message(
    db: sqlite3.Connection, generation_id: int, message_id: int, attachment_urls: list[str]
) -> None:
    cursor = db.execute(
        "UPDATE generations SET message_id = ?, attachment_urls = ? WHERE id = ?",
        (message_id, _encode("attachment_urls", attachment_urls), generation_id),
    )
    if cursor.rowcount == 0:
        raise StoreError(f"There is no generation {generation_id}")


def _select_pending_files(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT generations.files FROM generations JOIN jobs ON jobs.id = generations.job_id"
        " WHERE jobs.state = 'delivering' ORDER BY generations.id"
    )
    return [name for (files,) in rows for name in json.loads(files)]


# --- helpers ---------------------------------------------------------------------------------


def _insert(db: sqlite3.Connection, table: str, record: Job | Generation) -> int:
    """Insert every field of `record` but id into `table`; return the new row's id."""
    values = {f.name: _encode(f.name, getattr(record, f.name)) for f in fields(record)}
    del values["id"]
    marks = ", ".join(f":{name}" for name in values)
    sql = f"INSERT INTO {table} ({', '.join(values)}) VALUES ({marks})"
    rowid = db.execute(sql, values).lastrowid
    assert rowid is not None  # set by every successful INSERT
    return rowid


def _encode(name: str, value: Any) -> Any:
    """The column value of a field: compact JSON text for the JSON fields."""
    return json.dumps(value, separators=(",", ":")) if name in _JSON_FIELDS else value


def _record(cls: type[R], row: sqlite3.Row) -> R:
    """The dataclass of a row whose columns are named after its fields."""
    return cls(**{name: _decode(name, row[name]) for name in row.keys()})


def _decode(name: str, value: Any) -> Any:
    return json.loads(value) if name in _JSON_FIELDS else value


def _check_states(states: Iterable[str]) -> None:
    for state in states:
        if state not in JOB_STATES:
            raise StoreError(f"{state!r} is not a job state (one of {', '.join(JOB_STATES)})")


def _explain(path: Path, exc: sqlite3.Error) -> str:
    # Extended result codes carry the primary code in the low byte; errors raised by the
    # sqlite3 module itself (a closed connection) have no code at all.
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    explanation = _EXPLANATIONS.get(code, "{path} cannot be used ({error})")
    return explanation.format(path=path, timeout=_BUSY_TIMEOUT, error=exc)


def _select_instance_id(db: sqlite3.Connection) -> str:
    return db.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()[0]
