"""The bot after the move into packages and cogs still works on what the previous version left: its
database (schema 8) opens and is migrated, its result messages' buttons and menu still work, and the
commands it syncs keep every command and option the previous version synced, unchanged, and add only
commands and optional options (tests/data/previous_version): what people learnt still works."""

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


def assert_kept(old: dict, new: dict | None, where: str) -> None:
    """`new` is `old` with, at most, options added that nobody has to give (and subcommands added)."""
    assert new is not None, f"{where} is gone"
    assert {k: v for k, v in new.items() if k != "options"} == {k: v for k, v in old.items() if k != "options"}, where
    options = {option["name"]: option for option in new.get("options") or ()}
    for option in old.get("options") or ():
        if option.get("type") in (1, 2):  # a subcommand or group: its own options, the same way
            assert_kept(option, options.get(option["name"]), f"{where} {option['name']}")
        else:
            assert options.get(option["name"]) == option, f"{where}: the option {option['name']} changed"
    added = [name for name in options if name not in {option["name"] for option in old.get("options") or ()}]
    assert not any(options[name].get("required") for name in added), f"{where}: a required option was added"


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
    now = {(command.get("type", 1), command["name"]): command for command in synced(discord_fake.global_commands)}
    for command in expected["global"]:
        assert_kept(command, now.get((command.get("type", 1), command["name"])), f"/{command['name']}")

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
