"""Sharing (issue 21): public pages for single results, each behind an unguessable link its owner or a
moderator can revoke. Part of store.Store; the table is its migration 16. Every call runs on the store's
one worker thread.

A share's `token` is the random half of its link (links.py `share_token` adds the signature, which is
never stored): someone who reads the database still cannot open a page without the link secret. A
revoked share keeps its row (who revoked it, and when), so a revoked link can never come back.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

MIGRATION = """
CREATE TABLE shares (
    token TEXT PRIMARY KEY,               -- the random half of the link: links.py signs it
    generation_id INTEGER NOT NULL,
    guild_id INTEGER NOT NULL,            -- 0 outside a server
    owner_id INTEGER NOT NULL,
    show_prompt INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    revoked_at REAL,
    revoked_by INTEGER
);
CREATE INDEX shares_by_generation ON shares (generation_id);
"""

TOKEN_BYTES = 15  # 120 random bits: 20 URL-safe characters


@dataclass(frozen=True)
class Share:
    """A public page of one result: live until `revoked_at` is set."""

    token: str
    generation_id: int
    guild_id: int | None
    owner_id: int
    show_prompt: bool
    created_at: float
    revoked_at: float | None = None
    revoked_by: int | None = None


SHARE_COLUMNS = "token, generation_id, guild_id, owner_id, show_prompt, created_at, revoked_at, revoked_by"


def share_of(row: Any) -> Share:
    """The Share of a row of SHARE_COLUMNS (sqlite3.Row or asyncpg.Record)."""
    values = {name: row[name] for name in row.keys()}
    return Share(**{**values, "guild_id": values["guild_id"] or None, "show_prompt": bool(values["show_prompt"])})


class SharesStore:
    """The methods store.Store gains for shares."""

    async def share_result(self, generation_id: int, guild_id: int | None, owner_id: int, show_prompt: bool) -> Share:
        """The result's live share with that choice of prompt, made now if it has none: sharing twice gives
        the same link, so a result has at most two live links (with and without its prompt)."""
        return await self._run(_upsert_share, secrets.token_urlsafe(TOKEN_BYTES), generation_id, guild_id or 0,
                               owner_id, show_prompt)

    async def get_share(self, token: str) -> Share | None:
        """The share with that token, live or revoked, if any."""
        return await self._run(_select_share, token)

    async def live_shares(self, generation_id: int) -> list[Share]:
        """The result's shares that are not revoked, oldest first."""
        return await self._run(_select_live_shares, generation_id)

    async def revoke_share(self, token: str, by: int) -> bool:
        """Revoke a live share (its page is gone at once); False when it is unknown or already revoked."""
        return await self._run(_revoke_share, token, by, time.time())


def _upsert_share(db: sqlite3.Connection, token: str, generation_id: int, guild_id: int, owner_id: int,
                  show_prompt: bool) -> Share:
    db.execute("BEGIN IMMEDIATE")  # looked for and made in one step
    try:
        row = db.execute(f"SELECT {SHARE_COLUMNS} FROM shares WHERE generation_id = ? AND show_prompt = ? "
                         "AND revoked_at IS NULL ORDER BY created_at LIMIT 1",
                         (generation_id, int(show_prompt))).fetchone()
        if row is None:
            db.execute("INSERT INTO shares (token, generation_id, guild_id, owner_id, show_prompt, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (token, generation_id, guild_id, owner_id, int(show_prompt),
                                                     time.time()))
            row = db.execute(f"SELECT {SHARE_COLUMNS} FROM shares WHERE token = ?", (token,)).fetchone()
        db.execute("COMMIT")
        return share_of(row)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _select_share(db: sqlite3.Connection, token: str) -> Share | None:
    row = db.execute(f"SELECT {SHARE_COLUMNS} FROM shares WHERE token = ?", (token,)).fetchone()
    return None if row is None else share_of(row)


def _select_live_shares(db: sqlite3.Connection, generation_id: int) -> list[Share]:
    rows = db.execute(f"SELECT {SHARE_COLUMNS} FROM shares WHERE generation_id = ? AND revoked_at IS NULL "
                      "ORDER BY created_at, token", (generation_id,)).fetchall()
    return [share_of(row) for row in rows]


def _revoke_share(db: sqlite3.Connection, token: str, by: int, now: float) -> bool:
    cursor = db.execute("UPDATE shares SET revoked_at = ?, revoked_by = ? WHERE token = ? AND revoked_at IS NULL",
                        (now, by, token))
    return cursor.rowcount > 0
