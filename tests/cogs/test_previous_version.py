"""The bot after the move into packages and cogs still works on what the previous version left: its
database (schema 8) opens and is migrated, its result messages' buttons and menu still work, and the
commands it syncs are exactly the ones the previous version synced (tests/data/previous_version)."""

from __future__ import annotations

import io
import json
import shutil

from PIL import Image

from tests.bot_harness import bot_settings, result_of
from tests.conftest import ROOT
from tests.fakes.discord import Message

FIXTURE = ROOT / "tests" / "data" / "previous_version"
IGNORED = ("id", "application_id", "version", "guild_id")


def synced(commands: list[dict]) -> list[dict]:
    return sorted(({key: value for key, value in command.items() if key not in IGNORED} for command in commands),
                  key=lambda command: (command.get("type", 1), command["name"]))


async def answer(discord_fake, interaction) -> str:
    await interaction.wait_acked(3)
    return discord_fake.messages[interaction.original_message_id].content


async def test_the_previous_versions_data_buttons_menus_and_commands_still_work(comfy, discord_fake, running,
                                                                              tmp_path):
    shutil.copytree(FIXTURE / "data", tmp_path / "data")
    shutil.copytree(FIXTURE / "outputs", tmp_path / "outputs")
    for kept in json.loads((FIXTURE / "messages.json").read_text()):  # the old result messages, on Discord
        discord_fake.messages[kept["id"]] = Message(
            id=kept["id"], channel_id=kept["channel_id"], author_id=kept["author_id"], content=kept["content"],
            embeds=kept["embeds"], components=kept["components"], attachments=kept["attachments"])
    single, batch = (kept["id"] for kept in json.loads((FIXTURE / "messages.json").read_text()))
    bot = await running.start(bot_settings(tmp_path, comfy.url))
    await discord_fake.wait_for(lambda: bot.scheduler.pool.any_healthy(), timeout=5)

    expected = json.loads((FIXTURE / "commands.json").read_text())
    assert synced(discord_fake.global_commands) == expected["global"]

    upscaled = await result_of(discord_fake, await discord_fake.click(single, "cf:up:1:0:2"), timeout=20)
    assert Image.open(io.BytesIO(upscaled.attachments[0]["data"])).size == (128, 128)
    rerolled = await result_of(discord_fake, await discord_fake.click(batch, "cf:more:2", values=["reroll"]),
                               timeout=20)
    assert len(rerolled.attachments) == 2 and rerolled.embeds[0]["description"] == "two boats"
    unfavorite = await answer(discord_fake, await discord_fake.click(single, "cf:fav:1"))
    assert unfavorite == "⭐ Taken out of your favorites."  # the old database's favorite, read back
    defaults = await answer(discord_fake, await discord_fake.slash("settings"))
    assert "steps: `9`" in defaults  # the old database's saved defaults
    job = await bot.store.get_job(1)
    assert job.state == "done" and job.handovers == 0  # migrated: the new column, with its default
