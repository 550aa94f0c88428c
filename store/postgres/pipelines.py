"""PostgreSQL twins of store/pipelines.py's queries (see store/postgres/twins.py). save_pipeline counts the
owner's other pipelines and then writes: under an advisory lock on the owner in that server."""

from __future__ import annotations

import json
import time

import asyncpg

from store import pipelines as sqlite_pipelines
from store.pipelines import SavedPipeline
from store.postgres.jobs import lock
from store.postgres.text import clean
from store.postgres.twins import twin_of

PIPELINES_OF_OWNER = 0x50495045  # "PIPE": save_pipeline's count of an owner's pipelines in a server


@twin_of(sqlite_pipelines._upsert_pipeline)
async def _upsert_pipeline(conn: asyncpg.Connection, pipeline: SavedPipeline, limit: int) -> bool:
    name = clean(pipeline.name)
    async with conn.transaction():
        await lock(conn, PIPELINES_OF_OWNER, pipeline.guild_id, pipeline.owner_id)
        others = await conn.fetchval("SELECT count(*) FROM pipelines WHERE guild_id = $1 AND owner_id = $2 "
                                     "AND name <> $3", pipeline.guild_id, pipeline.owner_id, name)
        if others >= limit:
            return False
        await conn.execute(
            "INSERT INTO pipelines (guild_id, owner_id, name, steps, created_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (guild_id, owner_id, name) DO UPDATE SET steps = excluded.steps, "
            "created_at = excluded.created_at",
            pipeline.guild_id, pipeline.owner_id, name, sqlite_pipelines.dumps(clean(pipeline.steps)), time.time())
        return True


@twin_of(sqlite_pipelines._select_pipelines)
async def _select_pipelines(conn: asyncpg.Connection, guild_id: int, owner_id: int) -> list[SavedPipeline]:
    rows = await conn.fetch("SELECT guild_id, owner_id, name, steps, created_at FROM pipelines "
                            "WHERE guild_id = $1 AND owner_id = $2 ORDER BY name COLLATE \"C\"", guild_id, owner_id)
    return [SavedPipeline(row[0], row[1], row[2], json.loads(row[3]), row[4]) for row in rows]


@twin_of(sqlite_pipelines._delete_pipeline)
async def _delete_pipeline(conn: asyncpg.Connection, guild_id: int, owner_id: int, name: str) -> bool:
    deleted = await conn.fetchval("DELETE FROM pipelines WHERE guild_id = $1 AND owner_id = $2 AND name = $3 "
                                  "RETURNING id", guild_id, owner_id, name)
    return deleted is not None
