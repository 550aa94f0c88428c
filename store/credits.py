"""Credits (issue 21): an append-only ledger of whole credits per person per Discord server. Part of
store.Store; the tables are its migration 13. Every call runs on the store's one worker thread.

Each change is one entry (its kind, amount, reason, and the job or payment it belongs to) written in one
transaction with the person's balance, so the balance is kept, never computed, and always equals the
sum of the person's entries (tests/store/test_store_credits.py checks it over generated sequences).

A job's credits: `reserve` takes its price when it is queued (refused, changing nothing, when the balance
is short); `settle` ends the reservation once: a job that made its result spends it (an entry of 0 that
records it), a failed or cancelled one gets it back (a refund). A job is reserved at most once and
settled at most once, whoever asks and however often (unique indexes), so nothing is counted twice.
A payment is credited at most once per payment id (a purchase), and taken back at most once (chargeback).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

KINDS = ("grant", "allowance", "purchase", "reserve", "spend", "refund", "gift", "chargeback", "expiry", "take")

MIGRATION = """
CREATE TABLE credit_entries (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'allowance', 'purchase', 'reserve', 'spend', 'refund', 'gift',
                                       'chargeback', 'expiry', 'take')),
    amount INTEGER NOT NULL,
    balance INTEGER NOT NULL,             -- the person's balance after this entry
    reason TEXT NOT NULL,
    job_id INTEGER,
    payment_id TEXT,
    actor_id INTEGER,                     -- who made the entry (an admin, the giver), if a person
    created_at REAL NOT NULL
);
CREATE INDEX credit_entries_by_person ON credit_entries (guild_id, user_id, id);
CREATE UNIQUE INDEX credit_entries_reserved ON credit_entries (job_id) WHERE kind = 'reserve';
CREATE UNIQUE INDEX credit_entries_settled ON credit_entries (job_id) WHERE kind IN ('spend', 'refund');
CREATE UNIQUE INDEX credit_entries_paid ON credit_entries (payment_id, kind)
    WHERE kind IN ('purchase', 'chargeback');
CREATE TABLE credit_balances (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    balance INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
"""


class CreditsError(ValueError):
    """A change the ledger refuses; str() says why in words."""


@dataclass(frozen=True)
class Entry:
    id: int
    guild_id: int
    user_id: int
    kind: str
    amount: int
    balance: int
    reason: str
    job_id: int | None
    payment_id: str | None
    actor_id: int | None
    created_at: float


@dataclass(frozen=True)
class Reserved:
    """What `reserve` did: `entry` is None when the balance was short (nothing was taken)."""

    entry: Entry | None
    balance: int


ENTRY_COLUMNS = "id, guild_id, user_id, kind, amount, balance, reason, job_id, payment_id, actor_id, created_at"


class CreditsStore:
    """The methods store.Store gains for credits."""

    async def balance(self, guild_id: int, user_id: int) -> int:
        return await self._run(_select_balance, guild_id, user_id)

    async def add_credits(self, guild_id: int, user_id: int, kind: str, amount: int, reason: str, *,
                          actor_id: int | None = None, payment_id: str | None = None,
                          floor: int | None = None) -> Entry | None:
        """Append an entry of `kind` (grant, allowance, purchase, gift, chargeback, expiry, take) and move the
        balance by `amount`. With `floor`, refused (None, nothing changed) when the balance would fall below
        it; a payment id is credited (purchase) and taken back (chargeback) once: None the second time."""
        if kind not in KINDS or kind in ("reserve", "spend", "refund"):
            raise CreditsError(f"{kind!r} entries are made by reserve and settle, or are not entries")
        return await self._run(_add, guild_id, user_id, kind, int(amount), reason, None, payment_id, actor_id, floor)

    async def gift(self, guild_id: int, giver_id: int, receiver_id: int, amount: int) -> Entry | None:
        """Move `amount` (> 0) from the giver to the receiver in one transaction; None when the giver has
        less (nothing moved). Returns the giver's entry."""
        if amount <= 0 or giver_id == receiver_id:
            raise CreditsError("a gift is a positive number of credits to someone else")
        return await self._run(_gift, guild_id, giver_id, receiver_id, int(amount))

    async def reserve(self, guild_id: int, user_id: int, job_id: int, price: int, reason: str) -> Reserved:
        """Take a queued job's price, unless the balance is short; a job reserved already is not again
        (its first reservation is returned)."""
        return await self._run(_reserve, guild_id, user_id, job_id, int(price), reason)

    async def settle(self, job_id: int, succeeded: bool, reason: str) -> Entry | None:
        """End a job's reservation once: spent when it `succeeded`, refunded otherwise. None when the job
        has no reservation or was settled already."""
        return await self._run(_settle, job_id, succeeded, reason)

    async def last_credit_entry(self, guild_id: int, user_id: int, kind: str) -> Entry | None:
        """The person's newest entry of that kind there, if any."""
        return await self._run(_select_last, guild_id, user_id, kind)

    async def credit_history(self, guild_id: int, user_id: int, limit: int = 20) -> list[Entry]:
        """The person's newest entries, newest first."""
        return await self._run(_select_history, guild_id, user_id, limit)


def _transaction(db: sqlite3.Connection, work):
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work()
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _select_balance(db: sqlite3.Connection, guild_id: int, user_id: int) -> int:
    row = db.execute("SELECT balance FROM credit_balances WHERE guild_id = ? AND user_id = ?",
                     (guild_id, user_id)).fetchone()
    return row[0] if row else 0


def _append(db: sqlite3.Connection, guild_id: int, user_id: int, kind: str, amount: int, reason: str,
            job_id: int | None, payment_id: str | None, actor_id: int | None) -> Entry:
    """Inside a transaction: the entry and the balance it leaves."""
    balance = _select_balance(db, guild_id, user_id) + amount
    now = time.time()
    db.execute("INSERT INTO credit_balances (guild_id, user_id, balance, updated_at) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (guild_id, user_id) DO UPDATE SET balance = excluded.balance, "
               "updated_at = excluded.updated_at", (guild_id, user_id, balance, now))
    cursor = db.execute(f"INSERT INTO credit_entries ({ENTRY_COLUMNS.removeprefix('id, ')}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (guild_id, user_id, kind, amount, balance, reason[:300], job_id, payment_id, actor_id, now))
    return Entry(cursor.lastrowid, guild_id, user_id, kind, amount, balance, reason[:300], job_id, payment_id,
                 actor_id, now)


def _add(db: sqlite3.Connection, guild_id: int, user_id: int, kind: str, amount: int, reason: str,
         job_id: int | None, payment_id: str | None, actor_id: int | None, floor: int | None) -> Entry | None:
    def work() -> Entry | None:
        if payment_id is not None and db.execute("SELECT 1 FROM credit_entries WHERE payment_id = ? AND kind = ?",
                                                  (payment_id, kind)).fetchone():
            return None
        if floor is not None and _select_balance(db, guild_id, user_id) + amount < floor:
            return None
        return _append(db, guild_id, user_id, kind, amount, reason, job_id, payment_id, actor_id)
    return _transaction(db, work)


def _gift(db: sqlite3.Connection, guild_id: int, giver_id: int, receiver_id: int, amount: int) -> Entry | None:
    def work() -> Entry | None:
        if _select_balance(db, guild_id, giver_id) < amount:
            return None
        given = _append(db, guild_id, giver_id, "gift", -amount, f"a gift to <@{receiver_id}>", None, None, giver_id)
        _append(db, guild_id, receiver_id, "gift", amount, f"a gift from <@{giver_id}>", None, None, giver_id)
        return given
    return _transaction(db, work)


def _reserve(db: sqlite3.Connection, guild_id: int, user_id: int, job_id: int, price: int, reason: str) -> Reserved:
    def work() -> Reserved:
        found = _select_entry(db, "job_id = ? AND kind = 'reserve'", (job_id,))
        if found is not None:
            return Reserved(found, _select_balance(db, guild_id, user_id))
        balance = _select_balance(db, guild_id, user_id)
        if balance < price:
            return Reserved(None, balance)
        entry = _append(db, guild_id, user_id, "reserve", -price, reason, job_id, None, None)
        return Reserved(entry, entry.balance)
    return _transaction(db, work)


def _settle(db: sqlite3.Connection, job_id: int, succeeded: bool, reason: str) -> Entry | None:
    def work() -> Entry | None:
        reserved = _select_entry(db, "job_id = ? AND kind = 'reserve'", (job_id,))
        if reserved is None or _select_entry(db, "job_id = ? AND kind IN ('spend', 'refund')", (job_id,)):
            return None
        kind, amount = ("spend", 0) if succeeded else ("refund", -reserved.amount)
        return _append(db, reserved.guild_id, reserved.user_id, kind, amount, reason, job_id, None, None)
    return _transaction(db, work)


def _select_entry(db: sqlite3.Connection, where: str, args: tuple, newest: bool = False) -> Entry | None:
    order = "id DESC" if newest else "id"
    row = db.execute(f"SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE {where} ORDER BY {order} LIMIT 1",
                     args).fetchone()
    return None if row is None else Entry(*row)


def _select_last(db: sqlite3.Connection, guild_id: int, user_id: int, kind: str) -> Entry | None:
    return _select_entry(db, "guild_id = ? AND user_id = ? AND kind = ?", (guild_id, user_id, kind), newest=True)


def _select_history(db: sqlite3.Connection, guild_id: int, user_id: int, limit: int) -> list[Entry]:
    rows = db.execute(f"SELECT {ENTRY_COLUMNS} FROM credit_entries WHERE guild_id = ? AND user_id = ? "
                      "ORDER BY id DESC LIMIT ?", (guild_id, user_id, limit)).fetchall()
    return [Entry(*row) for row in rows]
