"""Pipelines through the fake Discord and the fake ComfyUI: /pipeline run makes one job of several steps
(one progress message naming the stage, one result, every intermediate in history), a restart during a step
resumes at that step without running it twice, a cancel stops the rest, conditions skip steps, and people
save, list, show and delete their own."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.bot_harness import bot_settings, custom_ids, result_of
from tests.conftest import MODELS
from tests.fakes.comfy_nodes import FRAME_INTERPOLATION, decode_mp4
from tests.fakes.comfyui import FakeComfyUI

OPERATOR = """
[grow]
description = "generate, upscale, detail, animate"
[[grow.steps]]
action = "generate"
width = 64
height = 64
[[grow.steps]]
action = "upscale"
factor = 2
[[grow.steps]]
action = "img2img"
strength = 0.3
prompt = "more detail"
[[grow.steps]]
action = "animate"
frames = 4
fps = 6

[big-only]
[[big-only.steps]]
action = "generate"
width = 64
height = 64
[[big-only.steps]]
action = "upscale"
factor = 2
when = "width >= 1024"
[[big-only.steps]]
action = "img2img"
strength = 0.5
"""


@pytest.fixture
async def comfy():
    fake = FakeComfyUI(models={**MODELS, "checkpoints": [*MODELS["checkpoints"], "svd_xt.safetensors"]})
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


def settings_for(tmp_path, url, **more):
    path = tmp_path / "pipelines.toml"
    path.write_text(OPERATOR, encoding="utf-8")
    return bot_settings(tmp_path, url, workflow_set="default", checkpoint="v1-5-pruned-emaonly.safetensors",
                        pipelines_file=path, **more)


async def ready(discord_fake, running, settings):
    await running.start(settings)
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)


async def said(discord_fake, interaction) -> str:
    await interaction.wait_acked(3)
    message = await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)
    return message.content


def classes(comfy) -> list[set[str]]:
    """The node classes of each prompt the fake ComfyUI received, in order."""
    return [{node["class_type"] for node in entry["prompt"].values()} for entry in comfy.prompts.values()]


def fields(message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


def stages(message) -> list[str]:
    """The result's Pipeline lines, each stage's GPU time (a measurement) written as "GPU n s"."""
    return [re.sub(r"GPU \d+ s$", "GPU n s", line) for line in fields(message)["Pipeline"].splitlines()]


async def test_four_steps_with_a_restart_during_the_third_make_one_result(comfy, discord_fake, running, tmp_path):
    settings = settings_for(tmp_path, comfy.url)
    await ready(discord_fake, running, settings)
    comfy.node_delays = {"VAEEncode": 1.5}  # only the img2img step encodes an image: the third step is slow
    started = await discord_fake.slash("pipeline run", {"name": "grow", "prompt": "a lighthouse"})
    await started.wait_acked(3)
    progress = started.original_message_id

    def third_step_running() -> bool:
        return any("VAEEncode" in found for found in classes(comfy)) and comfy.running_id() is not None

    await discord_fake.wait_for(third_step_running, timeout=20)
    await discord_fake.wait_for(lambda: "stage 3" in discord_fake.messages[progress].content, timeout=5)
    shown = discord_fake.messages[progress].content
    assert shown.startswith("Pipeline **grow**, stage 3 of 4: img2img\n"), shown
    (cancel,) = custom_ids(discord_fake.messages[progress])
    await running.stop()  # the third step is left running on ComfyUI
    comfy.node_delays = {}
    await running.start(settings)

    result = await result_of(discord_fake, started, timeout=30)
    assert result.content == "✅ <@5001>, your animation is ready."
    assert [a["filename"] for a in result.attachments] == ["animation.mp4"]
    assert stages(result) == [
        "**grow**", "1. generate 64×64 · GPU n s", "2. upscale 2x · GPU n s", "3. img2img 0.3 'more detail' · GPU n s",
        "4. animate 4 frames 6 fps · GPU n s"]
    # each step ran once: the restart followed the third step's prompt rather than submitting it again
    ran = classes(comfy)
    assert len(ran) == 4
    assert ["EmptyLatentImage" in ran[0], "ImageUpscaleWithModel" in ran[1], "VAEEncode" in ran[2],
            "SVD_img2vid_Conditioning" in ran[3]] == [True, True, True, True]
    detail = next(node["inputs"] for node in list(comfy.prompts.values())[2]["prompt"].values()
                  if node["class_type"] == "CLIPTextEncode" and "lighthouse" in node["inputs"]["text"])
    assert detail["text"] == "a lighthouse, more detail"
    animate = next(node["inputs"] for node in list(comfy.prompts.values())[3]["prompt"].values()
                   if node["class_type"] == "SVD_img2vid_Conditioning")
    assert (animate["video_frames"], animate["fps"]) == (4, 6)
    assert cancel.startswith("cf:cancel:")

    # one result posted; the progress message is gone; every intermediate is in history, each from the one before
    posted = [m for m in discord_fake.messages.values() if m.channel_id == result.channel_id and m.id not in (result.id, progress)
              and m.attachments]
    assert posted == [] and await discord_fake.wait_for(lambda: discord_fake.messages[progress].deleted)
    store = running.bot.store
    await discord_fake.wait_for(lambda: not running.bot.scheduler._flights, timeout=5)
    jobs = sorted(await store.jobs_in(("delivering", "done")), key=lambda job: job.id)
    assert [job.kind for job in jobs] == ["txt2img", "upscale", "img2img", "animate"]
    generations = [await store.get_generation(job.generation_id) for job in jobs]
    assert [job.source_generation_id for job in jobs] == [None, *(g.id for g in generations[:-1])]
    assert [g.message_id for g in generations] == [None, None, None, int(result.id)]
    sizes = [(g.params.get("width"), g.params.get("height")) for g in generations[:3]]
    assert sizes == [(64, 64), (128, 128), (128, 128)]


async def test_a_cancel_stops_the_rest_and_a_condition_skips_a_step(comfy, discord_fake, running, tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    comfy.node_delays = {"ImageUpscaleWithModel": 2.0}
    started = await discord_fake.slash("pipeline run", {"name": "grow", "prompt": "a fox"})
    await started.wait_acked(3)
    progress = started.original_message_id
    await discord_fake.wait_for(lambda: any("ImageUpscaleWithModel" in c for c in classes(comfy)), timeout=20)
    first_step = min(job.id for job in await running.bot.store.jobs_in(("done",)))
    # the Cancel of the first step's message still works: it reaches the step that runs now
    clicked = await discord_fake.click(progress, f"cf:cancel:{first_step}")
    assert (await said(discord_fake, clicked)).startswith("Stopping it: it was already running")
    await discord_fake.wait_for(lambda: discord_fake.messages[progress].content.startswith("🚫"), timeout=10)
    assert discord_fake.messages[progress].content == "🚫 Cancelled by <@5001>: the upscale of “a fox”."
    await asyncio.sleep(2.5)  # the upscale ends on ComfyUI: nothing after it starts
    assert len(classes(comfy)) == 2
    assert {job.state for job in await running.bot.store.jobs_in(("waiting", "submitted", "running"))} == set()

    comfy.node_delays = {}
    skipped = await result_of(discord_fake, await discord_fake.slash(
        "pipeline run", {"name": "big-only", "prompt": "a tree"}), timeout=30)
    assert skipped.content == "✅ <@5001>, your image is ready."  # the img2img step's image
    assert stages(skipped) == [
        "**big-only**", "1. generate 64×64 · GPU n s",
        "2. upscale 2x when width >= 1024 · skipped: width >= 1024 is not true", "3. img2img 0.5 · GPU n s"]
    assert not any("ImageUpscaleWithModel" in c for c in classes(comfy)[2:])


async def test_people_save_list_show_and_delete_their_own_pipelines(comfy, discord_fake, running, tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    assert await said(discord_fake, await discord_fake.slash("pipeline save", {
        "name": "Mine", "steps": 'generate 64x64 -> img2img 0.4 "{prompt}, oil paint" -> upscale 2x when batch == 1'})) \
        == ("Saved your pipeline `mine`: generate 64×64 → img2img 0.4 '{prompt}, oil paint' → upscale 2x when "
            "batch == 1.\nRun it with `/pipeline run name:mine prompt:…`.")
    for steps, refusal in [
        ("upscale 2x", "A pipeline starts with generate, not upscale."),
        ("generate -> upscale 3x", "Step 2: factor is one of 2, 4, 8, not 3."),
        ("generate -> upscale when __import__('os')", "Step 2 (upscale): The condition"),
        ("generate -> paint", "Step 2 asks for 'paint', which is not a step"),
        ("generate -> animate -> img2img", "Step 3 (img2img) takes an image, but the step before it makes a video."),
    ]:
        assert (await said(discord_fake, await discord_fake.slash(
            "pipeline save", {"name": "bad", "steps": steps}))).startswith(refusal), steps
    assert (await said(discord_fake, await discord_fake.slash("pipeline save", {"name": "grow", "steps": "generate"}))
            ) == "`grow` is this bot's own pipeline; choose another name."

    listed = await said(discord_fake, await discord_fake.slash("pipeline list"))
    assert listed.splitlines()[:3] == [
        "**Yours** `mine`: generate 64×64 → img2img 0.4 '{prompt}, oil paint' → upscale 2x when batch == 1",
        "**This bot’s** `big-only`: generate 64×64 → upscale 2x when width >= 1024 → img2img 0.5",
        "**This bot’s** `grow`: generate 64×64 → upscale 2x → img2img 0.3 'more detail' → animate 4 frames 6 fps"]
    assert [c["value"] for c in await discord_fake.autocomplete("pipeline run", {"name": "", "prompt": "x"}, "name")] \
        == ["mine", "grow", "big-only"]
    assert "mine" not in await said(discord_fake, await discord_fake.slash("pipeline list", user_id="5002"))

    result = await result_of(discord_fake, await discord_fake.slash(
        "pipeline run", {"name": "mine", "prompt": "a barn"}), timeout=30)
    assert result.content == "✅ <@5001>, your upscaled image is ready."
    painted = next(node["inputs"]["text"] for node in list(comfy.prompts.values())[1]["prompt"].values()
                   if node["class_type"] == "CLIPTextEncode" and "barn" in node["inputs"]["text"])
    assert painted == "a barn, oil paint"

    # saved from the chain of a result: the steps that led to it, without its prompt
    assert await said(discord_fake, await discord_fake.slash("pipeline save", {
        "name": "again", "result": f"https://discord.com/channels/1/{result.channel_id}/{result.id}"})) == (
        "Saved your pipeline `again`: generate 64×64 → img2img 0.4 → upscale 2x.\n"
        "Run it with `/pipeline run name:again prompt:…`.")
    assert (await said(discord_fake, await discord_fake.slash("pipeline save", {"name": "x", "result": "12345"}))
            ).startswith("That is not a result of this bot")
    assert await said(discord_fake, await discord_fake.slash("pipeline show", {"name": "again"})) == \
        "**again**\n1. generate 64×64\n2. img2img 0.4\n3. upscale 2x"
    assert await said(discord_fake, await discord_fake.slash("pipeline delete", {"name": "again"})) == \
        "Deleted your pipeline `again`."
    assert await said(discord_fake, await discord_fake.slash("pipeline run", {"name": "again", "prompt": "x"})) == \
        "There is no pipeline `again` here; /pipeline list shows the ones you can run."


async def test_a_video_pipeline_animates_upscales_every_frame_and_interpolates(discord_fake, running, tmp_path):
    comfy = FakeComfyUI(models={**MODELS, "checkpoints": [*MODELS["checkpoints"], "svd_xt.safetensors"]},
                        custom_nodes=FRAME_INTERPOLATION)
    await comfy.start()
    try:
        await ready(discord_fake, running, settings_for(tmp_path, comfy.url, interpolate_model="rife47.pth"))
        assert await said(discord_fake, await discord_fake.slash("pipeline save", {
            "name": "film", "steps": "generate 64x64 -> animate 4 frames 6 fps -> upscale 2x -> interpolate"})) \
            == ("Saved your pipeline `film`: generate 64×64 → animate 4 frames 6 fps → upscale 2x → interpolate.\n"
                "Run it with `/pipeline run name:film prompt:…`.")
        result = await result_of(discord_fake, await discord_fake.slash(
            "pipeline run", {"name": "film", "prompt": "waves"}), timeout=40)
        assert result.content == "✅ <@5001>, your video is ready.", result.content
        frames, fps = decode_mp4(result.attachments[0]["data"])
        assert (len(frames), fps) == (2 * 4 - 1, 12)  # RIFE: a frame between every two, twice the rate
        assert frames[0].size == (128, 128)  # every frame upscaled 2x before
        assert [step.split(" · ")[0] for step in fields(result)["Pipeline"].splitlines()[1:]] == [
            "1. generate 64×64", "2. animate 4 frames 6 fps", "3. upscale 2x", "4. interpolate"]
        rife = next(node["inputs"] for node in list(comfy.prompts.values())[-1]["prompt"].values()
                    if node["class_type"] == "RIFE VFI")
        assert rife["multiplier"] == 2
    finally:
        await comfy.stop()
