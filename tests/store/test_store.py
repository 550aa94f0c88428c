"""Tests for the store's engine and its jobs and generations (store/engine.py, store/jobs.py): every claim
is checked against what is in the database file."""

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from store import ACTIVE_STATES, JOB_STATES, Generation, Job, LimitReached, Store, StoreError, engine

LATEST = len(engine._MIGRATIONS)

# Migration 1 as it shipped, typed out again so that the upgrade test starts from the real
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


# --- jobs ------------------------------------------------------------------------------------


async def test_job_round_trip_keeps_every_field_and_stores_compact_json(
    db: Store, path: Path
) -> None:
    job = make_job(request=TRICKY_REQUEST, interaction_token="secret-token", application_id=5,
                   interaction_created=1700000000.25, message_id=2**62, prompt_id="abc",
                   server="gpu1", error="It broke", source_generation_id=None, source_index=2,
                   priority=3, attempts=1, guild_id=None)
    started = time.time()

    added = await db.add_job(job)

    assert job.id is None and job.created_at == 0.0  # the argument is left as it was
    assert added.id is not None
    assert started <= added.created_at == added.updated_at <= time.time()
    assert await db.get_job(added.id) == added
    assert await db.get_job(added.id + 1) is None
    assert query(path, "SELECT request, interaction_token FROM jobs WHERE id = ?", added.id) == [
        (json.dumps(TRICKY_REQUEST, separators=(",", ":")), "secret-token")]
    assert "secret-token" not in repr(added)


async def test_add_job_refuses_an_unknown_state_and_a_stored_job(db: Store, path: Path) -> None:
    with pytest.raises(StoreError, match="'queued' is not a job state"):
        await db.add_job(make_job(state="queued"))
    with pytest.raises(StoreError, match="Job 4 is already stored"):
        await db.add_job(make_job(id=4))
    assert query(path, "SELECT count(*) FROM jobs") == [(0,)]


async def test_update_job_changes_the_given_fields_and_updated_at(db: Store, path: Path) -> None:
    added = await db.add_job(make_job())
    generation = await db.add_generation(make_generation(job_id=added.id))

    updated = await db.update_job(added.id, state="done", prompt_id="p-9", attempts=2,
                                  generation_id=generation.id, request={"prompt": "ü \"x\""})

    assert updated == await db.get_job(added.id)
    assert updated.created_at == added.created_at < updated.updated_at
    assert query(path, "SELECT state, prompt_id, attempts, generation_id, request, created_at "
                       "FROM jobs WHERE id = ?", added.id) == [
        ("done", "p-9", 2, generation.id, '{"prompt":"\\u00fc \\"x\\""}', added.created_at)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"state": "finished"}, "'finished' is not a job state"),
    ({"colour": "red", "state": "done"}, "cannot be updated: colour"),
    ({"id": 9}, "cannot be updated: id"),
    ({"created_at": 1.0}, "cannot be updated: created_at"),
    ({"generation_id": 12345}, "FOREIGN KEY constraint failed"),
])
async def test_update_job_refuses_bad_changes_and_leaves_the_row(
    db: Store, path: Path, changes: dict[str, Any], message: str
) -> None:
    added = await db.add_job(make_job())
    before = query(path, "SELECT * FROM jobs")

    with pytest.raises(StoreError, match=message):
        await db.update_job(added.id, **changes)

    assert query(path, "SELECT * FROM jobs") == before


async def test_update_job_refuses_an_unknown_job(db: Store) -> None:
    with pytest.raises(StoreError, match="There is no job 77"):
        await db.update_job(77, state="failed")


async def test_jobs_in_returns_oldest_first_then_by_id(db: Store, path: Path) -> None:
    ids = [(await db.add_job(make_job(state=state))).id
           for state in ("waiting", "running", "done", "waiting", "delivering")]
    # Give creation times out of id order, with a tie between the first two.
    for job_id, created in zip(ids, (20.0, 10.0, 5.0, 20.0, 1.0)):
        execute(path, f"UPDATE jobs SET created_at = {created} WHERE id = {job_id}")

    active = await db.jobs_in(state for state in ACTIVE_STATES)  # any iterable

    assert [job.id for job in active] == [ids[4], ids[1], ids[0], ids[3]]
    assert [job.id for job in await db.jobs_in(["done"])] == [ids[2]]
    assert await db.jobs_in([]) == []
    with pytest.raises(StoreError, match="'active' is not a job state"):
        await db.jobs_in(["waiting", "active"])


async def test_active_job_count_and_job_counts(db: Store) -> None:
    for user_id, state in [(1, "waiting"), (1, "submitted"), (1, "running"), (1, "delivering"),
                           (1, "done"), (1, "failed"), (1, "cancelled"), (2, "waiting")]:
        await db.add_job(make_job(user_id=user_id, state=state))

    assert await db.active_job_count(1) == 4
    assert await db.active_job_count(2) == 1
    assert await db.active_job_count(3) == 0
    assert await db.job_counts() == {state: 1 for state in JOB_STATES} | {"waiting": 2}


# --- generations -----------------------------------------------------------------------------


async def test_generation_round_trip_and_its_message(db: Store, path: Path) -> None:
    job = await db.add_job(make_job())
    params = {"prompt": 'naïve "quote" \'single\'', "seed": 42, "size": "512x768", "cfg": 7.0}

    added = await db.add_generation(make_generation(job_id=job.id, params=params))
    await db.set_generation_message(added.id, 123456789012345678,
                                    ["https://cdn/a.png", "https://cdn/b.png"])

    stored = await db.get_generation(added.id)
    assert stored == Generation(
        id=added.id, job_id=job.id, kind="txt2img", user_id=11, guild_id=33, channel_id=22,
        params=params, files=["a.png", "b.png"], server="http://127.0.0.1:8188", duration=12.5,
        message_id=123456789012345678, attachment_urls=["https://cdn/a.png", "https://cdn/b.png"],
        created_at=added.created_at)
    assert added.created_at > 0 and added.attachment_urls == []
    assert await db.get_generation(added.id + 1) is None
    assert query(path, "SELECT params, files, attachment_urls FROM generations") == [(
        json.dumps(params, separators=(",", ":")), '["a.png","b.png"]',
        '["https://cdn/a.png","https://cdn/b.png"]')]
    with pytest.raises(StoreError, match="There is no generation 999"):
        await db.set_generation_message(999, 1, [])


async def test_pending_files_are_those_of_jobs_still_delivering(db: Store) -> None:
    delivering = await db.add_job(make_job(state="delivering"))
    done = await db.add_job(make_job(state="done"))
    await db.add_generation(make_generation(job_id=delivering.id, files=["1.png", "2.png"]))
    await db.add_generation(make_generation(job_id=done.id, files=["old.png"]))
    await db.add_generation(make_generation(job_id=None, files=["orphan.png"]))
    await db.add_generation(make_generation(job_id=delivering.id, files=["3.mp4"]))

    assert await db.pending_files() == ["1.png", "2.png", "3.mp4"]
    await db.update_job(delivering.id, state="done")
    assert await db.pending_files() == []


# --- restarts and concurrency ----------------------------------------------------------------


async def test_a_new_store_on_the_same_file_sees_everything(path: Path) -> None:
    first = Store(path)
    await first.open()
    job = await first.add_job(make_job(request=TRICKY_REQUEST, interaction_token="t"))
    generation = await first.add_generation(make_generation(job_id=job.id, files=["r.png"]))
    await first.set_generation_message(generation.id, 42, ["https://cdn/r.png"])
    job = await first.update_job(job.id, state="delivering", generation_id=generation.id)
    await first.close()

    second = Store(path)
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


async def test_the_active_job_limit_holds_for_a_burst_of_concurrent_inserts(db: Store, path: Path) -> None:
    async def attempt() -> bool:
        try:
            await db.add_job(make_job(), active_limit=3)
        except LimitReached as refused:
            assert refused.count == 3
            return False
        return True

    accepted = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sum(accepted) == 3
    assert query(path, "SELECT count(*) FROM jobs") == [(3,)]
    await db.update_job(1, state="done")  # one finished: room for exactly one more
    assert await attempt() and not await attempt()
    await db.add_job(make_job(user_id=99), active_limit=3)  # another user is not limited by this one
