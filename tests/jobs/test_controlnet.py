"""ControlNet: /generate with a control image, and Apps -> Use as ControlNet input on anyone's image,
through the fake Discord and a fake ComfyUI that has (or lacks) the preprocessor custom nodes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.bot_harness import bot_settings, image_size, result_of
from tests.conftest import MODELS
from tests.fakes.comfy_nodes import AUX_PREPROCESSORS
from tests.fakes.comfyui import FakeComfyUI

ALICE = "5001"
CANNY, DEPTH = "control_v11p_sd15_canny.pth", "control_v11f1p_sd15_depth.pth"


def picture(size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, (250, 250, 250))
    image.paste((20, 20, 20), (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))  # a shape to follow
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def started(custom_nodes: dict | None = None) -> FakeComfyUI:
    fake = FakeComfyUI(models={**MODELS, "controlnet": [CANNY, DEPTH]}, custom_nodes=custom_nodes)
    await fake.start()
    return fake


@pytest.fixture
async def comfy():
    fake = await started()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


@pytest.fixture
async def comfy_aux():
    fake = await started(AUX_PREPROCESSORS)
    yield fake
    await fake.stop()
    assert fake.unhandled == []


def settings_for(tmp_path, url, **overrides):
    return bot_settings(tmp_path, url, workflow_set="default", checkpoint="v1-5-pruned-emaonly.safetensors",
                        **overrides)


async def test_generate_follows_the_edges_of_a_control_image(comfy, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, comfy.url))
    interaction = await discord_fake.slash("generate", {
        "prompt": "a stone tower", "control_image": ("sketch.png", picture((600, 400))), "control_strength": 1.2,
        "control_end": 0.8})
    result = await result_of(discord_fake, interaction, timeout=20)
    assert result.content == f"✅ <@{ALICE}>, your image is ready."
    (posted,) = comfy.prompts.values()
    graph = posted["prompt"]
    assert graph["11"]["class_type"] == "Canny" and graph["11"]["inputs"]["image"] == ["10", 0]
    assert graph["12"]["inputs"]["control_net_name"] == CANNY
    applied = graph["13"]["inputs"]
    assert (applied["strength"], applied["start_percent"], applied["end_percent"]) == (1.2, 0.0, 0.8)
    assert graph["3"]["inputs"]["positive"] == ["13", 0] and graph["6"]["inputs"]["text"] == "a stone tower"
    uploaded = comfy.read_file("input", "", graph["10"]["inputs"]["image"])
    assert Image.open(io.BytesIO(uploaded)).size == (600, 400)
    # drawn at the control image's shape, with about the default 512 x 512 pixels
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (624, 416)
    assert image_size(result.attachments[0]) == (624, 416)
    embed = result.embeds[0]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert embed["title"] == "Image after your canny map" and fields["Control"] == "canny at 1.20"
    assert fields["Size"] == "624×416"
    assert [c["custom_id"] for c in result.components[0]["components"]][:2] == ["cf:up:1:0:2", "cf:up:1:0:4"]

    sized = await discord_fake.slash("generate", {"prompt": "a tower", "control_image": ("s.png", picture((600, 400))),
                                                  "aspect": "square"})
    await result_of(discord_fake, sized, timeout=20)
    graph = list(comfy.prompts.values())[-1]["prompt"]
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (512, 512)  # a size asked for wins


async def test_control_options_are_refused_in_words(comfy, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, comfy.url, controlnet_models={"canny": CANNY, "depth": DEPTH}))
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)
    cases = [
        ({"prompt": "x", "control_strength": 1.0},
         "The control options need a `control_image` to follow; add one, or leave them out."),
        ({"prompt": "x", "control_image": ("a.png", picture((64, 64))), "control_type": "depth"},
         "There is no ControlNet type called `depth`. Choose one of: `canny`."),  # no preprocessor nodes for depth here
        ({"prompt": "x", "control_image": ("a.png", picture((64, 64))), "control_type": "<@1> everyone"},
         "There is no ControlNet type called `<@1> everyone`. Choose one of: `canny`."),
    ]
    for options, answer in cases:
        interaction = await discord_fake.slash("generate", options)
        await interaction.wait_acked(3)
        reply = discord_fake.messages[interaction.original_message_id]
        assert reply.ephemeral and reply.content == answer
    assert await discord_fake.autocomplete("generate", {"prompt": "x", "control_type": ""}, "control_type") == [
        {"name": "canny", "value": "canny"}]
    bad = await discord_fake.slash("generate", {"prompt": "x", "control_image": ("a.txt", b"not an image")})
    assert (await result_of(discord_fake, bad)).content == ("❌ That image cannot be used: the attachment is not a PNG, JPEG, WebP or GIF image "
                               "that can be read.")
    assert comfy.prompts == {}


async def test_depth_is_offered_where_the_server_has_its_preprocessor(comfy_aux, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, comfy_aux.url, controlnet_models={"canny": CANNY, "depth": DEPTH}))
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)
    assert await discord_fake.autocomplete("generate", {"prompt": "x", "control_type": ""}, "control_type") == [
        {"name": "canny", "value": "canny"}, {"name": "depth", "value": "depth"}]
    interaction = await discord_fake.slash("generate", {
        "prompt": "a canyon", "control_image": ("d.png", picture((256, 256))), "control_type": "depth"})
    result = await result_of(discord_fake, interaction, timeout=20)
    (posted,) = comfy_aux.prompts.values()
    graph = posted["prompt"]
    assert graph["11"] == {"class_type": "DepthAnythingV2Preprocessor", "inputs": {"image": ["10", 0]}}
    assert graph["12"]["inputs"]["control_net_name"] == DEPTH
    assert result.embeds[0]["title"] == "Image after your depth map"


async def test_the_apps_menu_draws_after_anyones_image_even_across_a_restart(comfy, discord_fake, running, tmp_path):
    settings = settings_for(tmp_path, comfy.url)
    await running.start(settings)
    pose = discord_fake.user_post("6001", "a dancer", [("dancer.png", picture((320, 480)))])
    opened = await discord_fake.message_command("Use as ControlNet input", pose.id)
    await opened.wait_acked(3)
    form = opened.modal
    assert form["custom_id"] == f"cf:cnet:{discord_fake.channel_id}:{pose.id}"
    fields = {label["component"]["custom_id"]: label["component"] for label in form["components"]}
    assert fields["prompt"]["value"] == "a dancer"  # the message's words, to keep or change
    assert [option["value"] for option in fields["control_type"]["options"]] == ["canny"]

    await running.stop()
    await running.start(settings)  # the form names the message: nothing of it lives in memory
    submitted = await discord_fake.submit_modal(opened, {"prompt": "a robot dancing", "strength": "1.5"})
    result = await result_of(discord_fake, submitted, timeout=20)
    assert result.content == f"✅ <@{ALICE}>, your image is ready."
    (posted,) = comfy.prompts.values()
    graph = posted["prompt"]
    assert graph["6"]["inputs"]["text"] == "a robot dancing" and graph["13"]["inputs"]["strength"] == 1.5
    assert comfy.read_file("input", "", graph["10"]["inputs"]["image"]) == pose.attachments[0]["data"]
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (416, 624)


async def test_the_controlnet_form_refuses_what_cannot_be_used_in_words(comfy, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, comfy.url))
    words = discord_fake.user_post("6001", "no picture")
    refused = await discord_fake.message_command("Use as ControlNet input", words.id)
    await refused.wait_acked(3)
    assert discord_fake.messages[refused.original_message_id].content == "That message has no image to use."

    shape = discord_fake.user_post("6001", "", [("shape.png", picture((128, 128)))])
    for strength, answer in [("lots", "Strength must be a number from 0 to 2, like 0.8."),
                             ("9", "Strength must be a number from 0 to 2, like 0.8.")]:
        opened = await discord_fake.message_command("Use as ControlNet input", shape.id)
        await opened.wait_acked(3)
        submitted = await discord_fake.submit_modal(opened, {"prompt": "a vase", "strength": strength})
        await submitted.wait_acked(3)
        reply = discord_fake.messages[submitted.original_message_id]
        assert reply.ephemeral and reply.content == answer
    opened = await discord_fake.message_command("Use as ControlNet input", shape.id)
    await opened.wait_acked(3)
    discord_fake.messages[shape.id].deleted = True  # the image is gone by the time the form is sent
    gone = await discord_fake.submit_modal(opened, {"prompt": "a vase"})
    assert (await result_of(discord_fake, gone)).content == ("❌ That image cannot be used: the message with the image is gone, or the bot may not "
                               "read it.")
    assert comfy.prompts == {}


async def test_without_controlnet_models_the_menu_says_so(comfy, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, comfy.url, controlnet_models={}))
    shape = discord_fake.user_post("6001", "", [("shape.png", picture((64, 64)))])
    refused = await discord_fake.message_command("Use as ControlNet input", shape.id)
    await refused.wait_acked(3)
    assert discord_fake.messages[refused.original_message_id].content == (
        "ControlNet is not available on this bot's servers right now.")
