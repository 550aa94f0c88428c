"""PostgreSQL twins of store/api.py's queries (see store/postgres/twins.py): the same rows, return values
and errors as the SQLite functions they stand in for.

Several bot processes may send webhooks from one database, so `_due_deliveries` claims what it returns,
in one transaction: it locks the due rows with SELECT ... FOR UPDATE SKIP LOCKED (a row another process is
claiming at that moment is left to it, not waited for) and moves their next_at CLAIM_LEASE seconds on
(store/api.py; SQLite does the same). Each due delivery is thus handed to exactly one process; the attempt's
mark_delivery then sets next_at as the sender decides, and a process that dies mid-attempt leaves the
delivery due again once the lease is over, for any process to retry.

revoke_key revokes the key and drops its pending deliveries in one transaction, so no process sees one
without the other.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

import asyncpg

from store import api as sqlite_api
from store.api import CLAIM_LEASE, ERROR_MAX, PREFIX_CHARS, ApiKey, Delivery, hash_key
from store.postgres.text import clean
from store.postgres.twins import twin_of

_KEY_COLUMNS = sqlite_api._KEY_COLUMNS


def changed(status: str) -> int:
    """The rows a statement changed, from its status ("UPDATE 2", "DELETE 0", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


@twin_of(sqlite_api._create_key)
async def _create_key(conn: asyncpg.Connection, guild_id: int | None, name: str, created_by: int,
                      plaintext: str) -> int:
    return await conn.fetchval("INSERT INTO api_keys (guild_id, name, key_hash, prefix, created_by, created_at) "
                               "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id", guild_id, clean(name),
                               hash_key(plaintext), clean(plaintext[:PREFIX_CHARS]), created_by, time.time())


@twin_of(sqlite_api._revoke_key)
async def _revoke_key(conn: asyncpg.Connection, key_id: int, guild_id: int | None, now: float) -> bool:
    sql = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
    args: tuple[Any, ...] = (now, key_id)
    if guild_id is not None:
        sql, args = sql + " AND guild_id = $3", (*args, guild_id)
    async with conn.transaction():
        if changed(await conn.execute(sql, *args)) == 0:
            return False
        await conn.execute("UPDATE webhook_deliveries SET next_at = NULL, last_error = 'the API key was revoked' "
                           "WHERE key_id = $1 AND next_at IS NOT NULL", key_id)
    return True


@twin_of(sqlite_api._key_by_hash)
async def _key_by_hash(conn: asyncpg.Connection, wanted: str) -> ApiKey | None:
    row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS}, key_hash FROM api_keys WHERE key_hash = $1", wanted)
    # The index finds the row; the comparison that decides is constant-time all the same.
    if row is None or not hmac.compare_digest(str(row[-1]).encode("ascii"), wanted.encode("ascii")):
        return None
    return ApiKey(*tuple(row)[:-1])


@twin_of(sqlite_api._key_by_id)
async def _key_by_id(conn: asyncpg.Connection, key_id: int) -> ApiKey | None:
    row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
    return None if row is None else ApiKey(*row)


@twin_of(sqlite_api._keys)
async def _keys(conn: asyncpg.Connection, guild_id: int | None) -> list[ApiKey]:
    guild, args = ("guild_id IS NULL", []) if guild_id is None else ("guild_id = $1", [guild_id])
    rows = await conn.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE {guild} ORDER BY created_at DESC, id DESC",
                            *args)
    return [ApiKey(*row) for row in rows]


@twin_of(sqlite_api._set_webhook)
async def _set_webhook(conn: asyncpg.Connection, key_id: int, url: str | None, secret: str | None) -> bool:
    return changed(await conn.execute("UPDATE api_keys SET webhook_url = $1, webhook_secret = $2 WHERE id = $3",
                                      clean(url), clean(secret), key_id)) > 0


@twin_of(sqlite_api._add_api_job)
async def _add_api_job(conn: asyncpg.Connection, key_id: int, job_id: int, now: float) -> None:
    await conn.execute("INSERT INTO api_jobs (job_id, key_id, created_at) VALUES ($1, $2, $3)", job_id, key_id, now)


@twin_of(sqlite_api._api_job_key)
async def _api_job_key(conn: asyncpg.Connection, job_id: int) -> int | None:
    return await conn.fetchval("SELECT key_id FROM api_jobs WHERE job_id = $1", job_id)


@twin_of(sqlite_api._api_job_ids)
async def _api_job_ids(conn: asyncpg.Connection, key_id: int, limit: int, before: int | None) -> list[int]:
    rows = await conn.fetch("SELECT job_id FROM api_jobs WHERE key_id = $1 AND job_id < $2 "
                            "ORDER BY job_id DESC LIMIT $3", key_id, before if before is not None else 2**63 - 1, limit)
    return [row[0] for row in rows]


@twin_of(sqlite_api._queue_delivery)
async def _queue_delivery(conn: asyncpg.Connection, key_id: int, event: str, payload: dict[str, Any],
                          now: float) -> int:
    return await conn.fetchval("INSERT INTO webhook_deliveries (key_id, event, payload, next_at, created_at) "
                               "VALUES ($1, $2, $3, $4, $5) RETURNING id", key_id, clean(event),
                               json.dumps(clean(payload), separators=(",", ":")), now, now)


@twin_of(sqlite_api._due_deliveries)
async def _due_deliveries(conn: asyncpg.Connection, now: float, limit: int) -> list[Delivery]:
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT d.id, d.key_id, d.event, d.payload, d.attempts, d.next_at, k.webhook_url, k.webhook_secret, "
            "k.revoked_at IS NOT NULL FROM webhook_deliveries AS d JOIN api_keys AS k ON k.id = d.key_id "
            "WHERE d.next_at IS NOT NULL AND d.next_at <= $1 ORDER BY d.next_at, d.id LIMIT $2 "
            "FOR UPDATE OF d SKIP LOCKED", now, limit)
        if rows:
            await conn.execute("UPDATE webhook_deliveries SET next_at = $1 WHERE id = ANY($2::bigint[])",
                               now + CLAIM_LEASE, [row[0] for row in rows])
    return [Delivery(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7], bool(row[8]))
            for row in rows]


@twin_of(sqlite_api._mark_delivery)
async def _mark_delivery(conn: asyncpg.Connection, delivery_id: int, delivered: bool, now: float, next_at: float | None,
                         error: str | None) -> None:
    if delivered:
        await conn.execute("UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = $1, next_at = NULL, "
                           "last_error = NULL WHERE id = $2", now, delivery_id)
    else:
        await conn.execute("UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = $1, last_error = $2 "
                           "WHERE id = $3", next_at, clean((error or "failed")[:ERROR_MAX]), delivery_id)


@twin_of(sqlite_api._deliveries)
async def _deliveries(conn: asyncpg.Connection, key_id: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {sqlite_api.DELIVERY_COLUMNS} FROM webhook_deliveries WHERE key_id = $1 "
                            "ORDER BY id DESC LIMIT $2", key_id, limit)
    return [sqlite_api.delivery_row(row) for row in rows]


@twin_of(sqlite_api._prune_deliveries)
async def _prune_deliveries(conn: asyncpg.Connection, before: float) -> int:
    return changed(await conn.execute("DELETE FROM webhook_deliveries WHERE next_at IS NULL AND created_at < $1",
                                      before))
