"""The store's HTTP API area on both engines (store/api.py, store/postgres/api.py): API keys, the jobs
each key started, and webhook deliveries, which each sender claims, so that bot processes sharing one
database never take the same delivery at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from store import Store, StoreError
from store.api import CLAIM_LEASE, ERROR_MAX, KEY_MAX, ApiKey, hash_key
from store.core import PostgresStore
from tests.postgres import create_database, drop_database
from tests.store.test_store import make_job, stored_text

URL = "https://hooks.example.org/in"


@pytest.fixture
def db(any_store):
    return any_store


async def test_a_key_is_shown_once_and_found_by_its_hash(db):
    key_id, plaintext = await db.create_key(10, "ci pipeline", 7)
    assert plaintext.startswith("cfb_") and len(plaintext) == 47
    key = await db.key_by_plaintext(plaintext)
    assert isinstance(key, ApiKey) and key == await db.key(key_id)
    assert (key.id, key.guild_id, key.name, key.prefix, key.created_by, key.revoked) == (
        key_id, 10, "ci pipeline", plaintext[:8], 7, False)
    assert key.webhook_url is None and key.webhook_secret is None and key.created_at > 0
    assert hash_key(plaintext) not in repr(key) and plaintext not in repr(key)
    for wrong in (plaintext + "x", plaintext[:-1], "", "cfb_" + "x" * KEY_MAX, None, 12, "'; --", "a\x00b"):
        assert await db.key_by_plaintext(wrong) is None
    assert await db.key(key_id + 1) is None


async def test_a_servers_keys_are_listed_newest_first_revoked_ones_too(db):
    first, _ = await db.create_key(10, "first", 7)
    second, _ = await db.create_key(10, "second ✨", 8)
    elsewhere, _ = await db.create_key(None, "outside servers", 7)
    assert await db.revoke_key(first) is True
    listed = await db.keys(10)
    assert [(key.id, key.name, key.revoked) for key in listed] == [(second, "second ✨", False), (first, "first", True)]
    assert [key.id for key in await db.keys(None)] == [elsewhere]
    assert await db.keys(11) == []


async def test_revoking_is_once_per_key_and_only_in_its_server(db):
    key_id, plaintext = await db.create_key(10, "k", 7)
    assert await db.revoke_key(key_id, 11) is False  # another server's admin
    assert not (await db.key(key_id)).revoked
    assert await db.revoke_key(key_id, 10) is True
    assert await db.revoke_key(key_id) is False  # already revoked
    assert await db.revoke_key(key_id + 1) is False  # no such key
    revoked = await db.key_by_plaintext(plaintext)
    assert revoked.revoked and revoked.revoked_at is not None


async def test_a_webhook_is_set_and_removed_with_its_secret(db):
    key_id, _ = await db.create_key(10, "k", 7)
    with pytest.raises(ValueError, match="needs a secret"):
        await db.set_webhook(key_id, URL, None)
    assert await db.set_webhook(key_id, URL, "s3cret") is True
    key = await db.key(key_id)
    assert (key.webhook_url, key.webhook_secret) == (URL, "s3cret")
    assert "s3cret" not in repr(key)
    assert await db.set_webhook(key_id, None, "ignored") is True
    key = await db.key(key_id)
    assert (key.webhook_url, key.webhook_secret) == (None, None)
    assert await db.set_webhook(key_id + 1, URL, "s") is False


async def test_the_jobs_a_key_started_newest_first(db):
    key_id, _ = await db.create_key(10, "k", 7)
    other, _ = await db.create_key(10, "other", 7)
    jobs = [await db.add_job(make_job()) for _ in range(5)]
    for made in jobs[:4]:
        await db.add_api_job(key_id, made.id)
    await db.add_api_job(other, jobs[4].id)
    ids = [made.id for made in jobs]
    assert await db.api_job_ids(key_id, 10) == ids[3::-1]
    assert await db.api_job_ids(key_id, 2) == [ids[3], ids[2]]
    assert await db.api_job_ids(key_id, 10, before=ids[2]) == [ids[1], ids[0]]
    assert await db.api_job_ids(other, 10) == [ids[4]]
    assert await db.api_job_key(ids[0]) == key_id
    assert await db.api_job_key(ids[4]) == other
    discord_job = await db.add_job(make_job())
    assert await db.api_job_key(discord_job.id) is None


async def test_a_job_is_one_keys_and_must_exist(db):
    key_id, _ = await db.create_key(10, "k", 7)
    made = await db.add_job(make_job())
    await db.add_api_job(key_id, made.id)
    with pytest.raises(StoreError, match="refused a change"):
        await db.add_api_job(key_id, made.id)
    with pytest.raises(StoreError, match="refused a change"):
        await db.add_api_job(key_id, made.id + 100)


async def test_a_delivery_is_due_claimed_retried_and_delivered(db):
    key_id, _ = await db.create_key(10, "k", 7)
    await db.set_webhook(key_id, URL, "s3cret")
    payload = {"event": "generation.done", "id": 12, "files": ["https://x/0"], "error": None, "text": "ünï ✨"}
    delivery_id = await db.queue_delivery(key_id, "generation.done", payload, now=100.0)
    assert await db.due_deliveries(99.0) == []
    [due] = await db.due_deliveries(100.0)
    assert (due.id, due.key_id, due.event, due.payload, due.attempts, due.next_at) == (
        delivery_id, key_id, "generation.done", payload, 0, 100.0)
    assert (due.url, due.secret, due.revoked) == (URL, "s3cret", False)
    assert await db.due_deliveries(100.0 + CLAIM_LEASE - 1) == []  # claimed by this sender meanwhile
    [again] = await db.due_deliveries(100.0 + CLAIM_LEASE)  # its sender never said how it went: due again
    assert again.id == delivery_id and again.next_at == 100.0 + CLAIM_LEASE
    await db.mark_delivery(delivery_id, delivered=False, now=101.0, next_at=106.0, error="answered 503")
    [row] = await db.deliveries(key_id)
    assert row == {"id": delivery_id, "event": "generation.done", "job_id": 12, "attempts": 1, "state": "pending",
                   "next_at": 106.0, "delivered_at": None, "last_error": "answered 503", "created_at": 100.0}
    [retry] = await db.due_deliveries(106.0)
    assert retry.attempts == 1
    await db.mark_delivery(delivery_id, delivered=True, now=107.0)
    [row] = await db.deliveries(key_id)
    assert (row["state"], row["attempts"], row["next_at"], row["delivered_at"], row["last_error"]) == (
        "delivered", 2, None, 107.0, None)
    assert await db.due_deliveries(10_000.0) == []


async def test_deliveries_wait_longest_first_and_are_given_up_in_words(db):
    key_id, _ = await db.create_key(10, "k", 7)
    late = await db.queue_delivery(key_id, "generation.failed", {"id": "not a job id"}, now=50.0)
    early = await db.queue_delivery(key_id, "generation.done", {"id": 3}, now=20.0)
    also = await db.queue_delivery(key_id, "generation.done", {}, now=20.0)
    assert [due.id for due in await db.due_deliveries(60.0, limit=2)] == [early, also]
    assert [due.id for due in await db.due_deliveries(60.0)] == [late]
    await db.mark_delivery(late, delivered=False, now=61.0, error="x" * (ERROR_MAX + 50))
    await db.mark_delivery(early, delivered=False, now=61.0)
    rows = {row["id"]: row for row in await db.deliveries(key_id)}
    assert [row["id"] for row in await db.deliveries(key_id, limit=2)] == [also, early]
    assert (rows[late]["state"], rows[late]["last_error"], rows[late]["job_id"]) == ("failed", "x" * ERROR_MAX, None)
    assert (rows[early]["state"], rows[early]["last_error"], rows[early]["job_id"]) == ("failed", "failed", 3)
    assert rows[also]["state"] == "pending" and rows[also]["job_id"] is None


async def test_revoking_a_key_drops_its_pending_deliveries(db):
    key_id, _ = await db.create_key(10, "k", 7)
    other, _ = await db.create_key(10, "other", 7)
    await db.set_webhook(key_id, URL, "s")
    sent = await db.queue_delivery(key_id, "generation.done", {"id": 1}, now=1.0)
    await db.due_deliveries(1.0)
    await db.mark_delivery(sent, delivered=True, now=2.0)
    pending = await db.queue_delivery(key_id, "generation.done", {"id": 2}, now=3.0)
    kept = await db.queue_delivery(other, "generation.done", {"id": 3}, now=3.0)
    assert await db.revoke_key(key_id) is True
    rows = {row["id"]: row for row in await db.deliveries(key_id)}
    assert (rows[sent]["state"], rows[pending]["state"]) == ("delivered", "failed")
    assert rows[pending]["last_error"] == "the API key was revoked"
    late = await db.queue_delivery(key_id, "generation.done", {"id": 4}, now=4.0)  # queued as it was revoked
    due = {delivery.id: delivery for delivery in await db.due_deliveries(5.0)}
    assert set(due) == {kept, late} and due[late].revoked and not due[kept].revoked and due[kept].url is None


async def test_finished_deliveries_are_pruned_pending_ones_kept(db):
    key_id, _ = await db.create_key(10, "k", 7)
    done = await db.queue_delivery(key_id, "generation.done", {}, now=10.0)
    failed = await db.queue_delivery(key_id, "generation.done", {}, now=10.0)
    pending = await db.queue_delivery(key_id, "generation.done", {}, now=10.0)
    recent = await db.queue_delivery(key_id, "generation.done", {}, now=30.0)
    await db.mark_delivery(done, delivered=True, now=11.0)
    await db.mark_delivery(failed, delivered=False, now=11.0, error="gone")
    await db.mark_delivery(recent, delivered=True, now=31.0)
    assert await db.prune_deliveries(20.0) == 2
    assert await db.prune_deliveries(20.0) == 0
    assert sorted(row["id"] for row in await db.deliveries(key_id)) == [pending, recent]


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_processes(request: pytest.FixtureRequest, tmp_path: Path):
    """Two stores open on one database, as two bot processes have it."""
    dsn = None
    if request.param == "sqlite":
        stores: list[Store | PostgresStore] = [Store(tmp_path / "bot.sqlite3"), Store(tmp_path / "bot.sqlite3")]
    else:
        dsn = await create_database(request.getfixturevalue("postgres"))
        stores = [PostgresStore(dsn, pool_size=4), PostgresStore(dsn, pool_size=4)]
    try:
        for store in stores:
            await store.open()
        yield stores
    finally:
        for store in stores:
            await store.close()
        if dsn is not None:
            await drop_database(dsn)


async def test_two_processes_never_claim_the_same_delivery(two_processes):
    first, second = two_processes
    key_id, _ = await first.create_key(10, "k", 7)
    queued = {await first.queue_delivery(key_id, "generation.done", {"id": n}, now=float(n)) for n in range(60)}

    async def claim(store: Store | PostgresStore) -> list[int]:
        taken: list[int] = []
        for _ in range(20):  # bounded: 8 claimers of 3 at a time need at most 60 / 3 rounds in all
            batch = await store.due_deliveries(100.0, limit=3)
            if not batch:
                break
            taken += [delivery.id for delivery in batch]
        return taken

    claims = await asyncio.wait_for(asyncio.gather(*(claim(store) for store in (first, second) * 4)), 60)
    taken = [delivery_id for claim_ids in claims for delivery_id in claim_ids]
    assert sorted(taken) == sorted(queued)  # every one taken, none twice
    assert await second.due_deliveries(100.0) == []
    assert len(await first.due_deliveries(100.0 + CLAIM_LEASE, limit=100)) == 60  # the lease is over


async def test_text_with_a_nul_is_kept(db):
    # PostgreSQL's text cannot hold NUL: it keeps U+FFFD in its place (store/postgres/text.py).
    key_id, _ = await db.create_key(10, "n\x00ame", 7)
    assert await db.set_webhook(key_id, URL + "?a=\x00", "se\x00cret") is True
    key = await db.key(key_id)
    assert (key.name, key.webhook_url, key.webhook_secret) == (
        stored_text(db, "n\x00ame"), stored_text(db, URL + "?a=\x00"), stored_text(db, "se\x00cret"))
    delivery_id = await db.queue_delivery(key_id, "generation.\x00", {"error": "a\x00b", "id": 5}, now=1.0)
    [due] = await db.due_deliveries(1.0)
    assert due.event == stored_text(db, "generation.\x00")
    assert due.payload == {"error": stored_text(db, "a\x00b"), "id": 5}
    await db.mark_delivery(delivery_id, delivered=False, now=2.0, next_at=3.0, error="bad\x00")
    [row] = await db.deliveries(key_id)
    assert (row["last_error"], row["job_id"]) == (stored_text(db, "bad\x00"), 5)
