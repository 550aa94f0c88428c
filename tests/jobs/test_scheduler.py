"""The job scheduler over a pool of fake ComfyUI servers: fairness, caps, routing, failover, cancel, restart.

Everything is real (Store, OutputFolder, ComfyClient, Engine, Backend, Pool, Scheduler) except Discord,
which a recording notifier stands in for, and ComfyUI, which is the wire-level fake on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from image_gen import RequestError
from jobs.queue_view import ServerStatus
from jobs.scheduler import QueueFull
from tests.pool_harness import (
    RecordingNotifier,
    job_of,
    on_server,
    posted_jobs,
    posted_prompt_ids,
    posts_per_job,
    settles,
    wait_for_state,
    wait_until,
)

ALICE, BOB, CAROL, MOD = 101, 202, 303, 909


async def wait_for_job(store, job_id, predicate, what, timeout=10.0):
    """Wait until the stored job satisfies `predicate`; returns it."""
    job = None
    try:
        async with asyncio.timeout(timeout):
            while (job := await store.get_job(job_id)) is None or not predicate(job):
                await asyncio.sleep(0.01)
            return job
    except TimeoutError:
        raise AssertionError(f"job {job_id} never became {what} within {timeout:g} s; it is {job}") from None


# 1. fairness -------------------------------------------------------------------------------------


async def test_a_second_user_is_not_held_behind_the_first_users_jobs(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1)
    fake.pause()
    p = await rig.start()
    a1 = await p.submit(ALICE, "a1")
    await wait_until(lambda: posted_jobs(fake) == [a1.id], what="A1 on the paused server")
    a2, a3, a4 = [await p.submit(ALICE, f"a{i}") for i in (2, 3, 4)]
    b1 = await p.submit(BOB, "b1")
    names = {a1.id: "A1", a2.id: "A2", a3.id: "A3", a4.id: "A4", b1.id: "B1"}

    positions = {names[job_id]: p.scheduler.position(job_id) for job_id in names}
    fake.resume()
    await wait_until(lambda: len(p.notifier.deliveries) == 5, 20, "five deliveries")
    order = [names[j] for j in posted_jobs(fake)]
    # A1 already had A's turn (it is on the server): B1 must come next, in the queue and on ComfyUI
    assert (order, positions) == (["A1", "B1", "A2", "A3", "A4"], {"A1": None, "B1": 0, "A2": 1, "A3": 2, "A4": 3})
    assert sorted(p.notifier.delivered_ids()) == sorted(names)  # deliveries overlap: their order may differ


async def test_jobs_piled_up_before_any_server_is_up_alternate_between_users(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1)
    await fake.stop()  # not up yet: everything waits in the scheduler
    p = await rig.start(healthy=0)
    a = [await p.submit(ALICE, f"a{i}") for i in range(1, 5)]
    b1 = await p.submit(BOB, "b1")
    assert [p.scheduler.position(job.id) for job in [*a, b1]] == [0, 2, 3, 4, 1]
    await fake.start()  # same port
    await wait_until(lambda: len(p.notifier.deliveries) == 5, 20, "five deliveries")
    assert posted_jobs(fake) == [a[0].id, b1.id, a[1].id, a[2].id, a[3].id]


async def test_a_priority_job_submitted_last_goes_first_among_the_waiting(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1)
    fake.pause()
    p = await rig.start()
    first = await p.submit(ALICE, "first")
    await wait_until(lambda: posted_jobs(fake) == [first.id], what="the first job on the server")
    others = [await p.submit(ALICE, "a2"), await p.submit(BOB, "b1"), await p.submit(ALICE, "a3")]
    urgent = await p.submit(CAROL, "urgent", priority=1)
    assert p.scheduler.position(urgent.id) == 0
    assert sorted(p.scheduler.position(job.id) for job in others) == [1, 2, 3]
    fake.resume()
    await wait_until(lambda: len(p.notifier.deliveries) == 5, 20, "five deliveries")
    assert posted_jobs(fake)[:2] == [first.id, urgent.id]


# 2. per-server cap --------------------------------------------------------------------------------


async def test_a_server_never_holds_more_than_its_capacity(rig):
    fake = await rig.add_fake(node_delay=0.06)
    rig.configure(server_capacity=2)
    p = await rig.start()
    backend = p.backend(fake)
    jobs = [await p.submit(ALICE if i % 2 else BOB, f"job {i}") for i in range(6)]
    await wait_until(lambda: len(on_server(fake)) == 2, what="two prompts on the server")
    assert p.scheduler.status(ALICE).waiting == 4  # the rest wait in the scheduler, not in ComfyUI
    most_on_server = most_followed = 0
    async with asyncio.timeout(30):
        while len(p.notifier.deliveries) < 6:
            most_on_server = max(most_on_server, len(on_server(fake)))
            most_followed = max(most_followed, len(backend.jobs))
            await asyncio.sleep(0.003)
    assert most_on_server == 2 and most_followed <= 2
    assert sorted(p.notifier.delivered_ids()) == sorted(job.id for job in jobs)
    assert posts_per_job(fake) == {job.id: 1 for job in jobs}


# 3. per-guild limit -------------------------------------------------------------------------------


async def test_the_third_waiting_job_of_a_guild_is_refused(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1, waiting_per_guild=2)
    fake.pause()
    p = await rig.start()
    on_comfy = await p.submit(ALICE, guild_id=7)
    await wait_until(lambda: posted_jobs(fake) == [on_comfy.id], what="the first job on the server")
    await p.submit(ALICE, guild_id=7)
    await p.submit(BOB, guild_id=7)
    with pytest.raises(QueueFull) as refused:
        await p.submit(CAROL, guild_id=7)
    assert str(refused.value) == "This server already has 2 jobs waiting. Try again in a while."
    assert (await p.store.job_counts())["waiting"] == 2  # the refused job was not stored
    await p.submit(CAROL, guild_id=8)  # another guild is not limited
    await p.submit(CAROL, guild_id=None)  # nor are direct messages
    assert p.scheduler.status(CAROL).waiting == 4


# 4. capability routing ------------------------------------------------------------------------------


async def test_jobs_go_only_to_servers_that_have_their_checkpoint(rig):
    x = await rig.add_fake(models={"checkpoints": ["a.safetensors"]})
    y = await rig.add_fake(models={"checkpoints": ["b.safetensors"]})
    rig.configure(workflow_set="default", checkpoint="a.safetensors", server_capacity=1)
    p = await rig.start()
    wants_b = [await p.submit(ALICE, f"b{i}", checkpoint="b.safetensors", steps=2) for i in range(3)]
    wants_a = [await p.submit(BOB, f"a{i}", steps=2) for i in range(2)]  # the default checkpoint
    await wait_until(lambda: len(p.notifier.deliveries) == 5, 30, "five deliveries")
    assert sorted(posted_jobs(y)) == sorted(job.id for job in wants_b)
    assert sorted(posted_jobs(x)) == sorted(job.id for job in wants_a)
    for job in wants_b:
        assert p.server(p.notifier.delivery(job.id).generation.server) is y
        (pid,) = [pid for pid in posted_prompt_ids(y) if job_of(pid) == job.id]
        assert y.prompts[pid]["prompt"]["4"]["inputs"]["ckpt_name"] == "b.safetensors"


async def test_a_checkpoint_no_server_has_is_refused_at_submit(rig):
    await rig.add_fake(models={"checkpoints": ["a.safetensors"]})
    await rig.add_fake(models={"checkpoints": ["b.safetensors"]})
    rig.configure(workflow_set="default", checkpoint="a.safetensors")
    p = await rig.start()
    with pytest.raises(RequestError) as refused:
        await p.submit(ALICE, checkpoint="c.safetensors")
    text = str(refused.value)
    assert text == "the model `c` is not installed on any server. Choose another model, or ask the operator."
    assert (await p.store.job_counts())["waiting"] == 0
    assert all(posted_prompt_ids(fake) == [] for fake in rig.fakes)


# 5. checkpoint affinity ------------------------------------------------------------------------------


async def test_a_job_goes_where_its_checkpoint_was_last_used(rig):
    both = {"checkpoints": ["a.safetensors", "b.safetensors"]}
    x = await rig.add_fake(models=both)
    y = await rig.add_fake(models=both)
    rig.configure(workflow_set="default", checkpoint="a.safetensors", server_capacity=1)
    p = await rig.start()

    async def run(*checkpoints):
        jobs = [await p.submit(ALICE, ckpt, checkpoint=ckpt, steps=2) for ckpt in checkpoints]
        await wait_until(lambda: all(job.id in p.notifier.delivered_ids() for job in jobs), 20, f"{checkpoints}")
        await wait_until(lambda: not p.backend(x).jobs and not p.backend(y).jobs, what="both servers free")
        return [p.server(p.notifier.delivery(job.id).generation.server) for job in jobs]

    assert await run("a.safetensors", "b.safetensors") == [x, y]  # y only because x was busy
    assert p.backend(x).last_model == "a.safetensors" and p.backend(y).last_model == "b.safetensors"
    assert await run("b.safetensors") == [y]  # both free: y still has b loaded
    assert await run("a.safetensors") == [x]
    assert await run("b.safetensors", "a.safetensors") == [y, x]


# 6. failover before start --------------------------------------------------------------------------


@pytest.mark.parametrize("death", ["stop", "restart"])
async def test_a_queued_job_moves_when_its_server_dies(rig, death):
    x = await rig.add_fake()
    y = await rig.add_fake()
    rig.configure(server_capacity=1, server_grace=0.3)
    x.pause()
    p = await rig.start()
    job = await p.submit(ALICE, "moved")
    await wait_until(lambda: posted_jobs(x) == [job.id], what="the job queued on x")
    restarting = None
    if death == "stop":
        await x.stop()
    else:
        restarting = asyncio.create_task(x.restart(downtime=1.5))  # longer than the grace period
    await wait_until(lambda: p.notifier.deliveries, 15, "the delivery")
    if restarting is not None:
        await restarting
    await wait_for_state(p.store, job.id, "done")
    assert p.notifier.delivered_ids() == [job.id]
    assert p.server(p.notifier.delivery(job.id).generation.server) is y
    assert p.notifier.failed == []
    assert posted_jobs(x) == [job.id] and posted_jobs(y) == [job.id]
    stored = await p.store.get_job(job.id)
    assert p.server(stored.server) is y and stored.attempts == 0  # it never started: not an attempt


async def test_a_moved_job_keeps_its_place_at_the_head_of_the_queue(rig):
    x = await rig.add_fake()
    y = await rig.add_fake()
    rig.configure(server_capacity=1, server_grace=0.3)
    x.pause()
    y.pause()
    p = await rig.start()
    moved = await p.submit(ALICE, "moved")
    await wait_until(lambda: posted_jobs(x) == [moved.id], what="alice's job queued on x")
    busy = await p.submit(BOB, "busy")
    await wait_until(lambda: posted_jobs(y) == [busy.id], what="bob's job queued on y")
    later = [await p.submit(CAROL, "carol's"), await p.submit(MOD, "dave's")]  # they arrive after alice's
    await x.stop()
    await wait_until(lambda: p.scheduler.position(moved.id) is not None, 5, "alice's job back in the queue")
    assert p.scheduler.position(moved.id) == 0, "it was dispatched before the others arrived: it goes first"
    y.resume()
    await wait_until(lambda: len(p.notifier.deliveries) == 4, 15, "four deliveries")
    assert posted_jobs(y) == [busy.id, moved.id, *(job.id for job in later)]


# 7. failover mid-run ---------------------------------------------------------------------------------


async def test_a_running_job_whose_server_restarts_runs_once_more_elsewhere(rig):
    x = await rig.add_fake(node_delay=0.4)
    y = await rig.add_fake()
    rig.configure(server_capacity=1, server_grace=0.3)
    p = await rig.start()
    job = await p.submit(ALICE, "survivor")
    running = await wait_for_state(p.store, job.id, "running")
    assert p.server(running.server) is x and x.running_id() == running.prompt_id
    await x.restart()
    await wait_until(lambda: p.notifier.ended(job.id), 15, "the job's end")
    assert p.notifier.failed == []
    assert p.notifier.delivered_ids() == [job.id]
    assert p.server(p.notifier.delivery(job.id).generation.server) is y
    assert posted_jobs(x) == [job.id] and posted_jobs(y) == [job.id]
    stored = await wait_for_state(p.store, job.id, "done")
    assert stored.attempts == 1


async def test_a_job_whose_servers_die_twice_under_it_fails_in_words(rig):
    x = await rig.add_fake(node_delay=0.4)
    y = await rig.add_fake(node_delay=0.4)
    rig.configure(server_capacity=1, server_grace=0.3)
    p = await rig.start()
    job = await p.submit(ALICE, "unlucky")
    await wait_for_job(p.store, job.id, lambda j: j.state == "running" and p.server(j.server) is x, "running on x")
    await x.restart()
    await wait_for_job(p.store, job.id, lambda j: j.state == "running" and p.server(j.server) is y, "running on y")
    await y.restart()
    await wait_until(lambda: p.notifier.ended(job.id), 15, "the job's end")
    ((failed_id, reason),) = p.notifier.failed
    assert failed_id == job.id
    assert reason == "the server failed twice while running it. Try again in a few minutes."
    assert p.notifier.deliveries == []
    stored = await p.store.get_job(job.id)
    assert stored.state == "failed" and stored.error == reason
    assert posts_per_job(x, y) == {job.id: 2}


# 8. a server coming back ------------------------------------------------------------------------------


async def test_a_server_that_comes_back_is_cleaned_and_used_again(rig):
    x = await rig.add_fake()
    y = await rig.add_fake()
    rig.configure(server_capacity=1, server_grace=0.3)
    x.pause()
    p = await rig.start()
    moved = await p.submit(ALICE, "moved")
    await wait_until(lambda: posted_jobs(x) == [moved.id], what="the job queued on x")
    (leftover,) = x.queue_pending_ids()
    await x.stop()  # unreachable; its queue is kept (like a network cut)
    await wait_until(lambda: moved.id in p.notifier.delivered_ids(), 15, "the moved job's delivery")
    assert p.server(p.notifier.delivery(moved.id).generation.server) is y
    assert x.queue_pending_ids() == [leftover]

    await x.start()  # back on the same port, still holding the moved job's prompt
    await wait_until(lambda: p.backend(x).healthy, 10, "x healthy again")
    await wait_until(lambda: leftover not in x.queue_pending_ids(), 5, "the leftover prompt removed from x")
    assert any(r["method"] == "POST" and r["path"].endswith("/queue") and r["json"] == {"delete": [leftover]}
               for r in x.requests)
    x.resume()
    later = [await p.submit(ALICE, "again 1"), await p.submit(BOB, "again 2")]  # one per server
    await wait_until(lambda: all(job.id in p.notifier.delivered_ids() for job in later), 15, "both deliveries")
    assert {p.server(p.notifier.delivery(job.id).generation.server) for job in later} == {x, y}
    assert p.notifier.delivered_ids().count(moved.id) == 1
    assert leftover not in x.history_ids()  # the moved job never ran on x


# 9. cancel in each state -------------------------------------------------------------------------------


async def test_cancel_a_waiting_job(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1)
    fake.pause()
    p = await rig.start()
    first = await p.submit(ALICE, "first")
    await wait_until(lambda: posted_jobs(fake) == [first.id], what="the first job on the server")
    waiting = await p.submit(ALICE, "second")
    assert await p.scheduler.cancel(waiting.id, ALICE) == "Cancelled: it left the queue before it started."
    assert await p.scheduler.cancel(waiting.id, ALICE) == "This job was already cancelled."
    assert p.notifier.cancelled == [(waiting.id, ALICE)]
    assert p.scheduler.position(waiting.id) is None and p.scheduler.status(ALICE).waiting == 0
    stored = await p.store.get_job(waiting.id)
    assert stored.state == "cancelled" and stored.error == f"cancelled by <@{ALICE}>"
    fake.resume()
    await wait_until(lambda: first.id in p.notifier.delivered_ids(), 10, "the first delivery")
    assert waiting.id not in posted_jobs(fake)  # it never reached ComfyUI
    assert p.notifier.delivered_ids() == [first.id]


async def test_cancel_a_job_queued_on_comfyui(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1)
    fake.pause()
    p = await rig.start()
    queued = await p.submit(ALICE, "queued")
    behind = await p.submit(BOB, "behind")
    await wait_until(lambda: posted_jobs(fake) == [queued.id], what="the job queued on ComfyUI")
    prompt_id = (await p.store.get_job(queued.id)).prompt_id
    assert await p.scheduler.cancel(queued.id, MOD) == \
        "Cancelled: it was taken out of ComfyUI's queue before it started."
    await wait_until(lambda: p.notifier.cancelled, 5, "the cancellation")
    assert p.notifier.cancelled == [(queued.id, MOD)]
    assert prompt_id not in fake.queue_pending_ids() and prompt_id not in fake.history_ids()
    assert (await p.store.get_job(queued.id)).state == "cancelled"
    await wait_until(lambda: behind.id in posted_jobs(fake), 5, "the next job taking the freed slot")
    fake.resume()
    await wait_until(lambda: behind.id in p.notifier.delivered_ids(), 10, "the next job's delivery")
    assert prompt_id not in fake.history_ids()  # it never ran
    assert p.notifier.delivered_ids() == [behind.id]
    assert (await p.store.get_job(queued.id)).state == "cancelled"


async def test_cancel_a_running_job_interrupts_only_that_prompt(rig):
    fake = await rig.add_fake(node_delay=0.4)
    rig.configure(server_capacity=1)
    p = await rig.start()
    job = await p.submit(ALICE, "long")
    running = await wait_for_state(p.store, job.id, "running")
    assert await p.scheduler.cancel(job.id, ALICE) == \
        "Stopping it: it was already running, and ComfyUI is stopping it now."
    await wait_until(lambda: p.notifier.cancelled, 5, "the cancellation")
    assert p.notifier.cancelled == [(job.id, ALICE)]
    interrupts = [r["json"] for r in fake.requests if r["path"].endswith("/interrupt")]
    assert interrupts == [{"prompt_id": running.prompt_id}]  # targeted: never a bare interrupt
    assert p.notifier.deliveries == [] and p.notifier.failed == []
    assert (await p.store.get_job(job.id)).state == "cancelled"
    await wait_until(lambda: fake.running_id() is None, 5, "ComfyUI idle")
    assert not p.backend(fake).jobs  # the slot is free again


async def test_cancel_while_the_result_downloads_is_either_refused_or_honoured(rig):
    fake = await rig.add_fake()
    p = await rig.start()
    fake.slow("/view", 1.0)  # the result is slow to come home
    job = await p.submit(ALICE, "downloading")
    await wait_until(lambda: any(r["path"].endswith("/view") for r in fake.requests), 10, "the download")
    answer = await p.scheduler.cancel(job.id, ALICE)
    await wait_until(lambda: p.notifier.ended(job.id), 10, "the job's end")
    stored = await p.store.get_job(job.id)
    outcome = (answer, p.notifier.delivered_ids(), p.notifier.cancelled, stored.state)
    assert outcome in (
        ("This job has already finished.", [job.id], [], "done"),
        ("Cancelling: ComfyUI is stopping it.", [], [(job.id, ALICE)], "cancelled"),
    ), f"told {answer!r}, yet: delivered {outcome[1]}, cancelled {outcome[2]}, stored {stored.state!r}"


async def test_cancel_of_a_finished_job_says_so(rig):
    await rig.add_fake()
    p = await rig.start()
    job = await p.submit(ALICE, "quick")
    await wait_for_state(p.store, job.id, "done")
    assert await p.scheduler.cancel(job.id, ALICE) == "This job has already finished."
    assert await p.scheduler.cancel(12345, ALICE) == "This job has already finished."
    assert p.notifier.cancelled == [] and (await p.store.get_job(job.id)).state == "done"


# 10. restart in each job state ---------------------------------------------------------------------------


@pytest.mark.parametrize("bot_down", ["briefly", "while ComfyUI finishes"])
async def test_a_restart_delivers_every_job_exactly_once_and_runs_none_twice(rig, bot_down):
    fake = await rig.add_fake()
    rig.configure(server_capacity=2)
    first = RecordingNotifier(block_delivery=True)
    p1 = await rig.start(first)
    delivering = await p1.submit(ALICE, "delivering")
    await wait_for_state(p1.store, delivering.id, "delivering")
    fake.node_delay = 0.3
    running = await p1.submit(BOB, "running")
    await wait_for_state(p1.store, running.id, "running")
    submitted = await p1.submit(CAROL, "submitted")
    queued = await wait_for_state(p1.store, submitted.id, "submitted")
    await wait_until(lambda: queued.prompt_id in fake.queue_pending_ids(), 5, "the prompt queued on ComfyUI")
    waiting = await p1.submit(MOD, "waiting")
    jobs = {"delivering": delivering.id, "running": running.id, "submitted": submitted.id, "waiting": waiting.id}
    states = {name: (await p1.store.get_job(job_id)).state for name, job_id in jobs.items()}
    assert states == {name: name for name in jobs}

    await p1.close()  # the process stops; the next one takes over on the same store and client ids
    if bot_down == "while ComfyUI finishes":
        await wait_until(lambda: len(fake.history_ids()) == 3, 10, "ComfyUI finishing the running and queued jobs")
    second = RecordingNotifier()
    p2 = await rig.start(second)
    await wait_until(lambda: all(second.ended(job_id) for job_id in jobs.values()), 20, "every job's end")

    names = {job_id: name for name, job_id in jobs.items()}
    assert [names[j] for j, _ in second.failed] == [], second.failed
    delivered = sorted(names[j] for j in first.delivered_ids() + second.delivered_ids())
    assert delivered == sorted(jobs), "every job is delivered exactly once"
    assert {names[j]: n for j, n in posts_per_job(fake).items()} == dict.fromkeys(jobs, 1), (
        "no prompt is POSTed twice")
    for job_id in jobs.values():
        assert (await p2.store.get_job(job_id)).state == "done"
        assert second.delivery(job_id).files and second.delivery(job_id).files[0].startswith(b"\x89PNG")


async def test_a_job_followed_after_a_restart_gets_files_saved_before_it_listened(rig):
    """The prompt's output node ran while no process listened (its `executed` event went nowhere); the
    next process follows the prompt to its end and takes the files /history recorded."""
    fake = await rig.add_fake()
    p1 = await rig.start()
    fake.node_delay = 0.3
    job = await p1.submit(ALICE, "saved while nobody listened")
    await wait_for_state(p1.store, job.id, "running")
    await p1.close()
    fake.dropped_events.add("executed")
    second = RecordingNotifier()
    await rig.start(second)
    await wait_until(lambda: second.ended(job.id), 20, "the job's end")
    assert second.failed == [] and second.delivered_ids() == [job.id]
    assert second.delivery(job.id).files[0].startswith(b"\x89PNG") and posts_per_job(fake)[job.id] == 1


# 11. queue positions ------------------------------------------------------------------------------------------


async def test_queue_positions_reach_the_notifier_as_the_queue_moves(rig):
    fake = await rig.add_fake(node_delays={"ImageAddNoise": 0.7})
    rig.configure(server_capacity=1)
    fake.pause()
    p = await rig.start()
    first = await p.submit(ALICE, "first")
    await wait_until(lambda: posted_jobs(fake) == [first.id], what="the first job on the server")
    second, third, last = [await p.submit(ALICE, name) for name in ("second", "third", "last")]
    await wait_until(lambda: p.notifier.positions(last.id), 3, "the last job's first position")
    # the first job, handed to the (paused) server but not started, is ahead of all of them
    assert p.notifier.positions(second.id) == [1] and p.notifier.positions(third.id) == [2]
    assert p.notifier.positions(last.id) == [3]
    fake.resume()
    await wait_until(lambda: last.id in p.notifier.delivered_ids(), 20, "the last delivery")
    shown = p.notifier.positions(last.id)
    assert shown[0] == 3 and shown[-1] == 0, shown
    assert all(later < earlier for earlier, later in zip(shown, shown[1:])), shown
    assert p.notifier.positions(first.id) == []  # it never waited in the scheduler


# 12. status --------------------------------------------------------------------------------------------------


async def test_status_shows_servers_queue_and_the_callers_jobs(rig):
    x = await rig.add_fake()
    down = "http://127.0.0.1:9"  # nothing listens there
    rig.configure(urls=[x.url, down], server_capacity=1)
    x.pause()
    p = await rig.start(healthy=1)
    on_x = await p.submit(ALICE, "on x")
    await wait_until(lambda: posted_jobs(x) == [on_x.id], what="the first job on x")
    bobs = await p.submit(BOB, "bob's")
    second, third = await p.submit(ALICE, "second"), await p.submit(ALICE, "third")

    status = p.scheduler.status(ALICE)
    labels = [backend.client.name for backend in p.scheduler.pool.backends]
    assert status.servers == [ServerStatus(labels[0], True, 1, 1, None), ServerStatus(labels[1], False, 0, 1, None)]
    assert status.waiting == 3 and status.running == 1
    mine = {job.id: (job.state, position) for job, position, _ in status.mine}
    # jobs ahead: the one handed to x that has not started yet, then the queue before it
    assert mine == {second.id: ("waiting", 2), third.id: ("waiting", 3), on_x.id: ("submitted", None)}
    assert [(job.id, position) for job, position, _ in p.scheduler.status(BOB).mine] == [(bobs.id, 1)]
    assert p.notifier.starting == [on_x.id]  # handed to ComfyUI: "next on the GPU", not a queue position
    assert p.scheduler.status(CAROL).mine == []

    x.resume()
    await wait_until(lambda: len(p.notifier.deliveries) == 4, 15, "four deliveries")
    status = p.scheduler.status(ALICE)
    assert status.waiting == 0 and status.running == 0 and status.mine == []
    assert status.servers[0].healthy and status.servers[0].load == 0 and status.servers[0].last_model


# more: what a long-running bot meets --------------------------------------------------------------------------


async def test_a_brief_outage_does_not_fail_jobs_that_merely_waited_long(rig):
    fake = await rig.add_fake()
    rig.configure(server_capacity=1, comfyui_timeout=1.0, server_grace=5.0)
    fake.pause()
    p = await rig.start()
    jobs = [await p.submit(ALICE, "first")]
    await wait_until(lambda: posted_jobs(fake) == [jobs[0].id], what="the first job on the server")
    jobs += [await p.submit(BOB, "second"), await p.submit(CAROL, "third")]
    await asyncio.sleep(1.3)  # setup, not a timing assertion: a busy queue, waiting longer than COMFYUI_TIMEOUT
    await fake.stop()  # a blip, far shorter than SERVER_GRACE and COMFYUI_TIMEOUT; ComfyUI keeps its queue
    await wait_until(lambda: not p.backend(fake).healthy, 5, "the pool noticing the blip")
    await fake.start()
    await wait_until(lambda: p.backend(fake).healthy, 5, "the server back")
    fake.resume()
    await wait_until(lambda: all(p.notifier.ended(job.id) for job in jobs), 15, "every job's end")
    assert p.notifier.failed == []
    assert sorted(p.notifier.delivered_ids()) == sorted(job.id for job in jobs)


async def test_a_job_cancelled_just_as_it_starts_stays_cancelled(rig):
    fake = await rig.add_fake(node_delay=0.3)
    rig.configure(server_capacity=1)
    fake.pause()
    p = await rig.start()
    job = await p.submit(ALICE, "unlucky timing")
    await wait_until(lambda: posted_jobs(fake) == [job.id], what="the job queued on ComfyUI")
    await wait_until(lambda: any(r["method"] == "GET" and r["path"].endswith("/queue") for r in fake.requests),
                     5, "the client's look at its queue position")
    fake.slow("/queue", 0.6)  # ComfyUI is slow to take the delete...
    cancelling = asyncio.create_task(p.scheduler.cancel(job.id, ALICE))
    await wait_for_state(p.store, job.id, "cancelled")
    fake.resume()  # ...and starts the prompt meanwhile
    assert await cancelling == "Stopping it: it was already running, and ComfyUI is stopping it now."  # the truth
    await wait_until(lambda: p.notifier.ended(job.id), 10, "the job's end")
    assert p.notifier.cancelled == [(job.id, ALICE)] and p.notifier.deliveries == []
    await wait_until(lambda: fake.running_id() is None, 5, "ComfyUI idle")
    stored = await p.store.get_job(job.id)
    assert stored.state == "cancelled", f"the store says {stored.state!r} for a job the user was told is cancelled"
    assert await p.store.active_job_count(ALICE) == 0


class FailingDelivery(RecordingNotifier):
    """Discord refuses the upload (what discord.py raises is no error the scheduler knows)."""

    async def deliver(self, job, generation, files):
        self.deliver_calls.append(job.id)
        raise RuntimeError("Discord answered 503 Service Unavailable")


async def test_a_delivery_that_fails_ends_the_job_in_words(rig):
    await rig.add_fake()
    notifier = FailingDelivery()
    p = await rig.start(notifier)
    job = await p.submit(ALICE, "undeliverable")
    await wait_until(lambda: notifier.deliver_calls, 10, "the delivery attempt")
    told = await settles(lambda: notifier.ended(job.id), 5)
    gc.collect()  # a task that died logs its exception when collected: now, not while pytest formats the report
    stored = await p.store.get_job(job.id)
    assert (told, stored.state) == (True, "failed"), (
        f"told the user: {told}; the job is left {stored.state!r} (and counts against the user's limit)")
    assert [j for j, _ in notifier.failed] == [job.id]
    assert await p.store.active_job_count(ALICE) == 0


async def test_finished_jobs_leave_nothing_behind_in_the_scheduler(rig):
    x = await rig.add_fake()
    y = await rig.add_fake()
    rig.configure(server_capacity=1, server_grace=0.3)
    x.pause()
    p = await rig.start()
    moved = await p.submit(ALICE, "moved")
    await wait_until(lambda: posted_jobs(x) == [moved.id], what="the job queued on x")
    y.pause()
    on_y = await p.submit(BOB, "on y")
    waited = await p.submit(CAROL, "waited")
    await wait_until(lambda: p.notifier.positions(waited.id), 3, "a shown queue position")
    await x.stop()
    y.resume()
    await wait_until(lambda: len(p.notifier.deliveries) == 3, 15, "three deliveries")
    await wait_until(lambda: p.scheduler.status(0).running == 0, 5, "no job in flight")
    assert p.scheduler.status(0).waiting == 0
    finished = {moved.id, on_y.id, waited.id}
    # whatever the scheduler keeps per job (shown positions, servers to avoid, ...), it keeps no more
    kept = {name: sorted(set(value) & finished) for name, value in vars(p.scheduler).items()
            if isinstance(value, dict) and set(value) & finished}
    assert kept == {}, "per-job state kept after delivery grows with every job the bot ever ran"
