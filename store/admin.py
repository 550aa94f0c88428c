"""What the store keeps for running the bot as a service: the audit log of admin actions, paused
servers, blocked members, drained ComfyUI servers, quotas, blocked terms, mod-log channels, and each
job's GPU time and cost. Part of store.Store; the tables are its migration 7. Every call runs on the
store's one worker thread.
"""

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

MIGRATION = """
CREATE TABLE audit (id INTEGER PRIMARY KEY, guild_id INTEGER NOT NULL, actor_id INTEGER NOT NULL,
                    action TEXT NOT NULL, details TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX audit_by_guild ON audit (guild_id, created_at);
CREATE TABLE controls (kind TEXT NOT NULL, scope TEXT NOT NULL, value TEXT NOT NULL, created_at REAL NOT NULL,
                       PRIMARY KEY (kind, scope)) WITHOUT ROWID;
ALTER TABLE jobs ADD COLUMN gpu_seconds REAL;
ALTER TABLE jobs ADD COLUMN cost REAL;
CREATE INDEX jobs_by_guild ON jobs (guild_id, created_at);
"""
# controls: one row per switch. kind "pause" (scope: guild id, or "all"), "block" (guild:user), "drain"
# (server id), "quota" (scope: user|guild:<guild>:<user>:day|month:images|gpu_seconds|cost), "term"
# (guild:<the term>), "modlog" (guild). value: JSON with what the switch needs (reason, limit, channel).


@dataclass(frozen=True)
class Usage:
    """What a person (or a server) used in a period: results made, GPU seconds, cost."""

    images: int
    gpu_seconds: float
    cost: float


class AdminStore:
    """The methods store.Store gains for admin controls, audit and usage."""

    async def audit(self, guild_id: int, actor_id: int, action: str, **details: Any) -> None:
        await self._run(_audit, guild_id, actor_id, action, details)

    async def audit_log(self, guild_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The newest admin actions in a server, newest first."""
        return await self._run(_audit_log, guild_id, limit)

    async def set_control(self, kind: str, scope: str, value: dict[str, Any] | None) -> bool:
        """Set a switch (value) or clear it (None); True when something changed."""
        return await self._run(_set_control, kind, scope, value)

    async def controls(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every switch of a kind, by scope."""
        return await self._run(_controls, kind)

    async def record_cost(self, job_id: int, gpu_seconds: float, cost: float) -> None:
        await self._run(_record_cost, job_id, gpu_seconds, cost)

    async def gpu_history(self, limit: int = 500) -> list[tuple[str, str, dict[str, Any], float]]:
        """The latest jobs with a measured GPU time, oldest first: (server, kind, request, seconds)."""
        return await self._run(_gpu_history, limit)

    async def usage_by_day(self, guild_id: int | None, since: float) -> list[dict[str, Any]]:
        """Images, GPU seconds and cost per UTC day since `since`, oldest first (days with none left out)."""
        return await self._run(_usage_by_day, guild_id, since)

    async def recent_failures(self, guild_id: int | None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest failed jobs of a server: when, kind, who, and the sentence they were told."""
        return await self._run(_recent_failures, guild_id, limit)

    async def usage(self, guild_id: int | None, user_id: int | None, since: float) -> Usage:
        """Results, GPU seconds and cost since `since`, of a person in a server (user_id) or of the server."""
        return await self._run(_usage, guild_id, user_id, since)

    async def usage_by_person(self, guild_id: int | None, since: float, limit: int = 15) -> list[tuple[int, Usage]]:
        """The people of a server who used the most GPU time since `since`."""
        return await self._run(_usage_by_person, guild_id, since, limit)


def _audit(db: sqlite3.Connection, guild_id: int, actor_id: int, action: str, details: dict[str, Any]) -> None:
    db.execute("INSERT INTO audit (guild_id, actor_id, action, details, created_at) VALUES (?, ?, ?, ?, ?)",
               (guild_id, actor_id, action, json.dumps(details, separators=(",", ":")), time.time()))


def _audit_log(db: sqlite3.Connection, guild_id: int, limit: int) -> list[dict[str, Any]]:
    rows = db.execute("SELECT actor_id, action, details, created_at FROM audit WHERE guild_id = ? "
                      "ORDER BY created_at DESC, id DESC LIMIT ?", (guild_id, limit)).fetchall()
    return [{"actor_id": row[0], "action": row[1], "details": json.loads(row[2]), "at": row[3]} for row in rows]


def _set_control(db: sqlite3.Connection, kind: str, scope: str, value: dict[str, Any] | None) -> bool:
    if value is None:
        return db.execute("DELETE FROM controls WHERE kind = ? AND scope = ?", (kind, scope)).rowcount > 0
    db.execute("INSERT OR REPLACE INTO controls (kind, scope, value, created_at) VALUES (?, ?, ?, ?)",
               (kind, scope, json.dumps(value, separators=(",", ":")), time.time()))
    return True


def _controls(db: sqlite3.Connection, kind: str) -> dict[str, dict[str, Any]]:
    rows = db.execute("SELECT scope, value FROM controls WHERE kind = ?", (kind,)).fetchall()
    return {row[0]: json.loads(row[1]) for row in rows}


def _record_cost(db: sqlite3.Connection, job_id: int, gpu_seconds: float, cost: float) -> None:
    db.execute("UPDATE jobs SET gpu_seconds = ?, cost = ? WHERE id = ?", (gpu_seconds, cost, job_id))


def _gpu_history(db: sqlite3.Connection, limit: int) -> list[tuple[str, str, dict[str, Any], float]]:
    rows = db.execute("SELECT server, kind, request, gpu_seconds FROM jobs WHERE gpu_seconds > 0 AND server IS NOT NULL "
                      "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [(row[0], row[1], json.loads(row[2]), row[3]) for row in reversed(rows)]


def _usage_by_day(db: sqlite3.Connection, guild_id: int | None, since: float) -> list[dict[str, Any]]:
    day = "strftime('%Y-%m-%d', created_at, 'unixepoch')"
    images = dict(db.execute(f"SELECT {day}, SUM(json_array_length(files)) FROM generations "
                             "WHERE guild_id IS ? AND created_at >= ? GROUP BY 1", (guild_id, since)).fetchall())
    rows = db.execute(f"SELECT {day}, COALESCE(SUM(gpu_seconds), 0), COALESCE(SUM(cost), 0) FROM jobs "
                      "WHERE guild_id IS ? AND created_at >= ? GROUP BY 1", (guild_id, since)).fetchall()
    spent = {row[0]: (float(row[1]), float(row[2])) for row in rows}
    return [{"day": day, "images": int(images.get(day) or 0), "gpu_seconds": spent.get(day, (0.0, 0.0))[0],
             "cost": spent.get(day, (0.0, 0.0))[1]} for day in sorted(set(images) | set(spent))]


def _recent_failures(db: sqlite3.Connection, guild_id: int | None, limit: int) -> list[dict[str, Any]]:
    rows = db.execute("SELECT updated_at, kind, user_id, COALESCE(error, '') FROM jobs WHERE guild_id IS ? AND "
                      "state = 'failed' ORDER BY updated_at DESC LIMIT ?", (guild_id, limit)).fetchall()
    return [{"at": row[0], "kind": row[1], "user_id": row[2], "error": row[3]} for row in rows]


def _usage(db: sqlite3.Connection, guild_id: int | None, user_id: int | None, since: float) -> Usage:
    who, args = ("AND user_id = ?", [user_id]) if user_id is not None else ("", [])
    images = db.execute("SELECT COALESCE(SUM(json_array_length(files)), 0) FROM generations "
                        f"WHERE guild_id IS ? AND created_at >= ? {who}", (guild_id, since, *args)).fetchone()[0]
    gpu, cost = db.execute("SELECT COALESCE(SUM(gpu_seconds), 0), COALESCE(SUM(cost), 0) FROM jobs "
                           f"WHERE guild_id IS ? AND created_at >= ? {who}", (guild_id, since, *args)).fetchone()
    return Usage(int(images), float(gpu), float(cost))


def _usage_by_person(db: sqlite3.Connection, guild_id: int | None, since: float, limit: int) -> list[tuple[int, Usage]]:
    images = dict(db.execute("SELECT user_id, SUM(json_array_length(files)) FROM generations "
                             "WHERE guild_id IS ? AND created_at >= ? GROUP BY user_id", (guild_id, since)).fetchall())
    rows = db.execute("SELECT user_id, COALESCE(SUM(gpu_seconds), 0), COALESCE(SUM(cost), 0) FROM jobs "
                      "WHERE guild_id IS ? AND created_at >= ? GROUP BY user_id", (guild_id, since)).fetchall()
    found = [(row[0], Usage(int(images.get(row[0]) or 0), float(row[1]), float(row[2]))) for row in rows]
    return sorted(found, key=lambda item: (-item[1].gpu_seconds, -item[1].images))[:limit]
