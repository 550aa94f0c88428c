"""The dispatcher's lease on a real PostgreSQL server: one holder at a time, and a quick takeover when the
holder's session ends (cut from outside, a SIGKILL) or its process freezes (no FIN)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from cluster import ClusterError, PgCluster
from cluster.connection import application_name
from cluster.lease import LEASE_LOCK, PgLease
from tests.cluster.conftest import TIMEOUT, FreezableProxy, eventually, lease_holders, terminate
from tests.conftest import ROOT

TAKEOVER = 10.0  # seconds within which a standby must hold the lease once the holder is gone


def quick_lease(dsn: str, name: str) -> PgLease:
    """A lease whose waits and checks are short, so the tests exercise many of them."""
    return PgLease(dsn, name, wait_timeout=0.3, ping_interval=0.2, ping_timeout=1.0)


async def test_of_two_processes_exactly_one_holds_the_lease_and_the_other_takes_over_when_it_dies(pg_dsn):
    first, second = quick_lease(pg_dsn, "first"), quick_lease(pg_dsn, "second")
    tasks = {asyncio.create_task(first.acquire()): first, asyncio.create_task(second.acquire()): second}
    try:
        done, pending = await asyncio.wait(tasks, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        holder = tasks[done.pop()]
        standby = first if holder is second else second
        waiting = pending.pop()
        assert holder.held and not standby.held
        await asyncio.sleep(1.0)  # several of the standby's bounded waits pass; it still waits
        assert not waiting.done() and not standby.held
        holder_name = "first" if holder is first else "second"
        assert await lease_holders(pg_dsn, LEASE_LOCK) == [application_name("lease", holder_name)]

        lost = asyncio.create_task(holder.lost())
        assert await terminate(pg_dsn, application_name("lease", holder_name)) == 1  # as a crash would

        await asyncio.wait_for(waiting, TAKEOVER)
        assert standby.held
        await asyncio.wait_for(lost, TIMEOUT)
        assert not holder.held
        assert await lease_holders(pg_dsn, LEASE_LOCK) == [application_name("lease", "first" if standby is first
                                                                             else "second")]
    finally:
        for task in tasks:
            task.cancel()
        await first.close()
        await second.close()


async def test_a_released_lease_goes_to_the_one_waiting_and_can_be_acquired_again(pg_dsn):
    first, second = quick_lease(pg_dsn, "first"), quick_lease(pg_dsn, "second")
    try:
        await asyncio.wait_for(first.acquire(), TIMEOUT)
        await asyncio.wait_for(first.acquire(), TIMEOUT)  # already held: at once
        waiting = asyncio.create_task(second.acquire())
        await first.release()
        await asyncio.wait_for(first.lost(), TIMEOUT)  # not held: returns at once
        await asyncio.wait_for(waiting, TAKEOVER)
        assert second.held and not first.held
        await second.release()
        await second.release()  # idempotent
        await asyncio.wait_for(first.acquire(), TIMEOUT)
        assert await lease_holders(pg_dsn, LEASE_LOCK) == [application_name("lease", "first")]
    finally:
        await first.close()
        await second.close()


async def test_a_cancelled_wait_leaves_nothing_held_and_a_closed_lease_refuses(pg_dsn):
    holder, standby = quick_lease(pg_dsn, "holder"), quick_lease(pg_dsn, "standby")
    try:
        await asyncio.wait_for(holder.acquire(), TIMEOUT)
        waiting = asyncio.create_task(standby.acquire())
        await asyncio.sleep(0.5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not standby.held
        await holder.release()
        await eventually(_no_holder(pg_dsn))
        # the cancelled standby holds nothing: a third process gets the lease at once
        third = quick_lease(pg_dsn, "third")
        await asyncio.wait_for(third.acquire(), TIMEOUT)
        await third.close()

        await asyncio.wait_for(holder.acquire(), TIMEOUT)
        waiting = asyncio.create_task(standby.acquire())
        await asyncio.sleep(0.3)
        await standby.close()  # a waiting acquire ends with ClusterError
        with pytest.raises(ClusterError):
            await asyncio.wait_for(waiting, TIMEOUT)
        with pytest.raises(ClusterError):
            await standby.acquire()
    finally:
        await holder.close()
        await standby.close()


def _no_holder(dsn: str):
    async def check() -> bool:
        return await lease_holders(dsn, LEASE_LOCK) == []
    return check


async def test_a_holder_whose_database_vanished_gives_the_lease_up_before_anyone_else_gets_it(pg_dsn):
    """Between the holder and the server, the bytes stop with every socket left open (no FIN either way):
    the holder's pings fail, so it loses the lease (lost() returns, held is False); the server ends the
    silent session, so a standby then gets the lease."""
    proxy = FreezableProxy(pg_dsn)
    holder = PgLease(await proxy.start(), "holder", wait_timeout=0.3, ping_interval=0.2, ping_timeout=0.5,
                     idle_timeout=2.0)
    standby = quick_lease(pg_dsn, "standby")
    try:
        await asyncio.wait_for(holder.acquire(), TIMEOUT)
        waiting = asyncio.create_task(standby.acquire())
        holder_held_at_takeover: list[bool] = []
        waiting.add_done_callback(lambda _: holder_held_at_takeover.append(holder.held))
        lost = asyncio.create_task(holder.lost())
        proxy.frozen = True
        await asyncio.wait_for(lost, TIMEOUT)
        assert not holder.held
        await asyncio.wait_for(waiting, TAKEOVER)
        assert standby.held and holder_held_at_takeover == [False]  # never two holders
    finally:
        await holder.close()
        await standby.close()
        await proxy.stop()


async def start_holder(dsn: str, name: str) -> asyncio.subprocess.Process:
    """A separate process holding the lease (tests/cluster/lease_holder.py), once it says so."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.cluster.lease_holder", dsn, name,
                                                   cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    for _ in range(100):  # its log lines come first
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, "the holder ended before holding the lease"
        if line.strip() == b"held":
            return process
    raise AssertionError("the holder never said it holds the lease")


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await asyncio.wait_for(process.wait(), TIMEOUT)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_another_process_takes_over_within_10_s_when_the_holder_is_killed_or_frozen(pg_dsn, how):
    """SIGKILL: the socket closes and the server ends the session. SIGSTOP: the socket stays open with no
    one behind it (as a machine that vanished): the server ends the silent session (idle_session_timeout).
    The standby runs with the production settings."""
    process = await start_holder(pg_dsn, "child")
    cluster = PgCluster(pg_dsn, "parent")
    try:
        await cluster.start()
        waiting = asyncio.create_task(cluster.lease.acquire())
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert await lease_holders(pg_dsn, LEASE_LOCK) == [application_name("lease", "child")]
        os.kill(process.pid, getattr(signal, how))
        await asyncio.wait_for(waiting, TAKEOVER)
        assert cluster.lease.held
        assert await lease_holders(pg_dsn, LEASE_LOCK) == [application_name("lease", "parent")]
    finally:
        await stop(process)
        await cluster.close()
