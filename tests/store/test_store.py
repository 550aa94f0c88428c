"""Tests for the store's engines and its jobs and generations (store/engine.py, store/postgres/engine.py,
store/jobs.py and its twins in store/postgres/jobs.py): every claim is checked against what is in the
database, as another program reading it would see it.

The tests of behaviour take `any_store` and run on both engines; those of SQLite's file, its migrations and
its worker thread take `db`; those of what PostgreSQL adds (several bot processes on one database, text
without NUL, a server that cannot be reached) take `pg_dsn`.
"""

import asyncio
import json
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from store import ACTIVE_STATES, JOB_STATES, Generation, Job, LimitReached, PostgresStore, Store, StoreError, engine
from store.postgres import schema as pg_schema

LATEST = len(engine._MIGRATIONS)
WAIT = 60.0  # seconds any one test waits for the store at most: a hang fails, never blocks the run
# first schema even if someone edits migration 1 (which must never change) in store/engine.py.
VERSION_1 = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, user_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL, guild_id INTEGER, request TEXT NOT NULL, state TEXT NOT NULL,
    interaction_token TEXT, application_id INTEGER, interaction_created REAL, message_id INTEGER,
    prompt_id TEXT, server TEXT, error TEXT, generation_id INTEGER REFERENCES generations (id),
    source_generation_id INTEGER REFERENCES generations (id), source_index INTEGER,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX jobs_by_state ON jobs (state, created_at, id);
CREATE TABLE generations (
    id INTEGER PRIMARY KEY, job_id INTEGER REFERENCES jobs (id), kind TEXT NOT NULL,
    user_id INTEGER NOT NULL, guild_id INTEGER, channel_id INTEGER NOT NULL, params TEXT NOT NULL,
    files TEXT NOT NULL, server TEXT NOT NULL, duration REAL NOT NULL, message_id INTEGER,
    attachment_urls TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX generations_by_job ON generations (job_id);
PRAGMA user_version = 1;
"""

TRICKY_REQUEST = {
    "prompt": 'a "quoted" cat\'s café, 日本語 🐱\nnew line \\ backslash; DROP TABLE jobs; --',
    "negative_prompt": "",
    "seed": 2**63 - 1,
    "cfg": 7.5,
    "loras": [{"name": "détail", "weight": 0.8}],
    "upscale": None,
}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.sqlite3"


@pytest.fixture
async def db(path: Path) -> AsyncIterator[Store]:
    opened = Store(path)
    await opened.open()
    yield opened
    await opened.close()


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read from the file by a separate connection, as another program would see them."""
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql, params).fetchall()


def execute(path: Path, script: str) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(script)


def schema(path: Path) -> dict[str, Any]:
    """Tables, columns, foreign keys and indexes as SQLite reports them, whatever the DDL text."""
    with closing(sqlite3.connect(path)) as connection:
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        indexes = connection.execute("SELECT name, tbl_name FROM sqlite_master "
                                     "WHERE type = 'index' ORDER BY name").fetchall()

        def pragma(name: str, argument: str) -> list[tuple[Any, ...]]:
            return connection.execute(f"PRAGMA {name}({argument})").fetchall()

        return {
            "columns": {table: pragma("table_info", table) for table in tables},
            "keys": {table: pragma("foreign_key_list", table) for table in tables},
            "indexes": {name: (table, pragma("index_info", name)) for name, table in indexes},
        }


def make_job(**overrides: Any) -> Job:
    values: dict[str, Any] = {"id": None, "kind": "txt2img", "user_id": 11, "channel_id": 22,
                              "guild_id": 33, "request": {"prompt": "a cat"}, **overrides}
    return Job(**values)


def make_generation(**overrides: Any) -> Generation:
    values: dict[str, Any] = {
        "id": None, "job_id": None, "kind": "txt2img", "user_id": 11, "guild_id": 33,
        "channel_id": 22, "params": {"prompt": "a cat", "seed": 7}, "files": ["a.png", "b.png"],
        "server": "http://127.0.0.1:8188", "duration": 12.5, **overrides,
    }
    return Generation(**values)


def store_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("store_")]




# --- either engine ---------------------------------------------------------------------------


async def rows(store: Store | PostgresStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read (or changed) by a separate connection to the store's database, as another program would
    see them. `sql` numbers its parameters $1, $2… (SQLite reads them as ?1, ?2…)."""
    if isinstance(store, PostgresStore):
        connection = await asyncpg.connect(store._dsn, timeout=10)
        try:
            return [tuple(row) for row in await connection.fetch(sql, *params, timeout=10)]
        finally:
            await connection.close(timeout=10)
    with closing(sqlite3.connect(store._path, isolation_level=None)) as other_program:
        return other_program.execute(re.sub(r"\$(\d+)", r"?\1", sql), params).fetchall()


def another(store: Store | PostgresStore) -> Store | PostgresStore:
    """A second store (not yet open) on the same database: the bot restarted, or a second bot process."""
    return PostgresStore(store._dsn) if isinstance(store, PostgresStore) else Store(store._path)


def stored_text(store: Store | PostgresStore, text: str) -> str:
    """What the engine keeps of `text`: PostgreSQL's text cannot hold NUL (store/postgres/text.py)."""
    return text.replace("\x00", "\ufffd") if isinstance(store, PostgresStore) else text


# --- opening ---------------------------------------------------------------------------------


async def test_open_creates_the_folder_and_the_latest_schema_in_wal_mode(path: Path) -> None:
    assert not path.parent.exists()
    opened = Store(path)
    await opened.open()
    await opened.close()
    assert query(path, "PRAGMA user_version") == [(LATEST,)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert {"jobs", "generations"} <= {name for (name,) in query(
        path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_upgrade_from_version_1_keeps_rows_and_ends_at_the_fresh_schema(
    path: Path, tmp_path: Path
) -> None:
    path.parent.mkdir()
    execute(path, VERSION_1)
    request = json.dumps(TRICKY_REQUEST, separators=(",", ":"))
    execute(path, f"""
        INSERT INTO jobs VALUES (5, 'upscale', 11, 22, NULL, '{request.replace("'", "''")}',
            'running', 'tok', 99, 1000.5, 44, 'p-1', 'gpu1', NULL, NULL, 3, 1, 1000.0, 1001.0);
        INSERT INTO generations VALUES (3, 5, 'upscale', 11, NULL, 22, '{{"factor":2}}',
            '["x.png"]', 'gpu1', 4.5, 55, '["https://cdn/x.png"]', 1002.0);
    """)

    upgraded = Store(path)
    await upgraded.open()
    job = await upgraded.get_job(5)
    generation = await upgraded.get_generation(3)
    await upgraded.close()

    assert job == Job(
        id=5, kind="upscale", user_id=11, channel_id=22, guild_id=None, request=TRICKY_REQUEST,
        state="running", interaction_token="tok", application_id=99, interaction_created=1000.5,
        message_id=44, prompt_id="p-1", server="gpu1", source_generation_id=3, source_index=1,
        priority=0, attempts=0, created_at=1000.0, updated_at=1001.0)
    assert generation == Generation(
        id=3, job_id=5, kind="upscale", user_id=11, guild_id=None, channel_id=22,
        params={"factor": 2}, files=["x.png"], server="gpu1", duration=4.5, message_id=55,
        attachment_urls=["https://cdn/x.png"], created_at=1002.0)
    assert query(path, "PRAGMA user_version") == [(LATEST,)]
    fresh = Store(tmp_path / "fresh.sqlite3")
    await fresh.open()
    await fresh.close()
    assert schema(path) == schema(tmp_path / "fresh.sqlite3")


async def test_a_failing_migration_changes_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path.parent.mkdir()
    execute(path, VERSION_1)
    broken = "CREATE TABLE extra (x); CREATE TABLE jobs (x);"  # the second statement fails
    monkeypatch.setattr(engine, "_MIGRATIONS", (*engine._MIGRATIONS, broken))
    before = schema(path)

    with pytest.raises(StoreError, match="table jobs already exists"):
        await Store(path).open()

    # Migrations before the broken one are applied and kept; the broken one left no trace.
    assert query(path, "PRAGMA user_version") == [(LATEST,)]
    assert query(path, "SELECT name FROM sqlite_master WHERE name = 'extra'") == []
    assert schema(path) != before


async def test_a_database_from_a_newer_version_is_refused(path: Path) -> None:
    path.parent.mkdir()
    execute(path, f"CREATE TABLE future (x); PRAGMA user_version = {LATEST + 2};")
    refused = Store(path)

    with pytest.raises(StoreError) as caught:
        await refused.open()

    assert str(caught.value) == (f"{path} was written by a newer version of the bot "
                                 f"(schema {LATEST + 2}, this one knows {LATEST})")
    assert query(path, "PRAGMA user_version") == [(LATEST + 2,)]
    with pytest.raises(StoreError, match="is not open"):
        await refused.get_job(1)


async def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.parent.mkdir()
    content = b"prompt,seed\na cat,7\n" * 100
    path.write_bytes(content)

    with pytest.raises(StoreError) as caught:
        await Store(path).open()

    assert str(caught.value) == f"{path} is not a SQLite database"
    assert path.read_bytes() == content


async def test_close_is_idempotent_ends_the_thread_and_later_calls_fail(path: Path) -> None:
    never_opened = Store(path)
    await never_opened.close()
    opened = Store(path)
    await opened.open()
    assert store_threads()

    await asyncio.gather(opened.close(), opened.close())
    await opened.close()

    with pytest.raises(StoreError, match="is not open"):
        await opened.add_job(make_job())
    deadline = time.monotonic() + 2
    while store_threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert store_threads() == []



async def test_close_is_idempotent_and_later_calls_fail(any_store: Store | PostgresStore) -> None:
    await asyncio.gather(any_store.close(), any_store.close())
    await any_store.close()

    with pytest.raises(StoreError, match="is not open"):
        await any_store.add_job(make_job())


# --- jobs ------------------------------------------------------------------------------------


async def test_job_round_trip_keeps_every_field_and_stores_compact_json(any_store: Store | PostgresStore) -> None:
    job = make_job(request=TRICKY_REQUEST, interaction_token="secret-token", application_id=5,
                   interaction_created=1700000000.25, message_id=2**62, prompt_id="abc",
                   server="gpu1", error="It broke", source_generation_id=None, source_index=2,
                   priority=3, attempts=1, guild_id=None)
    started = time.time()

    added = await any_store.add_job(job)

    assert job.id is None and job.created_at == 0.0  # the argument is left as it was
    assert added.id is not None
    assert started <= added.created_at == added.updated_at <= time.time()
    assert await any_store.get_job(added.id) == added
    assert await any_store.get_job(added.id + 1) is None
    assert await rows(any_store, "SELECT request, interaction_token FROM jobs WHERE id = $1", added.id) == [
        (json.dumps(TRICKY_REQUEST, separators=(",", ":")), "secret-token")]
    assert "secret-token" not in repr(added)


async def test_add_job_refuses_an_unknown_state_and_a_stored_job(any_store: Store | PostgresStore) -> None:
    with pytest.raises(StoreError, match="'queued' is not a job state"):
        await any_store.add_job(make_job(state="queued"))
    with pytest.raises(StoreError, match="Job 4 is already stored"):
        await any_store.add_job(make_job(id=4))
    assert await rows(any_store, "SELECT count(*) FROM jobs") == [(0,)]


async def test_update_job_changes_the_given_fields_and_updated_at(any_store: Store | PostgresStore) -> None:
    added = await any_store.add_job(make_job())
    generation = await any_store.add_generation(make_generation(job_id=added.id))

    updated = await any_store.update_job(added.id, state="done", prompt_id="p-9", attempts=2,
                                         generation_id=generation.id, request={"prompt": "ü \"x\""})

    assert updated == await any_store.get_job(added.id)
    assert updated.created_at == added.created_at < updated.updated_at
    assert await rows(any_store, "SELECT state, prompt_id, attempts, generation_id, request, created_at "
                                 "FROM jobs WHERE id = $1", added.id) == [
        ("done", "p-9", 2, generation.id, '{"prompt":"\\u00fc \\"x\\""}', added.created_at)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"state": "finished"}, "'finished' is not a job state"),
    ({"colour": "red", "state": "done"}, "cannot be updated: colour"),
    ({"id": 9}, "cannot be updated: id"),
    ({"created_at": 1.0}, "cannot be updated: created_at"),
    # The engine's own words: SQLite's "FOREIGN KEY constraint failed", PostgreSQL's "violates foreign key".
    ({"generation_id": 12345}, "(?i)foreign key"),
])
async def test_update_job_refuses_bad_changes_and_leaves_the_row(
    any_store: Store | PostgresStore, changes: dict[str, Any], message: str
) -> None:
    added = await any_store.add_job(make_job())
    before = await rows(any_store, "SELECT * FROM jobs")

    with pytest.raises(StoreError, match=message):
        await any_store.update_job(added.id, **changes)

    assert await rows(any_store, "SELECT * FROM jobs") == before


async def test_update_job_refuses_an_unknown_job(any_store: Store | PostgresStore) -> None:
    with pytest.raises(StoreError, match="There is no job 77"):
        await any_store.update_job(77, state="failed")
    with pytest.raises(StoreError, match="There is no job 77"):
        await any_store.update_job(77, only_from=["waiting"], state="failed")


async def test_update_job_only_from_leaves_a_job_in_another_state_unchanged(any_store: Store | PostgresStore) -> None:
    added = await any_store.add_job(make_job())
    cancelled = await any_store.update_job(added.id, state="cancelled", error="Cancelled by its owner")

    kept = await any_store.update_job(added.id, only_from=["waiting", "submitted"], state="running", server="gpu1")
    moved = await any_store.update_job(added.id, only_from=["cancelled"], state="failed")

    assert kept == cancelled and kept.server is None
    assert (moved.state, moved.error) == ("failed", "Cancelled by its owner")
    assert moved == await any_store.get_job(added.id)


async def test_jobs_in_returns_oldest_first_then_by_id(any_store: Store | PostgresStore) -> None:
    ids = [(await any_store.add_job(make_job(state=state))).id
           for state in ("waiting", "running", "done", "waiting", "delivering")]
    # Give creation times out of id order, with a tie between the first two.
    for job_id, created in zip(ids, (20.0, 10.0, 5.0, 20.0, 1.0)):
        await rows(any_store, "UPDATE jobs SET created_at = $1 WHERE id = $2", created, job_id)

    active = await any_store.jobs_in(state for state in ACTIVE_STATES)  # any iterable

    assert [job.id for job in active] == [ids[4], ids[1], ids[0], ids[3]]
    assert [job.id for job in await any_store.jobs_in(["done"])] == [ids[2]]
    assert await any_store.jobs_in([]) == []
    with pytest.raises(StoreError, match="'active' is not a job state"):
        await any_store.jobs_in(["waiting", "active"])


async def test_active_job_count_and_job_counts(any_store: Store | PostgresStore) -> None:
    for user_id, state in [(1, "waiting"), (1, "submitted"), (1, "running"), (1, "delivering"),
                           (1, "done"), (1, "failed"), (1, "cancelled"), (2, "waiting")]:
        await any_store.add_job(make_job(user_id=user_id, state=state))

    assert await any_store.active_job_count(1) == 4
    assert await any_store.active_job_count(2) == 1
    assert await any_store.active_job_count(3) == 0
    assert await any_store.job_counts() == {state: 1 for state in JOB_STATES} | {"waiting": 2}


# --- generations -----------------------------------------------------------------------------


async def test_generation_round_trip_and_its_message(any_store: Store | PostgresStore) -> None:
    job = await any_store.add_job(make_job())
    params = {"prompt": 'naïve "quote" \'single\'', "seed": 42, "size": "512x768", "cfg": 7.0}

    added = await any_store.add_generation(make_generation(job_id=job.id, params=params))
    await any_store.set_generation_message(added.id, 123456789012345678,
                                           ["https://cdn/a.png", "https://cdn/b.png"])

    stored = await any_store.get_generation(added.id)
    assert stored == Generation(
        id=added.id, job_id=job.id, kind="txt2img", user_id=11, guild_id=33, channel_id=22,
        params=params, files=["a.png", "b.png"], server="http://127.0.0.1:8188", duration=12.5,
        message_id=123456789012345678, attachment_urls=["https://cdn/a.png", "https://cdn/b.png"],
        created_at=added.created_at)
    assert added.created_at > 0 and added.attachment_urls == []
    assert await any_store.get_generation(added.id + 1) is None
    assert await any_store.generation_by_message(123456789012345678) == stored
    assert await any_store.generation_by_message(1) is None
    assert await rows(any_store, "SELECT params, files, attachment_urls FROM generations") == [(
        json.dumps(params, separators=(",", ":")), '["a.png","b.png"]',
        '["https://cdn/a.png","https://cdn/b.png"]')]
    with pytest.raises(StoreError, match="There is no generation 999"):
        await any_store.set_generation_message(999, 1, [])


async def test_pending_files_are_those_of_jobs_still_delivering(any_store: Store | PostgresStore) -> None:
    delivering = await any_store.add_job(make_job(state="delivering"))
    done = await any_store.add_job(make_job(state="done"))
    await any_store.add_generation(make_generation(job_id=delivering.id, files=["1.png", "2.png"]))
    await any_store.add_generation(make_generation(job_id=done.id, files=["old.png"]))
    await any_store.add_generation(make_generation(job_id=None, files=["orphan.png"]))
    await any_store.add_generation(make_generation(job_id=delivering.id, files=["3.mp4"]))

    assert await any_store.pending_files() == ["1.png", "2.png", "3.mp4"]
    await any_store.update_job(delivering.id, state="done")
    assert await any_store.pending_files() == []


# --- what the text and the ids can hold ------------------------------------------------------


async def test_nul_characters_in_a_prompt_and_an_error_are_kept_as_the_engine_can(
    any_store: Store | PostgresStore,
) -> None:
    """SQLite keeps a NUL as it is; PostgreSQL's text cannot hold one, so the row is kept with U+FFFD."""
    prompt, error = "a cat\x00 on a mat", "ComfyUI said: bad\x00node"
    job = await any_store.add_job(make_job(request={"prompt": prompt, "tags\x00": [prompt]}, error=error))
    generation = await any_store.add_generation(make_generation(job_id=job.id, params={"prompt": prompt},
                                                                files=["a\x00.png"]))
    await any_store.set_generation_message(generation.id, 5, [f"https://cdn/{prompt}"])
    changed = await any_store.update_job(job.id, state="failed", error=error + "!")

    kept_prompt, kept_error = stored_text(any_store, prompt), stored_text(any_store, error)
    assert job.request == {"prompt": kept_prompt, "tags" + stored_text(any_store, "\x00"): [kept_prompt]}
    assert job.error == kept_error and changed.error == kept_error + "!"
    assert await any_store.get_job(job.id) == changed
    stored = await any_store.get_generation(generation.id)
    assert stored.params == {"prompt": kept_prompt} and stored.files == [stored_text(any_store, "a\x00.png")]
    assert stored.attachment_urls == [f"https://cdn/{kept_prompt}"]
    assert await any_store.pending_files() == []


async def test_discord_snowflake_ids_past_2_to_the_53_round_trip(any_store: Store | PostgresStore) -> None:
    user, channel, guild, message, application = (2**63 - 1, 2**53 + 1, 1234567890123456789,
                                                  987654321098765432, 2**62 + 3)
    job = await any_store.add_job(make_job(user_id=user, channel_id=channel, guild_id=guild,
                                           application_id=application, message_id=message), active_limit=1)
    generation = await any_store.add_generation(make_generation(job_id=job.id, user_id=user, channel_id=channel,
                                                                guild_id=guild))
    await any_store.set_generation_message(generation.id, message, [])

    stored = await any_store.get_job(job.id)
    assert (stored.user_id, stored.channel_id, stored.guild_id, stored.message_id, stored.application_id) == (
        user, channel, guild, message, application)
    assert await any_store.active_job_count(user) == 1 and await any_store.active_job_count(user - 1) == 0
    found = await any_store.generation_by_message(message)
    assert (found.id, found.user_id, found.channel_id, found.guild_id) == (generation.id, user, channel, guild)
    with pytest.raises(LimitReached):
        await any_store.add_job(make_job(user_id=user), active_limit=1)


# --- restarts and concurrency ----------------------------------------------------------------


async def test_a_new_store_on_the_same_database_sees_everything(any_store: Store | PostgresStore) -> None:
    first = any_store
    job = await first.add_job(make_job(request=TRICKY_REQUEST, interaction_token="t"))
    generation = await first.add_generation(make_generation(job_id=job.id, files=["r.png"]))
    await first.set_generation_message(generation.id, 42, ["https://cdn/r.png"])
    job = await first.update_job(job.id, state="delivering", generation_id=generation.id)
    await first.close()

    second = another(first)
    await second.open()
    try:
        assert await second.get_job(job.id) == job
        assert await second.get_generation(generation.id) == Generation(
            **{**vars(generation), "message_id": 42, "attachment_urls": ["https://cdn/r.png"]})
        assert await second.jobs_in(ACTIVE_STATES) == [job]
        assert await second.pending_files() == ["r.png"]
        assert (await second.add_job(make_job())).id == job.id + 1
    finally:
        await second.close()


def hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    """Another program writing: it holds the database's write lock for `seconds`."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other_program:
        other_program.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        other_program.execute("COMMIT")


async def test_200_concurrent_adds_wait_for_a_lock_without_blocking_the_loop(
    db: Store, path: Path
) -> None:
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            gaps.append(loop.time() - last)
            last = loop.time()

    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(path, 0.3, locked))
    holder.start()
    await asyncio.to_thread(locked.wait)
    ticker = asyncio.create_task(tick())

    adds = asyncio.gather(*(db.add_job(make_job(user_id=n)) for n in range(200)))
    await asyncio.sleep(0.1)
    assert not adds.done()
    jobs = await adds
    stop.set()
    await ticker
    holder.join()

    assert len({job.id for job in jobs}) == 200
    assert sorted(job.user_id for job in jobs) == list(range(200))
    assert query(path, "SELECT count(DISTINCT id), count(DISTINCT user_id) FROM jobs") == [
        (200, 200)]
    assert len(gaps) >= 20 and max(gaps) < 0.1




async def attempts(store: Store | PostgresStore, user_id: int, count: int, *, limit: int) -> list[bool]:
    """`count` add_job calls at once for one user, with that active limit: which of them were accepted.
    Each refusal says how many active jobs the user had: the limit."""

    async def attempt() -> bool:
        try:
            await store.add_job(make_job(user_id=user_id), active_limit=limit)
        except LimitReached as refused:
            assert refused.count == limit
            return False
        return True

    return await asyncio.wait_for(asyncio.gather(*(attempt() for _ in range(count))), WAIT)


async def test_the_active_job_limit_holds_for_a_burst_of_concurrent_inserts(any_store: Store | PostgresStore) -> None:
    accepted = await attempts(any_store, 11, 50, limit=3)

    assert sum(accepted) == 3
    assert await rows(any_store, "SELECT count(*) FROM jobs") == [(3,)]
    first = (await any_store.jobs_in(["waiting"]))[0]
    await any_store.update_job(first.id, state="done")  # one finished: room for exactly one more
    assert await attempts(any_store, 11, 2, limit=3) in ([True, False], [False, True])
    await any_store.add_job(make_job(user_id=99), active_limit=3)  # another user is not limited by this one


# --- several bot processes on one PostgreSQL database ----------------------------------------


async def open_stores(dsn: str, count: int) -> list[PostgresStore]:
    """`count` stores on one database, each with its own pool of connections: as many bot processes."""
    stores = [PostgresStore(dsn, pool_size=5) for _ in range(count)]
    for store in stores:
        await asyncio.wait_for(store.open(), WAIT)
    return stores


async def test_the_active_job_limit_holds_across_two_bot_processes(pg_dsn: str) -> None:
    stores = await open_stores(pg_dsn, 2)
    try:
        halves = await asyncio.gather(attempts(stores[0], 2**60, 25, limit=3),
                                      attempts(stores[1], 2**60, 25, limit=3),
                                      attempts(stores[1], 7, 10, limit=3))

        assert sum(halves[0]) + sum(halves[1]) == 3 and sum(halves[2]) == 3
        assert await rows(stores[0], "SELECT user_id, count(*) FROM jobs GROUP BY user_id ORDER BY user_id") == [
            (7, 3), (2**60, 3)]
        assert await stores[1].active_job_count(2**60) == 3
    finally:
        for store in stores:
            await store.close()


async def test_a_migrating_bot_does_not_hold_up_the_active_job_limit(pg_dsn: str) -> None:
    """The per-user locks and the migrations' lock are different keys, even for a user id equal to it."""
    (store,) = await open_stores(pg_dsn, 1)
    migrating = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        await migrating.execute("SELECT pg_advisory_lock($1)", pg_schema._LOCK_KEY)

        added = await asyncio.wait_for(store.add_job(make_job(user_id=pg_schema._LOCK_KEY), active_limit=1), WAIT)

        assert await store.get_job(added.id) == added
    finally:
        await migrating.close(timeout=10)
        await store.close()


async def test_only_one_of_two_bot_processes_claims_a_waiting_job(pg_dsn: str) -> None:
    stores = await open_stores(pg_dsn, 2)
    try:
        job = await stores[0].add_job(make_job())

        claims = await asyncio.wait_for(asyncio.gather(*(
            stores[n % 2].update_job(job.id, only_from=["waiting"], state="submitted", server=f"gpu{n}")
            for n in range(20))), WAIT)

        stored = await stores[1].get_job(job.id)
        assert stored.state == "submitted"
        # One update changed the job; the other 19 found it submitted already and returned it unchanged.
        assert [claim.server for n, claim in enumerate(claims) if claim.server == f"gpu{n}"] == [stored.server]
        assert all(claim == stored for claim in claims)
    finally:
        for store in stores:
            await store.close()


async def test_a_postgresql_server_that_cannot_be_reached_fails_open_with_a_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-socket-folder"
    unreachable = PostgresStore(f"postgresql://bot:hunter2@/botdb?host={missing}&port=5432")

    with pytest.raises(StoreError) as caught:
        await asyncio.wait_for(unreachable.open(), WAIT)

    assert str(caught.value).startswith("PostgreSQL database botdb on a local socket cannot be reached (")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(StoreError, match="^PostgreSQL database botdb on a local socket is not open$"):
        await unreachable.get_job(1)


async def test_add_result_stores_the_generation_and_moves_the_job_to_delivering_at_once(any_store) -> None:
    job = await any_store.add_job(make_job(state="running"))
    moved, generation = await any_store.add_result(job.id, make_generation(job_id=job.id),
                                                   only_from=("submitted", "running"))
    assert (moved.state, moved.generation_id) == ("delivering", generation.id)
    assert await any_store.get_generation(generation.id) == generation
    assert await any_store.pending_files() == ["a.png", "b.png"]


async def test_add_result_of_a_cancelled_job_keeps_the_result_and_the_cancel(any_store) -> None:
    job = await any_store.add_job(make_job(state="cancelled"))
    kept, generation = await any_store.add_result(job.id, make_generation(job_id=job.id), only_from=("running",))
    assert (kept.state, kept.generation_id) == ("cancelled", None)
    assert (await any_store.get_generation(generation.id)).job_id == job.id


async def test_add_result_for_no_job_stores_nothing(any_store) -> None:
    with pytest.raises(StoreError, match="There is no job 999"):
        await any_store.add_result(999, make_generation(), only_from=("running",))
    assert await rows(any_store, "SELECT count(*) FROM generations") == [(0,)]
