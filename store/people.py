"""What the store keeps for people rather than jobs: each person's defaults (/settings, /models) and
the styles people and servers saved (/style). Part of store.Store; the tables are its migration 5.

Like the rest of the store, every call runs on the store's one worker thread.
"""

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

MIGRATION = """
CREATE TABLE preferences (user_id INTEGER PRIMARY KEY, prefs TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE styles (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,            -- 0 outside a server
    owner_id INTEGER NOT NULL,            -- 0: the whole server's style
    name TEXT NOT NULL,
    prompt TEXT NOT NULL,
    negative TEXT NOT NULL,
    nsfw INTEGER NOT NULL DEFAULT 0,
    created_by INTEGER NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (guild_id, owner_id, name)
);
"""


@dataclass(frozen=True)
class SavedStyle:
    """A style someone saved: their own (owner_id is theirs) or the server's (owner_id 0)."""

    guild_id: int
    owner_id: int
    name: str
    prompt: str
    negative: str
    nsfw: bool
    created_by: int


class PeopleStore:
    """The methods store.Store gains for people's defaults and saved styles."""

    async def preferences(self, user_id: int) -> dict[str, Any]:
        """A person's saved defaults ({} when none)."""
        return await self._run(_select_preferences, user_id)

    async def set_preferences(self, user_id: int, prefs: dict[str, Any]) -> None:
        """Replace a person's defaults; an empty dict forgets them."""
        await self._run(_replace_preferences, user_id, prefs)

    async def save_style(self, style: SavedStyle, *, limit: int) -> bool:
        """Save or replace a style; False when its owner already has `limit` others (nothing saved)."""
        return await self._run(_upsert_style, style, limit)

    async def styles(self, guild_id: int, user_id: int) -> list[SavedStyle]:
        """The person's own styles and the server's, the person's first, each by name."""
        return await self._run(_select_styles, guild_id, user_id)

    async def delete_style(self, guild_id: int, owner_id: int, name: str) -> bool:
        return await self._run(_delete_style, guild_id, owner_id, name)


def _select_preferences(db: sqlite3.Connection, user_id: int) -> dict[str, Any]:
    row = db.execute("SELECT prefs FROM preferences WHERE user_id = ?", (user_id,)).fetchone()
    return json.loads(row["prefs"]) if row else {}


def _replace_preferences(db: sqlite3.Connection, user_id: int, prefs: dict[str, Any]) -> None:
    if not prefs:
        db.execute("DELETE FROM preferences WHERE user_id = ?", (user_id,))
        return
    db.execute("INSERT OR REPLACE INTO preferences (user_id, prefs, updated_at) VALUES (?, ?, ?)",
               (user_id, json.dumps(prefs, separators=(",", ":")), time.time()))


def _upsert_style(db: sqlite3.Connection, style: SavedStyle, limit: int) -> bool:
    db.execute("BEGIN IMMEDIATE")  # counted and written in one step
    try:
        others = db.execute("SELECT COUNT(*) FROM styles WHERE guild_id = ? AND owner_id = ? AND name != ?",
                            (style.guild_id, style.owner_id, style.name)).fetchone()[0]
        if others >= limit:
            db.execute("ROLLBACK")
            return False
        db.execute(
            "INSERT INTO styles (guild_id, owner_id, name, prompt, negative, nsfw, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id, owner_id, name) DO UPDATE SET "
            "prompt = excluded.prompt, negative = excluded.negative, nsfw = excluded.nsfw, "
            "created_by = excluded.created_by, created_at = excluded.created_at",
            (style.guild_id, style.owner_id, style.name, style.prompt, style.negative, int(style.nsfw),
             style.created_by, time.time()))
        db.execute("COMMIT")
        return True
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _select_styles(db: sqlite3.Connection, guild_id: int, user_id: int) -> list[SavedStyle]:
    rows = db.execute(
        "SELECT guild_id, owner_id, name, prompt, negative, nsfw, created_by FROM styles "
        "WHERE guild_id = ? AND owner_id IN (?, 0) ORDER BY owner_id = 0, name", (guild_id, user_id)).fetchall()
    return [SavedStyle(**{**dict(row), "nsfw": bool(row["nsfw"])}) for row in rows]


def _delete_style(db: sqlite3.Connection, guild_id: int, owner_id: int, name: str) -> bool:
    cursor = db.execute("DELETE FROM styles WHERE guild_id = ? AND owner_id = ? AND name = ?",
                        (guild_id, owner_id, name))
    return cursor.rowcount > 0
