"""What the store keeps so that several bot processes can share one database (cluster/): each process's
heartbeat (who is alive, since when, and what it says about itself), and the recent commands of each
person, for a rate limit that holds across processes. Part of store.Store; the tables are its
migration 10. The PostgreSQL twins are in store/postgres/processes.py.

Like the rest of the store, every call runs on the store's one worker thread, which also makes
hit_rate atomic on SQLite (one process owns the file).
"""

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

MIGRATION = """
CREATE TABLE processes (name TEXT PRIMARY KEY, info TEXT NOT NULL, started_at REAL NOT NULL, seen_at REAL NOT NULL);
CREATE INDEX processes_by_seen ON processes (seen_at);
CREATE TABLE command_hits (user_id INTEGER NOT NULL, at REAL NOT NULL);
CREATE INDEX command_hits_by_user ON command_hits (user_id, at);
CREATE INDEX command_hits_by_time ON command_hits (at);
"""

# hit_rate also forgets up to PRUNE_BATCH of everyone's hits older than max(per, PRUNE_AFTER) seconds, so
# people who stopped using the bot leave nothing behind for long.
PRUNE_AFTER = 3600.0
PRUNE_BATCH = 100


@dataclass(frozen=True)
class ProcessRecord:
    """A bot process as its last heartbeat described it."""

    name: str
    info: dict[str, Any]
    started_at: float
    seen_at: float


class ProcessesStore:
    """The methods store.Store gains for the processes sharing the database and the shared rate limit."""

    async def heartbeat(self, name: str, info: dict[str, Any], now: float, *, started_at: float | None = None) -> None:
        """Record that process `name` is alive at `now`, with `info` (JSON-able). A new name starts at
        `started_at` (default `now`); a known one keeps its start unless `started_at` is given."""
        await self._run(_heartbeat, name, json.dumps(info, separators=(",", ":")), now, started_at)

    async def processes(self, seen_since: float) -> list["ProcessRecord"]:
        """The processes seen at or after `seen_since`, the most recently started first."""
        return await self._run(_processes, seen_since)

    async def forget_process(self, name: str) -> None:
        """Remove a process (one that stopped)."""
        await self._run(_forget_process, name)

    async def hit_rate(self, user_id: int, count: int, per: float, now: float) -> float:
        """At most `count` hits per `per` seconds for each user (a sliding window), across processes:
        0.0 when this hit is allowed (and counted), else the seconds until the next one is."""
        return await self._run(_hit_rate, user_id, count, per, now)


def _heartbeat(db: sqlite3.Connection, name: str, info: str, now: float, started_at: float | None) -> None:
    db.execute(
        "INSERT INTO processes (name, info, started_at, seen_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET info = excluded.info, seen_at = excluded.seen_at, "
        "started_at = CASE WHEN ? THEN excluded.started_at ELSE processes.started_at END",
        (name, info, now if started_at is None else started_at, now, started_at is not None))


def _processes(db: sqlite3.Connection, seen_since: float) -> list[ProcessRecord]:
    rows = db.execute("SELECT name, info, started_at, seen_at FROM processes WHERE seen_at >= ? "
                      "ORDER BY started_at DESC, name", (seen_since,)).fetchall()
    return [process_record(row) for row in rows]


def _forget_process(db: sqlite3.Connection, name: str) -> None:
    db.execute("DELETE FROM processes WHERE name = ?", (name,))


def _hit_rate(db: sqlite3.Connection, user_id: int, count: int, per: float, now: float) -> float:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("DELETE FROM command_hits WHERE user_id = ? AND at <= ?", (user_id, now - per))
        found, oldest = db.execute("SELECT count(*), min(at) FROM command_hits WHERE user_id = ?",
                                   (user_id,)).fetchone()
        wait = rate_answer(found, oldest, count, per, now)
        if wait == 0.0:
            db.execute("INSERT INTO command_hits (user_id, at) VALUES (?, ?)", (user_id, now))
        db.execute("DELETE FROM command_hits WHERE rowid IN (SELECT rowid FROM command_hits WHERE at <= ? LIMIT ?)",
                   (now - max(per, PRUNE_AFTER), PRUNE_BATCH))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return wait


def rate_answer(found: int, oldest: float | None, count: int, per: float, now: float) -> float:
    """hit_rate's answer from the user's hits in the window: as cogs/common.py's RateLimiter.hit."""
    if found >= count:
        return max(0.0, oldest + per - now) if oldest is not None else per
    return 0.0


def process_record(row: Any) -> ProcessRecord:
    """A row of processes (either engine's) as a ProcessRecord."""
    return ProcessRecord(name=row["name"], info=json.loads(row["info"]), started_at=row["started_at"],
                         seen_at=row["seen_at"])
