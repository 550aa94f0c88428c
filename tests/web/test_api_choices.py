"""The HTTP API's model and style, through the running bot to the fake ComfyUI: a preset's checkpoint and
settings, `auto` picking one from the prompt as in Discord, a style's template, and refusals in words."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from tests.bot_harness import bot_settings
from tests.conftest import MODELS
from tests.fakes.comfyui import FakeComfyUI
from tests.web.test_api_bot import admin, free_port


@pytest.fixture
async def comfy():
    fake = FakeComfyUI(models={**MODELS, "checkpoints": [*MODELS["checkpoints"], "anime.safetensors"]})
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


PRESETS = {"anime": {"checkpoint": "anime.safetensors", "tags": ["manga"], "steps": 7, "cfg": 4.5},
           "sdxl": {"checkpoint": "sdxl.safetensors", "tags": ["landscape"]}}


def sampled(comfy) -> dict:
    graph = list(comfy.prompts.values())[-1]["prompt"]
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    texts = [node["inputs"]["text"] for node in graph.values() if node["class_type"] == "CLIPTextEncode"]
    return {"checkpoint": by_class["CheckpointLoaderSimple"]["ckpt_name"], "steps": by_class["KSampler"]["steps"],
            "cfg": by_class["KSampler"]["cfg"], "texts": texts}


async def test_the_api_applies_presets_auto_and_styles_as_discord_does(comfy, discord_fake, running, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=base, workflow_set="default",
                                     checkpoint="v1-5-pruned-emaonly.safetensors", model_presets=PRESETS))
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)
    (key,) = re.findall(r"`(cfb_[^`]+)`", await admin(discord_fake, "apikey create", {"name": "site"}))
    headers = {"Authorization": f"Bearer {key}"}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async def make(body: dict) -> dict:
            async with http.post(f"{base}/api/v1/generations", headers=headers,
                                 json={"width": 64, "height": 64, **body}) as made:
                answer = await made.json()
                if made.status != 202:
                    return {"status": made.status, **answer}
            for _ in range(150):  # bounded: the job runs on the fake ComfyUI
                async with http.get(f"{base}/api/v1/generations/{answer['id']}", headers=headers) as got:
                    state = await got.json()
                if state["state"] in ("done", "failed"):
                    return state
                await asyncio.sleep(0.1)
            raise AssertionError(f"the job did not end: {state}")

        done = await make({"prompt": "a harbour", "model": "anime", "style": "watercolor"})
        assert done["state"] == "done", done
        shown = sampled(comfy)
        assert (shown["checkpoint"], shown["steps"], shown["cfg"]) == ("anime.safetensors", 7, 4.5)
        assert any(text.startswith("watercolor painting of a harbour") for text in shown["texts"]), shown["texts"]

        picked = await make({"prompt": "a fox in manga style", "model": "auto"})
        assert picked["state"] == "done" and sampled(comfy)["checkpoint"] == "anime.safetensors"
        assert picked["settings"]["model"] == "anime"
        assert picked["settings"]["model_reason"] == "`anime` preset: the prompt says `manga`"

        plain = await make({"prompt": "a barn"})
        assert sampled(comfy)["checkpoint"] == "v1-5-pruned-emaonly.safetensors" and plain["state"] == "done"

        for body, field, words in [({"prompt": "x", "model": "nope"}, "model", "is not a model preset here"),
                                   ({"prompt": "x", "style": "nope"}, "style", "is not a style here")]:
            refused = await make(body)
            assert refused["status"] == 400 and refused["error"]["field"] == field, refused
            assert words in refused["error"]["message"], refused
