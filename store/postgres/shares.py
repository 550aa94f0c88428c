"""PostgreSQL twins of store/shares.py's queries (see store/postgres/twins.py), and its migration (16).
share_result looks for a live share and then makes one: under an advisory lock on the result."""

from __future__ import annotations

import time

import asyncpg

from store import shares as sqlite_shares
from store.postgres.jobs import lock
from store.postgres.text import clean
from store.postgres.twins import twin_of
from store.shares import SHARE_COLUMNS, Share, share_of

MIGRATION = """
CREATE TABLE shares (
    token TEXT PRIMARY KEY,
    generation_id BIGINT NOT NULL,
    guild_id BIGINT NOT NULL,
    owner_id BIGINT NOT NULL,
    show_prompt BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    revoked_by BIGINT
);
CREATE INDEX shares_by_generation ON shares (generation_id);
"""

SHARES_OF_RESULT = 0x53484152  # "SHAR": share_result's look for a result's live share before making one


@twin_of(sqlite_shares._upsert_share)
async def _upsert_share(conn: asyncpg.Connection, token: str, generation_id: int, guild_id: int, owner_id: int,
                        show_prompt: bool) -> Share:
    async with conn.transaction():
        await lock(conn, SHARES_OF_RESULT, generation_id)
        row = await conn.fetchrow(f"SELECT {SHARE_COLUMNS} FROM shares WHERE generation_id = $1 AND show_prompt = $2 "
                                  "AND revoked_at IS NULL ORDER BY created_at LIMIT 1", generation_id, int(show_prompt))
        if row is None:
            row = await conn.fetchrow(
                "INSERT INTO shares (token, generation_id, guild_id, owner_id, show_prompt, created_at) "
                f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {SHARE_COLUMNS}",
                token, generation_id, guild_id, owner_id, int(show_prompt), time.time())
        return share_of(row)


@twin_of(sqlite_shares._select_share)
async def _select_share(conn: asyncpg.Connection, token: str) -> Share | None:
    row = await conn.fetchrow(f"SELECT {SHARE_COLUMNS} FROM shares WHERE token = $1", clean(token))
    return None if row is None else share_of(row)


@twin_of(sqlite_shares._select_live_shares)
async def _select_live_shares(conn: asyncpg.Connection, generation_id: int) -> list[Share]:
    rows = await conn.fetch(f"SELECT {SHARE_COLUMNS} FROM shares WHERE generation_id = $1 AND revoked_at IS NULL "
                            "ORDER BY created_at, token COLLATE \"C\"", generation_id)
    return [share_of(row) for row in rows]


@twin_of(sqlite_shares._revoke_share)
async def _revoke_share(conn: asyncpg.Connection, token: str, by: int, now: float) -> bool:
    revoked = await conn.fetchval("UPDATE shares SET revoked_at = $1, revoked_by = $2 "
                                  "WHERE token = $3 AND revoked_at IS NULL RETURNING token", now, by, clean(token))
    return revoked is not None
