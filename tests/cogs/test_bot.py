"""The whole bot end to end: fake Discord <-> real discord.py bot <-> real engine <-> fake ComfyUI."""

from __future__ import annotations

import asyncio
import io
import os

from PIL import Image

from tests.bot_harness import Running, animate, bot_settings, custom_ids, image_size, result_of
from tests.fakes.discord import FakeDiscord


async def test_generate_shows_progress_then_images_with_buttons(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    comfy.node_delay = 0.3
    interaction = await discord_fake.slash("generate", {"prompt": 'a "red" {fox} 🦊', "width": 128, "height": 96, "seed": 42})
    await interaction.wait_acked(3)
    assert interaction.ack_latency < 3.0 and interaction.response_type == 5
    message = await result_of(discord_fake, interaction)
    progress = discord_fake.messages[interaction.original_message_id]
    texts = [(entry.get("payload") or {}).get("content") or "" for entry in progress.history]
    assert any(text.startswith(("⏳ Waiting for your image", "⏳ Starting", "🎨 ")) for text in texts), texts
    assert await discord_fake.wait_for(lambda: progress.deleted), "the progress message goes once the result is posted"
    (attachment,) = message.attachments
    assert image_size(attachment) == (128, 96)
    saved = sorted(settings.outputs_dir.glob("*.png"))
    assert [path.read_bytes() for path in saved] == [attachment["data"]]
    embed = message.embeds[0]
    assert embed["description"] == 'a "red" {fox} 🦊'
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Seed"] == "42" and fields["Size"] == "128×96"
    assert custom_ids(message) == ["cf:up:1:0:2", "cf:up:1:0:4", "cf:vary:1:0:s", "cf:vary:1:0:S", "cf:anim:1:0", "cf:reroll:1", "cf:remix:1", "cf:zoom:1:0", "cf:zoom:1:0:15",
        "cf:up:1:0:8", "cf:fav:1", "cf:del:1", "cf:report:1", "cf:share:1"]
    assert message.content == "✅ <@5001>, your image is ready." and message.mentions == ["5001"]
    assert attachment["filename"] == "image.png"
    (posted,) = comfy.prompts.values()
    assert posted["prompt"]["4"]["inputs"]["string_a"] == 'a "red" {fox} 🦊'
    assert not [v for v in discord_fake.violations if not v.startswith("[429")]


async def test_batch_of_four_has_buttons_per_image(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    interaction = await discord_fake.slash("generate", {"prompt": "four", "batch": 4, "width": 64, "height": 64})
    message = await result_of(discord_fake, interaction)
    assert len(message.attachments) == 4
    ids = custom_ids(message)
    assert len(ids) == 21 and len(message.components) == 5  # 4 rows of 5 per image, and the More menu
    assert [row["components"][4]["custom_id"] for row in message.components[:4]] == [f"cf:anim:1:{i}" for i in range(4)]
    (menu,) = message.components[4]["components"]
    assert menu["type"] == 3 and menu["custom_id"] == "cf:more:1"
    assert [option["value"] for option in menu["options"]] == [
        "reroll", "remix", "all:2", "all:4", "favorite", "delete", "report", "share",
        *(f"{action}:{i}" for i in range(4) for action in ("zoom", "zoom15", "up8"))]
    assert [option["label"] for option in menu["options"]][:9] == [
        "Reroll", "Remix", "Upscale all 2x", "Upscale all 4x", "Favorite", "Delete", "Report", "Share", "Zoom out 2x #1"]


async def test_upscale_then_animate_buttons(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "cat", "width": 96, "height": 64}))
    click = await discord_fake.click(first.id, "cf:up:1:0:2", user_id="6001", username="bob")
    upscaled = await result_of(discord_fake, click)
    assert image_size(upscaled.attachments[0]) == (192, 128)
    assert custom_ids(upscaled) == ["cf:anim:2:0", "cf:fav:2", "cf:del:2", "cf:report:2", "cf:share:2"]
    assert upscaled.embeds[0]["title"] == "Upscaled 2x" and upscaled.content == "✅ <@6001>, your upscaled image is ready."
    video = await result_of(discord_fake, await animate(discord_fake, upscaled.id, "cf:anim:2:0"))
    (attachment,) = video.attachments
    assert attachment["filename"].endswith(".mp4") and attachment["data"][4:8] == b"ftyp"
    assert custom_ids(video) == ["cf:vup:3:2", "cf:animform:3", "cf:fav:3", "cf:del:3", "cf:report:3", "cf:share:3"]  # a video: upscaled, animated again, kept


async def test_button_on_an_old_message_works_after_a_restart(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "old", "width": 64, "height": 64}))
    await running.stop()
    await running.start(settings)  # a new process on the same data folder: nothing in memory
    click = await discord_fake.click(first.id, "cf:up:1:0:4")
    upscaled = await result_of(discord_fake, click)
    assert image_size(upscaled.attachments[0]) == (256, 256)


async def test_pruned_file_is_taken_from_the_discord_attachment(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "gone", "width": 80, "height": 64}))
    for path in settings.outputs_dir.glob("*.png"):
        path.unlink()
    upscaled = await result_of(discord_fake, await discord_fake.click(first.id, "cf:up:1:0:2"))
    assert image_size(upscaled.attachments[0]) == (160, 128)


async def test_attachment_on_another_host_is_refused(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url, cdn_hosts=["cdn.discordapp.com"])
    bot = await running.start(settings)
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    for path in settings.outputs_dir.glob("*.png"):
        path.unlink()
    click = await animate(discord_fake, first.id, "cf:anim:1:0")
    message = await discord_fake.wait_for_message(lambda m: m.id == click.original_message_id and "cannot" in m.content)
    assert message.content == "❌ That image cannot be used: that attachment is not on Discord's CDN, so the bot will not download it."
    assert await bot.store.active_job_count(5001) == 0


async def test_rate_limit_tells_the_user_when_to_retry(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, commands_per_minute=2))
    for _ in range(2):
        await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a", "width": 64, "height": 64}))
    limited = await discord_fake.slash("generate", {"prompt": "b"})
    await limited.wait_acked(3)
    message = discord_fake.messages[limited.original_message_id]
    assert message.flags & 64 and message.content.startswith("⏱️ You are going a bit fast. Try again in ")
    other = await discord_fake.slash("generate", {"prompt": "c", "width": 64, "height": 64}, user_id="7001")
    assert (await result_of(discord_fake, other)).attachments  # another user is not limited


async def test_job_limit_per_user(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, jobs_per_user=1))
    comfy.node_delay = 0.5
    first = await discord_fake.slash("generate", {"prompt": "slow", "width": 64, "height": 64})
    await discord_fake.wait_for(lambda: list(running.bot.scheduler.waiting_jobs()) or comfy.prompts, timeout=5)
    second = await discord_fake.slash("generate", {"prompt": "more"})
    await second.wait_acked(3)
    assert discord_fake.messages[second.original_message_id].content == \
        "⏱️ You already have 1 job waiting or running, and the limit is 1. Try again when one has finished."
    assert (await result_of(discord_fake, first)).attachments


async def test_help_is_ephemeral_and_complete(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    interaction = await discord_fake.slash("help")
    await interaction.wait_acked(3)
    message = discord_fake.messages[interaction.original_message_id]
    assert message.flags & 64
    text = str(message.embeds[0])
    for words in ("/generate", "negative_prompt", "steps`: 1 to 100", "batch`: 1 to 4", "control_image"):
        assert words in text
    (menu,) = message.components[0]["components"]
    assert [option["label"] for option in menu["options"]] == [
        "Making images", "Editing images", "Buttons and menus", "Styles and flags", "Models and LoRAs",
        "Finding your work", "Limits", "Questions"]
    await running.stop()
    await running.start(bot_settings(tmp_path, comfy.url))  # the menu needs nothing in memory
    for topic, words in [("buttons", "Upscale 2x / 4x"), ("styles", "--ar 16:9"), ("work", "/history"),
                         ("faq", "Where is my image?")]:
        picked = await discord_fake.click(message.id, "cf:help", values=[topic])
        await picked.wait_acked(3)
        shown = discord_fake.messages[message.id]
        assert words in shown.embeds[0]["description"] and shown.flags & 64
        assert [o["value"] for o in shown.components[0]["components"][0]["options"] if o.get("default")] == [topic]


async def test_rejected_parameter_is_explained(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url, workflow_set="default", checkpoint="missing.safetensors")
    await running.start(settings)
    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    assert message.content == ("❌ Your image could not be made: the model `missing` is not installed on any server. "
                               "Choose another model, or ask the operator.")
    assert comfy.prompts == {}  # refused before anything reached ComfyUI


async def test_out_of_memory_is_explained(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    comfy.fail_node("ImageAddNoise", exception_message="CUDA out of memory. Tried to allocate 2.00 GiB",
                    exception_type="torch.OutOfMemoryError")
    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    assert message.content == ("❌ <@5001>, your image could not be made: the server ran out of GPU memory. "
                               "Try a smaller size or fewer images.")
    assert message.mentions == ["5001"]


async def test_interrupted_job_is_explained(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    comfy.node_delay = 0.3
    interaction = await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64})
    async with asyncio.timeout(5):
        while comfy.running_id() is None:
            await asyncio.sleep(0.01)
    async with __import__("aiohttp").ClientSession() as session:  # someone interrupts it in ComfyUI's own UI
        await session.post(comfy.url + "/interrupt")
    message = await result_of(discord_fake, interaction)
    assert message.content == ("❌ <@5001>, your image could not be made: it was stopped on the server before it "
                               "finished. Try again.")


async def test_comfyui_down_at_start_bot_still_answers(discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, "http://127.0.0.1:9", comfyui_timeout=0.5))
    assert any(r["path"].endswith("/commands") and r["method"] == "PUT" for r in discord_fake.requests)
    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x"}))
    assert message.content == ("❌ <@5001>, your image could not be made: ComfyUI is not answering right now. "
                               "Try again in a few minutes.")


async def test_too_big_to_post_is_fitted_or_refused(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    noise = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    comfy.output_bytes = buffer.getvalue()
    fitted = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "big", "width": 64, "height": 64}, attachment_size_limit=len(comfy.output_bytes) - 1000))
    (attachment,) = fitted.attachments
    assert attachment["size"] < len(comfy.output_bytes) and Image.open(io.BytesIO(attachment["data"])).size[0] > 0
    refused = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "big", "width": 64, "height": 64}, attachment_size_limit=100), timeout=20)
    assert refused.content.startswith("❌ <@5001>, your image could not be made: the image is ")
    assert refused.content.endswith("this channel accepts files up to 100 bytes.")


async def test_job_past_the_token_lifetime_is_delivered_in_the_channel(comfy, monkeypatch, running, tmp_path):
    fake = FakeDiscord(token_lifetime=2.0)
    await fake.start()
    fake.install(monkeypatch)
    harness = Running(fake)
    try:
        await harness.start(bot_settings(tmp_path, comfy.url), token_lifetime=2.0)
        comfy.node_delay = 1.2
        interaction = await fake.slash("generate", {"prompt": "long", "width": 64, "height": 64})
        message = await fake.wait_for_message(lambda m: m.interaction_id is None and m.attachments, timeout=15)
        assert message.content == "✅ <@5001>, your image is ready." and message.mentions == ["5001"]
        assert custom_ids(message) == ["cf:up:1:0:2", "cf:up:1:0:4", "cf:vary:1:0:s", "cf:vary:1:0:S", "cf:anim:1:0", "cf:reroll:1", "cf:remix:1", "cf:zoom:1:0", "cf:zoom:1:0:15",
        "cf:up:1:0:8", "cf:fav:1", "cf:del:1", "cf:report:1", "cf:share:1"]
        original = fake.messages[interaction.original_message_id]
        assert await fake.wait_for(lambda: original.deleted)  # deleted through the channel: the token has expired
        assert not [v for v in fake.violations if "token-expired" in v]
    finally:
        await harness.stop()
        await fake.stop()


async def test_progress_edits_are_coalesced(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, workflow_set="default"))
    comfy.node_delays = {"KSampler": 3.0}
    interaction = await discord_fake.slash("generate", {"prompt": "slow", "width": 64, "height": 64, "steps": 30})
    await result_of(discord_fake, interaction, timeout=20)
    message = discord_fake.messages[interaction.original_message_id]  # the progress message
    edits = [entry["time"] for entry in message.history if entry.get("kind") == "edit"]
    gaps = [later - earlier for earlier, later in zip(edits, edits[1:])]  # the result is a new message
    assert len(edits) >= 3 and min(gaps) >= 1.4
    assert not [v for v in discord_fake.violations if v.startswith("[429")]
    assert any("step" in (entry.get("payload") or {}).get("content", "") for entry in message.history)
