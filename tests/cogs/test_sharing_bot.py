"""Share, Share with / without prompt, Revoke and /share revoke, through the fake Discord and the fake
ComfyUI, with the bot's own web app serving the pages on 127.0.0.1."""

from __future__ import annotations

import re
import socket

import aiohttp

from tests.bot_harness import bot_settings, custom_ids, result_of
from tests.web.test_shares import Tags

ALICE, BOB = "5001", "6001"
MANAGE_MESSAGES = str(1 << 13)
ASK = ("Share this result on a public web page? Anyone with the link can see it (it is listed nowhere), and it "
       "shows the picture when the link is posted on Discord, X, Mastodon or in a messenger. You, or a "
       "moderator, can take it down at any time; deleting the result takes it down too.")
TAKEN_DOWN = "Taken down: the page now says “Not found”, and the link will never work again."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def web_settings(tmp_path, comfy):
    port = free_port()
    return bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=f"http://127.0.0.1:{port}")


async def make(discord_fake, prompt: str, **options):
    return await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": prompt, "width": 64, "height": 64, **options}), timeout=20)


async def reply(discord_fake, interaction):
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)


async def edited(discord_fake, interaction, message_id: str, before: str):
    """The ephemeral message a button updated in place, once its text changed."""
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(lambda m: m.id == message_id and m.content != before, timeout=10)


async def fetch(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(url) as page:
        return page.status, (await page.read()).decode("utf-8", "replace")


def link_in(text: str) -> str:
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/s/[A-Za-z0-9_-]{40}", text)
    return url


async def test_the_owner_shares_with_the_prompt_and_revokes_after_a_restart(comfy, discord_fake, running, tmp_path):
    settings = web_settings(tmp_path, comfy)
    await running.start(settings)
    posted = await make(discord_fake, "a shared sunflower")
    assert custom_ids(posted)[-4:] == ["cf:fav:1", "cf:del:1", "cf:report:1", "cf:share:1"]
    (share,) = [c for row in posted.components for c in row["components"] if c["custom_id"] == "cf:share:1"]
    assert share["label"] == "Share" and share["emoji"]["name"] == "🔗"

    refused = await reply(discord_fake, await discord_fake.click(posted.id, "cf:share:1", user_id=BOB, username="bob"))
    assert refused.ephemeral and refused.content == "Only the person who made this result can share it."
    asked = await reply(discord_fake, await discord_fake.click(posted.id, "cf:share:1"))
    assert asked.ephemeral and asked.content == ASK and custom_ids(asked) == ["cf:shmk:1:1", "cf:shmk:1:0"]

    await running.stop()
    await running.start(settings)  # the buttons need nothing in memory
    made = await edited(discord_fake, await discord_fake.click(asked.id, "cf:shmk:1:1"), asked.id, ASK)
    url = link_in(made.content)
    assert made.content == (f"🔗 Your public page, with the prompt:\n{url}\nAnyone with the link can see it. "
                            "**Revoke** takes it down at once; so does deleting the result.")
    share_id = url.rpartition("/")[2][:20]
    assert custom_ids(made) == [f"cf:shrev:{share_id}"]
    status, page = await fetch(url)
    assert status == 200 and Tags(page).meta["og:title"] == "a shared sunflower"
    assert Tags(page).meta["og:image"] == f"{url}/file/0"
    image_status, _ = await fetch(f"{url}/file/0")
    assert image_status == 200

    again = await reply(discord_fake, await discord_fake.click(posted.id, "cf:share:1"))
    assert again.content == f"{ASK}\n\nShared now:\n• with the prompt: {url}"
    assert custom_ids(again) == ["cf:shmk:1:1", "cf:shmk:1:0", f"cf:shrev:{share_id}"]
    gone = await edited(discord_fake, await discord_fake.click(again.id, f"cf:shrev:{share_id}"), again.id,
                        again.content)
    assert gone.content == TAKEN_DOWN and custom_ids(gone) == []
    assert (await fetch(url))[0] == 404 and (await fetch(f"{url}/file/0"))[0] == 404
    twice = await edited(discord_fake, await discord_fake.click(made.id, f"cf:shrev:{share_id}"), made.id,
                         made.content)
    assert twice.content == "That page was already taken down."


async def test_without_the_prompt_and_revoked_by_a_moderator_with_the_command(comfy, discord_fake, running, tmp_path):
    elsewhere = discord_fake.add_guild(guild_id="990001", name="Elsewhere")
    await running.start(web_settings(tmp_path, comfy))
    await make(discord_fake, "a private prompt")
    asked = await reply(discord_fake, await discord_fake.click(
        (await discord_fake.wait_for_message(lambda m: "cf:share:1" in custom_ids(m), timeout=10)).id, "cf:share:1"))
    made = await edited(discord_fake, await discord_fake.click(asked.id, "cf:shmk:1:0"), asked.id, ASK)
    assert made.content.startswith("🔗 Your public page, without the prompt:\n")
    url = link_in(made.content)
    status, page = await fetch(url)
    assert status == 200 and "a private prompt" not in page
    assert Tags(page).meta["og:description"] == "A picture made with ComfyUI, shared from Discord."

    nosy = await reply(discord_fake, await discord_fake.slash("share revoke", {"link": url}, user_id=BOB,
                                                              username="bob"))
    assert nosy.content == "Only the person who shared this page, or a moderator of its server, can take it down."
    other_server = await reply(discord_fake, await discord_fake.slash(
        "share revoke", {"link": url}, user_id=BOB, username="bob", permissions=MANAGE_MESSAGES,
        channel_id=elsewhere.channel_id))  # a moderator, but of another server
    assert other_server.content == nosy.content
    assert (await fetch(url))[0] == 200
    garbage = await reply(discord_fake, await discord_fake.slash("share revoke", {"link": url[:-1] + "?"}))
    assert garbage.content == ("That is not a share link of this bot: paste the whole link, like https://…/s/ "
                               "followed by 40 letters and digits.")
    modded = await reply(discord_fake, await discord_fake.slash("share revoke", {"link": f"<{url}/file/0>"},
                                                                user_id=BOB, username="bob",
                                                                permissions=MANAGE_MESSAGES))
    assert modded.ephemeral and modded.content == TAKEN_DOWN
    assert (await fetch(url))[0] == 404


async def test_deleting_the_result_takes_its_page_down(comfy, discord_fake, running, tmp_path):
    await running.start(web_settings(tmp_path, comfy))
    posted = await make(discord_fake, "a doomed daisy")
    asked = await reply(discord_fake, await discord_fake.click(posted.id, "cf:share:1"))
    url = link_in((await edited(discord_fake, await discord_fake.click(asked.id, "cf:shmk:1:1"), asked.id,
                                ASK)).content)
    assert (await fetch(url))[0] == 200
    asked_again = await reply(discord_fake, await discord_fake.click(posted.id, "cf:share:1"))
    sure = await reply(discord_fake, await discord_fake.click(posted.id, "cf:del:1"))
    await reply(discord_fake, await discord_fake.click(sure.id, "cf:del:1:ok"))
    assert (await fetch(url))[0] == 404 and (await fetch(f"{url}/file/0"))[0] == 404
    late = await reply(discord_fake, await discord_fake.click(asked_again.id, "cf:shmk:1:0"))
    assert late.content == "That result is not kept any more."


async def test_a_batch_shares_from_its_more_menu(comfy, discord_fake, running, tmp_path):
    await running.start(web_settings(tmp_path, comfy))
    posted = await make(discord_fake, "two tulips", batch=2)
    (menu,) = [c for row in posted.components for c in row["components"] if c["type"] == 3]
    assert "share" in [option["value"] for option in menu["options"]]
    asked = await reply(discord_fake, await discord_fake.click(posted.id, menu["custom_id"], values=["share"]))
    assert asked.content == ASK


async def test_share_says_when_there_are_no_public_pages(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    posted = await make(discord_fake, "an unshared umbrella")
    answer = await reply(discord_fake, await discord_fake.click(posted.id, "cf:share:1"))
    assert answer.content == ("This bot has no public pages; the operator can turn them on with WEB_PORT and "
                              "WEB_BASE_URL.")
