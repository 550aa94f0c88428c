"""The message bus on a real PostgreSQL server: a message reaches every process's subscribers, the
sender's included; a cut connection is made again, on_reconnect is called, and messages flow again."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from cluster import BusError, ClusterError, PgBus, PgCluster
from cluster.bus import MAX_PAYLOAD
from cluster.connection import application_name
from tests.cluster.conftest import TIMEOUT, FreezableProxy, terminate


def quick_bus(dsn: str, name: str) -> PgBus:
    return PgBus(dsn, name, ping_interval=0.2, ping_timeout=0.5, retry=(0.05, 0.3), connect_timeout=1.0,
                 publish_timeout=1.0)


class Inbox:
    """What a subscriber received, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, payload: str) -> None:
        await self.queue.put(payload)

    async def next(self) -> str:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    def empty(self) -> bool:
        return self.queue.empty()


async def test_a_message_reaches_the_subscribers_of_every_process_the_sender_included(pg_dsn):
    one, two = PgCluster(pg_dsn, "one", bus=quick_bus(pg_dsn, "one")), PgCluster(pg_dsn, "two")
    inbox_one, inbox_two, other_topic = Inbox(), Inbox(), Inbox()
    one.bus.subscribe("jobs", inbox_one)
    try:
        await one.start()
        await two.start()
        assert one.shared and one.bus.connected and two.bus.connected
        two.bus.subscribe("jobs", inbox_two)  # after start too
        two.bus.subscribe("other", other_topic)
        await asyncio.sleep(0.3)  # the late LISTEN is sent in a task
        await one.bus.publish("jobs", "42")
        assert await inbox_one.next() == "42"
        assert await inbox_two.next() == "42"
        big = "é" * (MAX_PAYLOAD // 2)
        await two.bus.publish("jobs", big)
        assert await inbox_one.next() == big == await inbox_two.next()
        assert other_topic.empty()
        with pytest.raises(ValueError):
            await one.bus.publish("jobs", "x" * (MAX_PAYLOAD + 1))
        with pytest.raises(ValueError):
            one.bus.subscribe("No Spaces", inbox_one)
    finally:
        await one.close()
        await two.close()
        await one.close()  # idempotent


async def test_after_its_connection_is_cut_the_bus_reconnects_calls_on_reconnect_and_delivers_again(pg_dsn):
    one, two = quick_bus(pg_dsn, "one"), quick_bus(pg_dsn, "two")
    inbox_one, inbox_two = Inbox(), Inbox()
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    one.subscribe("jobs", inbox_one)
    two.subscribe("jobs", inbox_two)
    one.on_reconnect(on_reconnect)
    try:
        await one.start()
        await two.start()
        assert not reconnected.is_set()  # the first connection is no reconnection
        assert await terminate(pg_dsn, application_name("bus", "one")) == 1
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        assert one.connected
        await two.publish("jobs", "after")
        assert await inbox_one.next() == "after" == await inbox_two.next()
        await one.publish("jobs", "from one")
        assert await inbox_one.next() == "from one" == await inbox_two.next()
    finally:
        await one.close()
        await two.close()


async def test_a_silent_connection_is_noticed_and_replaced(pg_dsn):
    """No bytes either way and no FIN (a network fault): the bus's checks fail and it connects again."""
    proxy = FreezableProxy(pg_dsn)
    bus = quick_bus(await proxy.start(), "one")
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    bus.on_reconnect(on_reconnect)
    inbox = Inbox()
    bus.subscribe("jobs", inbox)
    try:
        await bus.start()
        proxy.frozen = True
        await asyncio.sleep(1.5)  # a few failed checks later, it keeps trying: the proxy is still frozen
        assert not bus.connected
        with pytest.raises(BusError):
            await bus.publish("jobs", "lost")
        proxy.frozen = False  # new connections pass again (the frozen ones stay dead)
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        await bus.publish("jobs", "back")
        assert await inbox.next() == "back"
    finally:
        await bus.close()
        await proxy.stop()


async def test_a_failing_callback_is_logged_and_the_others_still_receive(pg_dsn):
    bus = quick_bus(pg_dsn, "one")
    inbox = Inbox()

    async def broken(payload: str) -> None:
        raise RuntimeError(f"cannot handle {payload}")

    bus.subscribe("jobs", broken)
    bus.subscribe("jobs", inbox)
    try:
        await bus.start()
        with capture_logs() as logs:
            await bus.publish("jobs", "1")
            assert await inbox.next() == "1"
            await asyncio.sleep(0.1)
        assert [entry["topic"] for entry in logs if entry["event"] == "bus_callback_failed"] == ["jobs"]
        await bus.publish("jobs", "2")
        assert await inbox.next() == "2"
    finally:
        await bus.close()


async def test_a_bus_that_cannot_connect_says_so_within_its_bound(pg_dsn):
    bus = PgBus(pg_dsn.replace("/test_", "/missing_"), "one", retry=(0.05, 0.2))
    with pytest.raises(ClusterError, match="could not connect"):
        await bus.start(timeout=1.0)
    assert not bus.connected
    with pytest.raises(BusError):
        await bus.publish("jobs", "x")
    await bus.close()
