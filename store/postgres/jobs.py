"""PostgreSQL twins of store/jobs.py's queries (see store/postgres/twins.py): the same rows, return values
and errors as the SQLite functions they stand in for.

SQLite's one worker thread ran each read-then-write alone; here several bot processes share the database,
so each such sequence runs in a transaction that first takes a lock: add_job's count of the user's active
jobs and its insert (an advisory lock on the user, `lock`), update_job's conditional update and its read
back (the job's row, FOR UPDATE).

Advisory lock keys: `lock` uses PostgreSQL's two-key form (two int4), whose keys never conflict with the
one-bigint form that store/postgres/schema.py's migration lock uses (pg_locks tells them apart by
objsubid 2 and 1). The first key (classid) names what is locked, four ASCII letters as other modules
do ("RATE" in store/postgres/processes.py, "CLUS" in cluster/lease.py); the second folds the locked
thing's ids into 32 bits (CRC-32), so two users may share a key: they then wait for each other, never
see each other's rows.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import fields, replace
from typing import Any, TypeVar

import asyncpg

from store import jobs as sqlite_jobs
from store.postgres.text import clean
from store.postgres.twins import twin_of
from store.records import (ACTIVE_STATES, GENERATION_COLUMNS, JOB_COLUMNS, JOB_STATES, Generation, Job, LimitReached,
                           StoreError, encode, record)

# The first key of `lock`: what the lock guards.
ACTIVE_JOBS_OF_USER = 0x4A4F4253  # "JOBS": add_job's count of a user's active jobs (here)
STYLES_OF_OWNER = 0x5354594C  # "STYL": save_style's count of an owner's styles in a server (people.py)

D = TypeVar("D")  # a record (dataclass) with an `id` field


async def lock(conn: asyncpg.Connection, kind: int, *ids: int) -> None:
    """Inside a transaction: wait for, then hold until its end, the advisory lock on `ids` for `kind`.

    The wait is bounded by the pool's statement timeout (store/postgres/engine.py)."""
    folded = zlib.crc32(":".join(str(part) for part in ids).encode())  # 0 to 2**32 - 1; int4 is signed
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", kind, folded - (1 << 32) if folded >> 31 else folded)


@twin_of(sqlite_jobs._insert_job)
async def _insert_job(conn: asyncpg.Connection, job: Job, active_limit: int | None = None) -> Job:
    now = time.time()
    job = replace(job, created_at=now, updated_at=now)
    if active_limit is None:
        return await insert(conn, "jobs", job)
    async with conn.transaction():
        await lock(conn, ACTIVE_JOBS_OF_USER, job.user_id)
        if (count := await _count_active(conn, job.user_id)) >= active_limit:
            raise LimitReached(count)
        return await insert(conn, "jobs", job)


@twin_of(sqlite_jobs._select_job)
async def _select_job(conn: asyncpg.Connection, job_id: int, *, for_update: bool = False) -> Job | None:
    sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1" + (" FOR UPDATE" if for_update else "")
    row = await conn.fetchrow(sql, job_id)
    return None if row is None else record(Job, row)


@twin_of(sqlite_jobs._update_job)
async def _update_job(conn: asyncpg.Connection, job_id: int, changes: dict[str, Any],
                      states: tuple[str, ...] | None) -> Job:
    values = {name: encode(name, clean(value)) for name, value in changes.items()}
    values["updated_at"] = time.time()
    assignments = ", ".join(f"{name} = ${number}" for number, name in enumerate(values, start=2))
    async with conn.transaction():
        # The row stays locked until the end, so the state checked is the state changed and returned.
        job = await _select_job(conn, job_id, for_update=True)
        if job is None:
            raise StoreError(f"There is no job {job_id}")
        if states and job.state not in states:
            return job
        row = await conn.fetchrow(f"UPDATE jobs SET {assignments} WHERE id = $1 RETURNING {JOB_COLUMNS}",
                                  job_id, *values.values())
    return record(Job, row)


@twin_of(sqlite_jobs._select_jobs_in)
async def _select_jobs_in(conn: asyncpg.Connection, states: tuple[str, ...]) -> list[Job]:
    rows = await conn.fetch(f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = ANY($1::text[]) ORDER BY created_at, id",
                            list(states))
    return [record(Job, row) for row in rows]


@twin_of(sqlite_jobs._count_active)
async def _count_active(conn: asyncpg.Connection, user_id: int) -> int:
    return await conn.fetchval("SELECT count(*) FROM jobs WHERE user_id = $1 AND state = ANY($2::text[])",
                               user_id, list(ACTIVE_STATES))


@twin_of(sqlite_jobs._count_by_state)
async def _count_by_state(conn: asyncpg.Connection) -> dict[str, int]:
    counts = dict.fromkeys(JOB_STATES, 0)
    counts.update((row["state"], row["count"]) for row in
                  await conn.fetch("SELECT state, count(*) AS count FROM jobs GROUP BY state"))
    return counts


@twin_of(sqlite_jobs._insert_generation)
async def _insert_generation(conn: asyncpg.Connection, generation: Generation) -> Generation:
    return await insert(conn, "generations", replace(generation, created_at=time.time()))


@twin_of(sqlite_jobs._insert_result)
async def _insert_result(conn: asyncpg.Connection, job_id: int, generation: Generation,
                         states: tuple[str, ...]) -> tuple[Job, Generation]:
    async with conn.transaction():
        generation = await _insert_generation(conn, generation)
        job = await _update_job(conn, job_id, {"state": "delivering", "generation_id": generation.id}, states)
    return job, generation


@twin_of(sqlite_jobs._advance_job)
async def _advance_job(conn: asyncpg.Connection, job_id: int, next_job: Job) -> Job | None:
    async with conn.transaction():
        job = await _select_job(conn, job_id, for_update=True)  # locked: one process advances it
        if job is None or job.state != "delivering":
            return None
        stored = await _insert_job(conn, next_job)
        await _update_job(conn, job_id, {"state": "done", "request": sqlite_jobs.followed(job.request, stored.id)},
                          ("delivering",))
    return stored


@twin_of(sqlite_jobs._select_generation)
async def _select_generation(conn: asyncpg.Connection, generation_id: int) -> Generation | None:
    row = await conn.fetchrow(f"SELECT {GENERATION_COLUMNS} FROM generations WHERE id = $1", generation_id)
    return None if row is None else record(Generation, row)


@twin_of(sqlite_jobs._select_generation_by_message)
async def _select_generation_by_message(conn: asyncpg.Connection, message_id: int) -> Generation | None:
    sql = f"SELECT {GENERATION_COLUMNS} FROM generations WHERE message_id = $1 ORDER BY id LIMIT 1"
    row = await conn.fetchrow(sql, message_id)
    return None if row is None else record(Generation, row)


@twin_of(sqlite_jobs._update_generation_message)
async def _update_generation_message(conn: asyncpg.Connection, generation_id: int, message_id: int,
                                     attachment_urls: list[str]) -> None:
    updated = await conn.fetchval(
        "UPDATE generations SET message_id = $1, attachment_urls = $2 WHERE id = $3 RETURNING id",
        message_id, encode("attachment_urls", clean(attachment_urls)), generation_id)
    if updated is None:
        raise StoreError(f"There is no generation {generation_id}")


@twin_of(sqlite_jobs._select_pending_files)
async def _select_pending_files(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT generations.files FROM generations JOIN jobs ON jobs.id = generations.job_id"
        " WHERE jobs.state = 'delivering' ORDER BY generations.id")
    return [name for (files,) in rows for name in json.loads(files)]


async def insert(conn: asyncpg.Connection, table: str, row: D) -> D:
    """Insert every field of the record `row` but id into `table`, whose columns are named after them;
    return `row` as stored: its new id, its text without NULs (store/postgres/text.py)."""
    row = replace(row, **{f.name: clean(getattr(row, f.name)) for f in fields(row) if f.name != "id"})
    values = {f.name: encode(f.name, getattr(row, f.name)) for f in fields(row) if f.name != "id"}
    marks = ", ".join(f"${number}" for number in range(1, len(values) + 1))
    new_id = await conn.fetchval(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({marks}) RETURNING id",
                                 *values.values())
    return replace(row, id=new_id)
