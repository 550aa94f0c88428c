"""Running the real bot against the fake Discord and the fake ComfyUI, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

from PIL import Image

from bot import ComfyBot, bot_class
from config import Settings
from tests.conftest import make_settings
from tests.fakes.discord import FakeDiscord, Message


def bot_settings(tmp_path: Path, comfy_url: str, **overrides) -> Settings:
    values = {"discord_token": "fake-token", "cdn_hosts": ["127.0.0.1"], "commands_per_minute": 30, **overrides}
    return make_settings(tmp_path, comfyui_url=comfy_url, **values)


class Running:
    """One bot process-equivalent: start it, stop it, start another on the same data folder."""

    def __init__(self, discord: FakeDiscord) -> None:
        self.discord = discord
        self.bot: ComfyBot | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, settings: Settings, **options) -> ComfyBot:
        self.bot = bot_class(settings)(settings, guild_ready_timeout=0.05, **options)
        self._task = asyncio.create_task(self.bot.start("fake-token"))
        if settings.shard_count is None:
            await self.discord.wait_ready()
        else:  # each of its own shards; discord.py identifies them 5 s apart
            for number, shard in enumerate(settings.shard_ids or range(settings.shard_count)):
                await self.discord.wait_ready(5.0 + 6.0 * number, shard=(shard, settings.shard_count))
        return self.bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
        self.bot = None


async def result_of(discord: FakeDiscord, interaction, timeout: float = 15.0) -> Message:
    """How the job started by `interaction` ended: the message posted with its result or its failure
    (its nonce names the job's progress message), or that message itself if the job was refused."""
    def ended(m: Message) -> bool:
        progress = interaction.original_message_id
        return progress is not None and (str(m.nonce) in (f"{progress}.0", f"{progress}.99")
                                         or (m.id == progress and m.content.startswith("❌")))

    return await discord.wait_for_message(ended, timeout=timeout)


def image_size(attachment: dict) -> tuple[int, int]:
    return Image.open(io.BytesIO(attachment["data"])).size


def custom_ids(message: Message) -> list[str]:
    return [item["custom_id"] for row in message.components for item in row.get("components", [])]


async def animate(discord: FakeDiscord, message_id: str, custom_id: str, values: dict | None = None, **acting):
    """Animate under an image: the click opens its form (frames, fps, motion, seed), sent as filled in
    (`values` changes some); the form's interaction, whose job result_of waits for."""
    opened = await discord.click(message_id, custom_id, **acting)
    await opened.wait_acked(3)
    return await discord.submit_modal(opened, values or {}, **acting)
