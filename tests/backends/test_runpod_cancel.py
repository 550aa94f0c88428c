"""Cancel means cancelled with RunPod too: when RunPod does not confirm a cancel (the worker goes on,
or the job is already past it), the person is told the result will not be posted, and it is not: it
is kept in their history, billed once, and the job stays cancelled."""

from __future__ import annotations

import asyncio

from tests.backends.test_runpod_bot import cancel_at_runpod


async def test_a_runpod_job_whose_cancel_is_not_confirmed_is_never_posted(runpod, discord_fake, running, tmp_path):
    runpod.execution_time = 1.0  # long enough to click Cancel while it runs
    runpod.unheeded_cancels = 1
    progress, answer = await cancel_at_runpod(discord_fake, running, runpod, tmp_path)
    store = running.bot.store
    for _ in range(100):  # bounded: the worker finishes the job a second later
        job = await store.get_job(1)
        if job.generation_id is not None:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a post, if one were coming, would follow the result at once
    assert job.state == "cancelled" and job.generation_id is not None
    kept = await store.get_generation(job.generation_id)
    assert kept.message_id is None and kept.files  # in the history, not on Discord
    posted = [m for m in discord_fake.messages.values() if m.attachments]
    assert posted == []
    assert discord_fake.messages[progress].content.startswith("🚫")
    assert answer.content == ("Cancelled: it had just finished on RunPod, so its result will not be posted "
                              "(it stays in your /history).")
