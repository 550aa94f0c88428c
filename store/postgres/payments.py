"""PostgreSQL twins of store/payments.py's queries (see store/postgres/twins.py), and its migration (14).

Nothing here reads and then writes: a session is recorded and an event noted with ON CONFLICT DO NOTHING,
a session completed and an event finished with a conditional UPDATE, so no lock is needed for two bot
processes (or two deliveries of one event) to agree.
"""

from __future__ import annotations

import time

import asyncpg

from store import payments as sqlite_payments
from store.payments import SESSION_COLUMNS, CheckoutSession
from store.postgres.text import clean
from store.postgres.twins import twin_of

MIGRATION = """
CREATE TABLE checkout_sessions (
    session_id TEXT PRIMARY KEY,
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    pack TEXT NOT NULL,
    credits BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    payment_id TEXT,
    completed_at DOUBLE PRECISION
);
CREATE UNIQUE INDEX checkout_sessions_by_payment ON checkout_sessions (payment_id) WHERE payment_id IS NOT NULL;
CREATE TABLE payment_events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    payment_id TEXT,
    created DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    handled_at DOUBLE PRECISION
);
CREATE INDEX payment_events_by_payment ON payment_events (payment_id);
"""


@twin_of(sqlite_payments._insert_session)
async def _insert_session(conn: asyncpg.Connection, session: CheckoutSession) -> CheckoutSession:
    await conn.execute(
        f"INSERT INTO checkout_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL) "
        "ON CONFLICT (session_id) DO NOTHING",
        clean(session.session_id), session.guild_id, session.user_id, clean(session.pack), session.credits,
        session.amount, clean(session.currency), time.time())
    return await _select_session(conn, "session_id", session.session_id)


@twin_of(sqlite_payments._select_session)
async def _select_session(conn: asyncpg.Connection, column: str, value: str) -> CheckoutSession | None:
    row = await conn.fetchrow(f"SELECT {SESSION_COLUMNS} FROM checkout_sessions WHERE {column} = $1", clean(value))
    return None if row is None else CheckoutSession(*row)


@twin_of(sqlite_payments._complete_session)
async def _complete_session(conn: asyncpg.Connection, session_id: str, payment_id: str) -> CheckoutSession | None:
    await conn.execute("UPDATE checkout_sessions SET payment_id = $1, completed_at = $2 "
                       "WHERE session_id = $3 AND payment_id IS NULL",
                       clean(payment_id), time.time(), clean(session_id))
    return await _select_session(conn, "session_id", session_id)


@twin_of(sqlite_payments._note_event)
async def _note_event(conn: asyncpg.Connection, event_id: str, type: str, payment_id: str | None,
                      created: float) -> bool:
    await conn.execute(
        "INSERT INTO payment_events (event_id, type, payment_id, created, received_at) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (event_id) DO NOTHING", clean(event_id), clean(type), clean(payment_id), created, time.time())
    handled = await conn.fetchval("SELECT handled_at FROM payment_events WHERE event_id = $1", clean(event_id))
    return handled is not None


@twin_of(sqlite_payments._finish_event)
async def _finish_event(conn: asyncpg.Connection, event_id: str) -> None:
    await conn.execute("UPDATE payment_events SET handled_at = $1 WHERE event_id = $2 AND handled_at IS NULL",
                       time.time(), clean(event_id))


@twin_of(sqlite_payments._select_event_types)
async def _select_event_types(conn: asyncpg.Connection, payment_id: str) -> list[str]:
    rows = await conn.fetch("SELECT type FROM payment_events WHERE payment_id = $1 ORDER BY created, received_at",
                            clean(payment_id))
    return [row[0] for row in rows]
