"""The cluster of one process (SQLite), and make_cluster's choice between the two kinds."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from cluster import BusError, ClusterError, LocalCluster, PgCluster, make_cluster
from tests.cluster.conftest import TIMEOUT
from tests.cluster.test_bus import Inbox
from tests.conftest import make_settings


async def test_the_local_lease_is_held_at_once_and_lost_only_when_released_or_closed():
    cluster = LocalCluster("solo")
    await cluster.start()
    try:
        assert not cluster.shared and not cluster.lease.held
        await asyncio.wait_for(cluster.lease.acquire(), TIMEOUT)
        assert cluster.lease.held
        lost = asyncio.create_task(cluster.lease.lost())
        await asyncio.sleep(0.2)
        assert not lost.done()  # never lost while held
        await cluster.lease.release()
        await asyncio.wait_for(lost, TIMEOUT)
        assert not cluster.lease.held
        await cluster.lease.acquire()
        lost = asyncio.create_task(cluster.lease.lost())
    finally:
        await cluster.close()
        await cluster.close()  # idempotent
    await asyncio.wait_for(lost, TIMEOUT)
    with pytest.raises(ClusterError):
        await cluster.lease.acquire()


async def test_the_local_bus_delivers_to_this_process_through_the_event_loop():
    cluster = LocalCluster("solo")
    first, second, other = Inbox(), Inbox(), Inbox()
    cluster.bus.subscribe("jobs", first)
    cluster.bus.subscribe("jobs", second)
    cluster.bus.subscribe("other", other)
    cluster.bus.on_reconnect(first)  # accepted; never called
    with pytest.raises(BusError):
        await cluster.bus.publish("jobs", "too early")
    await cluster.start()
    try:
        assert cluster.bus.connected
        await cluster.bus.publish("jobs", "1")
        assert first.empty() and second.empty()  # not inside publish: as tasks, on the loop
        assert await first.next() == "1" == await second.next()
        assert other.empty()
        with pytest.raises(ValueError):
            await cluster.bus.publish("jobs", "x" * 7001)
    finally:
        await cluster.close()
    assert not cluster.bus.connected


def test_make_cluster_picks_postgresql_when_database_url_is_set(tmp_path):
    local = make_cluster(make_settings(tmp_path), store=None)
    assert isinstance(local, LocalCluster) and not local.shared
    assert local.name == f"{socket.gethostname()}-{os.getpid()}"
    shared = make_cluster(make_settings(tmp_path, database_url="postgresql://bot:secret@127.0.0.1/bot",
                                        process_name="shard-1"), store=None)
    assert isinstance(shared, PgCluster) and shared.shared and shared.name == "shard-1"
