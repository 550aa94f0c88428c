"""Every job derived from a result keeps every choice that made it (style, LoRAs, sampler, scheduler,
model, steps, cfg, negative prompt) unless the action itself changes it: Vary, Zoom out, Reroll, Remix,
Upscale, Animate and the Apps menu's "Vary this image", walked over one result through the fake
Discord, checked in the graphs the fake ComfyUI received."""

from __future__ import annotations

import pytest

from tests.bot_harness import animate, bot_settings, result_of
from tests.conftest import MODELS
from tests.fakes.comfyui import FakeComfyUI

LORAS = ["ink.safetensors", "film-grain.safetensors"]
STYLED = "cinematic film still of a heron"  # styles.toml's cinematic template around the prompt


@pytest.fixture
async def comfy():
    fake = FakeComfyUI(models={**MODELS, "checkpoints": [*MODELS["checkpoints"], "svd_xt.safetensors"],
                               "loras": list(LORAS)})
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


def choices_in(graph: dict) -> dict:
    """What of the person's choices a graph carries: its sampler node's sampler, scheduler, steps and
    cfg, its LoRAs in chain order, and the texts of its prompt encoders."""
    sampler = next(node["inputs"] for node in graph.values() if node["class_type"] == "KSampler")
    loras = sorted((int(node_id), node["inputs"]["lora_name"], node["inputs"]["strength_model"])
                   for node_id, node in graph.items() if node["class_type"] == "LoraLoader")
    texts = [node["inputs"]["text"] for node in graph.values() if node["class_type"] == "CLIPTextEncode"]
    return {"sampler": sampler["sampler_name"], "scheduler": sampler["scheduler"], "steps": sampler["steps"],
            "cfg": sampler["cfg"], "loras": [(name, strength) for _, name, strength in loras],
            "styled": any(text.startswith(STYLED) for text in texts),
            "negative": any("blurry" in text for text in texts)}


MADE = {"sampler": "dpmpp_2m", "scheduler": "karras", "steps": 5, "cfg": 6.5,
        "loras": [("ink.safetensors", 0.8), ("film-grain.safetensors", 0.6)], "styled": True, "negative": True}


async def test_every_action_on_a_result_keeps_its_style_loras_sampler_and_scheduler(comfy, discord_fake, running,
                                                                                   tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, workflow_set="default",
                                     checkpoint="v1-5-pruned-emaonly.safetensors"))
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)
    first = await result_of(discord_fake, await discord_fake.slash("generate", {
        "prompt": "a heron --lora film-grain.safetensors:0.6", "lora": "ink.safetensors", "lora_strength": 0.8,
        "style": "cinematic", "sampler": "dpmpp_2m", "scheduler": "karras", "steps": 5, "cfg": 6.5,
        "negative_prompt": "blurry", "width": 64, "height": 64}), timeout=20)
    assert first.attachments
    graphs = {"original": list(comfy.prompts.values())[-1]["prompt"]}

    async def run(name: str, interaction) -> object:
        result = await result_of(discord_fake, interaction, timeout=20)
        assert result.attachments, f"{name}: {result.content}"
        graphs[name] = list(comfy.prompts.values())[-1]["prompt"]
        return result

    for name, custom_id in (("vary subtle", "cf:vary:1:0:s"), ("vary strong", "cf:vary:1:0:S"),
                            ("zoom out 2x", "cf:zoom:1:0"), ("zoom out 1.5x", "cf:zoom:1:0:15"),
                            ("reroll", "cf:reroll:1")):
        await run(name, await discord_fake.click(first.id, custom_id))
    await run("apps vary", await discord_fake.message_command("Vary this image", first.id))
    opened = await discord_fake.click(first.id, "cf:remix:1")
    await opened.wait_acked(3)
    await run("remix", await discord_fake.submit_modal(opened, {}))
    upscaled = await run("upscale", await discord_fake.click(first.id, "cf:up:1:0:2"))
    await run("animate", await animate(discord_fake, first.id, "cf:anim:1:0"))
    sampled = [name for name in graphs if name not in ("upscale", "animate")]
    assert {name: choices_in(graphs[name]) for name in sampled} == {name: MADE for name in sampled}
    jobs = {job.kind: job.request for job in await running.bot.store.jobs_in(("delivering", "done"))}
    for kind in ("upscale", "animate"):  # they draw nothing, yet pass the choices on to what is made from them
        assert jobs[kind]["style"] == "cinematic" and jobs[kind]["loras"] == [["ink.safetensors", 0.8],
                                                                              ["film-grain.safetensors", 0.6]]
        assert (jobs[kind]["sampler"], jobs[kind]["scheduler"]) == ("dpmpp_2m", "karras")
    upscaled_id = upscaled.attachments and (await running.bot.store.generation_by_message(int(upscaled.id))).id
    await run("vary of the upscale", await discord_fake.message_command("Vary this image", upscaled.id))
    assert choices_in(graphs["vary of the upscale"]) == MADE and upscaled_id
