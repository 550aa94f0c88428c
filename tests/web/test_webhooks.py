"""Tests for webhooks.py: the signature scheme, and WebhookSender's deliveries, retries with backoff,
durability across senders on one store, giving up, redirects and private addresses.

Receivers are small aiohttp apps on 127.0.0.1; the sender's clock is a fake one, so backoff needs no
waiting.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from web import webhooks
from tests.web.test_api import GUILD, ADMIN, open_store
from web.webhooks import BACKOFF, WebhookSender, check_url, event_payload, sign, verify

SECRET = "whsec_test-secret"


class Receiver:
    """A webhook receiver on 127.0.0.1 that records what it gets and answers from `statuses`
    (the last one again when they run out)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses = [200]
        self.delay = 0.0
        self.redirected = 0
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_post("/elsewhere", self.elsewhere)
        self.server = TestServer(app, host="127.0.0.1")

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if self.delay:
            await asyncio.sleep(self.delay)
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status, text="x" * 100_000)  # a large answer, not read

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.redirected += 1
        return web.Response(text="ok")

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))


class Clock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def receiver():
    made = Receiver()
    await made.server.start_server()
    try:
        yield made
    finally:
        await made.server.close()


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made = await open_store(tmp_path / "bot.sqlite3", monkeypatch)
    try:
        yield made
    finally:
        await made.close()


async def hooked_key(store, url: str, secret: str = SECRET) -> int:
    key_id, _ = await store.create_key(GUILD, "site", ADMIN)
    await store.set_webhook(key_id, url, secret)
    return key_id


def sender(store, clock: Clock, **options) -> WebhookSender:
    return WebhookSender(store, clock=clock, allow_private=True, jitter=0.0, **{"timeout": 2.0, **options})


# --- the scheme ----------------------------------------------------------------------------------


def test_sign_and_verify():
    body = b'{"event":"generation.done","id":1}'
    signature = sign(SECRET, "1700000000", body)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert verify(SECRET, "1700000000", body, signature, now=1_700_000_100)
    assert verify(SECRET, "1700000000", body, f"v0=old, {signature}", now=1_700_000_000)  # one of several
    assert not verify(SECRET, "1700000000", body + b" ", signature, now=1_700_000_000)  # tampered body
    assert not verify(SECRET, "1700000001", body, signature, now=1_700_000_000)  # another timestamp
    assert not verify("another secret", "1700000000", body, signature, now=1_700_000_000)
    assert not verify(SECRET, "1700000000", body, signature, now=1_700_000_301)  # too old: a replay
    assert not verify(SECRET, "1700000000", body, signature, now=1_699_999_699)  # from the future
    assert verify(SECRET, "1700000000", body, signature, now=1_700_000_900, tolerance=1000)
    for bad_timestamp in ("", "abc", "-1700000000", "1.7e9", "１７００", "9" * 40):
        assert not verify(SECRET, bad_timestamp, body, signature, now=1_700_000_000)
    for bad_signature in ("", "v1=", signature.upper(), signature[:-1], "v1=é" + signature[4:]):
        assert not verify(SECRET, "1700000000", body, bad_signature, now=1_700_000_000)


def test_check_url_and_payload():
    assert check_url(" https://example.org/hook?x=1 ") == "https://example.org/hook?x=1"
    assert check_url("http://10.0.0.1:8080/") == "http://10.0.0.1:8080/"  # where it leads is checked on sending
    for bad in (None, "", "example.org", "ftp://example.org/", "https://user:pw@example.org/", "https:///path",
                "https://example.org/a b", "https://example.org:99999/", "javascript:alert(1)",
                "https://example.org/" + "x" * 2000):
        with pytest.raises(ValueError):
            check_url(bad)
    assert event_payload(7, "done", ["https://b/1"], None) == ("generation.done", {
        "event": "generation.done", "id": 7, "state": "done", "files": ["https://b/1"], "error": None})
    assert event_payload(7, "failed", ["x"], "Out of memory.")[1] == {
        "event": "generation.failed", "id": 7, "state": "failed", "files": [], "error": "Out of memory."}
    assert event_payload(7, "cancelled", [], "Cancelled.")[0] == "generation.failed"
    with pytest.raises(ValueError):
        event_payload(7, "running", [], None)


# --- deliveries ----------------------------------------------------------------------------------


async def test_signed_delivery_verifies(store, receiver):
    clock = Clock()
    key_id = await hooked_key(store, receiver.url())
    webhook = sender(store, clock)
    try:
        delivery_id = await webhook.notify(key_id, 42, "done", ["https://bot.example.org/api/v1/generations/42/files/0"],
                                           None)
        assert delivery_id is not None
        assert await webhook.deliver_due() == 1
        assert await webhook.deliver_due() == 0  # delivered once
    finally:
        await webhook.close()
    [(headers, body)] = receiver.received
    assert json.loads(body) == {"event": "generation.done", "id": 42, "state": "done",
                                "files": ["https://bot.example.org/api/v1/generations/42/files/0"], "error": None}
    assert headers["Content-Type"] == "application/json" and headers["X-Webhook-Id"] == str(delivery_id)
    assert headers["X-Webhook-Timestamp"] == str(int(clock.now))
    assert verify(SECRET, headers["X-Webhook-Timestamp"], body, headers["X-Webhook-Signature"], now=clock.now + 5)
    assert not verify(SECRET, headers["X-Webhook-Timestamp"], body.replace(b"42", b"43"),
                      headers["X-Webhook-Signature"], now=clock.now)
    assert not verify(SECRET, headers["X-Webhook-Timestamp"], body, headers["X-Webhook-Signature"],
                      now=clock.now + 301)
    [shown] = await store.deliveries(key_id)
    assert shown["state"] == "delivered" and shown["attempts"] == 1 and shown["job_id"] == 42


async def test_nothing_is_queued_without_a_webhook(store, receiver):
    key_id, _ = await store.create_key(GUILD, "no hook", ADMIN)
    webhook = sender(store, Clock())
    try:
        assert await webhook.notify(key_id, 1, "done", [], None) is None
        assert await webhook.notify(999, 1, "done", [], None) is None
        hooked = await hooked_key(store, receiver.url())
        await store.revoke_key(hooked)
        assert await webhook.notify(hooked, 1, "failed", [], "x") is None
        assert await webhook.deliver_due() == 0
    finally:
        await webhook.close()
    assert receiver.received == []


async def test_retries_with_backoff_durably(store, receiver):
    clock = Clock()
    key_id = await hooked_key(store, receiver.url())
    receiver.statuses = [500, 503, 200]
    first = sender(store, clock)
    await first.notify(key_id, 9, "failed", [], "ComfyUI ran out of memory.")
    assert await first.deliver_due() == 1
    [row] = await store.deliveries(key_id)
    assert (row["state"], row["attempts"], row["next_at"]) == ("pending", 1, clock.now + BACKOFF[0])
    assert row["last_error"] == "answered 500"
    await first.close()

    second = sender(store, clock)  # as after a restart: a new sender on the same store
    try:
        clock.now += BACKOFF[0] - 1
        assert await second.deliver_due() == 0  # not yet
        clock.now += 1
        assert await second.deliver_due() == 1
        [row] = await store.deliveries(key_id)
        assert (row["attempts"], row["next_at"], row["last_error"]) == (2, clock.now + BACKOFF[1], "answered 503")
        clock.now += BACKOFF[1]
        assert await second.deliver_due() == 1
    finally:
        await second.close()
    [row] = await store.deliveries(key_id)
    assert (row["state"], row["attempts"], row["last_error"]) == ("delivered", 3, None)
    assert len(receiver.received) == 3
    assert len({headers["X-Webhook-Id"] for headers, _ in receiver.received}) == 1  # one delivery, retried
    timestamps = [int(headers["X-Webhook-Timestamp"]) for headers, _ in receiver.received]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == 3  # signed afresh each time
    for headers, body in receiver.received:
        assert verify(SECRET, headers["X-Webhook-Timestamp"], body, headers["X-Webhook-Signature"],
                      now=int(headers["X-Webhook-Timestamp"]))


async def test_a_timeout_is_retried(store, receiver):
    clock = Clock()
    key_id = await hooked_key(store, receiver.url())
    receiver.delay = 3.0
    webhook = sender(store, clock, timeout=0.3)
    try:
        await webhook.notify(key_id, 5, "done", [], None)
        started = time.monotonic()
        assert await webhook.deliver_due() == 1
        assert time.monotonic() - started < 2.5
        [row] = await store.deliveries(key_id)
        assert row["state"] == "pending" and row["attempts"] == 1 and "no answer within 0.3 s" in row["last_error"]
        receiver.delay = 0.0
        clock.now += BACKOFF[0]
        assert await webhook.deliver_due() == 1
        [row] = await store.deliveries(key_id)
        assert row["state"] == "delivered"
    finally:
        await webhook.close()


async def test_gives_up_after_the_last_attempt(store, receiver):
    clock = Clock()
    key_id = await hooked_key(store, receiver.url())
    receiver.statuses = [500]
    webhook = sender(store, clock)
    try:
        await webhook.notify(key_id, 5, "done", [], None)
        waits = []
        for _ in range(webhook.attempts):
            assert await webhook.deliver_due() == 1
            [row] = await store.deliveries(key_id)
            if row["next_at"] is not None:
                waits.append(row["next_at"] - clock.now)
                clock.now = row["next_at"]
        assert waits == list(BACKOFF) and webhook.attempts == 6
        [row] = await store.deliveries(key_id)
        assert (row["state"], row["attempts"], row["next_at"]) == ("failed", 6, None)
        clock.now += 86400
        assert await webhook.deliver_due() == 0  # never again
    finally:
        await webhook.close()
    assert len(receiver.received) == 6


async def test_redirects_are_not_followed(store, receiver):
    clock = Clock()
    key_id = await hooked_key(store, receiver.url())
    receiver.statuses = [302]
    webhook = sender(store, clock)
    try:
        await webhook.notify(key_id, 5, "done", [], None)
        assert await webhook.deliver_due() == 1
    finally:
        await webhook.close()
    assert len(receiver.received) == 1 and receiver.redirected == 0
    [row] = await store.deliveries(key_id)
    assert row["state"] == "pending" and "redirect" in row["last_error"]


async def test_private_addresses_are_refused_unless_allowed(store, receiver):
    clock = Clock()
    by_address = await hooked_key(store, receiver.url())
    by_name = await hooked_key(store, receiver.url().replace("127.0.0.1", "localhost"))
    mapped = await hooked_key(store, receiver.url().replace("127.0.0.1", "[::ffff:127.0.0.1]"))
    webhook = WebhookSender(store, clock=clock, timeout=2.0)  # allow_private off, as in production
    try:
        for key_id in (by_address, by_name, mapped):
            await webhook.notify(key_id, 5, "done", [], None)
        assert await webhook.deliver_due() == 3
    finally:
        await webhook.close()
    assert receiver.received == []
    for key_id in (by_address, by_name, mapped):
        [row] = await store.deliveries(key_id)
        assert row["state"] == "failed" and row["attempts"] == 1, row  # given up at once
        assert "public internet" in row["last_error"]
    assert webhooks.public_address("93.184.216.34") and webhooks.public_address("2606:4700::1111")
    for private in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fd00::1", "100.64.0.1",
                    "::ffff:10.0.0.1", "0.0.0.0", "224.0.0.1", "not an address"):
        assert not webhooks.public_address(private), private


async def test_removed_webhook_or_revoked_key_drops_pending_deliveries(store, receiver):
    clock = Clock()
    removed = await hooked_key(store, receiver.url())
    revoked = await hooked_key(store, receiver.url())
    webhook = sender(store, clock)
    try:
        await webhook.notify(removed, 1, "done", [], None)
        await webhook.notify(revoked, 2, "done", [], None)
        await store.set_webhook(removed, None, None)
        await store.revoke_key(revoked)
        assert await webhook.deliver_due() == 1  # the revoked key's was dropped when it was revoked
    finally:
        await webhook.close()
    assert receiver.received == []
    assert (await store.deliveries(removed))[0]["state"] == "failed"
    assert (await store.deliveries(revoked))[0]["last_error"] == "the API key was revoked"


async def test_run_delivers_as_soon_as_notified(store, receiver):
    key_id = await hooked_key(store, receiver.url())
    webhook = WebhookSender(store, allow_private=True, timeout=2.0)
    task = asyncio.create_task(webhook.run(every=30.0))
    try:
        await asyncio.sleep(0.05)
        await webhook.notify(key_id, 3, "done", [], None)
        for _ in range(100):
            if receiver.received:
                break
            await asyncio.sleep(0.02)
        assert len(receiver.received) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await webhook.close()


async def test_old_finished_deliveries_are_pruned(store, receiver):
    clock = Clock()
    key_id = await hooked_key(store, receiver.url())
    await store.queue_delivery(key_id, "generation.done", {"id": 1}, now=clock.now - 8 * 86400)
    await store.mark_delivery((await store.deliveries(key_id))[0]["id"], delivered=True, now=clock.now - 8 * 86400)
    await store.queue_delivery(key_id, "generation.done", {"id": 2}, now=clock.now - 8 * 86400)  # still pending
    webhook = sender(store, clock)
    try:
        assert await webhook.deliver_due() == 1
    finally:
        await webhook.close()
    assert [row["job_id"] for row in await store.deliveries(key_id)] == [2]


SHORT_FORM = "is an IP address in a short or old form that cannot be sent to; write it as four numbers, " \
             "like 203.0.113.7."


async def test_a_short_form_address_already_stored_is_given_up_at_once(store, receiver):
    key_id = await hooked_key(store, receiver.url().replace("127.0.0.1", "127.1"))
    webhook = sender(store, Clock())
    try:
        await webhook.notify(key_id, 5, "done", [], None)
        assert await webhook.deliver_due() == 1
    finally:
        await webhook.close()
    [row] = await store.deliveries(key_id)
    assert row["state"] == "failed" and row["attempts"] == 1
    assert row["last_error"] == f"url's host 127.1 {SHORT_FORM}"[:-1]
