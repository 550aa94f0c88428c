"""PostgreSQL twins of store/admin.py's queries (see store/postgres/twins.py): the same rows, return values
and errors as the SQLite functions they stand in for.

SQLite's `guild_id IS ?` matches NULL to NULL; here the condition is written for the value at hand
(`guild_id IS NULL`, or `guild_id = $n`), so the index on guild_id serves both. A day is the UTC date of
created_at (to_timestamp(...) AT TIME ZONE 'UTC', whatever the server's or the session's time zone), as
SQLite's strftime('%Y-%m-%d', created_at, 'unixepoch') has it. Every call is one statement: none reads
and then writes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg

from store import admin as sqlite_admin
from store.admin import Usage
from store.postgres.text import clean
from store.postgres.twins import twin_of

DAY = "to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
IMAGES = "json_array_length(files::json)"  # the files a generation made


def of_guild(guild_id: int | None, position: int) -> tuple[str, list[Any]]:
    """SQLite's `guild_id IS ?`: the condition, and its argument (taking parameter `position`) if any."""
    return ("guild_id IS NULL", []) if guild_id is None else (f"guild_id = ${position}", [guild_id])


def changed(status: str) -> int:
    """The rows a statement changed, from its status ("UPDATE 2", "DELETE 0", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


def compact(value: Any) -> str:
    """JSON text as store/admin.py writes it, with no NUL (store/postgres/text.py)."""
    return json.dumps(clean(value), separators=(",", ":"))


@twin_of(sqlite_admin._audit)
async def _audit(conn: asyncpg.Connection, guild_id: int, actor_id: int, action: str, details: dict[str, Any]) -> None:
    await conn.execute("INSERT INTO audit (guild_id, actor_id, action, details, created_at) "
                       "VALUES ($1, $2, $3, $4, $5)", guild_id, actor_id, clean(action), compact(details), time.time())


@twin_of(sqlite_admin._audit_log)
async def _audit_log(conn: asyncpg.Connection, guild_id: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT actor_id, action, details, created_at FROM audit WHERE guild_id = $1 "
                            "ORDER BY created_at DESC, id DESC LIMIT $2", guild_id, limit)
    return [{"actor_id": row[0], "action": row[1], "details": json.loads(row[2]), "at": row[3]} for row in rows]


@twin_of(sqlite_admin._set_control)
async def _set_control(conn: asyncpg.Connection, kind: str, scope: str, value: dict[str, Any] | None) -> bool:
    if value is None:
        return changed(await conn.execute("DELETE FROM controls WHERE kind = $1 AND scope = $2",
                                          clean(kind), clean(scope))) > 0
    await conn.execute("INSERT INTO controls (kind, scope, value, created_at) VALUES ($1, $2, $3, $4) "
                       "ON CONFLICT (kind, scope) DO UPDATE SET value = excluded.value, "
                       "created_at = excluded.created_at",
                       clean(kind), clean(scope), compact(value), time.time())
    return True


@twin_of(sqlite_admin._controls)
async def _controls(conn: asyncpg.Connection, kind: str) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch("SELECT scope, value FROM controls WHERE kind = $1", clean(kind))
    return {row[0]: json.loads(row[1]) for row in rows}


@twin_of(sqlite_admin._record_cost)
async def _record_cost(conn: asyncpg.Connection, job_id: int, gpu_seconds: float, cost: float) -> None:
    await conn.execute("UPDATE jobs SET gpu_seconds = $1, cost = $2 WHERE id = $3", gpu_seconds, cost, job_id)


@twin_of(sqlite_admin._gpu_history)
async def _gpu_history(conn: asyncpg.Connection, limit: int) -> list[tuple[str, str, dict[str, Any], float]]:
    rows = await conn.fetch("SELECT server, kind, request, gpu_seconds FROM jobs "
                            "WHERE gpu_seconds > 0 AND server IS NOT NULL ORDER BY id DESC LIMIT $1", limit)
    return [(row[0], row[1], json.loads(row[2]), row[3]) for row in reversed(rows)]


@twin_of(sqlite_admin._usage_by_day)
async def _usage_by_day(conn: asyncpg.Connection, guild_id: int | None, since: float) -> list[dict[str, Any]]:
    guild, args = of_guild(guild_id, 2)
    rows = await conn.fetch(f"SELECT {DAY}, SUM({IMAGES}) FROM generations WHERE created_at >= $1 AND {guild} "
                            "GROUP BY 1", since, *args)
    images = {row[0]: row[1] for row in rows}
    rows = await conn.fetch(f"SELECT {DAY}, COALESCE(SUM(gpu_seconds), 0), COALESCE(SUM(cost), 0) FROM jobs "
                            f"WHERE created_at >= $1 AND {guild} GROUP BY 1", since, *args)
    spent = {row[0]: (float(row[1]), float(row[2])) for row in rows}
    return [{"day": day, "images": int(images.get(day) or 0), "gpu_seconds": spent.get(day, (0.0, 0.0))[0],
             "cost": spent.get(day, (0.0, 0.0))[1]} for day in sorted(set(images) | set(spent))]


@twin_of(sqlite_admin._recent_failures)
async def _recent_failures(conn: asyncpg.Connection, guild_id: int | None, limit: int) -> list[dict[str, Any]]:
    guild, args = of_guild(guild_id, 2)
    rows = await conn.fetch(f"SELECT updated_at, kind, user_id, COALESCE(error, '') FROM jobs WHERE {guild} AND "
                            "state = 'failed' ORDER BY updated_at DESC LIMIT $1", limit, *args)
    return [{"at": row[0], "kind": row[1], "user_id": row[2], "error": row[3]} for row in rows]


@twin_of(sqlite_admin._usage)
async def _usage(conn: asyncpg.Connection, guild_id: int | None, user_id: int | None, since: float) -> Usage:
    guild, args = of_guild(guild_id, 2)
    if user_id is not None:
        args.append(user_id)
        guild += f" AND user_id = ${len(args) + 1}"
    images = await conn.fetchval(f"SELECT COALESCE(SUM({IMAGES}), 0) FROM generations "
                                 f"WHERE created_at >= $1 AND {guild}", since, *args)
    gpu, cost = await conn.fetchrow("SELECT COALESCE(SUM(gpu_seconds), 0), COALESCE(SUM(cost), 0) FROM jobs "
                                    f"WHERE created_at >= $1 AND {guild}", since, *args)
    return Usage(int(images), float(gpu), float(cost))


@twin_of(sqlite_admin._usage_by_person)
async def _usage_by_person(conn: asyncpg.Connection, guild_id: int | None, since: float,
                           limit: int) -> list[tuple[int, Usage]]:
    guild, args = of_guild(guild_id, 2)
    rows = await conn.fetch(f"SELECT user_id, SUM({IMAGES}) FROM generations WHERE created_at >= $1 AND {guild} "
                            "GROUP BY user_id", since, *args)
    images = {row[0]: row[1] for row in rows}
    rows = await conn.fetch("SELECT user_id, COALESCE(SUM(gpu_seconds), 0), COALESCE(SUM(cost), 0) FROM jobs "
                            f"WHERE created_at >= $1 AND {guild} GROUP BY user_id", since, *args)
    found = [(row[0], Usage(int(images.get(row[0]) or 0), float(row[1]), float(row[2]))) for row in rows]
    return sorted(found, key=lambda item: (-item[1].gpu_seconds, -item[1].images))[:limit]
