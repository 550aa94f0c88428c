"""Upscale 8x, and a batch's More menu (Reroll, Upscale all, Zoom out and Upscale 8x per image), through
the fake Discord and the fake ComfyUI, before and after a restart."""

from __future__ import annotations

from tests.bot_harness import bot_settings, custom_ids, image_size, result_of

ALICE = "5001"


def menu_of(message) -> dict:
    (menu,) = [c for row in message.components for c in row["components"] if c["type"] == 3]
    return menu


async def test_upscale_8x_is_offered_where_the_result_can_still_be_posted(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, max_width=2048, max_height=2048))
    small = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a fox", "width": 96,
                                                                                "height": 64}))
    assert custom_ids(small)[-5] == "cf:up:1:0:8" and small.components[1]["components"][-1]["label"] == "Upscale 8x"
    upscaled = await result_of(discord_fake, await discord_fake.click(small.id, "cf:up:1:0:8"), timeout=15)
    assert upscaled.embeds[0]["title"] == "Upscaled 8x" and image_size(upscaled.attachments[0]) == (768, 512)
    fields = {field["name"]: field["value"] for field in upscaled.embeds[0]["fields"]}
    assert fields["Size"] == "768×512"

    # 2048 x 2048 upscaled 8x is 268 million pixels: no post could hold it, so no button offers it
    large = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a fox", "width": 2048,
                                                                                "height": 2048}), timeout=20)
    assert "cf:up:3:0:8" not in custom_ids(large) and "cf:up:3:0:4" in custom_ids(large)
    # a button offered under other limits (an old message, a forged id) is refused in words
    discord_fake.messages[large.id].components[0]["components"][0]["custom_id"] = "cf:up:3:0:8"
    refused = await result_of(discord_fake, await discord_fake.click(large.id, "cf:up:3:0:8"), timeout=15)
    assert refused.content == ("❌ Your upscale could not be made: upscaled 8x, this image would be too large to post "
                               "here; upscale it 4x instead.")
    assert sum(1 for body in comfy.prompts.values() if body["prompt"]["2"]["inputs"].get("scale_by") == 8.0) == 1


async def test_a_batch_menu_rerolls_zooms_and_upscales_after_a_restart(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url, max_width=512, max_height=512)
    await running.start(settings)
    batch = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "two owls", "batch": 2, "width": 64, "height": 64, "seed": 3}))
    assert [option["value"] for option in menu_of(batch)["options"]] == [
        "reroll", "remix", "all:2", "all:4", "favorite", "delete", "report", "share", "zoom:0", "zoom15:0", "up8:0", "zoom:1", "zoom15:1", "up8:1"]
    await running.stop()
    await running.start(settings)  # the menu needs nothing in memory

    rerolled = await result_of(discord_fake, await discord_fake.click(batch.id, "cf:more:1", values=["reroll"]),
                               timeout=15)
    assert len(rerolled.attachments) == 2 and rerolled.embeds[0]["title"] == "2 images"
    zoomed = await result_of(discord_fake, await discord_fake.click(batch.id, "cf:more:1", values=["zoom:1"]),
                             timeout=15)
    assert zoomed.embeds[0]["title"] == "Zoomed out 2x" and image_size(zoomed.attachments[0]) == (128, 128)
    big = await result_of(discord_fake, await discord_fake.click(batch.id, "cf:more:1", values=["up8:0"]), timeout=15)
    assert big.embeds[0]["title"] == "Upscaled 8x" and image_size(big.attachments[0]) == (512, 512)

    graphs = [body["prompt"] for body in comfy.prompts.values()]
    assert graphs[1]["2"]["inputs"]["seed"] != 3 and graphs[1]["1"]["inputs"]["batch_size"] == 2
    uploaded = comfy.read_file("input", "", graphs[2]["1"]["inputs"]["image"])
    assert uploaded == batch.attachments[1]["data"]  # Zoom out #2 starts from the second image
    # after each pick the menu is put back as it was, so the same option can be picked again
    edits = [entry for entry in discord_fake.messages[batch.id].history if entry.get("kind") == "edit"]
    assert len(edits) == 3 and menu_of(discord_fake.messages[batch.id])["options"] == menu_of(batch)["options"]


async def test_upscale_all_is_one_job_with_every_image_of_the_batch(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, jobs_per_user=1))
    batch = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "four cups", "batch": 4, "width": 96, "height": 64}))
    click = await discord_fake.click(batch.id, "cf:more:1", values=["all:4"], user_id="6001", username="bob")
    upscaled = await result_of(discord_fake, click, timeout=15)
    assert upscaled.content == "✅ <@6001>, your upscaled images are ready."
    assert upscaled.embeds[0]["title"] == "Upscaled 4x: 4 images"
    assert [image_size(attachment) for attachment in upscaled.attachments] == [(384, 256)] * 4
    assert [attachment["filename"] for attachment in upscaled.attachments] == [
        f"upscale-{n}.png" for n in range(1, 5)]
    graph = list(comfy.prompts.values())[-1]["prompt"]  # one prompt: the four images loaded and batched
    loads = [node["inputs"]["image"] for node in graph.values() if node["class_type"] == "LoadImage"]
    assert len(loads) == 4 and [comfy.read_file("input", "", name) for name in loads] == [
        attachment["data"] for attachment in batch.attachments]
    assert sum(node["class_type"] == "ImageBatch" for node in graph.values()) == 3
    assert custom_ids(upscaled) == [*(f"cf:anim:2:{i}" for i in range(3)), "cf:fav:2", "cf:del:2", "cf:report:2", "cf:share:2", "cf:anim:2:3"]  # each upscaled image can be animated


async def test_a_menu_option_the_bot_no_longer_knows_is_answered_in_words(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    batch = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "two owls", "batch": 2, "width": 64, "height": 64}))
    menu_of(discord_fake.messages[batch.id])["options"].append({"label": "Sketch #1", "value": "sketch:0"})
    picked = await discord_fake.click(batch.id, "cf:more:1", values=["sketch:0"])
    await picked.wait_acked(3)
    reply = discord_fake.messages[picked.original_message_id]
    assert reply.ephemeral and reply.content == "That choice is no longer supported by the bot. Start a new job instead."
    assert len(comfy.prompts) == 1
