"""model:auto through the fake Discord and the fake ComfyUI: the preset the prompt or the person's
favorites point to is the checkpoint ComfyUI receives, and the result says why."""

from __future__ import annotations

import pytest

from tests.bot_harness import bot_settings, result_of
from tests.conftest import MODELS
from tests.fakes.comfyui import FakeComfyUI

ANOTHER = " · to try another, `/generate model:<name>` (/models lists them)"
NOTHING = "the default model: nothing in the prompt or your favorites pointed to a preset"


@pytest.fixture
async def comfy():
    checkpoints = [*MODELS["checkpoints"], "anime.safetensors", "photo.safetensors"]
    fake = FakeComfyUI(models={**MODELS, "checkpoints": checkpoints})
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


def settings_for(tmp_path, url):
    presets = {"anime": {"checkpoint": "anime.safetensors", "tags": ["manga", "cel shaded"], "steps": 7},
               "photo": {"checkpoint": "photo.safetensors", "tags": ["photo", "portrait"]},
               "sdxl": {"checkpoint": "sdxl.safetensors", "tags": ["landscape", "portrait"]},
               "gone": {"checkpoint": "missing.safetensors", "tags": ["dragon"]},  # no server has it
               "spicy": {"checkpoint": "sdxl.safetensors", "tags": ["manga", "comic"], "nsfw": True}}
    return bot_settings(tmp_path, url, workflow_set="default", checkpoint="v1-5-pruned-emaonly.safetensors",
                        model_presets=presets)


async def ready(discord_fake, running, settings):
    await running.start(settings)
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)


async def make(discord_fake, options: dict, **acting):
    return await result_of(discord_fake, await discord_fake.slash(
        "generate", {"width": 64, "height": 64, **options}, **acting), timeout=20)


def checkpoint(comfy) -> str:
    graph = list(comfy.prompts.values())[-1]["prompt"]
    return next(node["inputs"]["ckpt_name"] for node in graph.values() if node["class_type"] == "CheckpointLoaderSimple")


def fields(message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


async def answer(discord_fake, interaction) -> str:
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)


async def test_the_prompt_picks_the_preset_and_the_result_says_why(comfy, discord_fake, running, tmp_path):
    settings = settings_for(tmp_path, comfy.url)
    await ready(discord_fake, running, settings)
    assert [c["value"] for c in await discord_fake.autocomplete("generate", {"prompt": "x", "model": ""}, "model")] \
        == ["anime", "photo", "sdxl", "auto"]  # not the preset no server has, nor the age-restricted one here
    result = await make(discord_fake, {"prompt": "a fox reading **Manga** comic @everyone <@42>", "model": "auto"})
    assert checkpoint(comfy) == "anime.safetensors"
    graph = list(comfy.prompts.values())[-1]["prompt"]
    assert next(n["inputs"]["steps"] for n in graph.values() if n["class_type"] == "KSampler") == 7  # the preset's
    shown = fields(result)
    assert shown["Model"] == "anime"
    assert shown["Why this model"] == "`anime` preset: the prompt says `Manga`" + ANOTHER
    await running.stop()
    await running.start(settings)  # the reason is kept with the job: a Reroll after a restart keeps the preset
    rerolled = await result_of(discord_fake, await discord_fake.click(result.id, "cf:reroll:1"), timeout=20)
    assert checkpoint(comfy) == "anime.safetensors"
    assert fields(rerolled)["Why this model"] == "`anime` preset: the prompt says `Manga`" + ANOTHER

    flagged = await make(discord_fake, {"prompt": "a misty landscape --model auto"})
    assert checkpoint(comfy) == "sdxl.safetensors"
    assert fields(flagged)["Why this model"] == "`sdxl` preset: the prompt says `landscape`" + ANOTHER
    plain = await make(discord_fake, {"prompt": "a dragon on a hill", "model": "auto"})  # only "gone" says dragon
    assert checkpoint(comfy) == "v1-5-pruned-emaonly.safetensors"
    assert fields(plain)["Model"] == "v1-5-pruned-emaonly" and fields(plain)["Why this model"] == NOTHING + ANOTHER
    chosen = await make(discord_fake, {"prompt": "a manga fox", "model": "photo"})  # no auto: no reason
    assert checkpoint(comfy) == "photo.safetensors" and "Why this model" not in fields(chosen)
    opened = await discord_fake.click(result.id, "cf:remix:1")
    await opened.wait_acked(3)
    remixed = await result_of(discord_fake, await discord_fake.submit_modal(opened, {"prompt": "a fox reading"}),
                              timeout=20)
    assert checkpoint(comfy) == "anime.safetensors"  # Remix keeps the model; the old prompt's reason is dropped
    assert fields(remixed)["Model"] == "anime" and "Why this model" not in fields(remixed)


async def test_a_person_whose_favorites_used_a_preset_gets_it_for_a_prompt_with_no_tag(comfy, discord_fake, running,
                                                                                       tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    lake = await make(discord_fake, {"prompt": "a quiet lake", "model": "sdxl"})
    pond = await make(discord_fake, {"prompt": "a quiet pond", "model": "photo"})
    sea = await make(discord_fake, {"prompt": "a still sea", "model": "sdxl"})
    for message, generation in ((lake, 1), (pond, 2), (sea, 3)):
        marked = await answer(discord_fake, await discord_fake.click(message.id, f"cf:fav:{generation}"))
        assert marked.content.startswith("⭐ Added")
    result = await make(discord_fake, {"prompt": "a mountain stream", "model": "auto"})
    assert checkpoint(comfy) == "sdxl.safetensors"
    assert fields(result)["Why this model"] == "`sdxl` preset: most of your favorites used it" + ANOTHER
    tie = await make(discord_fake, {"prompt": "a portrait of an owl", "model": "auto"})  # photo and sdxl say portrait
    assert checkpoint(comfy) == "sdxl.safetensors"
    assert fields(tie)["Why this model"] == \
        "`sdxl` preset: the prompt says `portrait` (and more of your favorites used it)" + ANOTHER

    saved = await answer(discord_fake, await discord_fake.slash("settings", {"model": "auto"}))
    assert saved.content == "Saved; these are your defaults:\n• model: `auto`"
    await make(discord_fake, {"prompt": "a pond, cel shaded"})  # the saved default chooses too
    assert checkpoint(comfy) == "anime.safetensors"
    bob = await make(discord_fake, {"prompt": "a mountain stream", "model": "auto"}, user_id="6001", username="bob")
    assert checkpoint(comfy) == "v1-5-pruned-emaonly.safetensors"  # alice's favorites are hers
    assert fields(bob)["Why this model"] == NOTHING + ANOTHER
