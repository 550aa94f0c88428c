"""PostgreSQL twins of store/processes.py's queries (see store/postgres/twins.py).

hit_rate is atomic across the processes sharing the database: each call is one transaction that first
takes a transaction-level advisory lock of its user, so two processes counting the same person's hits
take turns (READ COMMITTED: the second one's statements see the first one's committed hit). The lock
uses the two-int form pg_advisory_xact_lock(RATE_LOCK_CLASS, <32 bits of the user id>): PostgreSQL
keeps two-int keys apart from single-bigint keys (pg_locks.objsubid 2 against 1), so it can never meet
the migrations' lock (store/postgres/schema.py) or the store's per-user bigint keys
(store/postgres/jobs.py); among two-int keys, RATE_LOCK_CLASS is this module's own (cluster/ uses
"CLUS"). Two users sharing those 32 bits merely take turns.
"""

import asyncpg

from store import processes as sqlite_processes
from store.postgres.twins import twin_of
from store.processes import PRUNE_AFTER, PRUNE_BATCH, ProcessRecord, process_record, rate_answer

RATE_LOCK_CLASS = 0x52415445  # "RATE": the classid of the rate limit's per-user advisory locks
LOCK_TIMEOUT_MS = 5000  # a user's lock is held for a few statements: waiting longer means trouble


def rate_lock_key(user_id: int) -> int:
    """The objid of a user's advisory lock: 32 bits of the id, as PostgreSQL's signed int4."""
    folded = (user_id ^ (user_id >> 32)) & 0xFFFFFFFF
    return folded - (1 << 32) if folded >= 1 << 31 else folded


@twin_of(sqlite_processes._heartbeat)
async def _heartbeat(conn: asyncpg.Connection, name: str, info: str, now: float, started_at: float | None) -> None:
    await conn.execute(
        "INSERT INTO processes (name, info, started_at, seen_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (name) DO UPDATE SET info = EXCLUDED.info, seen_at = EXCLUDED.seen_at, "
        "started_at = CASE WHEN $5 THEN EXCLUDED.started_at ELSE processes.started_at END",
        name, info, now if started_at is None else started_at, now, started_at is not None)


@twin_of(sqlite_processes._processes)
async def _processes(conn: asyncpg.Connection, seen_since: float) -> list[ProcessRecord]:
    rows = await conn.fetch("SELECT name, info, started_at, seen_at FROM processes WHERE seen_at >= $1 "
                            "ORDER BY started_at DESC, name", seen_since)
    return [process_record(row) for row in rows]


@twin_of(sqlite_processes._forget_process)
async def _forget_process(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("DELETE FROM processes WHERE name = $1", name)


@twin_of(sqlite_processes._hit_rate)
async def _hit_rate(conn: asyncpg.Connection, user_id: int, count: int, per: float, now: float) -> float:
    # Everyone's stale hits first, outside the user's transaction: SKIP LOCKED never waits, so this
    # cannot deadlock with another process's call.
    await conn.execute("DELETE FROM command_hits WHERE ctid IN (SELECT ctid FROM command_hits WHERE at <= $1 "
                       "LIMIT $2 FOR UPDATE SKIP LOCKED)", now - max(per, PRUNE_AFTER), PRUNE_BATCH)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", RATE_LOCK_CLASS, rate_lock_key(user_id))
        await conn.execute("DELETE FROM command_hits WHERE user_id = $1 AND at <= $2", user_id, now - per)
        row = await conn.fetchrow("SELECT count(*) AS found, min(at) AS oldest FROM command_hits WHERE user_id = $1",
                                  user_id)
        wait = rate_answer(row["found"], row["oldest"], count, per, now)
        if wait == 0.0:
            await conn.execute("INSERT INTO command_hits (user_id, at) VALUES ($1, $2)", user_id, now)
    return wait
