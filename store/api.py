"""What the store keeps for the HTTP API (web/api.py) and its webhooks (web/webhooks.py): API keys, which
jobs each key started, and webhook deliveries that must survive a restart. Part of store.Store; the
tables are its migration 8. Every call runs on the store's one worker thread.

A key is shown once, when it is made, and never stored: the table keeps its SHA-256 (to find it) and
its first 8 characters (to show which key a row is). A key is "cfb_" and 43 URL-safe characters (32
random bytes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

KEY_PREFIX = "cfb_"
PREFIX_CHARS = 8  # the part of a key kept in the clear, to tell keys apart
KEY_MAX = 200  # characters: a longer "key" is not hashed, just refused
ERROR_MAX = 500  # characters of a delivery's last error kept
CLAIM_LEASE = 60.0  # seconds a delivery due_deliveries handed out is not handed out again, unless marked sooner

MIGRATION = """
CREATE TABLE api_keys (id INTEGER PRIMARY KEY, guild_id INTEGER, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
                       prefix TEXT NOT NULL, created_by INTEGER NOT NULL, created_at REAL NOT NULL, revoked_at REAL,
                       webhook_url TEXT, webhook_secret TEXT);
CREATE INDEX api_keys_by_guild ON api_keys (guild_id, created_at);
CREATE TABLE api_jobs (job_id INTEGER PRIMARY KEY REFERENCES jobs (id), key_id INTEGER NOT NULL REFERENCES api_keys (id),
                       created_at REAL NOT NULL);
CREATE INDEX api_jobs_by_key ON api_jobs (key_id, job_id);
CREATE TABLE webhook_deliveries (id INTEGER PRIMARY KEY, key_id INTEGER NOT NULL REFERENCES api_keys (id),
                                 event TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                                 next_at REAL, delivered_at REAL, last_error TEXT, created_at REAL NOT NULL);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX webhook_deliveries_by_key ON webhook_deliveries (key_id, id);
"""
# api_jobs: the jobs a key started (its "own" generations). webhook_deliveries: next_at is when the next
# attempt is due, NULL once delivered (delivered_at set) or given up (last_error says why). due_deliveries
# claims what it returns: their next_at moves CLAIM_LEASE seconds on, so no other sender (another bot process,
# on PostgreSQL) takes them meanwhile; mark_delivery then sets it, and a sender that died leaves them due again.


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: never the key itself."""

    id: int
    guild_id: int | None  # the Discord server whose queue, limits and rules its jobs count against
    name: str
    prefix: str  # the key's first 8 characters, to show
    created_by: int  # the Discord user who made it
    created_at: float
    revoked_at: float | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery that is due, with where it goes as the key says now."""

    id: int
    key_id: int
    event: str
    payload: dict[str, Any]
    attempts: int  # made so far
    next_at: float | None
    url: str | None  # the key's webhook now (None: removed since)
    secret: str | None = field(repr=False)
    revoked: bool  # the key was revoked since


def hash_key(plaintext: str) -> str:
    """The SHA-256 hex of a key, as stored."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh key: "cfb_" and a random 32-byte URL-safe token."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiStore:
    """The methods store.Store gains for API keys, their jobs and webhook deliveries."""

    # --- keys -----------------------------------------------------------------------------

    async def create_key(self, guild_id: int | None, name: str, created_by: int) -> tuple[int, str]:
        """Make a key for `guild_id`; returns (key id, the key). The key is shown once: only its hash is kept."""
        plaintext = new_key()
        key_id = await self._run(_create_key, guild_id, name, created_by, plaintext)
        return key_id, plaintext

    async def revoke_key(self, key_id: int, guild_id: int | None = None) -> bool:
        """Revoke a key (of `guild_id`, when given); its pending webhook deliveries are dropped. True when
        it was revoked now, False when there is no such (active) key."""
        return await self._run(_revoke_key, key_id, guild_id, time.time())

    async def key_by_plaintext(self, plaintext: str) -> ApiKey | None:
        """The key row for a presented key (revoked ones too: check `revoked`), or None."""
        if not isinstance(plaintext, str) or not plaintext or len(plaintext) > KEY_MAX:
            return None
        return await self._run(_key_by_hash, hash_key(plaintext))

    async def key(self, key_id: int) -> ApiKey | None:
        return await self._run(_key_by_id, key_id)

    async def keys(self, guild_id: int | None) -> list[ApiKey]:
        """A server's keys, revoked ones too, newest first."""
        return await self._run(_keys, guild_id)

    async def set_webhook(self, key_id: int, url: str | None, secret: str | None) -> bool:
        """Set (or, with url None, remove) a key's webhook URL and signing secret; False without such a key.
        Check the URL first (webhooks.check_url)."""
        if url is not None and not secret:
            raise ValueError("a webhook needs a secret")
        return await self._run(_set_webhook, key_id, url, secret if url is not None else None)

    # --- the jobs a key started -------------------------------------------------------------

    async def add_api_job(self, key_id: int, job_id: int) -> None:
        """Record that `key_id` started job `job_id` (call right after add_job)."""
        await self._run(_add_api_job, key_id, job_id, time.time())

    async def api_job_key(self, job_id: int) -> int | None:
        """The key that started a job, or None for a job started in Discord."""
        return await self._run(_api_job_key, job_id)

    async def api_job_ids(self, key_id: int, limit: int, before: int | None = None) -> list[int]:
        """The ids of the jobs a key started, newest first, below `before` when given."""
        return await self._run(_api_job_ids, key_id, limit, before)

    # --- webhook deliveries -----------------------------------------------------------------

    async def queue_delivery(self, key_id: int, event: str, payload: dict[str, Any], now: float | None = None) -> int:
        """Queue a delivery, due at once; returns its id."""
        return await self._run(_queue_delivery, key_id, event, payload, time.time() if now is None else now)

    async def due_deliveries(self, now: float, limit: int = 20) -> list[Delivery]:
        """Deliveries due at `now`, the longest-waiting first, claimed: not due again for CLAIM_LEASE seconds
        unless mark_delivery says so sooner."""
        return await self._run(_due_deliveries, now, limit)

    async def mark_delivery(self, delivery_id: int, *, delivered: bool, now: float, next_at: float | None = None,
                            error: str | None = None) -> None:
        """Record an attempt: delivered, or failed with `error` and the next attempt at `next_at` (None:
        given up)."""
        await self._run(_mark_delivery, delivery_id, delivered, now, next_at, error)

    async def deliveries(self, key_id: int, limit: int = 10) -> list[dict[str, Any]]:
        """A key's newest deliveries: {"id", "event", "job_id", "attempts", "state" ("pending" |
        "delivered" | "failed"), "next_at", "delivered_at", "last_error", "created_at"}."""
        return await self._run(_deliveries, key_id, limit)

    async def prune_deliveries(self, before: float) -> int:
        """Forget finished deliveries (delivered or given up) made before `before`; how many."""
        return await self._run(_prune_deliveries, before)


# --- everything below runs on the worker thread ---------------------------------------------

_KEY_COLUMNS = "id, guild_id, name, prefix, created_by, created_at, revoked_at, webhook_url, webhook_secret"


def _key(row: sqlite3.Row | tuple | None) -> ApiKey | None:
    return None if row is None else ApiKey(*row)


def _create_key(db: sqlite3.Connection, guild_id: int | None, name: str, created_by: int, plaintext: str) -> int:
    cursor = db.execute("INSERT INTO api_keys (guild_id, name, key_hash, prefix, created_by, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (guild_id, name, hash_key(plaintext), plaintext[:PREFIX_CHARS], created_by, time.time()))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _revoke_key(db: sqlite3.Connection, key_id: int, guild_id: int | None, now: float) -> bool:
    sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
    args: tuple[Any, ...] = (now, key_id)
    if guild_id is not None:
        sql, args = sql + " AND guild_id = ?", (*args, guild_id)
    if db.execute(sql, args).rowcount == 0:
        return False
    db.execute("UPDATE webhook_deliveries SET next_at = NULL, last_error = 'the API key was revoked' "
               "WHERE key_id = ? AND next_at IS NOT NULL", (key_id,))
    return True


def _key_by_hash(db: sqlite3.Connection, wanted: str) -> ApiKey | None:
    row = db.execute(f"SELECT {_KEY_COLUMNS}, key_hash FROM api_keys WHERE key_hash = ?", (wanted,)).fetchone()
    # The index finds the row; the comparison that decides is constant-time all the same.
    if row is None or not hmac.compare_digest(str(row[-1]).encode("ascii"), wanted.encode("ascii")):
        return None
    return _key(tuple(row)[:-1])


def _key_by_id(db: sqlite3.Connection, key_id: int) -> ApiKey | None:
    return _key(db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone())


def _keys(db: sqlite3.Connection, guild_id: int | None) -> list[ApiKey]:
    rows = db.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE guild_id IS ? ORDER BY created_at DESC, id DESC",
                      (guild_id,)).fetchall()
    return [ApiKey(*row) for row in rows]


def _set_webhook(db: sqlite3.Connection, key_id: int, url: str | None, secret: str | None) -> bool:
    return db.execute("UPDATE api_keys SET webhook_url = ?, webhook_secret = ? WHERE id = ?",
                      (url, secret, key_id)).rowcount > 0


def _add_api_job(db: sqlite3.Connection, key_id: int, job_id: int, now: float) -> None:
    db.execute("INSERT INTO api_jobs (job_id, key_id, created_at) VALUES (?, ?, ?)", (job_id, key_id, now))


def _api_job_key(db: sqlite3.Connection, job_id: int) -> int | None:
    row = db.execute("SELECT key_id FROM api_jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else row[0]


def _api_job_ids(db: sqlite3.Connection, key_id: int, limit: int, before: int | None) -> list[int]:
    rows = db.execute("SELECT job_id FROM api_jobs WHERE key_id = ? AND job_id < ? ORDER BY job_id DESC LIMIT ?",
                      (key_id, before if before is not None else 2**63 - 1, limit)).fetchall()
    return [row[0] for row in rows]


def _queue_delivery(db: sqlite3.Connection, key_id: int, event: str, payload: dict[str, Any], now: float) -> int:
    cursor = db.execute("INSERT INTO webhook_deliveries (key_id, event, payload, next_at, created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (key_id, event, json.dumps(payload, separators=(",", ":")), now, now))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _due_deliveries(db: sqlite3.Connection, now: float, limit: int) -> list[Delivery]:
    db.execute("BEGIN IMMEDIATE")  # read and claimed in one step
    try:
        rows = db.execute(
            "SELECT d.id, d.key_id, d.event, d.payload, d.attempts, d.next_at, k.webhook_url, k.webhook_secret, "
            "k.revoked_at IS NOT NULL FROM webhook_deliveries AS d JOIN api_keys AS k ON k.id = d.key_id "
            "WHERE d.next_at IS NOT NULL AND d.next_at <= ? ORDER BY d.next_at, d.id LIMIT ?", (now, limit)).fetchall()
        db.executemany("UPDATE webhook_deliveries SET next_at = ? WHERE id = ?",
                       [(now + CLAIM_LEASE, row[0]) for row in rows])
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return [Delivery(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7], bool(row[8]))
            for row in rows]


def _mark_delivery(db: sqlite3.Connection, delivery_id: int, delivered: bool, now: float, next_at: float | None,
                   error: str | None) -> None:
    if delivered:
        db.execute("UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = ?, next_at = NULL, "
                   "last_error = NULL WHERE id = ?", (now, delivery_id))
    else:
        db.execute("UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
                   (next_at, (error or "failed")[:ERROR_MAX], delivery_id))


def _deliveries(db: sqlite3.Connection, key_id: int, limit: int) -> list[dict[str, Any]]:
    rows = db.execute(f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE key_id = ? ORDER BY id DESC LIMIT ?",
                      (key_id, limit)).fetchall()
    return [delivery_row(row) for row in rows]


DELIVERY_COLUMNS = "id, event, payload, attempts, next_at, delivered_at, last_error, created_at"


def delivery_row(row: Any) -> dict[str, Any]:
    """A row of DELIVERY_COLUMNS as `deliveries` shows it (both engines)."""
    state = "delivered" if row[5] is not None else "pending" if row[4] is not None else "failed"
    job_id = json.loads(row[2]).get("id")
    return {"id": row[0], "event": row[1], "job_id": job_id if isinstance(job_id, int) else None,
            "attempts": row[3], "state": state, "next_at": row[4], "delivered_at": row[5],
            "last_error": row[6], "created_at": row[7]}


def _prune_deliveries(db: sqlite3.Connection, before: float) -> int:
    return db.execute("DELETE FROM webhook_deliveries WHERE next_at IS NULL AND created_at < ?", (before,)).rowcount
