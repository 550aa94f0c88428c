"""Two jobs of one kind finishing together on two RunPod workers: each worker numbers its files from
`_00001_`, so both outputs have the same name; each person must get their own job's image."""

from __future__ import annotations

from tests.bot_harness import result_of
from tests.backends.test_runpod_bot import DEAD, runs, settings_for


async def test_two_jobs_with_the_same_output_name_each_get_their_own_image(runpod, discord_fake, running, tmp_path):
    runpod.workers = 2  # each worker numbers its files from _00001_
    await running.start(settings_for(tmp_path, DEAD, runpod, output_limit=2))
    bot = running.bot
    # the output folder is full of results waiting for delivery: both jobs finish before either is downloaded
    held = [await bot.outputs.save_bytes(f"held{n}.png", b"held") for n in range(2)]
    remote = next(backend.client for backend in bot.scheduler.pool.backends if backend.remote)
    first = await discord_fake.slash("generate", {"prompt": "first", "width": 64, "height": 64})
    second = await discord_fake.slash("generate", {"prompt": "second", "width": 64, "height": 64}, user_id="5002")
    await discord_fake.wait_for(lambda: len(remote.billed) == 2, timeout=20)  # both jobs ended on RunPod
    for path in held:
        bot.outputs.release(path)
    jobs = {job.input["workflow"]["4"]["inputs"]["string_a"]: job.id for job in runpod.jobs.values()}
    (first_file,), (second_file,) = runpod.files_of(jobs["first"]), runpod.files_of(jobs["second"])
    assert first_file[0] == second_file[0] == "selftest_00001_.png" and first_file[1] != second_file[1]
    assert len(runs(runpod)) == 2
    for interaction, (_, data) in ((first, first_file), (second, second_file)):
        posted = await result_of(discord_fake, interaction, timeout=20)
        assert posted.attachments[0]["data"] == data
