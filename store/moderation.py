"""Moderation (issue 21): results held because a moderation provider flagged them (or did not answer),
until a moderator releases or deletes them. Part of store.Store; the table is its migration 15. Every
call runs on the store's one worker thread.

A job has at most one hold (job_id is unique): a second process or a restart that finds the job's result
held again gets the same row back, and a decision is taken once (only from 'held').
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

MIGRATION = """
CREATE TABLE moderation_holds (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL UNIQUE,
    generation_id INTEGER NOT NULL,
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    reason TEXT NOT NULL,                 -- in words: which categories passed their thresholds, or the provider failed
    scores TEXT NOT NULL,                 -- JSON: category -> score, as the provider answered
    state TEXT NOT NULL CHECK (state IN ('held', 'released', 'deleted')),
    message_id INTEGER,                   -- its card in the mod-log channel
    decided_by INTEGER,
    decided_at REAL,
    created_at REAL NOT NULL
);
CREATE INDEX moderation_holds_by_state ON moderation_holds (state, guild_id);
"""

HOLD_STATES = ("held", "released", "deleted")
COLUMNS = ("id, job_id, generation_id, guild_id, user_id, channel_id, reason, scores, state, message_id, decided_by, "
           "decided_at, created_at")


@dataclass(frozen=True)
class Hold:
    """A result kept back from posting: whose, where it would go, why, and what a moderator decided."""

    id: int | None
    job_id: int
    generation_id: int
    guild_id: int  # 0 outside a server
    user_id: int
    channel_id: int  # where the result would have been posted
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    state: str = "held"
    message_id: int | None = None
    decided_by: int | None = None
    decided_at: float | None = None
    created_at: float | None = None


def hold_of(row: Any) -> Hold:
    """A Hold from a row of COLUMNS (sqlite3.Row or asyncpg.Record)."""
    values = dict(row)
    values["scores"] = json.loads(values["scores"])
    return Hold(**values)


class ModerationStore:
    """The methods store.Store gains for moderation."""

    async def add_hold(self, hold: Hold) -> Hold:
        """Hold a job's result; the job's existing hold, unchanged, when it has one."""
        return await self._run(_insert_hold, hold)

    async def get_hold(self, hold_id: int) -> Hold | None:
        return await self._run(_select_hold, "id", hold_id)

    async def hold_of_job(self, job_id: int) -> Hold | None:
        """The job's hold, in whatever state, if its result was ever held."""
        return await self._run(_select_hold, "job_id", job_id)

    async def pending_holds(self, guild_id: int | None, limit: int) -> list[Hold]:
        """Results still held in that server (None: everywhere), oldest first."""
        return await self._run(_select_pending, guild_id, limit)

    async def decide_hold(self, hold_id: int, state: str, by: int) -> Hold | None:
        """Release or delete a held result, once: the hold now, or None when it was not held (any more)."""
        if state not in ("released", "deleted"):
            raise ValueError(f"a hold is released or deleted, not {state!r}")
        return await self._run(_decide, hold_id, state, by)

    async def set_hold_message(self, hold_id: int, message_id: int) -> None:
        """Record the hold's card in the mod-log channel."""
        await self._run(_set_message, hold_id, message_id)


def _insert_hold(db: sqlite3.Connection, hold: Hold) -> Hold:
    db.execute(
        "INSERT INTO moderation_holds (job_id, generation_id, guild_id, user_id, channel_id, reason, scores, state, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'held', ?) ON CONFLICT (job_id) DO NOTHING",
        (hold.job_id, hold.generation_id, hold.guild_id, hold.user_id, hold.channel_id, hold.reason,
         json.dumps(hold.scores, separators=(",", ":")), time.time()))
    return _select_hold(db, "job_id", hold.job_id)


def _select_hold(db: sqlite3.Connection, column: str, value: int) -> Hold | None:
    assert column in ("id", "job_id")
    row = db.execute(f"SELECT {COLUMNS} FROM moderation_holds WHERE {column} = ?", (value,)).fetchone()
    return hold_of(row) if row else None


def _select_pending(db: sqlite3.Connection, guild_id: int | None, limit: int) -> list[Hold]:
    rows = db.execute(f"SELECT {COLUMNS} FROM moderation_holds WHERE state = 'held' AND (? IS NULL OR guild_id = ?) "
                      "ORDER BY id LIMIT ?", (guild_id, guild_id, limit)).fetchall()
    return [hold_of(row) for row in rows]


def _decide(db: sqlite3.Connection, hold_id: int, state: str, by: int) -> Hold | None:
    cursor = db.execute("UPDATE moderation_holds SET state = ?, decided_by = ?, decided_at = ? "
                        "WHERE id = ? AND state = 'held'", (state, by, time.time(), hold_id))
    return _select_hold(db, "id", hold_id) if cursor.rowcount else None


def _set_message(db: sqlite3.Connection, hold_id: int, message_id: int) -> None:
    db.execute("UPDATE moderation_holds SET message_id = ? WHERE id = ?", (message_id, hold_id))
