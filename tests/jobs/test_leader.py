"""Several schedulers on one PostgreSQL database, as several bot processes: exactly one leads (holds the
dispatcher's lease) and hands jobs to the servers; the others store jobs and cancels and tell it over the
bus; when the leader goes, another takes up its jobs. Everything is real: PostgreSQL, the cluster's lease
and bus, the stores, the ComfyUI clients and schedulers, with the wire-level fake ComfyUI on 127.0.0.1 and
a recording notifier for Discord.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest

from backends.pool import open_backends
from cluster import PgCluster
from comfy.workflows import load_set
from jobs import cluster_view
from jobs.scheduler import Scheduler
from results.folder import OutputFolder
from store import Job, PostgresStore
from tests.conftest import TEST_CLIENT, make_settings
from tests.fakes.comfyui import FakeComfyUI
from tests.pool_harness import INSTANCE, RecordingNotifier, posted_jobs, wait_for_state, wait_until

ALICE, BOB = 101, 202


@dataclass
class Member:
    name: str
    store: PostgresStore
    cluster: PgCluster
    scheduler: Scheduler
    notifier: RecordingNotifier

    async def submit(self, user_id: int, prompt: str) -> Job:
        return await self.scheduler.submit(Job(id=None, kind="txt2img", user_id=user_id, channel_id=1, guild_id=1,
                                               request={"prompt": prompt, "width": 64, "height": 64}))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.scheduler.close()
        for backend in self.scheduler.pool.backends:
            with contextlib.suppress(Exception):
                await backend.client.close()
        with contextlib.suppress(Exception):
            await self.cluster.close()
        await self.store.close()


@pytest.fixture
async def cluster_rig(tmp_path, pg_dsn):
    fake = FakeComfyUI()
    await fake.start()
    settings = make_settings(tmp_path, comfyui_urls=[fake.url], server_capacity=1, jobs_per_user=100)
    outputs = OutputFolder(settings.outputs_dir, settings.output_limit)  # one host: one folder for both
    await outputs.open()
    members: list[Member] = []

    async def join(name: str) -> Member:
        store = PostgresStore(pg_dsn)
        await store.open()
        cluster = PgCluster(pg_dsn, name)
        await cluster.start()

        async def connect(leader: bool):
            return await open_backends(settings, load_set(settings.workflow_dir()), outputs, instance=INSTANCE,
                                       watcher=None if leader else name, **TEST_CLIENT)

        notifier = RecordingNotifier()
        scheduler = Scheduler(store, await connect(False), outputs, settings, notifier, instance=INSTANCE,
                              cluster=cluster, connect=connect)
        member = Member(name, store, cluster, scheduler, notifier)
        members.append(member)
        await scheduler.start()
        return member

    try:
        yield fake, join
    finally:
        for member in members:
            await member.close()
        await fake.stop()
        assert not fake.unhandled


async def leader_of(*members: Member) -> Member:
    await wait_until(lambda: sum(m.scheduler.leading for m in members) == 1, 15, "one leader")
    return next(m for m in members if m.scheduler.leading)


def prompt_client_ids(fake: FakeComfyUI) -> set[str]:
    return {r["json"].get("client_id") for r in fake.requests
            if r["method"] == "POST" and r["path"].endswith("/prompt") and isinstance(r["json"], dict)}


async def test_jobs_taken_by_a_follower_run_on_the_leader_under_the_shared_client_id(cluster_rig):
    fake, join = cluster_rig
    a, b = await join("a"), await join("b")
    leader = await leader_of(a, b)
    follower = b if leader is a else a
    await wait_until(lambda: len(fake.connected_client_ids()) == 2, 10, "leader and follower connected")
    assert sorted(fake.connected_client_ids()) == sorted([f"{INSTANCE}-0", f"{INSTANCE}-0-{follower.name}"])
    jobs = [await follower.submit(ALICE, "from the follower"), await leader.submit(BOB, "from the leader")]
    await wait_until(lambda: len(leader.notifier.deliveries) == 2, 20, "both delivered by the leader")
    assert sorted(leader.notifier.delivered_ids()) == sorted(job.id for job in jobs)
    assert follower.notifier.deliveries == [] and follower.notifier.starting == []
    assert sorted(posted_jobs(fake)) == sorted(job.id for job in jobs), "each prompt sent once"
    assert prompt_client_ids(fake) == {f"{INSTANCE}-0"}, "only the leader's client id ever submits"


async def test_a_follower_cancels_a_waiting_job_and_the_leader_drops_it_and_tells_its_owner(cluster_rig):
    fake, join = cluster_rig
    a, b = await join("a"), await join("b")
    leader = await leader_of(a, b)
    follower = b if leader is a else a
    fake.pause()  # the first job holds the one slot: the second waits in the leader's queue
    first = await follower.submit(ALICE, "first")
    second = await follower.submit(ALICE, "second")
    await wait_until(lambda: leader.scheduler.position(second.id) is not None, 10, "queued on the leader")
    said = await follower.scheduler.cancel(second.id, BOB)
    assert said == "Cancelled: it left the queue before it started."
    await wait_until(lambda: (second.id, BOB) in leader.notifier.cancelled, 10, "the leader told the owner")
    assert leader.scheduler.position(second.id) is None
    fake.resume()
    await wait_until(lambda: leader.notifier.delivered_ids() == [first.id], 20, "the first delivered")
    assert second.id not in posted_jobs(fake)
    assert (await leader.store.get_job(second.id)).state == "cancelled"


async def test_a_follower_stops_a_running_job_through_the_leader(cluster_rig):
    fake, join = cluster_rig
    a, b = await join("a"), await join("b")
    leader = await leader_of(a, b)
    follower = b if leader is a else a
    fake.node_delay = 0.5  # long enough to cancel mid-run
    job = await follower.submit(ALICE, "slow")
    await wait_for_state(leader.store, job.id, "running", timeout=15)
    said = await follower.scheduler.cancel(job.id, ALICE)
    assert said == "Stopping it: it was already running, and ComfyUI is stopping it now."
    await wait_until(lambda: (job.id, ALICE) in leader.notifier.cancelled, 15, "cancelled on the leader")
    assert leader.notifier.deliveries == []
    assert any(r["path"].endswith("/interrupt") for r in fake.requests), "ComfyUI was told to stop"


async def test_when_the_leader_goes_another_takes_up_its_running_and_waiting_jobs(cluster_rig):
    fake, join = cluster_rig
    a, b = await join("a"), await join("b")
    leader = await leader_of(a, b)
    follower = b if leader is a else a
    fake.node_delay = 0.3
    running = await follower.submit(ALICE, "running when the leader goes")
    waiting = await follower.submit(BOB, "waiting when the leader goes")
    await wait_for_state(leader.store, running.id, "running", timeout=15)
    await leader.close()  # its lease goes with it, as with a crash (tests/cluster tests kill -9 itself)
    await wait_until(lambda: follower.scheduler.leading, 15, "the follower leads")
    await wait_until(lambda: len(follower.notifier.deliveries) == 2, 30, "both delivered by the new leader")
    assert sorted(follower.notifier.delivered_ids()) == sorted([running.id, waiting.id])
    assert posted_jobs(fake).count(running.id) == 1, "the running prompt was followed, not sent again"
    assert posted_jobs(fake).count(waiting.id) == 1


async def test_status_on_a_follower_shows_the_leaders_queue(cluster_rig):
    fake, join = cluster_rig
    a, b = await join("a"), await join("b")
    leader = await leader_of(a, b)
    follower = b if leader is a else a
    fake.pause()
    await follower.submit(ALICE, "on the server")
    mine = await follower.submit(BOB, "waiting")
    await wait_until(lambda: leader.scheduler.position(mine.id) == 0, 10, "queued on the leader")
    for member in (leader, follower):  # what the heartbeat writes, written now
        await member.store.heartbeat(member.name, cluster_view.report(member.scheduler, [0]), __import__("time").time())
    status = await cluster_view.status(follower.scheduler, follower.store, BOB)
    assert [(job.id, ahead) for job, ahead, _ in status.mine] == [(mine.id, 1)]
    assert (status.waiting, status.running, [s.name for s in status.servers]) == (1, 1, ["ComfyUI"])
    members = await cluster_view.members(follower.store)
    assert [(m.name, m.leading, m.shards) for m in members] == [(leader.name, True, [0]), (follower.name, False, [0])]
    fake.resume()
