"""What every cog does the same way: answer privately whatever state an interaction is in, refuse a
person who is going too fast, start a job (record it before anything else can fail, then queue it),
and tell who may do what.
"""

# No `from __future__ import annotations` here: discord.py reads the cogs' annotations at runtime.

import asyncio
import time
from collections import deque
from typing import Any

import discord
import structlog
from discord.ext import commands

from image_gen import RequestError
from jobs import kinds, wording
from jobs.scheduler import QueueFull
from store import Job

log = structlog.get_logger("bot")


class AreaCog(commands.Cog):
    """The cog of one area: it registers the restart-proof buttons and menus it answers
    (`dynamic_items`) when it is added, and removes them when it is taken out."""

    dynamic_items: tuple[type, ...] = ()

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot  # bot.ComfyBot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*self.dynamic_items)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*self.dynamic_items)


class RateLimiter:
    """At most `count` hits per `per` seconds for each key (a sliding window)."""

    def __init__(self, count: int, per: float) -> None:
        self._count, self._per = count, per
        self._hits: dict[int, deque[float]] = {}

    async def hit(self, key: int) -> float:
        """0 when allowed (and counted); otherwise the seconds until the next hit is allowed. A coroutine,
        as is the cluster's (cluster.limiter.SharedRateLimiter), which asks the database."""
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._per:
            hits.popleft()
        if len(hits) >= self._count:
            return hits[0] + self._per - now
        hits.append(now)
        if len(self._hits) > 1000:  # forget idle users so memory does not grow with the user count
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self._per}
        return 0.0


async def tell(interaction: discord.Interaction, text: str) -> None:
    """Answer privately, whatever state the interaction is in; never raises."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
        elif interaction.response.type in (discord.InteractionResponseType.deferred_channel_message,
                                           discord.InteractionResponseType.channel_message):
            await interaction.edit_original_response(content=text, embeds=[], attachments=[], view=None)
        else:
            await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as error:
        log.warning("answer_failed", interaction_id=interaction.id, status=error.status)


async def refuse_if_limited(bot: Any, interaction: discord.Interaction) -> bool:
    """Answer with an ephemeral message and return True when the person must wait."""
    cluster = getattr(bot, "cluster", None)
    if cluster is not None and cluster.shared and not cluster.bus.connected:  # it would be lost: say so now
        log.warning("job_refused_database_away", user_id=interaction.user.id)
        await interaction.response.send_message(wording.not_queued(wording.DATABASE_AWAY), ephemeral=True)
        return True
    try:
        wait = await asyncio.wait_for(bot.limiter.hit(interaction.user.id), 1.0)
    except TimeoutError:  # never risk the 3 s acknowledgement on a slow database
        wait = 0.0
    if wait:
        await interaction.response.send_message(
            wording.limit(f"You are going a bit fast. Try again in {wording.seconds(max(1.0, wait))}."), ephemeral=True)
        return True
    try:
        active = await asyncio.wait_for(bot.store.active_job_count(interaction.user.id), 1.0)
    except TimeoutError:  # never risk the 3 s acknowledgement on a slow disk
        return False
    if active >= bot.settings.jobs_per_user:
        await interaction.response.send_message(
            wording.limit(wording.too_many_jobs(active, bot.settings.jobs_per_user)), ephemeral=True)
        return True
    return False


async def start_job(bot: Any, interaction: discord.Interaction, kind: str, request: dict, **fields) -> None:
    """After defer: record the job (before anything else can fail) and hand it to the scheduler."""
    message_id = fields.pop("message_id", None)
    bot.metrics.acked((discord.utils.utcnow() - interaction.created_at).total_seconds())
    if message_id is None:
        original = await interaction.original_response()
        message_id = original.id
    request["upload_limit"] = interaction.filesize_limit or bot.settings.upload_limit
    try:
        images = int(request.get("batch") or len(request.get("inputs") or ()) or 1)
        refusal = await bot.limits.refusal(interaction.guild_id, interaction.user.id, request, images,
                                           channel_id=interaction.channel_id)
        if refusal is not None:  # blocked, a blocked term, a quota reached: nothing is queued
            raise RequestError(refusal)
        job = await bot.scheduler.submit(Job(
            id=None, kind=kind, user_id=interaction.user.id, channel_id=interaction.channel_id,
            guild_id=interaction.guild_id, request=request, interaction_token=interaction.token,
            application_id=interaction.application_id, interaction_created=interaction.created_at.timestamp(),
            message_id=message_id, **fields))
    except (QueueFull, RequestError) as error:
        for name in kinds.files(request):
            bot.outputs.release(bot.settings.outputs_dir / name)
        log.info("job_refused", kind=kind, user_id=interaction.user.id, reason=str(error))
        await interaction.edit_original_response(content=wording.failed(kind, str(error)))
        return
    log.info("job_started", job_id=job.id, kind=kind, interaction_id=interaction.id,
             shard=interaction.guild.shard_id if interaction.guild else 0)  # Discord sends DMs to shard 0
    await bot.scheduler.show_positions()  # its message and everyone's, from one view of the queue


def is_admin(bot: Any, interaction: discord.Interaction) -> bool:
    """Bot-wide admin (ADMIN_USER_IDS)."""
    return interaction.user.id in bot.settings.admin_user_ids


def is_server_admin(bot: Any, interaction: discord.Interaction) -> bool:
    """An admin of this Discord server (Manage Server), or a bot-wide admin."""
    return is_admin(bot, interaction) or (interaction.guild_id is not None and interaction.permissions.manage_guild)


def may_use_priority(bot: Any, interaction: discord.Interaction) -> bool:
    return interaction.user.id in bot.settings.admin_user_ids or interaction.permissions.manage_guild
