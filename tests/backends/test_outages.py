"""Outages that end well: a server that comes back is used at once, waiting jobs fail only after the
grace period and a fresh failed attempt, moved jobs keep their order, a lost POST is not run blindly
again, and a server whose node list is not ComfyUI's is unusable with a reason.

The scheduler runs for real over fake ComfyUI servers (tests/pool_harness.py); Discord is the
recording notifier.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from image_gen import RequestError
from tests.fakes import hostile
from tests.pool_harness import posted_jobs, posts_per_job, wait_for_state, wait_until

ALICE, BOB, CAROL = 101, 202, 303
SLOW_BACKOFF = {"backoff": (20.0, 30.0)}  # without help, a dropped client would wait 10-20 s to try again


async def test_a_server_back_from_an_outage_is_used_at_once_not_after_the_backoff(rig):
    fake = await rig.add_fake()
    rig.configure(server_grace=30.0)
    p = await rig.start(**SLOW_BACKOFF)
    await fake.stop()
    await wait_until(lambda: not p.backend(fake).healthy, 5, "the pool noticing the outage")
    job = await p.submit(ALICE, "waits for the server")
    await asyncio.sleep(1.0)  # setup: the outage goes on while the job waits
    await fake.start()
    await wait_for_state(p.store, job.id, "done", timeout=8)  # far less than the 10-20 s backoff
    assert p.notifier.failed == [] and p.notifier.delivered_ids() == [job.id]


async def test_waiting_jobs_fail_only_after_the_grace_and_a_fresh_failed_attempt(rig):
    fake = await rig.add_fake()
    rig.configure(server_grace=1.0)
    p = await rig.start(**SLOW_BACKOFF)
    await fake.stop()
    await wait_until(lambda: not p.backend(fake).healthy, 5, "the pool noticing the outage")
    submitted = time.monotonic()
    job = await p.submit(ALICE, "no server")
    await wait_until(lambda: p.notifier.failed, 10, "the job's failure")
    client = p.backend(fake).client
    assert p.notifier.failed == [(job.id, "ComfyUI is not answering right now. Try again in a few minutes.")]
    assert client.failed_attempt is not None and client.failed_attempt >= submitted + 1.0, \
        "the verdict rests on an attempt begun after the grace period"


async def test_jobs_moved_off_a_dead_server_keep_their_order(rig):
    x = await rig.add_fake()
    y = await rig.add_fake()
    await y.stop()  # y joins later: every job goes to x first
    rig.configure(server_capacity=3, server_grace=0.3)
    x.pause()
    p = await rig.start(healthy=1)
    jobs = [await p.submit(user, f"job of {user}") for user in (ALICE, BOB, CAROL)]
    # the three are handed to x at once: their POSTs may arrive in any order (what follows is about the queue's)
    await wait_until(lambda: sorted(posted_jobs(x)) == [job.id for job in jobs], 15, "three jobs queued on x")
    await y.start()
    y.pause()
    await p.wait_healthy(2)
    await x.stop()
    await wait_until(lambda: len(posted_jobs(y)) == 3, 10, "the three jobs moved to y")
    assert posted_jobs(y) == [job.id for job in jobs]
    y.resume()
    await wait_until(lambda: len(p.notifier.deliveries) == 3, 10, "three deliveries")
    assert p.notifier.failed == []


async def test_a_post_lost_twice_fails_in_words_and_runs_nowhere_else(rig):
    x = await rig.add_fake()
    y = await rig.add_fake()
    rig.configure(server_capacity=1, comfyui_timeout=0.5)
    p = await rig.start()
    x.swallow("/prompt", count=2, seconds=2)
    job = await p.submit(ALICE, "unlucky")  # both servers free: it goes to the first, x
    await wait_until(lambda: p.notifier.failed, 10, "the job's failure")
    (failed_id, reason), = p.notifier.failed
    assert failed_id == job.id and reason == ("ComfyUI did not confirm that it took the job, so the bot stopped "
                                              "rather than risk running it twice. Try again.")
    await asyncio.sleep(2.5)  # past the swallowed requests' hold: nothing of it runs later, anywhere
    assert posts_per_job(x)[job.id] == 2 and job.id not in posted_jobs(y)
    assert job.id not in [d.job_id for d in p.notifier.deliveries]


async def test_a_job_posted_twice_is_not_run_a_third_time_when_its_server_dies(rig):
    x = await rig.add_fake(node_delay=0.3)
    y = await rig.add_fake()
    rig.configure(server_capacity=1, comfyui_timeout=0.5, server_grace=0.3)
    p = await rig.start()
    x.swallow("/prompt", seconds=1)  # the first POST is lost: it is posted again, and may yet run twice
    job = await p.submit(ALICE, "posted twice")  # both servers free: it goes to the first, x
    await wait_for_state(p.store, job.id, "running")
    await x.stop()
    await wait_until(lambda: any(j == job.id for j, _ in p.notifier.failed), 10, "the job's failure")
    assert dict(p.notifier.failed)[job.id] == "the server failed twice while running it. Try again in a few minutes."
    assert posts_per_job(x)[job.id] == 2 and job.id not in posted_jobs(y)


@pytest.mark.parametrize("body", [{"KSampler": "x"}, [1, 2], hostile.HTML_PAGE], ids=["string-entry", "list", "html"])
async def test_a_server_whose_node_list_is_not_comfyuis_is_unusable_and_says_why(rig, body):
    fake = await rig.add_fake()
    fake.override("/object_info", hostile.answer(body))
    rig.configure()
    p = await rig.start(healthy=0)
    backend = p.backend(fake)
    await wait_until(lambda: backend.problem, 5, "the server marked unusable")
    with pytest.raises(RequestError, match=r"^ComfyUI is not working properly right now: it answers, but not"):
        await asyncio.wait_for(p.submit(ALICE, "never hangs"), 5)
    (server,) = p.scheduler.status(ALICE).servers
    assert not server.healthy and server.problem == backend.problem
    assert "/object_info" in server.problem and "<" not in server.problem
