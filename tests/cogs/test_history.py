"""/history, /favorites, Favorite and Delete, through the fake Discord and the fake ComfyUI."""

from __future__ import annotations

import io

from PIL import Image

from tests.bot_harness import bot_settings, result_of

ALICE, BOB = "5001", "6001"
MANAGE_MESSAGES = str(1 << 13)


async def make(discord_fake, prompt: str, **options):
    return await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": prompt, "width": 64, "height": 64, **options}), timeout=20)


async def reply(discord_fake, interaction):
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)


def options_of(message) -> list[str]:
    (menu,) = [c for row in message.components for c in row["components"] if c["type"] == 3]
    return [option["label"] for option in menu["options"]]


async def test_history_is_a_contact_sheet_with_pages_search_and_filters(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    empty = await reply(discord_fake, await discord_fake.slash("history"))
    assert empty.content == "You have no results here." and empty.ephemeral
    for number in range(10):
        await make(discord_fake, f"a red fox number {number}" if number % 2 else f"a blue whale number {number}")
    first = await reply(discord_fake, await discord_fake.slash("history"))
    assert first.ephemeral and first.content.startswith("Your results here: 1–9 of 10, newest first.")
    (sheet,) = first.attachments
    assert sheet["filename"] == "history.webp" and Image.open(io.BytesIO(sheet["data"])).size == (800, 800)
    assert options_of(first)[0] == "1. Text to image: a red fox number 9" and len(options_of(first)) == 9
    await running.stop()
    await running.start(settings)  # the page buttons need nothing in memory
    older = await discord_fake.click(first.id, "cf:hist:2:1")  # search 1 was the empty one
    await older.wait_acked(3)
    page = await discord_fake.wait_for_message(lambda m: m.id == first.id and "10–10" in m.content, timeout=10)
    assert page.content.startswith("Your results here: 10–10 of 10") and options_of(page) == [
        "1. Text to image: a blue whale number 0"]
    assert Image.open(io.BytesIO(page.attachments[0]["data"])).size == (272, 272)

    foxes = await reply(discord_fake, await discord_fake.slash("history", {"search": "FOX numb"}))
    assert foxes.content.startswith("Your results here (search `FOX numb`): 1–5 of 5")
    assert await reply(discord_fake, await discord_fake.slash("history", {"search": "giraffe"})) and \
        discord_fake.messages[list(discord_fake.messages)[-1]].content == \
        "You have no results here (search `giraffe`)."
    later = await reply(discord_fake, await discord_fake.slash("history", {"since": "2099-01-01"}))
    assert later.content == "You have no results here (from 2099-01-01)."
    bad = await discord_fake.slash("history", {"since": "yesterday"})
    await bad.wait_acked(3)
    assert discord_fake.messages[bad.original_message_id].content == "`since` is a day written like 2026-11-28."
    model = settings.checkpoint
    same = await reply(discord_fake, await discord_fake.slash("history", {"model": model, "until": "2099-12-31",
                                                                          "since": "2000-01-01"}))
    assert same.content.startswith(f"Your results here (model `{model}`, from 2000-01-01, until 2099-12-31): "
                                   "1–9 of 10")
    other = await reply(discord_fake, await discord_fake.slash("history", {"model": "other", "until": "2000-01-01"}))
    assert other.content == "You have no results here (model `other`, until 2000-01-01)."
    upscales = await reply(discord_fake, await discord_fake.slash("history", {"kind": "upscale"}))
    assert upscales.content == "You have no results here (upscaled)."
    bob = await reply(discord_fake, await discord_fake.slash("history", user_id=BOB, username="bob"))
    assert bob.content == "You have no results here."


async def test_opening_one_shows_it_privately_with_its_buttons(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    posted = await make(discord_fake, "a lighthouse")
    listing = await reply(discord_fake, await discord_fake.slash("history"))
    opened = await discord_fake.click(listing.id, "cf:histopen", values=["1"])
    shown = await reply(discord_fake, opened)
    assert shown.ephemeral and shown.content.endswith(f"/{posted.channel_id}/{posted.id}")
    assert shown.embeds[0]["description"] == "a lighthouse"
    assert shown.embeds[0]["image"]["url"] == posted.attachments[0]["url"]
    assert "cf:up:1:0:2" in [c["custom_id"] for row in shown.components for c in row["components"]]
    asked = await reply(discord_fake, await discord_fake.click(posted.id, "cf:del:1"))
    await reply(discord_fake, await discord_fake.click(asked.id, "cf:del:1:ok"))
    gone = await reply(discord_fake, await discord_fake.click(listing.id, "cf:histopen", values=["1"]))
    assert gone.content == "That result is not kept any more."  # deleted since the list was made


async def test_favorites_toggle_and_are_listed(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    kept = await make(discord_fake, "a kept kite")
    await make(discord_fake, "a forgotten fern")
    added = await reply(discord_fake, await discord_fake.click(kept.id, "cf:fav:1"))
    assert added.content == "⭐ Added to your favorites: /favorites shows them."
    mine = await reply(discord_fake, await discord_fake.slash("favorites"))
    assert mine.content.startswith("Your results here (favorites only): 1–1 of 1") and options_of(mine) == [
        "1. Text to image: a kept kite"]
    bobs = await reply(discord_fake, await discord_fake.click(kept.id, "cf:fav:1", user_id=BOB, username="bob"))
    assert bobs.content.startswith("⭐ Added")  # Bob's mark is his own
    removed = await reply(discord_fake, await discord_fake.click(kept.id, "cf:fav:1"))
    assert removed.content == "⭐ Taken out of your favorites."
    none = await reply(discord_fake, await discord_fake.slash("favorites"))
    assert none.content == "You have no results here (favorites only). Mark some with ⭐ Favorite."


async def test_delete_is_for_the_owner_and_moderators_and_removes_everything(comfy, discord_fake, running,
                                                                             tmp_path):
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    doomed = await make(discord_fake, "a doomed dune")
    saved = (await running.bot.store.get_generation(1)).files[0]
    refused = await reply(discord_fake, await discord_fake.click(doomed.id, "cf:del:1", user_id=BOB, username="bob"))
    assert refused.content == "Only the person who made this, or a moderator, can delete it."
    asked = await reply(discord_fake, await discord_fake.click(doomed.id, "cf:del:1"))
    assert asked.content == "Delete this result for good? The message and its files go."
    assert not discord_fake.messages[doomed.id].deleted and (settings.outputs_dir / saved).is_file()
    done = await reply(discord_fake, await discord_fake.click(asked.id, "cf:del:1:ok"))
    assert done.content == "🗑️ Deleted."
    assert discord_fake.messages[doomed.id].deleted and not (settings.outputs_dir / saved).exists()
    assert (await reply(discord_fake, await discord_fake.slash("history"))).content == "You have no results here."

    other = await make(discord_fake, "a moderated moon")
    listing = await reply(discord_fake, await discord_fake.slash("history", {"user": ALICE}, user_id=BOB,
                                                                 username="bob", permissions=MANAGE_MESSAGES))
    assert listing.content.startswith(f"<@{ALICE}>'s results here: 1–1 of 1")
    nosy = await discord_fake.slash("history", {"user": ALICE}, user_id=BOB, username="bob")
    await nosy.wait_acked(3)
    assert discord_fake.messages[nosy.original_message_id].content == \
        "Only moderators can see another member's history."
    asked = await reply(discord_fake, await discord_fake.click(other.id, "cf:del:2", user_id=BOB, username="bob",
                                                               permissions=MANAGE_MESSAGES))
    await reply(discord_fake, await discord_fake.click(asked.id, "cf:del:2:ok", user_id=BOB, username="bob",
                                                       permissions=MANAGE_MESSAGES))
    assert discord_fake.messages[other.id].deleted


async def test_gallery_says_when_there_is_no_web_gallery(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    answer = await reply(discord_fake, await discord_fake.slash("gallery"))
    assert answer.content == ("This bot has no web gallery; the operator can turn it on with WEB_PORT and "
                              "WEB_BASE_URL.")


async def test_gallery_hands_out_a_link_to_this_persons_results_here(comfy, discord_fake, running, tmp_path):
    import re
    import socket

    import aiohttp

    with socket.socket() as probe:  # a free port for the web app
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=f"http://127.0.0.1:{port}",
                                     gallery_link_hours=2))
    await make(discord_fake, "a gallery giraffe")
    answer = await reply(discord_fake, await discord_fake.slash("gallery"))
    assert answer.ephemeral and answer.content.startswith("Your gallery for this server, for the next 2 hours")
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/g/\S+", answer.content)
    async with aiohttp.ClientSession() as session, session.get(url) as page:
        text = await page.text()
    assert page.status == 200 and "a gallery giraffe" in text
    async with aiohttp.ClientSession() as session, session.get(url[:-3] + "xyz") as page:
        assert page.status == 403
