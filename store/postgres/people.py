"""PostgreSQL twins of store/people.py's queries (see store/postgres/twins.py): the same rows, return values
and errors as the SQLite functions they stand in for.

save_style counts the owner's other styles and then writes; SQLite's BEGIN IMMEDIATE made that one step,
and here a transaction holding an advisory lock on the owner in that server does (store/postgres/jobs.py
`lock` documents the keys), so two bot processes cannot both pass the count. Names are sorted by code
point (COLLATE "C"), as SQLite's BINARY collation does, whatever the database's own collation.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg

from store import people as sqlite_people
from store.people import SavedStyle
from store.postgres.jobs import STYLES_OF_OWNER, lock
from store.postgres.text import clean
from store.postgres.twins import twin_of


@twin_of(sqlite_people._select_preferences)
async def _select_preferences(conn: asyncpg.Connection, user_id: int) -> dict[str, Any]:
    prefs = await conn.fetchval("SELECT prefs FROM preferences WHERE user_id = $1", user_id)
    return json.loads(prefs) if prefs is not None else {}


@twin_of(sqlite_people._replace_preferences)
async def _replace_preferences(conn: asyncpg.Connection, user_id: int, prefs: dict[str, Any]) -> None:
    if not prefs:
        await conn.execute("DELETE FROM preferences WHERE user_id = $1", user_id)
        return
    await conn.execute(
        "INSERT INTO preferences (user_id, prefs, updated_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) "
        "DO UPDATE SET prefs = excluded.prefs, updated_at = excluded.updated_at",
        user_id, json.dumps(clean(prefs), separators=(",", ":")), time.time())


@twin_of(sqlite_people._upsert_style)
async def _upsert_style(conn: asyncpg.Connection, style: SavedStyle, limit: int) -> bool:
    name, prompt, negative = clean(style.name), clean(style.prompt), clean(style.negative)
    async with conn.transaction():  # counted and written in one step
        await lock(conn, STYLES_OF_OWNER, style.guild_id, style.owner_id)
        others = await conn.fetchval("SELECT count(*) FROM styles WHERE guild_id = $1 AND owner_id = $2 AND name <> $3",
                                     style.guild_id, style.owner_id, name)
        if others >= limit:
            return False
        await conn.execute(
            "INSERT INTO styles (guild_id, owner_id, name, prompt, negative, nsfw, created_by, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (guild_id, owner_id, name) DO UPDATE SET "
            "prompt = excluded.prompt, negative = excluded.negative, nsfw = excluded.nsfw, "
            "created_by = excluded.created_by, created_at = excluded.created_at",
            style.guild_id, style.owner_id, name, prompt, negative, int(style.nsfw), style.created_by, time.time())
        return True


@twin_of(sqlite_people._select_styles)
async def _select_styles(conn: asyncpg.Connection, guild_id: int, user_id: int) -> list[SavedStyle]:
    rows = await conn.fetch(
        "SELECT guild_id, owner_id, name, prompt, negative, nsfw, created_by FROM styles "
        "WHERE guild_id = $1 AND owner_id IN ($2, 0) ORDER BY owner_id = 0, name COLLATE \"C\"", guild_id, user_id)
    return [SavedStyle(**{**dict(row), "nsfw": bool(row["nsfw"])}) for row in rows]


@twin_of(sqlite_people._delete_style)
async def _delete_style(conn: asyncpg.Connection, guild_id: int, owner_id: int, name: str) -> bool:
    deleted = await conn.fetchval("DELETE FROM styles WHERE guild_id = $1 AND owner_id = $2 AND name = $3 RETURNING id",
                                  guild_id, owner_id, clean(name))
    return deleted is not None
