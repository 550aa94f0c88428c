"""RunPod Serverless as the pool's second kind of backend, through the running bot: used when the local
servers cannot take a job, picked up by its id after a restart, and said in words when its result
expired."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image

from tests.bot_harness import bot_settings, image_size, result_of
from tests.fakes.runpod import FakeRunPod

DEAD = "http://127.0.0.1:9"  # nothing listens here: the local ComfyUI is down


def endpoint(fake: FakeRunPod, **overrides) -> str:
    return json.dumps([{"endpoint_id": fake.endpoint_id, "api_key": fake.api_key, "base_url": fake.base_url,
                        "models": ["v1-5-pruned-emaonly.safetensors"], "price_per_second": 0.001, **overrides}])


def runs(fake: FakeRunPod) -> list:
    return [entry for entry in fake.requests if entry["method"] == "POST" and entry["path"].endswith("/run")]


def settings_for(tmp_path, comfy_url: str, fake: FakeRunPod, **overrides):
    from config import RunPodEndpoint

    endpoints = [RunPodEndpoint(**item) for item in json.loads(endpoint(fake))]
    return bot_settings(tmp_path, comfy_url, runpod_endpoints=endpoints, **{"server_grace": 30, **overrides})


async def test_a_job_goes_to_runpod_while_the_local_server_is_down(runpod, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, DEAD, runpod))
    result = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a lighthouse", "width": 96, "height": 64}), timeout=20)
    assert result.content == "✅ <@5001>, your image is ready." and image_size(result.attachments[0])
    (posted,) = runs(runpod)
    assert "Authorization" not in posted["headers"] and posted["json"]["input"]["workflow"]["4"]["inputs"][
        "string_a"] == "a lighthouse"
    usage = await running.bot.store.usage(int(discord_fake.guild_id), 5001, 0)
    assert usage.gpu_seconds == 1 and usage.cost == pytest.approx(0.001)  # billed seconds, rounded up
    upscaled = await result_of(discord_fake, await discord_fake.click(result.id, "cf:up:1:0:2"), timeout=20)
    assert upscaled.attachments  # its input image went to RunPod inside the job, as base64
    assert runs(runpod)[1]["json"]["input"]["images"][0]["name"].startswith("bot-")


async def test_the_local_server_comes_first(comfy, runpod, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, comfy.url, runpod))
    await discord_fake.wait_for(lambda: any(b.healthy and not b.remote for b in running.bot.scheduler.pool.backends),
                                timeout=5)
    for _ in range(3):
        assert (await result_of(discord_fake, await discord_fake.slash(
            "generate", {"prompt": "local", "width": 64, "height": 64}), timeout=20)).attachments
    assert runs(runpod) == [] and len(comfy.prompts) == 3


async def test_only_the_servers_allowed_paid_capacity_use_it(runpod, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, DEAD, runpod, runpod_guilds=[42], server_grace=1.0))
    told = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "x", "width": 64, "height": 64}), timeout=20)
    assert told.content == ("❌ <@5001>, your image could not be made: ComfyUI is not answering right now. Try again in a "
                            "few minutes.")  # as without RunPod: this server may not use paid capacity
    assert runs(runpod) == []


async def test_a_runpod_job_is_picked_up_by_its_id_after_a_restart(runpod, discord_fake, running, tmp_path):
    settings = settings_for(tmp_path, DEAD, runpod)
    runpod.queue_delay = 1.5
    await running.start(settings)
    interaction = await discord_fake.slash("generate", {"prompt": "patient", "width": 64, "height": 64})
    await discord_fake.wait_for(lambda: runs(runpod), timeout=10)
    await running.stop()
    await running.start(settings)
    result = await result_of(discord_fake, interaction, timeout=20)
    assert result.attachments and len(runs(runpod)) == 1  # followed by id, never sent twice
    assert Image.open(io.BytesIO(result.attachments[0]["data"])).size == (64, 64)


async def test_an_expired_runpod_result_is_said_in_words(runpod, discord_fake, running, tmp_path):
    settings = settings_for(tmp_path, DEAD, runpod)
    runpod.queue_delay = 1.0
    await running.start(settings)
    interaction = await discord_fake.slash("generate", {"prompt": "late", "width": 64, "height": 64})
    await discord_fake.wait_for(lambda: runs(runpod), timeout=10)
    await running.stop()
    runpod.advance(runpod.run_retention + 3600)  # the bot was away longer than RunPod keeps results
    await asyncio.sleep(0)
    await running.start(settings)
    failed = await result_of(discord_fake, interaction, timeout=20)
    assert "RunPod no longer holds this job's result" in failed.content


async def test_jobs_overflow_to_runpod_when_the_local_wait_is_too_long(comfy, runpod, discord_fake, running,
                                                                       tmp_path):
    await running.start(settings_for(tmp_path, comfy.url, runpod, server_capacity=1, runpod_overflow_after=0.5,
                                     jobs_per_user=10))
    comfy.node_delay = 0.4
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "learn", "width": 64,
                                                                        "height": 64}), timeout=20)
    assert runs(runpod) == []  # the local server was free
    burst = [await discord_fake.slash("generate", {"prompt": f"burst {n}", "width": 64, "height": 64})
             for n in range(4)]
    for interaction in burst:
        assert (await result_of(discord_fake, interaction, timeout=30)).attachments
    assert runs(runpod) and len(comfy.prompts) >= 2  # the local server kept working; RunPod took the overflow


async def cancel_at_runpod(discord_fake, running, runpod, tmp_path) -> tuple[str, object]:
    """Start the bot, /generate a job that goes to RunPod, and click its Cancel once RunPod has it: the
    job's progress message id, and the private answer to the click."""
    await running.start(settings_for(tmp_path, DEAD, runpod))
    interaction = await discord_fake.slash("generate", {"prompt": "never mind", "width": 64, "height": 64})
    await discord_fake.wait_for(lambda: runs(runpod), timeout=10)
    progress = interaction.original_message_id
    cancel = await discord_fake.click(progress, "cf:cancel:1")
    await cancel.wait_acked(3)
    answer = await discord_fake.wait_for_message(lambda m: m.id == cancel.original_message_id and not m.loading,
                                                 timeout=10)
    return progress, answer


async def test_cancel_reaches_runpod(runpod, discord_fake, running, tmp_path):
    runpod.queue_delay = 5.0
    progress, answer = await cancel_at_runpod(discord_fake, running, runpod, tmp_path)
    assert answer.content in ("Stopping it: it was already running, and RunPod is stopping it now.",
                              "Cancelled: it was taken out of RunPod's queue before it started.")
    assert any(entry["method"] == "POST" and "/cancel/" in entry["path"] for entry in runpod.requests)
    shown = await discord_fake.wait_for_message(lambda m: m.id == progress and m.content.startswith("🚫"), timeout=10)
    assert shown.content == "🚫 Cancelled by <@5001>: the image of “never mind”."


async def test_a_runpod_job_that_was_running_at_the_restart_is_delivered_once(runpod, discord_fake, running,
                                                                              tmp_path):
    settings = settings_for(tmp_path, DEAD, runpod)
    runpod.execution_time = 2.0
    await running.start(settings)
    interaction = await discord_fake.slash("generate", {"prompt": "midway", "width": 64, "height": 64})
    await discord_fake.wait_for(lambda: running.bot.scheduler.running_jobs() and any(
        job.state == "running" for job in running.bot.scheduler.running_jobs()), timeout=10)
    await running.stop()
    await running.start(settings)
    result = await result_of(discord_fake, interaction, timeout=20)
    assert result.attachments and len(runs(runpod)) == 1
