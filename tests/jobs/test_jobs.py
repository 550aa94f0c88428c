"""Image and video jobs end to end against the fake ComfyUI: what is POSTed, what lands on disk."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from PIL import Image

from comfy.types import ComfyError, Finished, NodeStarted, PromptRejected
from image_gen import ImageRequest, RequestError, text_to_image, upscale
from tests.conftest import make_engine, make_settings
from video_gen import animate, video_size


async def test_text_to_image_batch_files_seed_and_prompt(comfy, engine):
    prompt = 'a "cat" {in} a hat\n🐱 \\o/'
    events = []

    async def record(event):
        events.append(event)

    result = await text_to_image(engine, ImageRequest(prompt, "dogs", width=96, height=64, batch=3, seed=1234),
                                 on_event=record)
    posted = comfy.prompts[result.prompt_id]["prompt"]
    assert posted["4"]["inputs"] == {"string_a": prompt, "string_b": "dogs", "delimiter": "\nnegative: "}
    assert posted["2"]["inputs"]["seed"] == 1234 == result.seed
    assert posted["1"]["inputs"] | {"color": 0} == {"width": 96, "height": 64, "batch_size": 3, "color": 0}
    assert len(result.files) == 3
    for path in result.files:
        assert path.parent == engine.settings.outputs_dir and path.suffix == ".png"
        assert Image.open(path).size == (96, 64)
    assert result.text == [f"{prompt}\nnegative: dogs"]
    assert result.server == engine.client.name and result.timings["total"] >= result.timings["running"] >= 0
    assert isinstance(events[-1], Finished) and any(isinstance(e, NodeStarted) for e in events)


async def test_seed_is_resolved_once_and_reported(comfy, engine):
    result = await text_to_image(engine, ImageRequest("x", width=64, height=64))
    assert isinstance(result.seed, int)
    assert comfy.prompts[result.prompt_id]["prompt"]["2"]["inputs"]["seed"] == result.seed


@pytest.mark.parametrize("request_, message", [
    (ImageRequest("x", width=4096), "width must be between 64 and 2048 (got 4096)"),
    (ImageRequest("x", batch=5), "batch must be between 1 and 4 (got 5)"),
    (ImageRequest("   "), "prompt must not be empty"),
    (ImageRequest("x", seed=-1), "seed must be between 0 and 9007199254740991"),
])
async def test_bad_requests_are_refused_before_comfyui(comfy, engine, request_, message):
    with pytest.raises(RequestError) as error:
        await text_to_image(engine, request_)
    assert str(error.value) == message
    assert comfy.prompts == {}


async def test_upscale_doubles_the_image(comfy, engine, tmp_path):
    source = tmp_path / "source.png"
    Image.new("RGB", (40, 30), "red").save(source)
    result = await upscale(engine, source, 2)
    (path,) = result.files
    assert Image.open(path).size == (80, 60)
    assert result.params["factor"] == 2 and result.params["scale"] == 2.0
    posted = comfy.prompts[result.prompt_id]["prompt"]
    name = f"bot-{hashlib.sha256(source.read_bytes()).hexdigest()[:24]}.png"  # by content: one copy per image
    assert posted["1"]["inputs"]["image"] == name
    assert comfy.files[("input", "", name)] == source.read_bytes()
    again = await upscale(engine, source, 4)
    assert comfy.prompts[again.prompt_id]["prompt"]["1"]["inputs"]["image"] == name
    assert sum(1 for kind, _, _ in comfy.files if kind == "input") == 1
    with pytest.raises(RequestError, match="upscale factor must be one of 2x, 4x, 8x"):
        await upscale(engine, source, 3)


async def test_animate_makes_an_mp4(comfy, engine, tmp_path):
    source = tmp_path / "still.png"
    Image.new("RGB", (100, 60), "blue").save(source)
    result = await animate(engine, source, frames=6, fps=12)
    (path,) = result.files
    assert path.suffix == ".mp4" and path.read_bytes()[4:8] == b"ftyp"
    posted = comfy.prompts[result.prompt_id]["prompt"]
    assert posted["3"]["inputs"]["amount"] == 6 and posted["5"]["inputs"]["fps"] == 12
    assert (posted["2"]["inputs"]["width"], posted["2"]["inputs"]["height"]) == (96, 56)


def test_video_size_keeps_aspect_within_bounds():
    assert video_size(100, 60) == (96, 56)
    assert video_size(4000, 2000) == (1024, 512)
    assert video_size(3, 3) == (8, 8)


async def test_default_set_binds_models_and_factor(comfy, client, tmp_path):
    settings = make_settings(tmp_path, comfyui_url=comfy.url, workflow_set="default")
    engine = await make_engine(client, settings)
    result = await text_to_image(engine, ImageRequest("castle", width=64, height=64, steps=3, cfg=5.5, seed=7))
    posted = comfy.prompts[result.prompt_id]["prompt"]
    assert posted["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert (posted["3"]["inputs"]["steps"], posted["3"]["inputs"]["cfg"], posted["3"]["inputs"]["seed"]) == (3, 5.5, 7)
    assert posted["6"]["inputs"]["text"] == "castle"
    up = await upscale(engine, result.files[0], 2)
    posted = comfy.prompts[up.prompt_id]["prompt"]
    assert posted["2"]["inputs"]["model_name"] == "RealESRGAN_x4plus.pth" and posted["4"]["inputs"]["scale_by"] == 0.5
    assert Image.open(up.files[0]).size == (128, 128)


async def test_missing_checkpoint_is_a_readable_rejection(comfy, client, tmp_path):
    settings = make_settings(tmp_path, comfyui_url=comfy.url, workflow_set="default", checkpoint="gone.safetensors")
    engine = await make_engine(client, settings)
    with pytest.raises(PromptRejected, match="input 'ckpt_name': 'gone.safetensors' is not one of the allowed values"):
        await text_to_image(engine, ImageRequest("x", width=64, height=64))


async def test_job_timeout_cancels_on_the_server(comfy, client, tmp_path):
    settings = make_settings(tmp_path, comfyui_url=comfy.url, job_timeout=0.3)
    engine = await make_engine(client, settings)
    comfy.node_delay = 1.0
    with pytest.raises(ComfyError, match="did not finish within 0.3 seconds and was stopped"):
        await text_to_image(engine, ImageRequest("slow", width=64, height=64))
    assert any(r["path"] == "/interrupt" for r in comfy.requests)


async def test_output_cap_holds_across_jobs(comfy, client, tmp_path):
    settings = make_settings(tmp_path, comfyui_url=comfy.url, output_limit=3)
    engine = await make_engine(client, settings)
    for index in range(5):
        result = await text_to_image(engine, ImageRequest(f"n{index}", width=64, height=64))
        for path in result.files:
            engine.outputs.release(path)
    assert len(list(settings.outputs_dir.glob("*.png"))) == 3


async def test_stopping_the_job_task_leaves_the_prompt_to_finish(comfy, engine):
    """The bot stopping must not kill work a restarted bot will pick up by prompt id."""
    comfy.node_delay = 0.2
    task = asyncio.create_task(text_to_image(engine, ImageRequest("x", width=64, height=64), prompt_id="keep-me"))
    async with asyncio.timeout(5):
        while comfy.running_id() != "keep-me":
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        while "keep-me" not in comfy.history_ids():
            await asyncio.sleep(0.02)
    assert not any(r["path"] == "/interrupt" for r in comfy.requests)
