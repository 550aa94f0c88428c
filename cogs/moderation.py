"""The moderation queue on Discord (issue 21): a result the moderation provider flagged is held, its owner
is told in its progress message, and a card with the result (as spoilers) goes to the server's mod-log
channel with Release and Delete buttons, for members who may manage messages. The checks and decisions
are jobs/moderation.py's; the dashboard offers the same two actions (web/panel.py).

`wire(bot)` builds the moderation from the settings (MODERATION_URL unset: no provider, nothing is
checked, and results held earlier stay held until a moderator decides) and hands it to the scheduler and
the limits.
"""

# No `from __future__ import annotations` here: discord.py reads the cogs' annotations at runtime.

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import discord
import structlog

from cogs.choices import is_nsfw
from cogs.common import AreaCog, is_server_admin
from jobs.moderation import IMAGE_SUFFIXES, Moderation, shown_to_moderators
from jobs.moderation_providers import OpenAIModeration
from store import Job
from store.moderation import Hold
from ui.buttons import ID, _Guarded, answering

log = structlog.get_logger("bot")

CARD_IMAGES = 4  # images attached to a card, each under the upload limit
ONLY_MODERATORS = "Only moderators (members who may manage messages) can do that."


def wire(bot: Any) -> Moderation:
    """The bot's moderation, handed to the scheduler (results) and the limits (prompts)."""
    settings = bot.settings
    provider = None
    if settings.moderation_url is not None:
        key = settings.moderation_api_key.get_secret_value() if settings.moderation_api_key else None
        provider = OpenAIModeration(settings.moderation_url, key, settings.moderation_model, settings.moderation_timeout)
    moderation = Moderation(bot.store, settings, bot.outputs, provider)
    moderation.deliver = bot.scheduler._deliver_stored  # posts as the job would have been, errors told in words
    moderation.fail = bot.scheduler._fail
    moderation.age_restricted = lambda channel_id: is_nsfw(bot.get_channel(channel_id))
    bot.scheduler.moderation = bot.limits.moderation = moderation
    return moderation


class HoldButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                 template=rf"cf:hold:(?P<hold>{ID}):(?P<action>release|delete)"):
    """Release or Delete on a held result's card in the mod-log channel."""

    def __init__(self, hold_id: int, action: str) -> None:
        self.hold_id, self.action = hold_id, action
        release = action == "release"
        super().__init__(discord.ui.Button(
            label="Release" if release else "Delete", emoji="✅" if release else "🗑️",
            style=discord.ButtonStyle.success if release else discord.ButtonStyle.danger,
            custom_id=f"cf:hold:{hold_id}:{action}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "HoldButton":
        return cls(int(match["hold"]), match["action"])

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "ModerationQueue").on_hold_button(interaction, self.hold_id, self.action)


class ModerationQueue(AreaCog):
    dynamic_items = (HoldButton,)

    async def cog_load(self) -> None:
        await super().cog_load()
        if self.bot.scheduler is not None and self.bot.limits is not None:
            moderation = wire(self.bot)
            moderation.announce, moderation.decided = self.announce, self.decided

    async def cog_unload(self) -> None:
        await super().cog_unload()
        moderation = getattr(self.bot.scheduler, "moderation", None)
        if moderation is not None and moderation.provider is not None:
            await moderation.provider.close()

    async def announce(self, hold: Hold, job: Job, files: list[Path]) -> None:
        """Tell the owner, and post the card in the mod-log channel (when the server has one)."""
        await self.bot.delivery.job_held(job, hold.reason)
        modlog = (await self.bot.store.controls("modlog")).get(str(hold.guild_id))
        if modlog is None:
            log.info("hold_without_modlog", hold_id=hold.id, guild_id=hold.guild_id)
            return
        attachments = []
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES] if shown_to_moderators(hold) else []
        for number, path in enumerate(images[:CARD_IMAGES], 1):
            data = await asyncio.to_thread(path.read_bytes)
            if len(data) <= self.bot.settings.upload_limit:
                attachments.append(discord.File(io.BytesIO(data), filename=f"SPOILER_held-{number}{path.suffix.lower()}"))
        view = discord.ui.View(timeout=None)
        view.add_item(HoldButton(hold.id, "release"))
        view.add_item(HoldButton(hold.id, "delete"))
        try:
            message = await self.bot.get_partial_messageable(int(modlog["channel_id"])).send(
                card_text(hold, job), files=attachments, view=view, allowed_mentions=discord.AllowedMentions.none())
        finally:
            view.stop()
        await self.bot.store.set_hold_message(hold.id, message.id)

    async def decided(self, hold: Hold) -> None:
        """The card says who decided what, and loses its buttons (and its images once deleted)."""
        modlog = (await self.bot.store.controls("modlog")).get(str(hold.guild_id))
        job = await self.bot.store.get_job(hold.job_id)
        if hold.message_id is None or modlog is None or job is None:
            return
        verb = "Released" if hold.state == "released" else "Deleted"
        message = self.bot.get_partial_messageable(int(modlog["channel_id"])).get_partial_message(hold.message_id)
        try:
            await message.edit(content=f"{card_text(hold, job)}\n**{verb}** by <@{hold.decided_by}>.", view=None,
                               **({"attachments": []} if hold.state == "deleted" else {}))
        except discord.HTTPException as error:
            log.warning("hold_card_not_edited", hold_id=hold.id, status=error.status)

    async def on_hold_button(self, interaction: discord.Interaction, hold_id: int, action: str) -> None:
        """Release or Delete, for moderators (`decided` then updates the card)."""
        if not interaction.permissions.manage_messages and not is_server_admin(self.bot, interaction):
            await interaction.response.send_message(ONLY_MODERATORS, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        moderation: Moderation = self.bot.scheduler.moderation
        decide = moderation.release if action == "release" else moderation.delete
        said = await decide(hold_id, interaction.guild_id or 0, interaction.user.id)
        await interaction.edit_original_response(content=said)


def card_text(hold: Hold, job: Job) -> str:
    """The mod-log card: whose result, where it would go, why it is held, and the prompt (as a spoiler)."""
    prompt = discord.utils.escape_markdown(str(job.request.get("prompt") or "")[:300])
    return (f"🛑 Held for review: a result by <@{hold.user_id}> for <#{hold.channel_id}> ({hold.reason}).\n"
            f"Prompt: ||{prompt}||\nRelease posts it; Delete removes it.")
