"""The credits ledger (store/credits.py and its twins), on both engines: every change an entry with the balance
it leaves, a job reserved and settled once, a payment credited and taken back once, and (a property test)
any sequence of reserve, spend, refund, gift, grant and chargeback keeps each balance equal to the sum of the
person's entries and never counts a job twice."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from store import PostgresStore, Store
from store.credits import CreditsError
from tests.postgres import create_database, drop_database
from tests.store.test_store import WAIT, open_stores, rows

GUILD, ANN, BOB = 31, 11, 12


async def sums(store) -> dict[tuple[int, int], int]:
    """Each person's sum of entries, from the ledger itself."""
    found = await rows(store, "SELECT guild_id, user_id, SUM(amount) FROM credit_entries GROUP BY guild_id, user_id")
    return {(int(g), int(u)): int(total) for g, u, total in found}


async def test_a_job_is_reserved_and_settled_once_and_refunded_in_full(any_store: Store | PostgresStore) -> None:
    granted = await any_store.add_credits(GUILD, ANN, "grant", 10, "welcome", actor_id=99)
    assert (granted.kind, granted.amount, granted.balance, granted.actor_id) == ("grant", 10, 10, 99)
    first = await any_store.reserve(GUILD, ANN, 1, 3, "txt2img 512×512")
    assert first.entry.amount == -3 and first.balance == 7
    again = await any_store.reserve(GUILD, ANN, 1, 3, "txt2img 512×512")  # the same job: its first reservation
    assert again.entry.id == first.entry.id and await any_store.balance(GUILD, ANN) == 7
    short = await any_store.reserve(GUILD, ANN, 2, 8, "upscale")
    assert short.entry is None and short.balance == 7  # refused, nothing taken
    spent = await any_store.settle(1, True, "done")
    assert (spent.kind, spent.amount, spent.balance) == ("spend", 0, 7)
    assert await any_store.settle(1, False, "failed later?") is None  # settled once: no refund after a spend
    await any_store.reserve(GUILD, ANN, 3, 5, "animate")
    refunded = await any_store.settle(3, False, "the server failed")
    assert (refunded.kind, refunded.amount, refunded.balance) == ("refund", 5, 7)
    assert await any_store.settle(3, False, "again") is None and await any_store.settle(404, True, "none") is None
    history = await any_store.credit_history(GUILD, ANN)
    assert [(e.kind, e.amount, e.balance, e.job_id) for e in history] == [
        ("refund", 5, 7, 3), ("reserve", -5, 2, 3), ("spend", 0, 7, 1), ("reserve", -3, 7, 1), ("grant", 10, 10, None)]
    assert await any_store.balance(GUILD + 1, ANN) == 0  # per server


async def test_payments_count_once_gifts_move_at_once_and_floors_refuse(any_store: Store | PostgresStore) -> None:
    bought = await any_store.add_credits(GUILD, ANN, "purchase", 50, "pack small", payment_id="pi_1")
    assert bought.balance == 50
    assert await any_store.add_credits(GUILD, ANN, "purchase", 50, "pack small", payment_id="pi_1") is None
    given = await any_store.gift(GUILD, ANN, BOB, 20)
    assert given.balance == 30 and await any_store.balance(GUILD, BOB) == 20
    assert await any_store.gift(GUILD, ANN, BOB, 31) is None  # more than Ann has: nothing moves
    taken = await any_store.add_credits(GUILD, ANN, "chargeback", -50, "disputed", payment_id="pi_1")
    assert taken.balance == -20  # a chargeback may leave a debt
    assert await any_store.add_credits(GUILD, ANN, "chargeback", -50, "disputed", payment_id="pi_1") is None
    assert await any_store.add_credits(GUILD, BOB, "take", -25, "abuse", actor_id=99, floor=0) is None
    assert (await any_store.add_credits(GUILD, BOB, "take", -20, "abuse", actor_id=99, floor=0)).balance == 0
    for bad in (lambda: any_store.add_credits(GUILD, ANN, "reserve", 1, "x"),
                lambda: any_store.gift(GUILD, ANN, ANN, 1), lambda: any_store.gift(GUILD, ANN, BOB, 0)):
        try:
            await bad()
        except CreditsError:
            continue
        raise AssertionError("not refused")
    assert await sums(any_store) == {(GUILD, ANN): -20, (GUILD, BOB): 0}
    assert (await any_store.last_credit_entry(GUILD, BOB, "take")).amount == -20  # the newest of its kind
    assert (await any_store.last_credit_entry(GUILD, ANN, "gift")).balance == 30
    assert await any_store.last_credit_entry(GUILD, ANN, "expiry") is None


ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("grant"), st.sampled_from([ANN, BOB]), st.integers(1, 20)),
    st.tuples(st.just("reserve"), st.integers(1, 4), st.integers(0, 8)),
    st.tuples(st.just("settle"), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("gift"), st.sampled_from([(ANN, BOB), (BOB, ANN)]), st.integers(1, 15)),
    st.tuples(st.just("purchase"), st.sampled_from(["pi_a", "pi_b"]), st.sampled_from([ANN, BOB])),
    st.tuples(st.just("chargeback"), st.sampled_from(["pi_a", "pi_b"]), st.sampled_from([ANN, BOB])),
), max_size=30)


async def play(store: Store | PostgresStore, actions: list) -> None:
    """Run a generated sequence from an empty ledger, then check every invariant against the ledger itself."""
    await rows(store, "DELETE FROM credit_entries")
    await rows(store, "DELETE FROM credit_balances")
    owner = {job: (ANN if job % 2 else BOB) for job in range(1, 5)}
    for action in actions:
        if action[0] == "grant":
            await store.add_credits(GUILD, action[1], "grant", action[2], "grant")
        elif action[0] == "reserve":
            await store.reserve(GUILD, owner[action[1]], action[1], action[2], "job")
        elif action[0] == "settle":
            await store.settle(action[1], action[2], "ended")
        elif action[0] == "gift":
            await store.gift(GUILD, *action[1], action[2])
        else:
            amount = 30 if action[0] == "purchase" else -30
            await store.add_credits(GUILD, action[2], action[0], amount, action[0], payment_id=action[1])
    summed = await sums(store)
    for person in (ANN, BOB):  # the kept balance is the sum of the entries, always
        assert await store.balance(GUILD, person) == summed.get((GUILD, person), 0)
    per_job = await rows(store, "SELECT job_id, kind, count(*) FROM credit_entries WHERE job_id IS NOT NULL "
                                "GROUP BY job_id, kind")
    assert all(count == 1 for _, _, count in per_job)  # one reservation, one settlement at most
    kinds = {(job, kind) for job, kind, _ in per_job}
    assert not any((job, "spend") in kinds and (job, "refund") in kinds for job, _ in kinds)
    assert all((job, "reserve") in kinds for job, kind in kinds if kind in ("spend", "refund"))
    last = await rows(store, "SELECT guild_id, user_id, balance FROM credit_entries WHERE id IN "
                             "(SELECT max(id) FROM credit_entries GROUP BY guild_id, user_id)")
    assert {(int(g), int(u)): int(b) for g, u, b in last} == summed  # each entry left the right balance
    refunds = await rows(store, "SELECT r.amount, s.amount FROM credit_entries r JOIN credit_entries s "
                                "ON s.job_id = r.job_id AND s.kind = 'refund' WHERE r.kind = 'reserve'")
    assert all(refund == -reserved for reserved, refund in refunds)  # refunded in full


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_any_sequence_keeps_balances_equal_to_their_entries(engine: str, request, tmp_path) -> None:
    """Hypothesis drives a sync test (its examples share one database, emptied before each); each example
    runs on an event loop of its own."""
    dsn = asyncio.run(create_database(request.getfixturevalue("postgres"))) if engine == "postgresql" else None

    async def one(actions: list) -> None:
        store = PostgresStore(dsn, pool_size=2) if dsn else Store(tmp_path / "credits.sqlite3")
        await store.open()
        try:
            await play(store, actions)
        finally:
            await store.close()

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(actions=ACTIONS)
    def check(actions: list) -> None:
        asyncio.run(one(actions))

    try:
        check()
    finally:
        if dsn:
            asyncio.run(drop_database(dsn))


async def test_fifty_jobs_reserving_at_once_from_two_processes_take_only_what_there_is(pg_dsn: str) -> None:
    stores = await open_stores(pg_dsn, 2)
    try:
        await stores[0].add_credits(GUILD, ANN, "grant", 30, "grant")
        done = await asyncio.wait_for(asyncio.gather(
            *(stores[n % 2].reserve(GUILD, ANN, n + 1, 3, "job") for n in range(50))), WAIT)
        assert len([r for r in done if r.entry is not None]) == 10
        assert await stores[1].balance(GUILD, ANN) == 0 and await sums(stores[0]) == {(GUILD, ANN): 0}
        settled = await asyncio.wait_for(asyncio.gather(
            *(stores[n % 2].settle(job, False, "failed") for n in range(4) for job in range(1, 51))), WAIT)
        assert len([s for s in settled if s is not None]) == 10 and await stores[0].balance(GUILD, ANN) == 30
    finally:
        for store in stores:
            await store.close()
