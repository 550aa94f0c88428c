"""The pipelines people save (/pipeline save): each person's own, per Discord server, a name and its steps
as JSON (jobs/pipelines.py reads and checks them; the store keeps what it is given). Part of store.Store;
the table is its migration 12. Every call runs on the store's one worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

MIGRATION = """
CREATE TABLE pipelines (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,            -- 0 outside a server
    owner_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    steps TEXT NOT NULL,                  -- JSON list of steps, as jobs/pipelines.py writes them
    created_at REAL NOT NULL,
    UNIQUE (guild_id, owner_id, name)
);
"""


@dataclass(frozen=True)
class SavedPipeline:
    """A pipeline someone saved."""

    guild_id: int
    owner_id: int
    name: str
    steps: list[dict[str, Any]]
    created_at: float = 0.0


class PipelinesStore:
    """The methods store.Store gains for the pipelines people save."""

    async def save_pipeline(self, pipeline: SavedPipeline, *, limit: int) -> bool:
        """Save or replace a pipeline; False when its owner already has `limit` others there (nothing saved)."""
        return await self._run(_upsert_pipeline, pipeline, limit)

    async def pipelines(self, guild_id: int, owner_id: int) -> list[SavedPipeline]:
        """The person's pipelines in that server, by name."""
        return await self._run(_select_pipelines, guild_id, owner_id)

    async def delete_pipeline(self, guild_id: int, owner_id: int, name: str) -> bool:
        return await self._run(_delete_pipeline, guild_id, owner_id, name)


def dumps(steps: list[dict[str, Any]]) -> str:
    return json.dumps(steps, separators=(",", ":"))


def _upsert_pipeline(db: sqlite3.Connection, pipeline: SavedPipeline, limit: int) -> bool:
    db.execute("BEGIN IMMEDIATE")  # counted and written in one step
    try:
        others = db.execute("SELECT COUNT(*) FROM pipelines WHERE guild_id = ? AND owner_id = ? AND name != ?",
                            (pipeline.guild_id, pipeline.owner_id, pipeline.name)).fetchone()[0]
        if others >= limit:
            db.execute("ROLLBACK")
            return False
        db.execute("INSERT INTO pipelines (guild_id, owner_id, name, steps, created_at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (guild_id, owner_id, name) DO UPDATE SET steps = excluded.steps, "
                   "created_at = excluded.created_at",
                   (pipeline.guild_id, pipeline.owner_id, pipeline.name, dumps(pipeline.steps), time.time()))
        db.execute("COMMIT")
        return True
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _select_pipelines(db: sqlite3.Connection, guild_id: int, owner_id: int) -> list[SavedPipeline]:
    rows = db.execute("SELECT guild_id, owner_id, name, steps, created_at FROM pipelines "
                      "WHERE guild_id = ? AND owner_id = ? ORDER BY name", (guild_id, owner_id)).fetchall()
    return [SavedPipeline(row[0], row[1], row[2], json.loads(row[3]), row[4]) for row in rows]


def _delete_pipeline(db: sqlite3.Connection, guild_id: int, owner_id: int, name: str) -> bool:
    cursor = db.execute("DELETE FROM pipelines WHERE guild_id = ? AND owner_id = ? AND name = ?",
                        (guild_id, owner_id, name))
    return cursor.rowcount > 0
