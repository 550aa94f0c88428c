"""Pipelines in the store, on both engines: the pipelines people save (store/pipelines.py and its twins), and
advance_job, which ends one step of a running pipeline and stores the next in one transaction."""

from __future__ import annotations

import asyncio

from store import Generation, Job, PostgresStore, SavedPipeline, Store
from tests.store.test_store import WAIT, open_stores, rows

GUILD, OWNER, OTHER = 31, 11, 12
STEPS = [{"action": "generate", "width": 768, "height": 768}, {"action": "upscale", "factor": 2}]


async def test_a_person_saves_replaces_lists_and_deletes_their_pipelines(any_store: Store | PostgresStore) -> None:
    assert await any_store.save_pipeline(SavedPipeline(GUILD, OWNER, "poster", STEPS), limit=2)
    assert await any_store.save_pipeline(SavedPipeline(GUILD, OWNER, "Alpha", STEPS[:1]), limit=2)
    assert await any_store.save_pipeline(SavedPipeline(GUILD, OTHER, "poster", STEPS[:1]), limit=2)
    assert await any_store.save_pipeline(SavedPipeline(GUILD + 1, OWNER, "elsewhere", STEPS), limit=2)
    # a third of the owner's in that server is refused; replacing one of the two is not
    assert not await any_store.save_pipeline(SavedPipeline(GUILD, OWNER, "third", STEPS), limit=2)
    assert await any_store.save_pipeline(SavedPipeline(GUILD, OWNER, "poster", STEPS[::-1]), limit=2)

    mine = await any_store.pipelines(GUILD, OWNER)
    assert [(p.name, p.steps) for p in mine] == [("Alpha", STEPS[:1]), ("poster", STEPS[::-1])]
    assert [p.name for p in await any_store.pipelines(GUILD, OTHER)] == ["poster"]
    assert await any_store.delete_pipeline(GUILD, OWNER, "poster")
    assert not await any_store.delete_pipeline(GUILD, OWNER, "poster")
    assert [p.name for p in await any_store.pipelines(GUILD, OWNER)] == ["Alpha"]
    assert [p.name for p in await any_store.pipelines(GUILD, OTHER)] == ["poster"]  # someone else's is kept


def step_job(step: int, **fields) -> Job:
    return Job(id=None, kind="upscale", user_id=OWNER, channel_id=5, guild_id=GUILD, message_id=77,
               request={"input": "a.png", "pipeline": {"name": "poster", "step": step}}, **fields)


async def delivering(store: Store | PostgresStore) -> Job:
    job = await store.add_job(step_job(0))
    job, _ = await store.add_result(job.id, Generation(
        id=None, job_id=job.id, kind="txt2img", user_id=OWNER, guild_id=GUILD, channel_id=5, params={},
        files=["a.png"], server="s", duration=1.0), only_from=("waiting",))
    return job


async def test_advancing_a_step_marks_it_done_and_stores_the_next_at_once(any_store: Store | PostgresStore) -> None:
    job = await delivering(any_store)
    following = await any_store.advance_job(job.id, step_job(1, source_generation_id=job.generation_id))

    assert following.id > job.id and following.state == "waiting"
    assert following.request["pipeline"] == {"name": "poster", "step": 1}
    assert await any_store.get_job(following.id) == following
    done = await any_store.get_job(job.id)
    assert done.state == "done" and done.generation_id == job.generation_id
    assert done.request["pipeline"] == {"name": "poster", "step": 0, "next": following.id}
    # once only: a second advance (a restart that finds the step done) changes nothing
    assert await any_store.advance_job(job.id, step_job(1)) is None
    assert [j.id for j in await any_store.jobs_in(("waiting",))] == [following.id]


async def test_a_step_that_is_not_delivering_is_not_advanced(any_store: Store | PostgresStore) -> None:
    waiting = await any_store.add_job(step_job(0))
    assert await any_store.advance_job(waiting.id, step_job(1)) is None
    cancelled = await delivering(any_store)
    await any_store.update_job(cancelled.id, state="cancelled")
    assert await any_store.advance_job(cancelled.id, step_job(1)) is None
    assert await any_store.advance_job(10_000, step_job(1)) is None
    assert [j.id for j in await any_store.jobs_in(("waiting",))] == [waiting.id]


async def test_two_processes_advancing_one_step_store_one_next_step(pg_dsn: str) -> None:
    stores = await open_stores(pg_dsn, 2)
    try:
        job = await delivering(stores[0])
        done = await asyncio.wait_for(asyncio.gather(
            *(stores[n % 2].advance_job(job.id, step_job(1)) for n in range(10))), WAIT)
        assert len([found for found in done if found is not None]) == 1
        assert await rows(stores[0], "SELECT count(*) FROM jobs WHERE state = 'waiting'") == [(1,)]
    finally:
        for store in stores:
            await store.close()
