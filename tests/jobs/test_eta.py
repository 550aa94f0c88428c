"""Estimated times: learned per server, model and size; shown while a job waits and while it runs."""

from __future__ import annotations

import time

from comfy.types import NodeStarted, Progress
from jobs.eta import KEYS_MAX, Estimates, size_class, wait, work
from ui.progress import Progression
from tests.bot_harness import bot_settings, result_of
from jobs.wording import about


def test_estimates_learn_per_server_and_fall_back_to_what_is_alike():
    estimates = Estimates(default_steps=20)
    small = {"steps": 20, "batch": 1, "width": 512, "height": 512, "checkpoint": "sd15"}
    assert estimates.job("txt2img", small) is None  # nothing ran yet: no made-up number
    estimates.learn("gpu1", "txt2img", small, 10.0)  # 0.5 s a step
    assert estimates.job("txt2img", small, "gpu1") == 10.0
    assert estimates.job("txt2img", {**small, "steps": 40, "batch": 2}, "gpu1") == 40.0  # 4x the work
    assert estimates.job("txt2img", small, "gpu2") == 10.0  # another server: the same model and size anywhere
    assert estimates.job("txt2img", {**small, "checkpoint": "sdxl"}) == 10.0  # another model: the kind alone
    estimates.learn("gpu1", "txt2img", small, 20.0)
    assert estimates.job("txt2img", small, "gpu1") == 10.0 + 0.3 * 10.0  # a moving average
    assert estimates.job("upscale", {"factor": 2}) is None
    estimates.learn("gpu1", "upscale", {"factor": 2}, 3.0)
    assert work("upscale", {"factor": 4}, 20) == 1.0 and estimates.job("upscale", {"factor": 4}) == 3.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        estimates.learn("gpu1", "animate", {}, bad)
    assert estimates.job("animate", {}) is None
    assert size_class({"width": 512, "height": 512}) == -2 and size_class({"width": 1024, "height": 1024}) == 0


def test_the_number_of_averages_is_bounded():
    estimates = Estimates(default_steps=20)
    for index in range(KEYS_MAX):
        estimates.learn(f"server{index}", "txt2img", {"checkpoint": f"m{index}"}, 1.0)
    assert len(estimates._rates) <= KEYS_MAX


def test_the_wait_is_the_work_ahead_shared_by_the_servers():
    assert wait([10.0, 20.0], [5.0, -3.0], servers=2) == 17.5  # a job past its estimate counts as done
    assert wait([], [], servers=1) == 0.0
    assert wait([10.0, None], [], servers=1) is None and wait([1.0], [], servers=0) is None


def test_a_running_sampler_says_how_long_is_left_at_its_pace(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    progress = Progression()
    progress.apply(NodeStarted("3", "KSampler"))
    progress.apply(Progress(1, 20, "3"))
    assert progress.left() is None  # no pace yet
    clock[0] += 2.0
    progress.apply(Progress(5, 20, "3"))
    assert progress.left() == 2.0 / 4 * 15
    assert progress.text().splitlines()[0] == "🎨 Drawing (step 5 of 20), 2 s so far, about 10 s left."
    assert [about(x) for x in (3, 57, 58, 95, 301, 4000)] == ["5 s", "55 s", "1 min", "1 min 30 s", "5 min",
                                                             "1 h 10 min"]


async def test_a_waiting_job_and_status_show_the_expected_time(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, server_capacity=1))
    comfy.node_delay = 0.6
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "learn", "width": 64,
                                                                        "height": 64}), timeout=20)
    first = await discord_fake.slash("generate", {"prompt": "one", "width": 64, "height": 64})
    second = await discord_fake.slash("generate", {"prompt": "two", "width": 64, "height": 64})
    await second.wait_acked(3)
    waiting = await discord_fake.wait_for_message(
        lambda m: m.id == second.original_message_id and "to your result" in m.content and "next" in m.content,
        timeout=10)  # once the first job has started on the GPU
    assert waiting.content.startswith("⏳ Waiting for your image: yours is next; about ")
    status = await discord_fake.slash("status")
    await status.wait_acked(3)
    queue = next(field["value"] for field in discord_fake.messages[status.original_message_id].embeds[0]["fields"]
                 if field["name"] == "Queue")
    assert "A new job would start in about " in queue or "A new job would start right away." in queue
    for interaction in (first, second):
        assert (await result_of(discord_fake, interaction, timeout=20)).attachments


def test_a_server_that_reports_no_steps_shows_it_is_running_and_for_how_long(monkeypatch):
    from comfy.types import Started

    clock = [10.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    progress = Progression()
    progress.apply(Started())
    clock[0] += 7.0
    assert progress.text() == "🎨 Running, 7 s so far."
