"""What the store keeps for the work itself: jobs, from waiting to done, and the generations (results)
they produce. Part of store.Store; the tables are its migrations 1 to 4 and 9. Every call runs on the
store's one worker thread.
"""

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import fields, replace
from typing import Any

from store.records import (ACTIVE_STATES, GENERATION_COLUMNS, JOB_COLUMNS, JOB_STATES, UPDATABLE, Generation, Job,
                           LimitReached, StoreError, check_states, encode, record)


class JobStore:
    """The methods store.Store gains for jobs and their generations."""

    # --- jobs -----------------------------------------------------------------------------

    async def add_job(self, job: Job, *, active_limit: int | None = None) -> Job:
        """Store a new job; return a copy with id, created_at and updated_at set.

        With `active_limit`, the user's active jobs are counted and the job inserted in one
        step on the store's thread, so concurrent calls cannot both pass the count: past
        the limit, LimitReached.
        """
        if job.id is not None:
            raise StoreError(f"Job {job.id} is already stored")
        check_states((job.state,))
        return await self._run(_insert_job, job, active_limit)

    async def get_job(self, job_id: int) -> Job | None:
        return await self._run(_select_job, job_id)

    async def update_job(self, job_id: int, *, only_from: Iterable[str] | None = None, **changes: Any) -> Job:
        """Change some of a job's fields in one UPDATE, set updated_at, and return the job. With
        `only_from`, only while the job is in one of those states: otherwise it is returned unchanged
        (a job cancelled meanwhile stays cancelled).

        id, created_at and updated_at cannot be changed; a state must be one of JOB_STATES.
        """
        if unknown := sorted(changes.keys() - UPDATABLE):
            raise StoreError(f"These job fields cannot be updated: {', '.join(unknown)}")
        if "state" in changes:
            check_states((changes["state"],))
        states = tuple(only_from) if only_from is not None else None
        if states:
            check_states(states)
        return await self._run(_update_job, job_id, changes, states)

    async def jobs_in(self, states: Iterable[str]) -> list[Job]:
        """The jobs in any of `states`, oldest first (by created_at, then id)."""
        wanted = tuple(states)
        check_states(wanted)
        return await self._run(_select_jobs_in, wanted)

    async def active_job_count(self, user_id: int) -> int:
        """How many of the user's jobs are in ACTIVE_STATES, for the per-user limit."""
        return await self._run(_count_active, user_id)

    async def job_counts(self) -> dict[str, int]:
        """The number of jobs in each of JOB_STATES, zero included, for /status and logs."""
        return await self._run(_count_by_state)

    # --- generations ----------------------------------------------------------------------

    async def add_generation(self, generation: Generation) -> Generation:
        """Store a new generation; return a copy with id and created_at set."""
        if generation.id is not None:
            raise StoreError(f"Generation {generation.id} is already stored")
        return await self._run(_insert_generation, generation)

    async def add_result(self, job_id: int, generation: Generation, *, only_from: Iterable[str]) -> tuple[Job, Generation]:
        """Store a job's generation and, while the job is in a state of `only_from`, move it to delivering
        with that generation, in one transaction: a process that dies between the two steps cannot leave a
        result recorded without its job knowing it (the next process would record it again). Returns the job
        as it now is (not delivering: it was cancelled meanwhile, and the result is kept unposted) and the
        stored generation."""
        if generation.id is not None:
            raise StoreError(f"Generation {generation.id} is already stored")
        states = tuple(only_from)
        check_states(states)
        return await self._run(_insert_result, job_id, generation, states)

    async def advance_job(self, job_id: int, next_job: Job) -> Job | None:
        """A pipeline's step is done and its next step starts: while the job is delivering, in one
        transaction, mark it done, store `next_job`, and name the next job in the done job's request
        (request["pipeline"]["next"]), so a Cancel on the old message finds the step that runs now.
        Returns the stored next job; None when the job was not delivering (advanced already by a process
        that stopped before it could queue the step, or cancelled): nothing is changed then."""
        return await self._run(_advance_job, job_id, next_job)

    async def get_generation(self, generation_id: int) -> Generation | None:
        return await self._run(_select_generation, generation_id)

    async def generation_by_message(self, message_id: int) -> Generation | None:
        """The result first posted in that message, if any."""
        return await self._run(_select_generation_by_message, message_id)

    async def set_generation_message(
        self, generation_id: int, message_id: int, attachment_urls: list[str]
    ) -> None:
        """Record the message a generation was posted in and its files' CDN urls."""
        await self._run(_update_generation_message, generation_id, message_id, attachment_urls)

    async def pending_files(self) -> list[str]:
        """File names of generations whose job is still delivering, oldest first.

        After a restart the output folder pins these, so they survive until delivered.
        """
        return await self._run(_select_pending_files)


# --- everything below runs on the worker thread ---------------------------------------------


def _insert_job(db: sqlite3.Connection, job: Job, active_limit: int | None = None) -> Job:
    if active_limit is not None and (count := _count_active(db, job.user_id)) >= active_limit:
        raise LimitReached(count)
    now = time.time()
    job = replace(job, created_at=now, updated_at=now)
    return replace(job, id=_insert(db, "jobs", job))


def _select_job(db: sqlite3.Connection, job_id: int) -> Job | None:
    row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else record(Job, row)


def _update_job(db: sqlite3.Connection, job_id: int, changes: dict[str, Any], states: tuple[str, ...] | None) -> Job:
    values = {name: encode(name, value) for name, value in changes.items()}
    values["updated_at"] = time.time()
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    marks = {f"s{index}": state for index, state in enumerate(states or ())}
    only = f" AND state IN ({', '.join(':' + mark for mark in marks)})" if marks else ""
    cursor = db.execute(f"UPDATE jobs SET {assignments} WHERE id = :id{only}", {**values, **marks, "id": job_id})
    job = _select_job(db, job_id)
    if job is None or (cursor.rowcount == 0 and not marks):
        raise StoreError(f"There is no job {job_id}")
    return job


def _select_jobs_in(db: sqlite3.Connection, states: tuple[str, ...]) -> list[Job]:
    marks = ", ".join("?" * len(states))
    rows = db.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created_at, id", states
    )
    return [record(Job, row) for row in rows]


def _count_active(db: sqlite3.Connection, user_id: int) -> int:
    marks = ", ".join("?" * len(ACTIVE_STATES))
    sql = f"SELECT count(*) FROM jobs WHERE user_id = ? AND state IN ({marks})"
    return db.execute(sql, (user_id, *ACTIVE_STATES)).fetchone()[0]


def _count_by_state(db: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys(JOB_STATES, 0)
    counts.update(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    return counts


def _insert_generation(db: sqlite3.Connection, generation: Generation) -> Generation:
    generation = replace(generation, created_at=time.time())
    return replace(generation, id=_insert(db, "generations", generation))


def _insert_result(db: sqlite3.Connection, job_id: int, generation: Generation,
                   states: tuple[str, ...]) -> tuple[Job, Generation]:
    db.execute("BEGIN IMMEDIATE")
    try:
        generation = _insert_generation(db, generation)
        job = _update_job(db, job_id, {"state": "delivering", "generation_id": generation.id}, states)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return job, generation


def _advance_job(db: sqlite3.Connection, job_id: int, next_job: Job) -> Job | None:
    db.execute("BEGIN IMMEDIATE")
    try:
        job = _select_job(db, job_id)
        if job is None or job.state != "delivering":
            db.execute("ROLLBACK")
            return None
        stored = _insert_job(db, next_job)
        _update_job(db, job_id, {"state": "done", "request": followed(job.request, stored.id)}, ("delivering",))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return stored


def followed(request: dict[str, Any], next_id: int | None) -> dict[str, Any]:
    """A pipeline step's request that names the job of the step after it."""
    return {**request, "pipeline": {**request.get("pipeline", {}), "next": next_id}}


def _select_generation(db: sqlite3.Connection, generation_id: int) -> Generation | None:
    sql = f"SELECT {GENERATION_COLUMNS} FROM generations WHERE id = ?"
    row = db.execute(sql, (generation_id,)).fetchone()
    return None if row is None else record(Generation, row)


def _select_generation_by_message(db: sqlite3.Connection, message_id: int) -> Generation | None:
    sql = f"SELECT {GENERATION_COLUMNS} FROM generations WHERE message_id = ? ORDER BY id LIMIT 1"
    row = db.execute(sql, (message_id,)).fetchone()
    return None if row is None else record(Generation, row)


def _update_generation_message(
    db: sqlite3.Connection, generation_id: int, message_id: int, attachment_urls: list[str]
) -> None:
    cursor = db.execute(
        "UPDATE generations SET message_id = ?, attachment_urls = ? WHERE id = ?",
        (message_id, encode("attachment_urls", attachment_urls), generation_id),
    )
    if cursor.rowcount == 0:
        raise StoreError(f"There is no generation {generation_id}")


def _select_pending_files(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT generations.files FROM generations JOIN jobs ON jobs.id = generations.job_id"
        " WHERE jobs.state = 'delivering' ORDER BY generations.id"
    )
    return [name for (files,) in rows for name in json.loads(files)]


def _insert(db: sqlite3.Connection, table: str, row: Job | Generation) -> int:
    """Insert every field of `row` but id into `table`; return the new row's id."""
    values = {f.name: encode(f.name, getattr(row, f.name)) for f in fields(row)}
    del values["id"]
    marks = ", ".join(f":{name}" for name in values)
    sql = f"INSERT INTO {table} ({', '.join(values)}) VALUES ({marks})"
    rowid = db.execute(sql, values).lastrowid
    assert rowid is not None  # set by every successful INSERT
    return rowid
