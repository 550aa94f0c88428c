"""`python bot.py migrate --from sqlite:///… --to postgresql://…` (store/copy.py) as an operator runs it,
against a real PostgreSQL server (tests/store/conftest.py): every row compared column by column with raw
sqlite3 and asyncpg queries, the output's words and the exit codes, and the refusals that copy nothing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg

from store.core import Store
from store.gallery import Query
from store.moderation import Hold
from store.payments import CheckoutSession
from store.people import SavedStyle
from store.pipelines import SavedPipeline
from store.postgres.schema import MIGRATIONS, migrate
from store.postgres.text import clean
from store.records import Generation, Job
from tests.postgres import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = ROOT / "tests/data/previous_version/data/bot.sqlite3"
PREVIOUS_INSTANCE = "6585d09b66a2a00240b3edd23cc4b8ae"  # meta's instance_id in that file
PROCESS_TIMEOUT = 50  # seconds for one run of bot.py migrate
TIMEOUT = 30  # seconds for one query of the tests' own
PASSWORD = "Hunter2-s3cret"  # the server trusts every local connection, so any password connects


async def run_migrate(folder: Path, *args: str) -> tuple[int, str]:
    """Run `bot.py migrate` in `folder` as an operator would; its exit code and output (stdout and stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bot.py"), "migrate", *args, cwd=folder,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(PROCESS_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, output.decode()


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"  # an absolute path: sqlite:////…


def with_password(dsn: str) -> str:
    return dsn.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


# --- both sides, read raw ------------------------------------------------------------------------------


def sqlite_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the bot's SQLite file (not SQLite's own, not the FTS5 index)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as db:
        db.row_factory = sqlite3.Row
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not name.startswith(("sqlite_", "generations_text"))]
        return {table: sorted((dict(row) for row in db.execute(f"SELECT * FROM {table}")), key=order)
                for table in tables}


async def postgres_rows(dsn: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the PostgreSQL database, but the version table, without the generated column."""
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        tables = [row[0] for row in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' AND table_name <> 'schema_version'", timeout=TIMEOUT)]
        return {table: sorted(({key: value for key, value in row.items() if key != "prompt_search"}
                               for row in await conn.fetch(f"SELECT * FROM {table}", timeout=TIMEOUT)), key=order)
                for table in tables}
    finally:
        await conn.close(timeout=TIMEOUT)


def order(row: dict[str, Any]) -> tuple[str, ...]:
    """Rows in the order of their first two columns (every table's key begins there)."""
    return tuple(repr(value) for value in list(row.values())[:2])


def same_value(before: Any, after: Any) -> bool:
    """Whether PostgreSQL's `after` is SQLite's `before`: NULs read back as U+FFFD, in JSON's escapes too."""
    if isinstance(before, str) and isinstance(after, str):
        if after == clean(before):
            return True
        try:
            return "\\u0000" in before and json.loads(after) == clean(json.loads(before))
        except ValueError:
            return False
    if isinstance(before, int) and isinstance(after, float):  # an integer SQLite kept in a REAL column
        return float(before) == after
    return type(before) is type(after) and before == after


def assert_same_rows(source: dict[str, list[dict[str, Any]]], target: dict[str, list[dict[str, Any]]],
                     *, added: dict[str, Any] | None = None) -> None:
    """Every table, row and column of `source` is in `target`, and nothing else; `added`: columns the source's
    schema lacks, and the value each target row has there."""
    added = added or {}
    assert set(target) == set(source)
    for table, rows in source.items():
        assert len(target[table]) == len(rows), table
        for before, after in zip(rows, target[table]):
            assert set(after) == set(before) | {name.split(".")[1] for name in added if name.startswith(f"{table}.")}
            for column, value in before.items():
                assert same_value(value, after[column]), (table, column, value, after[column])
            for name, value in added.items():
                if name.startswith(f"{table}."):
                    assert after[name.split(".")[1]] == value, (table, name)


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        return await conn.fetch(sql, *args, timeout=TIMEOUT)
    finally:
        await conn.close(timeout=TIMEOUT)


# --- a database of today's bot, with rows in every table -----------------------------------------------


async def fill(path: Path, *, prompt: str = "a fox in snow", style_prompt: str = "ink drawing of {prompt}") -> None:
    """Rows in every table of the store, made with the SQLite Store's own methods."""
    store = Store(path)
    await store.open()
    try:
        first = await store.add_job(Job(None, "txt2img", 11, 21, 31, {"prompt": prompt, "seed": 7}))
        done = await store.add_generation(Generation(
            None, first.id, "txt2img", 11, 31, 21, {"prompt": prompt, "negative_prompt": "blur", "seed": 7},
            ["a.png", "b.png"], "http://127.0.0.1:8188", 2.5))
        await store.set_generation_message(done.id, 41, ["https://cdn.example/a.png", "https://cdn.example/b.png"])
        await store.update_job(first.id, state="done", generation_id=done.id, message_id=41, prompt_id="p-1")
        await store.record_cost(first.id, 1.25, 0.003)
        upscale = await store.add_job(Job(None, "upscale", 12, 21, None, {"factor": 2}, source_generation_id=done.id,
                                          source_index=1, priority=1))
        await store.add_job(Job(None, "txt2img", 13, 22, 31, {"prompt": "waiting"}, interaction_token="tok"))
        await store.add_generation(Generation(None, upscale.id, "upscale", 12, None, 21, {"prompt": prompt}, ["c.png"],
                                              "http://127.0.0.1:8188", 0.5))
        await store.mark_deleted(done.id)
        await store.set_favorite(11, done.id, True)
        await store.set_preferences(11, {"steps": 9, "aspect": "portrait"})
        await store.save_style(SavedStyle(31, 11, "ink", style_prompt, "color", False, 11), limit=25)
        await store.save_query(11, Query(11, 31, text="fox", favorites=True))
        await store.link_secret()
        await store.audit(31, 11, "pause", reason="maintenance")
        await store.set_control("pause", "31", {"reason": "maintenance"})
        key_id, _ = await store.create_key(31, "ci", 11)
        await store.set_webhook(key_id, "https://hooks.example/x", "whsec")
        await store.add_api_job(key_id, upscale.id)
        delivery = await store.queue_delivery(key_id, "job.done", {"id": upscale.id, "state": "done"})
        await store.mark_delivery(delivery, delivered=False, now=1000.0, next_at=1060.0, error="HTTP 500")
        await store.heartbeat("bot-1", {"host": "a"}, 1000.0)
        await store.hit_rate(11, 5, 60.0, 1000.0)
        flow = await store.save_workflow(31, 11, "portrait", {"3": {"inputs": {"text": prompt}}}, tags=["sdxl"],
                                         bindings={"prompt": ["3", "text"]}, source_format="ui", limit=10)
        await store.save_workflow(31, 11, "portrait", {"3": {"inputs": {"text": "v2"}}}, bindings={},
                                  source_format="png", limit=10)
        await store.restore_version(flow.id, 1, 12)
        await store.share(flow.id, True, 12)
        await store.rate(flow.id, 12, 4)
        await store.save_pipeline(SavedPipeline(31, 11, "poster", [{"action": "generate", "width": 768}]), limit=5)
        await store.add_credits(31, 11, "grant", 5, "welcome", actor_id=12)
        await store.reserve(31, 11, first.id, 2, "txt2img")
        shared = await store.share_result(done.id, 31, 11, True)
        await store.share_result(done.id, 31, 11, False)
        await store.revoke_share(shared.token, 12)
        await store.add_checkout_session(CheckoutSession("cs_1", 31, 11, "small", 100, 500, "usd"))
        await store.complete_checkout_session("cs_1", "pi_1")
        await store.note_payment_event("evt_1", "checkout.session.completed", "pi_1", 1000.0)
        await store.finish_payment_event("evt_1")
        held = await store.add_hold(Hold(None, upscale.id, done.id, 31, 12, 21, "flagged: violence", {"violence": 0.9}))
        await store.decide_hold(held.id, "released", 13)
    finally:
        await store.close()


async def test_a_database_with_rows_in_every_table_is_copied_row_for_row(tmp_path, pg_dsn):
    source = tmp_path / "data" / "bot.sqlite3"
    await fill(source)
    before = sqlite_rows(source)
    assert all(before.values()), f"the fill leaves tables empty: {[t for t, rows in before.items() if not rows]}"
    code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", with_password(pg_dsn))
    assert code == 0, output
    assert PASSWORD not in output
    assert f"Source: {source} (schema {len(MIGRATIONS)}), read only" in output
    for table, rows in before.items():  # a line per table as it is copied, and one in the counts
        assert f"  {table:<20} {len(rows):>9} {'row' if len(rows) == 1 else 'rows'} copied" in output
        assert f"  {table:<20} {len(rows):>9} {len(rows):>11}  ok" in output
    assert f"Copied and verified: {len(before)} tables, {sum(map(len, before.values()))} rows." in output
    assert_same_rows(before, await postgres_rows(pg_dsn))
    assert sqlite_rows(source) == before

    # the identities continue past the copied ids
    job = await fetch(pg_dsn, "INSERT INTO jobs (kind, user_id, channel_id, request, state, created_at, updated_at) "
                              "VALUES ('txt2img', 1, 2, '{}', 'waiting', 0, 0) RETURNING id")
    assert job[0]["id"] == max(row["id"] for row in before["jobs"]) + 1
    for table in ("generations", "styles", "saved_queries", "audit", "api_keys", "webhook_deliveries",
                  "user_workflows", "pipelines", "credit_entries", "moderation_holds"):
        following = await fetch(pg_dsn, f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))")
        assert following[0][0] == max(row["id"] for row in before[table]) + 1, table


async def test_the_previous_releases_database_is_brought_up_to_date_on_a_copy_and_left_as_it_was(tmp_path, pg_dsn):
    folder = tmp_path / "old"
    folder.mkdir()
    source = folder / "bot.sqlite3"
    shutil.copy(PREVIOUS, source)
    original = source.read_bytes()
    before = sqlite_rows(source)
    code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", pg_dsn)
    assert code == 0, output
    assert (f"Source: {source} has schema 8, this bot's is {len(MIGRATIONS)}: copying from a temporary copy brought "
            "up to date (the file itself is unchanged)") in output
    assert f"  {'jobs':<20} {2:>9} rows copied" in output
    assert f"  {'generations':<20} {2:>9} {2:>11}  ok" in output
    assert source.read_bytes() == original and os.listdir(folder) == ["bot.sqlite3"]  # no -wal, no -shm
    after = await postgres_rows(pg_dsn)
    # the tables of the migrations since are empty; the rows there were are all there, handovers 0
    newer = {table for table in after if table not in before}
    assert newer == {"processes", "command_hits", "user_workflows", "workflow_versions", "workflow_ratings",
                     "pipelines", "credit_entries", "credit_balances", "shares", "checkout_sessions",
                     "payment_events", "moderation_holds"}
    assert not any(after[table] for table in newer)
    assert_same_rows(before, {table: rows for table, rows in after.items() if table in before},
                     added={"jobs.handovers": 0})
    assert [row["value"] for row in after["meta"]] == [PREVIOUS_INSTANCE]  # the ComfyUI client ids stay
    assert [(row["id"], row["generation_id"]) for row in after["jobs"]] == [(1, 1), (2, 2)]


async def test_a_nul_in_a_prompt_is_copied_as_the_replacement_character(tmp_path, pg_dsn):
    source = tmp_path / "bot.sqlite3"
    await fill(source, prompt="a fox\x00 in snow", style_prompt="ink\x00 drawing of {prompt}")
    before = sqlite_rows(source)
    code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", pg_dsn)
    assert code == 0, output
    after = await postgres_rows(pg_dsn)
    assert_same_rows(before, after)
    assert [row["prompt"] for row in after["styles"]] == ["ink\ufffd drawing of {prompt}"]
    assert {json.loads(row["params"])["prompt"] for row in after["generations"]} == {"a fox\ufffd in snow"}
    assert json.loads(after["jobs"][0]["request"])["prompt"] == "a fox\ufffd in snow"
    # the prompts' search column could index the copied JSON
    found = await fetch(pg_dsn, "SELECT id FROM generations WHERE prompt_search @@ to_tsquery('store_search', 'blur')")
    assert [row["id"] for row in found] == [1]


async def test_a_target_that_holds_rows_is_refused_and_left_as_it_was(tmp_path, pg_dsn, postgres):
    source = tmp_path / "bot.sqlite3"
    await fill(source)
    conn = await asyncpg.connect(pg_dsn, timeout=TIMEOUT)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO styles (guild_id, owner_id, name, prompt, negative, created_by, created_at) "
                           "VALUES (1, 0, 'mine', '{prompt}', '', 1, 0)", timeout=TIMEOUT)
        instance = await conn.fetchval("SELECT value FROM meta WHERE key = 'instance_id'", timeout=TIMEOUT)
    finally:
        await conn.close(timeout=TIMEOUT)
    code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", pg_dsn)
    assert code == 1, output
    assert "already holds rows: styles (1 row); nothing was copied. Point --to at a new, empty database" in output
    after = await postgres_rows(pg_dsn)
    assert {table: len(rows) for table, rows in after.items() if rows} == {"meta": 1, "styles": 1}
    assert after["meta"][0]["value"] == instance

    # a target already copied into is refused the same way
    fresh = await create_database(postgres)
    try:
        assert (await run_migrate(tmp_path, "--from", url_of(source), "--to", fresh))[0] == 0
        code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", fresh)
        assert code == 1 and "already holds rows: meta (1 row), jobs (3 rows), generations (2 rows)," in output, output
    finally:
        await drop_database(fresh)


async def test_a_copy_that_fails_halfway_leaves_the_target_as_it_was(tmp_path, pg_dsn):
    source = tmp_path / "bot.sqlite3"
    await fill(source)
    with closing(sqlite3.connect(source, isolation_level=None)) as db:  # a favorite of a result that is gone
        db.execute("INSERT INTO favorites (user_id, generation_id, created_at) VALUES (11, 999, 0)")
    conn = await asyncpg.connect(pg_dsn, timeout=TIMEOUT)
    try:
        await migrate(conn)
        instance = await conn.fetchval("SELECT value FROM meta WHERE key = 'instance_id'", timeout=TIMEOUT)
    finally:
        await conn.close(timeout=TIMEOUT)
    code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", pg_dsn)
    assert code == 1, output
    assert "ForeignKeyViolationError" in output and "nothing was copied" in output
    after = await postgres_rows(pg_dsn)
    assert {table: len(rows) for table, rows in after.items() if rows} == {"meta": 1}
    assert after["meta"][0]["value"] == instance


async def test_a_table_the_copy_does_not_know_stops_it_before_anything_is_copied(tmp_path, pg_dsn):
    source = tmp_path / "bot.sqlite3"
    await fill(source)
    with closing(sqlite3.connect(source, isolation_level=None)) as db:  # as a forgotten migration would leave
        db.execute("CREATE TABLE reminders (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", pg_dsn)
    assert code == 1, output
    assert "the SQLite schema has tables store/copy.py does not copy: reminders" in output
    assert "nothing was copied" in output
    assert not any(rows for table, rows in (await postgres_rows(pg_dsn)).items() if table != "meta")


async def test_a_file_a_bot_still_has_open_is_copied_with_what_it_wrote_last(tmp_path, pg_dsn):
    source = tmp_path / "bot.sqlite3"
    await fill(source)
    with closing(sqlite3.connect(source, isolation_level=None)) as bot:  # as a running bot holds it
        bot.execute("PRAGMA wal_autocheckpoint = 0")  # what it writes stays in the -wal file
        bot.execute("INSERT INTO preferences (user_id, prefs, updated_at) VALUES (12, '{}', 0)")
        assert source.with_name("bot.sqlite3-wal").stat().st_size > 0
        code, output = await run_migrate(tmp_path, "--from", url_of(source), "--to", pg_dsn)
    assert code == 0, output
    assert "Warning: bot.sqlite3-wal exists: if a bot still uses bot.sqlite3, stop it first" in output
    assert [row["user_id"] for row in (await postgres_rows(pg_dsn))["preferences"]] == [11, 12]


async def assert_refused(folder: Path, cases: dict[tuple[str, str], tuple[int, str]]) -> None:
    """Run each (--from, --to) at once; each must exit with its code and say its words, never the password."""
    results = await asyncio.gather(*(run_migrate(folder, "--from", source, "--to", target) for source, target in cases))
    for (arguments, (code, words)), (found, output) in zip(cases.items(), results):
        assert (found, PASSWORD in output) == (code, False), (arguments, output)
        assert f"Not migrated: {words}" in output, (arguments, output)


async def test_sources_that_cannot_be_copied_are_refused_in_words(tmp_path, pg_dsn):
    good = tmp_path / "bot.sqlite3"
    await fill(good)
    not_a_database = tmp_path / "notes.sqlite3"
    not_a_database.write_text("these are my notes, not a database\n" * 100)
    newer = tmp_path / "newer.sqlite3"
    shutil.copy(good, newer)
    with closing(sqlite3.connect(newer, isolation_level=None)) as db:
        db.execute("PRAGMA user_version = 99")
    await assert_refused(tmp_path, {  # arguments -> the exit code, and words of the output
        (url_of(tmp_path / "missing.sqlite3"), pg_dsn): (2, f"{tmp_path / 'missing.sqlite3'} does not exist"),
        (url_of(not_a_database), pg_dsn): (2, f"{not_a_database} is not a SQLite database"),
        (url_of(newer), pg_dsn): (1, f"{newer} was written by a newer version of the bot (schema 99, this one knows "
                                     f"{len(MIGRATIONS)})"),
        (f"postgresql:///{good}", pg_dsn): (2, "--from must be a sqlite:/// URL"),
    })
    assert await postgres_rows(pg_dsn) == {}  # not even a schema
    code, output = await run_migrate(tmp_path, "--from", url_of(good))
    assert code == 2 and "the following arguments are required: --to" in output


async def test_targets_that_cannot_be_used_are_refused_in_words(tmp_path, pg_dsn):
    good = tmp_path / "bot.sqlite3"
    await fill(good)
    name = pg_dsn.split("?")[0].rsplit("/", 1)[1]
    unreachable = pg_dsn.split("?")[0] + f"?host={tmp_path / 'no-such-folder'}&port=5432"  # no server's socket
    await assert_refused(tmp_path, {
        (url_of(good), f"mysql://root:{PASSWORD}@db/bot"): (2, "--to must be a postgresql:// URL, not mysql://…"),
        (url_of(good), f"postgresql://bot:{PASSWORD}@db:five/bot"): (2, "--to is not a URL that can be used (Port"),
        (url_of(good), f"{pg_dsn}&sslmode=sometimes&password={PASSWORD}"): (2, "--to is not a URL that can be used"),
        (url_of(good), with_password(unreachable)): (1, f"PostgreSQL database {name} on a local socket cannot be "
                                                        "reached (FileNotFoundError"),
    })
    assert await postgres_rows(pg_dsn) == {}
