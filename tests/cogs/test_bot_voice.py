"""What people see, through a whole session: notified results, progress in words, a queue that tells
the truth, and no internals (ids, node classes, server file names) anywhere.

Fake Discord <-> real discord.py bot <-> real engine <-> fake ComfyUI.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.bot_harness import bot_settings, image_size, result_of
from tests.fakes.discord import FakeDiscord

ALICE = "5001"
MENTION = re.compile(r"<@[!&]?\d+>")


def shown(discord_fake: FakeDiscord) -> list[str]:
    """Everything the bot made people read: each content and embed it sent, as text."""
    texts = []
    for message in discord_fake.messages.values():
        for entry in message.history:
            payload = entry.get("payload") or {}
            texts.append(payload.get("content") or "")
            texts += [json.dumps(embed, ensure_ascii=False) for embed in payload.get("embeds") or []]
    return [text for text in texts if text]


async def test_a_session_shows_no_ids_node_classes_or_server_files(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url, workflow_set="default")
    await running.start(settings)
    comfy.node_delays = {"KSampler": 1.6}
    first = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a lighthouse", "width": 64, "height": 64, "batch": 2}), timeout=20)
    await result_of(discord_fake, await discord_fake.click(first.id, "cf:up:1:1:2"), timeout=20)
    comfy.fail_node("VAEDecode", exception_message="Invalid file /srv/models/vae/broken.safetensors")
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    await (await discord_fake.slash("status")).wait_acked(3)
    await (await discord_fake.slash("help")).wait_acked(3)

    classes = {node["class_type"] for prompt in comfy.prompts.values() for node in prompt["prompt"].values()}
    server_files = [name for (_, _, name) in comfy.files]
    texts = shown(discord_fake)
    assert any(text.startswith("🎨 Drawing (step ") for text in texts), texts
    for text in texts:
        bare = re.sub(r'"name": "Seed", "value": "\d+"', "", MENTION.sub("", text))  # a seed is the user's
        bare = re.sub(r"https://discord\.com/channels/[\d@]+/\d+/\d+", "", bare)  # a link Discord renders
        assert not re.search(r"\d{15,}", bare), text  # no raw ids
        assert not [name for name in classes if name in bare], text
        assert not [name for name in server_files if name in bare], text
        assert ".safetensors" not in bare and "generation" not in bare and "job 1" not in bare, text
    assert first.attachments[0]["filename"] == "image-1.png" and first.attachments[1]["filename"] == "image-2.png"
    labels = [c.get("label") or c["placeholder"] for row in first.components for c in row["components"]]
    assert labels == ["Upscale 2x #1", "Upscale 4x #1", "Vary (subtle) #1", "Vary (strong) #1", "Animate #1",
                      "Upscale 2x #2", "Upscale 4x #2", "Vary (subtle) #2", "Vary (strong) #2", "Animate #2",
                      "More: reroll, zoom out, upscale all…"]
    options = [option["label"] for option in first.components[-1]["components"][0]["options"]]
    assert options == ["Reroll", "Remix", "Upscale all 2x", "Upscale all 4x", "Favorite", "Delete", "Report", "Share",
                       "Zoom out 2x #1",
                       "Zoom out 1.5x #1", "Upscale 8x #1", "Zoom out 2x #2", "Zoom out 1.5x #2", "Upscale 8x #2"]


async def test_the_result_and_the_failure_notify_the_owner_and_leave_one_message(comfy, discord_fake, running,
                                                                                 tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    done = await discord_fake.slash("generate", {"prompt": "ok", "width": 64, "height": 64})
    result = await result_of(discord_fake, done)
    assert result.content == f"✅ <@{ALICE}>, your image is ready." and result.mentions == [ALICE]
    allowed = result.allowed_mentions
    assert allowed["parse"] == [] and [str(user) for user in allowed["users"]] == [ALICE]  # the owner, nobody else
    comfy.fail_node("SaveImage", exception_message="disk full")
    broken = await discord_fake.slash("generate", {"prompt": "no", "width": 64, "height": 64})
    failure = await result_of(discord_fake, broken)
    assert failure.mentions == [ALICE] and failure.content.startswith(f"❌ <@{ALICE}>, your image could not be made: ")
    for interaction in (done, broken):  # the progress messages are gone: one message per job is left
        assert await discord_fake.wait_for(lambda i=interaction: discord_fake.messages[i.original_message_id].deleted)
    fields = {field["name"]: field["value"] for field in result.embeds[0]["fields"]}
    assert re.fullmatch(r"waited \d+ s, ran \d+ s", fields["Time"]), fields


async def test_the_elapsed_time_keeps_moving_while_a_long_step_runs(comfy, discord_fake, running, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setattr("ui.delivery.TICK", 1.6)
    await running.start(bot_settings(tmp_path, comfy.url))
    comfy.node_delays = {"ImageAddNoise": 5.0}  # one long step that sends no progress of its own
    interaction = await discord_fake.slash("generate", {"prompt": "slow", "width": 64, "height": 64})
    await result_of(discord_fake, interaction, timeout=20)
    progress = discord_fake.messages[interaction.original_message_id]
    drawing = [(entry.get("payload") or {}).get("content") or "" for entry in progress.history]
    seconds = {int(m[1]) for text in drawing if (m := re.match(r"🎨 Drawing, (\d+) s so far\.", text))}
    assert len(seconds) >= 2, drawing


async def test_waiting_while_comfyui_is_down_says_so_with_a_countdown(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, server_grace=20.0))
    await comfy.stop()
    interaction = await discord_fake.slash("generate", {"prompt": "patience", "width": 64, "height": 64})
    waiting = await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and "not answering" in m.content, timeout=10)
    assert re.fullmatch(r"⏳ Waiting for your image: ComfyUI is not answering; trying again, giving up in \d+ s\.",
                        waiting.content), waiting.content
    await comfy.start()
    result = await result_of(discord_fake, interaction, timeout=15)
    assert result.attachments


PRESETS = {"sdxl": {"checkpoint": "sdxl.safetensors"}, "ghost": {"checkpoint": "not-installed.safetensors"}}


async def test_a_preset_no_server_has_is_not_offered(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, workflow_set="default", model_presets=PRESETS))
    await asyncio.sleep(0.5)  # setup: the pool reads the server's node list once it is up
    assert await discord_fake.autocomplete("generate", {"prompt": "x", "model": ""}, "model") == [
        {"name": "sdxl", "value": "sdxl"}, {"name": "auto", "value": "auto"}]
    refused = await discord_fake.slash("generate", {"prompt": "x", "model": "ghost"})
    await refused.wait_acked(3)
    assert discord_fake.messages[refused.original_message_id].content == \
        "The model `ghost` is not available on this server right now. Models you can use: `sdxl`."
    help_ = await discord_fake.slash("help")
    await help_.wait_acked(3)
    usage = discord_fake.messages[help_.original_message_id].embeds[0]["description"]
    assert "`model`: `sdxl`." in usage and "ghost" not in usage
    for aspect in ("square (1:1)", "portrait (2:3)", "landscape (3:2)", "wide (16:9)", "tall (9:16)"):
        assert aspect in usage


# /edit: an image in, a redrawn image out ------------------------------------------------------------------


def photo(size: tuple[int, int], fmt: str = "JPEG", orientation: int | None = None) -> bytes:
    import io

    from PIL import Image

    image = Image.new("RGB", size, (40, 120, 200))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, fmt, exif=exif.tobytes()) if fmt == "JPEG" else image.save(buffer, fmt)
    return buffer.getvalue()


async def test_edit_redraws_an_attachment_fitted_and_upright(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, max_width=1024, max_height=1024))
    upload = ("holiday.jpg", photo((1500, 900), orientation=6))  # a phone photo, stored sideways
    interaction = await discord_fake.slash("edit", {"image": upload, "prompt": "as a painting", "strength": 0.4})
    result = await result_of(discord_fake, interaction, timeout=20)
    assert result.content == f"✅ <@{ALICE}>, your image is ready."
    (posted,) = comfy.prompts.values()
    graph = posted["prompt"]
    assert graph["2"]["inputs"]["strength"] == 0.4 and graph["4"]["inputs"]["string_a"] == "as a painting"
    uploaded = comfy.read_file("input", "", graph["1"]["inputs"]["image"])
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(uploaded)).size == (608, 1024)  # turned upright, fitted, multiples of 8
    embed = result.embeds[0]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert embed["title"] == "Edited image" and fields["Strength"] == "0.40" and fields["Size"] == "608×1024"
    assert [c["custom_id"] for row in result.components for c in row["components"]] == [
        "cf:up:1:0:2", "cf:up:1:0:4", "cf:vary:1:0:s", "cf:vary:1:0:S", "cf:anim:1:0", "cf:zoom:1:0",
        "cf:zoom:1:0:15", "cf:fav:1", "cf:del:1", "cf:report:1", "cf:share:1"]


async def test_edit_runs_the_default_workflow_with_strength_as_denoise(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, workflow_set="default"))
    interaction = await discord_fake.slash("edit", {"image": ("in.png", photo((96, 64), "PNG")), "prompt": "night"})
    assert (await result_of(discord_fake, interaction, timeout=20)).attachments
    (posted,) = comfy.prompts.values()
    sampler = posted["prompt"]["3"]["inputs"]
    assert sampler["denoise"] == 0.6 and posted["prompt"]["6"]["inputs"]["text"] == "night"


async def test_edit_refuses_what_is_not_an_image_in_words(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, download_limit=1024 * 1024))
    cases = [(("page.png", b"<!doctype html><html>oops</html>"),
              "❌ That image cannot be used: the attachment is not a PNG, JPEG, WebP or GIF image that can be read."),
             (("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024)),
              "❌ That image cannot be used: the attachment is larger than 1 MiB.")]
    for upload, answer in cases:
        interaction = await discord_fake.slash("edit", {"image": upload, "prompt": "x"})
        message = await discord_fake.wait_for_message(
            lambda m, i=interaction: m.id == i.original_message_id and m.content.startswith("❌"), timeout=10)
        assert message.content == answer
    assert comfy.prompts == {}


# Vary and Reroll: variations of a result, restart-proof ---------------------------------------------------


async def test_vary_redraws_that_image_after_its_own_prompt_and_reroll_draws_anew(comfy, discord_fake, running,
                                                                                  tmp_path):
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    first = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a red barn", "negative_prompt": "people", "width": 96, "height": 64, "seed": 7}))
    await running.stop()
    await running.start(settings)  # the buttons need nothing in memory
    subtle = await result_of(discord_fake, await discord_fake.click(first.id, "cf:vary:1:0:s"), timeout=15)
    strong = await result_of(discord_fake, await discord_fake.click(first.id, "cf:vary:1:0:S"), timeout=15)
    reroll = await result_of(discord_fake, await discord_fake.click(first.id, "cf:reroll:1"), timeout=15)
    graphs = [body["prompt"] for body in comfy.prompts.values()]
    assert [graph["2"]["inputs"]["strength"] for graph in graphs[1:3]] == [0.35, 0.75]
    for graph in graphs[1:3]:  # img2img from the first image, after the first image's prompt
        assert graph["4"]["inputs"]["string_a"] == "a red barn" and graph["4"]["inputs"]["string_b"] == "people"
        assert graph["1"]["class_type"] == "LoadImage"
    again = graphs[3]
    assert again["4"]["inputs"]["string_a"] == "a red barn" and again["1"]["inputs"]["width"] == 96
    assert again["2"]["inputs"]["seed"] != 7  # a new seed
    assert subtle.embeds[0]["title"] == strong.embeds[0]["title"] == "Edited image"
    assert subtle.content == strong.content == f"✅ <@{ALICE}>, your image is ready."
    assert reroll.embeds[0]["title"] == "Image" and reroll.attachments
    fields = {field["name"]: field["value"] for field in strong.embeds[0]["fields"]}
    assert fields["Strength"] == "0.75" and fields["From"].startswith("[the original image](")


# Apps -> Vary / Upscale / Animate this image, on anyone's message ----------------------------------------


async def test_the_apps_menu_works_on_anyones_image(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    whale = discord_fake.user_post("6001", "a blue whale", [("whale.png", photo((120, 80), "PNG"))])
    varied = await result_of(discord_fake, await discord_fake.message_command("Vary this image", whale.id), timeout=15)
    (graph,) = [body["prompt"] for body in comfy.prompts.values()]
    assert graph["4"]["inputs"]["string_a"] == "a blue whale" and graph["2"]["inputs"]["strength"] == 0.35
    assert varied.content == f"✅ <@{ALICE}>, your image is ready." and varied.embeds[0]["title"] == "Edited image"

    upscaled = await result_of(discord_fake, await discord_fake.message_command("Upscale this image", whale.id),
                               timeout=15)
    assert upscaled.embeds[0]["title"] == "Upscaled 2x" and image_size(upscaled.attachments[0]) == (240, 160)
    own = await result_of(discord_fake, await discord_fake.message_command("Vary this image", varied.id), timeout=15)
    last = list(comfy.prompts.values())[-1]["prompt"]
    assert last["4"]["inputs"]["string_a"] == "a blue whale"  # the bot's own result keeps its prompt
    assert own.attachments

    words = discord_fake.user_post("6001", "no picture here")
    refused = await discord_fake.message_command("Animate this image", words.id)
    await refused.wait_acked(3)
    reply = discord_fake.messages[refused.original_message_id]
    assert reply.ephemeral and reply.content == "That message has no image to use."


async def test_zoom_out_pads_the_image_and_fills_the_border_after_its_prompt(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, max_width=160, max_height=160,
                                     default_width=64, default_height=64))
    first = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a lighthouse", "width": 64, "height": 64}))
    zoomed = await result_of(discord_fake, await discord_fake.click(first.id, "cf:zoom:1:0"), timeout=15)
    graph = list(comfy.prompts.values())[-1]["prompt"]
    pads = [graph["2"]["inputs"][side] for side in ("left", "top", "right", "bottom")]
    assert pads == [32, 32, 32, 32] and graph["5"]["inputs"]["string_a"] == "a lighthouse"
    fields = {field["name"]: field["value"] for field in zoomed.embeds[0]["fields"]}
    assert zoomed.embeds[0]["title"] == "Zoomed out 2x" and fields["Size"] == "128×128"
    assert image_size(zoomed.attachments[0]) == (128, 128)
    less = await result_of(discord_fake, await discord_fake.click(first.id, "cf:zoom:1:0:15"), timeout=15)
    graph = list(comfy.prompts.values())[-1]["prompt"]
    assert [graph["2"]["inputs"][side] for side in ("left", "top", "right", "bottom")] == [16, 16, 16, 16]
    assert less.embeds[0]["title"] == "Zoomed out 1.5x" and image_size(less.attachments[0]) == (96, 96)
    too_big = await result_of(discord_fake, await discord_fake.click(zoomed.id, "cf:zoom:2:0"), timeout=15)
    assert too_big.content == ("❌ Your image could not be made: zoomed out 2x, the image would be larger than "
                               "160×160; upscale less or start from a smaller one.")


def half_mask(size: tuple[int, int], *, alpha: bool = False) -> bytes:
    """White (or, with `alpha`, transparent) on the left half: that half is to be redrawn."""
    import io

    from PIL import Image

    width, height = size
    if alpha:
        image = Image.new("RGBA", size, (40, 120, 200, 255))
        image.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    else:
        image = Image.new("L", size, 0)
        image.paste(255, (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("how", ["mask-attachment", "transparency"])
async def test_edit_with_a_mask_redraws_only_its_white_part(comfy, discord_fake, running, tmp_path, how):
    from PIL import Image
    import io

    await running.start(bot_settings(tmp_path, comfy.url))
    if how == "mask-attachment":
        options = {"image": ("room.png", photo((96, 64), "PNG")), "mask": ("mask.png", half_mask((48, 32))),
                   "prompt": "a window", "strength": 1.0}  # a mask of another size is fitted to the image
    else:
        options = {"image": ("room.png", half_mask((96, 64), alpha=True)), "prompt": "a window", "strength": 1.0}
    result = await result_of(discord_fake, await discord_fake.slash("edit", options), timeout=15)
    (graph,) = [body["prompt"] for body in comfy.prompts.values()]
    assert graph["2"]["class_type"] == "LoadImageMask" and graph["6"]["inputs"]["string_a"] == "a window"
    made = Image.open(io.BytesIO(result.attachments[0]["data"])).convert("RGB")
    assert made.size == (96, 64) and result.embeds[0]["title"] == "Edited image"
    kept = [made.getpixel((x, y)) for x in range(50, 96, 9) for y in range(0, 64, 9)]
    redrawn = [made.getpixel((x, y)) for x in range(0, 46, 9) for y in range(0, 64, 9)]
    assert all(pixel == (40, 120, 200) for pixel in kept)  # black in the mask: left as it was
    assert any(pixel != (40, 120, 200) for pixel in redrawn)  # white in the mask: redrawn


async def test_a_workflow_set_without_a_kind_says_so_in_words(comfy, discord_fake, running, tmp_path):
    import shutil

    from tests.conftest import ROOT

    own = tmp_path / "workflows"
    shutil.copytree(ROOT / "workflows" / "selftest", own / "old")
    for name in ("img2img", "inpaint", "outpaint"):  # an operator's set from before these kinds existed
        (own / "old" / f"{name}.json").unlink()
    toml = (own / "old" / "workflows.toml").read_text()
    (own / "old" / "workflows.toml").write_text(toml.split("\n[img2img]")[0] + "\n")
    await running.start(bot_settings(tmp_path, comfy.url, workflows_dir=own, workflow_set="old"))
    interaction = await discord_fake.slash("edit", {"image": ("in.png", photo((64, 64), "PNG")), "prompt": "x"})
    message = await result_of(discord_fake, interaction, timeout=10)
    assert message.content == ("❌ Your image could not be made: this bot is not set up for this kind of job yet (its "
                               "workflows lack one). Ask the operator; the operator can see the details in the bot's log.")
    assert comfy.prompts == {}
