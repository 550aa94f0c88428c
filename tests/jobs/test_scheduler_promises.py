"""Promises the scheduler keeps when servers misbehave: a job the person was told is cancelled is never
posted, even when its server finishes it anyway; a server that keeps losing a prompt cannot hand the
same job around forever; and waiting jobs ride out an ordinary ComfyUI restart with the default
grace.

The scheduler runs for real over fake ComfyUI servers (tests/pool_harness.py); Discord is the
recording notifier.
"""

from __future__ import annotations

import asyncio

import pytest

from config import Settings
from tests.pool_harness import posts_per_job, wait_for_state, wait_until

ALICE = 101


async def test_a_job_finished_by_comfyui_just_as_it_is_cancelled_is_kept_not_posted(rig):
    fake = await rig.add_fake(node_delay=0.3)
    rig.configure(server_capacity=1, comfyui_timeout=0.5)
    p = await rig.start()
    job = await p.submit(ALICE, "too late to stop")
    await wait_for_state(p.store, job.id, "running")
    fake.swallow("/interrupt", seconds=3)  # the interrupt is lost on the way: the prompt runs to its end
    said = await p.scheduler.cancel(job.id, ALICE)
    assert said == "Stopping it: it was already running, and ComfyUI is stopping it now."
    await wait_until(lambda: p.notifier.cancelled, 10, "the cancellation")
    stored = await p.store.get_job(job.id)
    assert p.notifier.cancelled == [(job.id, ALICE)] and p.notifier.deliver_calls == []
    assert stored.state == "cancelled" and stored.error == f"cancelled by <@{ALICE}>"
    kept = await p.store.get_generation(stored.generation_id)  # in the person's history, not posted
    assert kept is not None and kept.message_id is None and kept.user_id == ALICE and kept.files
    assert (rig.settings.outputs_dir / kept.files[0]).is_file()


async def test_an_api_cancel_names_the_key_in_words(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1)
    fake.pause()
    p = await rig.start()
    await p.submit(ALICE, "first")
    waiting = await p.submit(ALICE, "second")
    await p.scheduler.cancel(waiting.id, -3, by="the API key 'ci-bot'")
    assert (await p.store.get_job(waiting.id)).error == "cancelled by the API key 'ci-bot'"
    fake.resume()


async def test_a_server_that_keeps_losing_a_prompt_fails_the_job_in_words(rig):
    """It accepts the prompt, restarts and forgets it, again and again: each hand-over counts."""
    fake = await rig.add_fake()
    rig.configure(server_capacity=1, server_grace=0.5)
    fake.pause()  # it never starts: before the fix, "next on the GPU" forever
    p = await rig.start()
    job = await p.submit(ALICE, "lost every time")
    for handover in range(1, 4):
        await wait_until(lambda: posts_per_job(fake)[job.id] == handover or p.notifier.failed, 10,
                         f"hand-over {handover}")
        if p.notifier.failed:
            break
        await fake.restart()
        fake.pause()
    await wait_until(lambda: p.notifier.failed, 15, "the job's failure")
    assert p.notifier.failed == [(job.id, "the servers lost it 3 times before it could finish, so the bot stopped "
                                          "trying. Try again in a few minutes.")]
    assert posts_per_job(fake)[job.id] == 3 and (await p.store.get_job(job.id)).state == "failed"


def test_the_default_grace_rides_out_an_ordinary_comfyui_restart():
    assert Settings.model_fields["server_grace"].default >= 60


@pytest.mark.timeout(60)
async def test_waiting_jobs_ride_out_a_comfyui_restart_with_the_default_grace(rig):
    fake = await rig.add_fake()
    rig.configure(server_grace=Settings.model_fields["server_grace"].default)
    p = await rig.start()
    await p.wait_healthy(1)
    restarting = asyncio.create_task(fake.restart(downtime=7.0))  # longer than the old 5 s default
    await wait_until(lambda: not p.backend(fake).healthy, 5, "the pool noticing the restart")
    job = await p.submit(ALICE, "waits it out")
    await restarting
    done = await wait_for_state(p.store, job.id, "done", "failed", timeout=20)
    assert done.state == "done" and p.notifier.failed == []
    assert p.notifier.countdowns and p.notifier.countdowns[0][1] > 50  # "gives up in about a minute"
