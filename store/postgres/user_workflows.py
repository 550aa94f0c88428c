"""PostgreSQL twins of store/user_workflows.py's queries (see store/postgres/twins.py): the same rows, return
values and errors as the SQLite functions they stand in for.

Several bot processes may save one workflow at once, so every read-then-write runs in a transaction: saving
first takes the advisory lock on the owner in that server (`lock` of store/postgres/jobs.py, first key
WORKFLOWS_OF_OWNER), so that the count against the limit and a new name's insert are one step; saving and
restoring then hold the workflow's row (FOR UPDATE) while numbering the new version, so no two versions get
one number. Rating holds the row FOR SHARE, so a workflow is not deleted under a new rating. Text and JSON
pass through `clean` (no NUL in PostgreSQL's text); names sort by code point (COLLATE "C"), as in SQLite.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from store import user_workflows as sqlite_workflows
from store.postgres.jobs import lock
from store.postgres.text import clean
from store.postgres.twins import twin_of
from store.user_workflows import (VERSION_COLUMNS, WORKFLOW_COLUMNS, UserWorkflow, WorkflowVersion, contains, dumps,
                                  search_text, version, workflow)

WORKFLOWS_OF_OWNER = 0x57464C57  # "WFLW": save_workflow's count of an owner's workflows in a server


@twin_of(sqlite_workflows._save_workflow)
async def _save_workflow(conn: asyncpg.Connection, guild_id: int, owner_id: int, name: str,
                         tags: tuple[str, ...] | None, graph: dict[str, Any], bindings: dict[str, Any],
                         source_format: str, by: int, limit: int, now: float) -> UserWorkflow | None:
    name, tags = clean(name), clean(tags)
    async with conn.transaction():
        await lock(conn, WORKFLOWS_OF_OWNER, guild_id, owner_id)
        row = await conn.fetchrow("SELECT id, tags, deleted_at FROM user_workflows WHERE guild_id = $1 AND "
                                  "owner_id = $2 AND name = $3 FOR UPDATE", guild_id, owner_id, name)
        if row is None or row["deleted_at"] is not None:
            others = await conn.fetchval("SELECT count(*) FROM user_workflows WHERE guild_id = $1 AND owner_id = $2 "
                                         "AND deleted_at IS NULL AND name <> $3", guild_id, owner_id, name)
            if others >= limit:
                return None
        tags = tags if tags is not None else () if row is None else tuple(json.loads(row["tags"]))
        if row is None:
            workflow_id = await conn.fetchval(
                "INSERT INTO user_workflows (guild_id, owner_id, name, tags, search, current_version, created_at, "
                "updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6) RETURNING id",
                guild_id, owner_id, name, dumps(tags), search_text(name, tags), now)
        else:
            workflow_id = row["id"]
            await conn.execute("UPDATE user_workflows SET tags = $1, search = $2, updated_at = $3 WHERE id = $4",
                               dumps(tags), search_text(name, tags), now, workflow_id)
            if row["deleted_at"] is not None:
                await conn.execute("UPDATE user_workflows SET deleted_at = NULL, shared = 0, shared_by = NULL "
                                   "WHERE id = $1", workflow_id)
        content = (dumps(clean(graph)), dumps(clean(bindings)), source_format)
        current = await conn.fetchrow("SELECT graph, bindings, source_format FROM workflow_versions JOIN "
                                      "user_workflows w ON w.id = workflow_id AND w.current_version = version "
                                      "WHERE workflow_id = $1", workflow_id)
        if current is None or tuple(current) != content or row["deleted_at"] is not None:
            await _add_version(conn, workflow_id, *content, None, by, now)
        return await _select_workflow(conn, workflow_id)


async def _add_version(conn: asyncpg.Connection, workflow_id: int, graph: str, bindings: str, source_format: str,
                       restored_from: int | None, by: int, now: float) -> None:
    """Inside a transaction that holds the workflow's row."""
    number = await conn.fetchval("SELECT current_version + 1 FROM user_workflows WHERE id = $1", workflow_id)
    await conn.execute(f"INSERT INTO workflow_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                       workflow_id, number, graph, bindings, source_format, restored_from, by, now)
    await conn.execute("UPDATE user_workflows SET current_version = $1, updated_at = $2 WHERE id = $3",
                       number, now, workflow_id)


@twin_of(sqlite_workflows._select_workflow)
async def _select_workflow(conn: asyncpg.Connection, workflow_id: int) -> UserWorkflow | None:
    row = await conn.fetchrow(f"SELECT {WORKFLOW_COLUMNS} FROM user_workflows w WHERE w.id = $1", workflow_id)
    return None if row is None else workflow(row)


@twin_of(sqlite_workflows._select_workflow_by_name)
async def _select_workflow_by_name(conn: asyncpg.Connection, guild_id: int, owner_id: int,
                                   name: str) -> UserWorkflow | None:
    row = await conn.fetchrow(f"SELECT {WORKFLOW_COLUMNS} FROM user_workflows w WHERE w.guild_id = $1 AND "
                              "w.owner_id = $2 AND w.name = $3 AND w.deleted_at IS NULL", guild_id, owner_id,
                              clean(name))
    return None if row is None else workflow(row)


@twin_of(sqlite_workflows._select_workflows_for)
async def _select_workflows_for(conn: asyncpg.Connection, guild_id: int, user_id: int, words: list[str],
                                tag: str | None, limit: int, offset: int) -> list[UserWorkflow]:
    patterns = [contains(clean(word)) for word in words]
    if tag is not None:
        patterns.append(contains(dumps(clean(tag))))
    columns = ["search"] * len(words) + (["tags"] if tag is not None else [])
    matches = "".join(f" AND w.{column} LIKE ${number} ESCAPE '\\'" for number, column in enumerate(columns, 3))
    last = len(patterns) + 3
    rows = await conn.fetch(
        f"SELECT {WORKFLOW_COLUMNS} FROM user_workflows w WHERE w.guild_id = $1 AND w.deleted_at IS NULL "
        f"AND (w.owner_id = $2 OR w.shared = 1){matches} ORDER BY w.owner_id <> $2, w.name COLLATE \"C\", w.id "
        f"LIMIT ${last} OFFSET ${last + 1}", guild_id, user_id, *patterns, limit, offset)
    return [workflow(row) for row in rows]


@twin_of(sqlite_workflows._select_versions)
async def _select_versions(conn: asyncpg.Connection, workflow_id: int) -> list[WorkflowVersion]:
    rows = await conn.fetch(f"SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = $1 "
                            "ORDER BY version DESC", workflow_id)
    return [version(row) for row in rows]


@twin_of(sqlite_workflows._select_version)
async def _select_version(conn: asyncpg.Connection, workflow_id: int, number: int) -> WorkflowVersion | None:
    row = await conn.fetchrow(f"SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = $1 AND "
                              "version = $2", workflow_id, number)
    return None if row is None else version(row)


@twin_of(sqlite_workflows._restore_version)
async def _restore_version(conn: asyncpg.Connection, workflow_id: int, number: int, by: int,
                           now: float) -> UserWorkflow | None:
    async with conn.transaction():
        held = await conn.fetchval("SELECT id FROM user_workflows WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                                   workflow_id)
        old = None if held is None else await conn.fetchrow(
            "SELECT graph, bindings, source_format FROM workflow_versions WHERE workflow_id = $1 AND version = $2",
            workflow_id, number)
        if old is None:
            return None
        await _add_version(conn, workflow_id, *old, number, by, now)
        return await _select_workflow(conn, workflow_id)


@twin_of(sqlite_workflows._share)
async def _share(conn: asyncpg.Connection, workflow_id: int, shared: bool, by: int, now: float) -> UserWorkflow | None:
    changed = await conn.fetchval("UPDATE user_workflows SET shared = $1, shared_by = $2, updated_at = $3 WHERE "
                                  "id = $4 AND deleted_at IS NULL RETURNING id", int(shared), by if shared else None,
                                  now, workflow_id)
    return None if changed is None else await _select_workflow(conn, workflow_id)


@twin_of(sqlite_workflows._delete_workflow)
async def _delete_workflow(conn: asyncpg.Connection, workflow_id: int, now: float) -> bool:
    deleted = await conn.fetchval("UPDATE user_workflows SET deleted_at = $1, shared = 0, shared_by = NULL "
                                  "WHERE id = $2 AND deleted_at IS NULL RETURNING id", now, workflow_id)
    return deleted is not None


@twin_of(sqlite_workflows._rate)
async def _rate(conn: asyncpg.Connection, workflow_id: int, user_id: int, stars: int,
                now: float) -> tuple[float, int] | None:
    async with conn.transaction():
        if await conn.fetchval("SELECT id FROM user_workflows WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
                               workflow_id) is None:
            return None
        await conn.execute("INSERT INTO workflow_ratings (workflow_id, user_id, stars, created_at) VALUES "
                           "($1, $2, $3, $4) ON CONFLICT (workflow_id, user_id) DO UPDATE SET stars = excluded.stars, "
                           "created_at = excluded.created_at", workflow_id, user_id, stars, now)
        average, count = await _select_rating(conn, workflow_id)
        return average or 0.0, count


@twin_of(sqlite_workflows._select_rating)
async def _select_rating(conn: asyncpg.Connection, workflow_id: int) -> tuple[float | None, int]:
    row = await conn.fetchrow("SELECT CAST(coalesce(sum(stars), 0) AS BIGINT) AS total, count(*) AS count FROM "
                              "workflow_ratings WHERE workflow_id = $1", workflow_id)
    return (row["total"] / row["count"] if row["count"] else None), row["count"]
