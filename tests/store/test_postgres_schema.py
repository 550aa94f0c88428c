"""The PostgreSQL schema (store/postgres/schema.py) against the SQLite one (store/engine.py's migrations), on a
real server (tests/store/conftest.py): after every version N, both engines have the same tables,
columns (of compatible types, nullability and defaults), primary keys, unique constraints, foreign
keys and named indexes; FTS5's index is a GIN index; migrate() is repeatable and safe to run twice
at once."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from typing import Any

import asyncpg
import pytest

from store import engine
from store.postgres import schema as pg_schema
from store.records import StoreError

LATEST = len(engine._MIGRATIONS)
TIMEOUT = 30  # seconds for any one call to the server

# SQLite's declared type -> the PostgreSQL types that hold the same values.
COMPATIBLE = {"INTEGER": {"bigint"}, "REAL": {"double precision"}, "TEXT": {"text"}}
# What only PostgreSQL has: the version table, and the tsvector column in place of FTS5's table.
PG_ONLY_TABLES = {"schema_version"}
PG_ONLY_COLUMNS = {("generations", "prompt_search")}

Schema = dict[str, Any]


# --- the two schemas, described alike ---------------------------------------------------------------


def sqlite_schema(version: int) -> Schema:
    """The SQLite schema after the first `version` migrations, built in memory."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for script in engine._MIGRATIONS[:version]:
            db.executescript(script)
        virtual = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                "AND sql LIKE 'CREATE VIRTUAL TABLE%'")]
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                 "AND name NOT LIKE 'sqlite_%' ORDER BY name")
                  # FTS5's table and its shadow tables (<name>_data, _idx, ...) are PostgreSQL's GIN index
                  if not any(name == v or name.startswith(v + "_") for v in virtual)]
        columns, primary, unique, foreign = {}, {}, set(), set()
        for table in tables:
            info = db.execute(f"PRAGMA table_info({table})").fetchall()
            primary[table] = tuple(row[1] for row in sorted(info, key=lambda row: row[5]) if row[5])
            columns[table] = {row[1]: {"type": row[2], "not_null": bool(row[3] or row[5]),
                                       "default": None if row[5] else row[4]} for row in info}
            for index in db.execute(f"PRAGMA index_list({table})").fetchall():
                if index[3] == "u":  # made by a UNIQUE constraint
                    names = tuple(row[2] for row in db.execute(f"PRAGMA index_info({index[1]})"))
                    unique.add((table, names))
            foreign |= {(table, row[3], row[2], row[4])
                        for row in db.execute(f"PRAGMA foreign_key_list({table})")}
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                  "AND sql IS NOT NULL")}
        return {"tables": set(tables), "columns": columns, "primary": primary, "unique": unique,
                "foreign": foreign, "indexes": indexes | set(virtual)}
    finally:
        db.close()


async def pg_schema_of(conn: asyncpg.Connection) -> Schema:
    """The same description of the PostgreSQL database's public schema."""
    rows = await conn.fetch("SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity "
                            "FROM information_schema.columns WHERE table_schema = 'public'", timeout=TIMEOUT)
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], {})[row["column_name"]] = {
            "type": row["data_type"], "not_null": row["is_nullable"] == "NO",
            "default": row["column_default"], "identity": row["is_identity"] == "YES"}
    constraints = await conn.fetch(
        "SELECT c.contype::text AS contype, c.conrelid::regclass::text AS tab, c.confrelid::regclass::text AS ref,"
        " ARRAY(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)"
        "       JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,"
        " ARRAY(SELECT attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)"
        "       JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS refcols "
        "FROM pg_constraint c JOIN pg_namespace s ON s.oid = c.connamespace "
        "WHERE s.nspname = 'public' AND c.contype IN ('p', 'u', 'f')", timeout=TIMEOUT)
    primary = {row["tab"]: tuple(row["cols"]) for row in constraints if row["contype"] == "p"}
    unique = {(row["tab"], tuple(row["cols"])) for row in constraints if row["contype"] == "u"}
    foreign = {(row["tab"], row["cols"][0], row["ref"], row["refcols"][0])
               for row in constraints if row["contype"] == "f"}
    index_rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname "
                                  "NOT IN (SELECT conname FROM pg_constraint)", timeout=TIMEOUT)
    return {"tables": set(columns), "columns": columns, "primary": primary, "unique": unique,
            "foreign": foreign, "indexes": {row["indexname"] for row in index_rows}}


def assert_alike(lite: Schema, pg: Schema) -> None:
    """Every table, column, key and index of SQLite's schema in PostgreSQL's, and nothing more but
    what only PostgreSQL needs."""
    assert pg["tables"] == lite["tables"] | PG_ONLY_TABLES
    for table in lite["tables"]:
        lite_columns, pg_columns = lite["columns"][table], pg["columns"][table]
        extra = {name for name in pg_columns.keys() - lite_columns.keys() if (table, name) not in PG_ONLY_COLUMNS}
        assert set(lite_columns) <= set(pg_columns) and not extra, f"{table}: columns differ"
        for name, column in lite_columns.items():
            found = pg_columns[name]
            assert found["type"] in COMPATIBLE[column["type"]], f"{table}.{name}: {column['type']} vs {found['type']}"
            assert found["not_null"] == column["not_null"], f"{table}.{name}: NOT NULL differs"
            assert found["default"] == column["default"], f"{table}.{name}: DEFAULT differs"
            if found["identity"]:  # only where SQLite makes ids: an INTEGER PRIMARY KEY of one column
                assert lite["primary"][table] == (name,) and column["type"] == "INTEGER", f"{table}.{name}"
        assert pg["primary"].get(table, ()) == lite["primary"][table], f"{table}: primary key differs"
    assert pg["unique"] == lite["unique"]
    assert pg["foreign"] == lite["foreign"]
    assert pg["indexes"] == lite["indexes"]


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=TIMEOUT, command_timeout=TIMEOUT)


async def snapshot(conn: asyncpg.Connection) -> tuple[Any, ...]:
    """Everything migrate() could change: the definitions, the versions applied, meta's rows."""
    schema = await pg_schema_of(conn)
    definitions = await conn.fetch("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
    versions = await conn.fetch("SELECT version, applied_at FROM schema_version ORDER BY version")
    meta = await conn.fetch("SELECT key, value FROM meta ORDER BY key")
    return schema, [tuple(r) for r in definitions], [tuple(r) for r in versions], [tuple(r) for r in meta]


# --- the tests ------------------------------------------------------------------------------------------


def test_both_engines_have_the_same_number_of_migrations():
    assert len(pg_schema.MIGRATIONS) == LATEST


@pytest.mark.parametrize("version", range(1, LATEST + 1))
async def test_each_version_has_the_sqlite_schema_and_upgrades_to_the_latest(pg_dsn, version):
    conn = await connect(pg_dsn)
    try:
        assert await pg_schema.migrate(conn, upto=version) == 0
        assert await pg_schema.schema_version(conn) == version
        assert_alike(sqlite_schema(version), await pg_schema_of(conn))
        assert await pg_schema.migrate(conn) == version
        assert await pg_schema.schema_version(conn) == LATEST
        assert_alike(sqlite_schema(LATEST), await pg_schema_of(conn))
    finally:
        await conn.close(timeout=TIMEOUT)


async def test_prompts_have_a_gin_index_in_place_of_fts5(pg_dsn):
    conn = await connect(pg_dsn)
    try:
        await pg_schema.migrate(conn)
        definition = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'generations_text'")
        assert re.search(r"ON public\.generations USING gin \(prompt_search\)$", definition), definition
        column = await conn.fetchval("SELECT data_type || ' ' || is_generated FROM information_schema.columns "
                                     "WHERE table_name = 'generations' AND column_name = 'prompt_search'")
        assert column == "tsvector ALWAYS"
    finally:
        await conn.close(timeout=TIMEOUT)


async def add_generation(conn: asyncpg.Connection, params: dict[str, Any]) -> int:
    return await conn.fetchval(
        "INSERT INTO generations (kind, user_id, channel_id, params, files, server, duration, attachment_urls,"
        " created_at) VALUES ('txt2img', 1, 2, $1, '[]', 'local', 1.5, '[]', 0) RETURNING id", json.dumps(params))


async def test_prompt_search_ignores_case_and_accents_and_finds_rows_older_than_the_index(pg_dsn):
    conn = await connect(pg_dsn)
    try:
        await pg_schema.migrate(conn, upto=5)
        older = await add_generation(conn, {"prompt": "A lighthouse at dusk", "negative_prompt": "blurry"})
        await pg_schema.migrate(conn)
        newer = await add_generation(conn, {"prompt": "Un Café CRÈME, oil-painting", "model": "sdxl"})
        unset = await add_generation(conn, {"seed": 3})

        async def found(query: str) -> set[int]:
            rows = await conn.fetch("SELECT id FROM generations WHERE prompt_search @@ to_tsquery('store_search', $1)",
                                    query)
            return {row["id"] for row in rows}

        assert await found("lighthouse & dusk") == {older}
        assert await found("blurry") == {older}  # the negative prompt too
        assert await found("cafe & creme") == {newer} == await found("CAFÉ & crème")
        assert await found("light:*") == {older}  # a prefix
        assert await found("painting") == {newer}  # a part of a hyphenated word
        assert await found("tea") == set()
        assert unset not in await found("seed | 3")  # only the prompts are searched
        assert await conn.fetchval("SELECT count(*) FROM generations") == 3
    finally:
        await conn.close(timeout=TIMEOUT)


async def test_migrating_twice_changes_nothing(pg_dsn):
    conn = await connect(pg_dsn)
    try:
        assert await pg_schema.migrate(conn) == 0
        before = await snapshot(conn)
        assert await pg_schema.migrate(conn) == LATEST
        assert await snapshot(conn) == before
        assert [row[0] for row in before[2]] == list(range(1, LATEST + 1))
        instance_id = await conn.fetchval("SELECT value FROM meta WHERE key = 'instance_id'")
        assert re.fullmatch(r"[0-9a-f]{32}", instance_id)
    finally:
        await conn.close(timeout=TIMEOUT)


async def test_two_bots_migrating_at_once_apply_each_version_once(pg_dsn):
    pool = await asyncpg.create_pool(pg_dsn, min_size=2, max_size=2, timeout=TIMEOUT, command_timeout=TIMEOUT)
    try:
        found = await asyncio.wait_for(asyncio.gather(pg_schema.migrate(pool), pg_schema.migrate(pool)), TIMEOUT)
        assert 0 in found  # each took turns; the first found an empty database
        versions = await pool.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [row[0] for row in versions] == list(range(1, LATEST + 1))
    finally:
        await asyncio.wait_for(pool.close(), TIMEOUT)


async def test_a_schema_newer_than_this_bot_is_refused(pg_dsn):
    conn = await connect(pg_dsn)
    try:
        await pg_schema.migrate(conn)
        await conn.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, 0)", LATEST + 1)
        with pytest.raises(StoreError, match=f"newer version of the bot .schema {LATEST + 1}"):
            await pg_schema.migrate(conn)
        with pytest.raises(ValueError):
            await pg_schema.migrate(conn, upto=LATEST + 1)
    finally:
        await conn.close(timeout=TIMEOUT)


async def test_a_failed_migration_leaves_the_version_before_it(pg_dsn, monkeypatch):
    conn = await connect(pg_dsn)
    try:
        broken = (*pg_schema.MIGRATIONS[:2], "CREATE TABLE meta (key TEXT); SELECT no_such_function();")
        monkeypatch.setattr(pg_schema, "MIGRATIONS", broken)
        with pytest.raises(StoreError, match="refused migration 3"):
            await pg_schema.migrate(conn)
        assert await pg_schema.schema_version(conn) == 2
        assert await conn.fetchval("SELECT to_regclass('meta')") is None  # rolled back whole
    finally:
        await conn.close(timeout=TIMEOUT)


async def test_a_migration_waits_for_another_one_only_so_long(pg_dsn, monkeypatch):
    monkeypatch.setattr(pg_schema, "LOCK_TIMEOUT", 0.3)
    holder, conn = await connect(pg_dsn), await connect(pg_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", pg_schema._LOCK_KEY)  # as a migrating bot would
        with pytest.raises(StoreError, match="kept the PostgreSQL schema locked for 0.3 seconds"):
            await asyncio.wait_for(pg_schema.migrate(conn), TIMEOUT)
        await holder.execute("SELECT pg_advisory_unlock($1)", pg_schema._LOCK_KEY)
        assert await pg_schema.migrate(conn) == 0
    finally:
        await holder.close(timeout=TIMEOUT)
        await conn.close(timeout=TIMEOUT)
