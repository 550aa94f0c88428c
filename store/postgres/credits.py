"""PostgreSQL twins of store/credits.py's queries (see store/postgres/twins.py). Each change reads the
balance and then writes the entry and the new balance: in a transaction holding an advisory lock on the
person in that server (a gift locks both people, in id order, so two gifts cannot wait on each other),
and the unique indexes make a job's reservation, its settlement and a payment's credit happen once.
"""

from __future__ import annotations

import time

import asyncpg

from store import credits as sqlite_credits
from store.credits import ENTRY_COLUMNS, Entry, Reserved
from store.postgres.jobs import lock
from store.postgres.text import clean
from store.postgres.twins import twin_of

CREDITS_OF_PERSON = 0x43524544  # "CRED": a person's balance in a server


@twin_of(sqlite_credits._select_balance)
async def _select_balance(conn: asyncpg.Connection, guild_id: int, user_id: int) -> int:
    balance = await conn.fetchval("SELECT balance FROM credit_balances WHERE guild_id = $1 AND user_id = $2",
                                  guild_id, user_id)
    return int(balance) if balance is not None else 0


async def _append(conn: asyncpg.Connection, guild_id: int, user_id: int, kind: str, amount: int, reason: str,
                  job_id: int | None, payment_id: str | None, actor_id: int | None) -> Entry:
    """Inside a transaction holding the person's lock: the entry and the balance it leaves."""
    balance = await _select_balance(conn, guild_id, user_id) + amount
    now = time.time()
    await conn.execute("INSERT INTO credit_balances (guild_id, user_id, balance, updated_at) VALUES ($1, $2, $3, $4) "
                       "ON CONFLICT (guild_id, user_id) DO UPDATE SET balance = excluded.balance, "
                       "updated_at = excluded.updated_at", guild_id, user_id, balance, now)
    reason = clean(reason[:300])
    new_id = await conn.fetchval(
        f"INSERT INTO credit_entries ({ENTRY_COLUMNS.removeprefix('id, ')}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        guild_id, user_id, kind, amount, balance, reason, job_id, clean(payment_id), actor_id, now)
    return Entry(new_id, guild_id, user_id, kind, amount, balance, reason, job_id, clean(payment_id), actor_id, now)


@twin_of(sqlite_credits._add)
async def _add(conn: asyncpg.Connection, guild_id: int, user_id: int, kind: str, amount: int, reason: str,
               job_id: int | None, payment_id: str | None, actor_id: int | None, floor: int | None) -> Entry | None:
    async with conn.transaction():
        await lock(conn, CREDITS_OF_PERSON, guild_id, user_id)
        if payment_id is not None and await conn.fetchval(
                "SELECT 1 FROM credit_entries WHERE payment_id = $1 AND kind = $2", clean(payment_id), kind):
            return None
        if floor is not None and await _select_balance(conn, guild_id, user_id) + amount < floor:
            return None
        return await _append(conn, guild_id, user_id, kind, amount, reason, job_id, payment_id, actor_id)


@twin_of(sqlite_credits._gift)
async def _gift(conn: asyncpg.Connection, guild_id: int, giver_id: int, receiver_id: int, amount: int) -> Entry | None:
    async with conn.transaction():
        for person in sorted((giver_id, receiver_id)):
            await lock(conn, CREDITS_OF_PERSON, guild_id, person)
        if await _select_balance(conn, guild_id, giver_id) < amount:
            return None
        given = await _append(conn, guild_id, giver_id, "gift", -amount, f"a gift to <@{receiver_id}>", None, None,
                              giver_id)
        await _append(conn, guild_id, receiver_id, "gift", amount, f"a gift from <@{giver_id}>", None, None, giver_id)
        return given


@twin_of(sqlite_credits._reserve)
async def _reserve(conn: asyncpg.Connection, guild_id: int, user_id: int, job_id: int, price: int,
                   reason: str) -> Reserved:
    async with conn.transaction():
        await lock(conn, CREDITS_OF_PERSON, guild_id, user_id)
        found = await _select_entry(conn, "job_id = $1 AND kind = 'reserve'", job_id)
        if found is not None:
            return Reserved(found, await _select_balance(conn, guild_id, user_id))
        balance = await _select_balance(conn, guild_id, user_id)
        if balance < price:
            return Reserved(None, balance)
        entry = await _append(conn, guild_id, user_id, "reserve", -price, reason, job_id, None, None)
        return Reserved(entry, entry.balance)


@twin_of(sqlite_credits._settle)
async def _settle(conn: asyncpg.Connection, job_id: int, succeeded: bool, reason: str) -> Entry | None:
    async with conn.transaction():
        reserved = await _select_entry(conn, "job_id = $1 AND kind = 'reserve'", job_id)
        if reserved is None:
            return None
        await lock(conn, CREDITS_OF_PERSON, reserved.guild_id, reserved.user_id)
        if await _select_entry(conn, "job_id = $1 AND kind IN ('spend', 'refund')", job_id):
            return None
        kind, amount = ("spend", 0) if succeeded else ("refund", -reserved.amount)
        return await _append(conn, reserved.guild_id, reserved.user_id, kind, amount, reason, job_id, None, None)


async def _select_entry(conn: asyncpg.Connection, where: str, *args: object) -> Entry | None:
    row = await conn.fetchrow(f"SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE {where} ORDER BY id LIMIT 1", *args)
    return None if row is None else Entry(*row)


@twin_of(sqlite_credits._select_last)
async def _select_last(conn: asyncpg.Connection, guild_id: int, user_id: int, kind: str) -> Entry | None:
    row = await conn.fetchrow(f"SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE guild_id = $1 AND user_id = $2 "
                              "AND kind = $3 ORDER BY id DESC LIMIT 1", guild_id, user_id, kind)
    return None if row is None else Entry(*row)


@twin_of(sqlite_credits._select_history)
async def _select_history(conn: asyncpg.Connection, guild_id: int, user_id: int, limit: int) -> list[Entry]:
    rows = await conn.fetch(f"SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE guild_id = $1 AND user_id = $2 "
                            "ORDER BY id DESC LIMIT $3", guild_id, user_id, limit)
    return [Entry(*row) for row in rows]
