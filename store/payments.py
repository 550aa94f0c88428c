"""Payments (issue 21): the Stripe Checkout sessions people start with /credits buy, and the webhook events
Stripe sent (so a replay or a redelivery credits nothing twice). Part of store.Store; the tables are its
migration 14. Every call runs on the store's one worker thread.

An event is noted when it arrives and marked handled once what it does is done (jobs/payments.py): a
redelivery of an event noted but never finished (the bot stopped in between) is handled again, and what
handling does is itself once-only (the credits ledger takes a payment id once per kind).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

MIGRATION = """
CREATE TABLE checkout_sessions (
    session_id TEXT PRIMARY KEY,          -- Stripe's cs_…
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    pack TEXT NOT NULL,
    credits INTEGER NOT NULL,
    amount INTEGER NOT NULL,              -- in the currency's smallest unit, as Stripe counts it
    currency TEXT NOT NULL,
    created_at REAL NOT NULL,
    payment_id TEXT,                      -- the payment intent (pi_…), once the session is paid
    completed_at REAL
);
CREATE UNIQUE INDEX checkout_sessions_by_payment ON checkout_sessions (payment_id) WHERE payment_id IS NOT NULL;
CREATE TABLE payment_events (
    event_id TEXT PRIMARY KEY,            -- Stripe's evt_…: each handled once
    type TEXT NOT NULL,
    payment_id TEXT,
    created REAL NOT NULL,                -- the event's own time, as Stripe sent it
    received_at REAL NOT NULL,
    handled_at REAL                       -- NULL: noted, not yet (or never completely) handled
);
CREATE INDEX payment_events_by_payment ON payment_events (payment_id);
"""

SESSION_COLUMNS = "session_id, guild_id, user_id, pack, credits, amount, currency, created_at, payment_id, completed_at"


@dataclass(frozen=True)
class CheckoutSession:
    """A Checkout Session the bot opened: who buys which pack, and, once paid, with which payment intent."""

    session_id: str
    guild_id: int
    user_id: int
    pack: str
    credits: int
    amount: int
    currency: str
    created_at: float = 0.0
    payment_id: str | None = None
    completed_at: float | None = None


class PaymentsStore:
    """The methods store.Store gains for payments."""

    async def add_checkout_session(self, session: CheckoutSession) -> CheckoutSession:
        """Record a session just opened (created_at set now); the same id again changes nothing."""
        return await self._run(_insert_session, session)

    async def checkout_session(self, session_id: str) -> CheckoutSession | None:
        return await self._run(_select_session, "session_id", session_id)

    async def checkout_session_of_payment(self, payment_id: str) -> CheckoutSession | None:
        """The paid session whose payment intent is `payment_id`, if the bot opened it."""
        return await self._run(_select_session, "payment_id", payment_id)

    async def complete_checkout_session(self, session_id: str, payment_id: str) -> CheckoutSession | None:
        """Mark a session paid with `payment_id` (the first time only); the session now, None when unknown."""
        return await self._run(_complete_session, session_id, payment_id)

    async def note_payment_event(self, event_id: str, type: str, payment_id: str | None, created: float) -> bool:
        """Note an event as it arrives; True when it was handled already (a replay: do nothing)."""
        return await self._run(_note_event, event_id, type, payment_id, created)

    async def finish_payment_event(self, event_id: str) -> None:
        """Mark a noted event handled: from now on it is a replay."""
        await self._run(_finish_event, event_id)

    async def payment_event_types(self, payment_id: str) -> list[str]:
        """The types of the events noted for a payment intent, oldest first."""
        return await self._run(_select_event_types, payment_id)


def _insert_session(db: sqlite3.Connection, session: CheckoutSession) -> CheckoutSession:
    now = time.time()
    db.execute(f"INSERT INTO checkout_sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL) "
               "ON CONFLICT (session_id) DO NOTHING",
               (session.session_id, session.guild_id, session.user_id, session.pack, session.credits, session.amount,
                session.currency, now))
    return _select_session(db, "session_id", session.session_id)


def _select_session(db: sqlite3.Connection, column: str, value: str) -> CheckoutSession | None:
    row = db.execute(f"SELECT {SESSION_COLUMNS} FROM checkout_sessions WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else CheckoutSession(*row)


def _complete_session(db: sqlite3.Connection, session_id: str, payment_id: str) -> CheckoutSession | None:
    db.execute("UPDATE checkout_sessions SET payment_id = ?, completed_at = ? "
               "WHERE session_id = ? AND payment_id IS NULL", (payment_id, time.time(), session_id))
    return _select_session(db, "session_id", session_id)


def _note_event(db: sqlite3.Connection, event_id: str, type: str, payment_id: str | None, created: float) -> bool:
    db.execute("INSERT INTO payment_events (event_id, type, payment_id, created, received_at) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT (event_id) DO NOTHING", (event_id, type, payment_id, created, time.time()))
    row = db.execute("SELECT handled_at FROM payment_events WHERE event_id = ?", (event_id,)).fetchone()
    return row[0] is not None


def _finish_event(db: sqlite3.Connection, event_id: str) -> None:
    db.execute("UPDATE payment_events SET handled_at = ? WHERE event_id = ? AND handled_at IS NULL",
               (time.time(), event_id))


def _select_event_types(db: sqlite3.Connection, payment_id: str) -> list[str]:
    rows = db.execute("SELECT type FROM payment_events WHERE payment_id = ? ORDER BY created, received_at",
                      (payment_id,)).fetchall()
    return [row[0] for row in rows]
