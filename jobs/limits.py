"""The bot as a service: what admins switched (paused queues, blocked members, drained servers),
quotas, blocked terms, and reports to the mod-log. Checked before a job queues, so a refusal is a
sentence and nothing runs. The switches live in the store (store_admin.py); the scheduler and the pool
mirror the ones they act on.

`ServiceControls` is a part of bot.ComfyBot, like actions.ImageActions.
"""

# No `from __future__ import annotations` here, as in bot.py.

import asyncio
import datetime as dt
import re

import discord
import structlog

from jobs import wording
from ui.views import ModerateButton, jump_url, result_embed


log = structlog.get_logger("bot")

UNITS = {"images": "images", "gpu_seconds": "GPU seconds", "cost": "cost"}
TERM_CHECK_TIMEOUT = 1.0  # seconds a blocked-terms check may take (an admin's regular expression)
TERM_MAX = 200


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    """The start of the current UTC day or month."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1) if period == "month" else day


def period_end(period: str, now: dt.datetime) -> dt.datetime:
    start = period_start(period, now)
    if period == "month":
        return (start + dt.timedelta(days=32)).replace(day=1)
    return start + dt.timedelta(days=1)


def term_pattern(term: str, regex: bool) -> re.Pattern[str]:
    """A blocked term as a pattern: a regular expression as written, or the words, whole and in any case."""
    return re.compile(term if regex else rf"(?<!\w){re.escape(term)}(?!\w)", re.IGNORECASE)


class ServiceControls:
    """Checks and switches of bot.ComfyBot for admins, quotas and moderation."""

    async def load_switches(self) -> None:
        """At start: the paused queues and drained servers as the store has them."""
        self.scheduler.set_paused(set(await self.store.controls("pause")))
        drained = await self.store.controls("drain")
        for backend in self.scheduler.pool.backends:
            backend.drained = backend.name in drained

    # the actions /admin and the dashboard share; each is written to the audit log --------------

    async def admin_pause(self, guild: int, actor_id: int, everywhere: bool, on: bool) -> str:
        scope = "all" if everywhere else str(guild)
        await self.store.set_control("pause", scope, {"by": actor_id} if on else None)
        self.scheduler.set_paused(set(await self.store.controls("pause")))
        await self._audited(guild, actor_id, "pause" if on else "resume", scope=scope)
        where = "every server" if everywhere else "this server"
        return (f"⏸️ Paused: no new jobs start on {where}; they wait, and running ones finish. /admin resume "
                "starts them again.") if on else f"▶️ Resumed: jobs start again on {where}."

    async def admin_block(self, guild: int, actor_id: int, user_id: int, reason: str, on: bool) -> str:
        changed = await self.store.set_control("block", f"{guild}:{user_id}",
                                               {"reason": reason, "by": actor_id} if on else None)
        await self._audited(guild, actor_id, "block" if on else "unblock", user_id=user_id,
                            **({"reason": reason} if on else {}))
        if on:
            return f"⛔ <@{user_id}> can no longer use the bot here."
        return f"<@{user_id}> can use the bot here again." if changed else f"<@{user_id}> was not blocked."

    async def admin_drain(self, guild: int, actor_id: int, number: int, on: bool) -> str:
        """Raises ValueError for a server number the pool does not have."""
        backends = self.scheduler.pool.backends
        if not 1 <= number <= len(backends):
            raise ValueError(f"There is no server {number}; /status lists {wording.plural(len(backends), 'server')}.")
        backend = backends[number - 1]
        await self.store.set_control("drain", backend.name, {"by": actor_id} if on else None)
        backend.drained = on
        self.scheduler.set_paused(self.scheduler.paused)  # wakes the dispatcher
        await self._audited(guild, actor_id, "drain" if on else "undrain", server=number)
        return (f"Server {number} gets no new jobs; {wording.plural(len(backend.jobs), 'job')} on it will finish."
                if on else f"Server {number} takes jobs again.")

    async def _audited(self, guild: int, actor_id: int, action: str, **details) -> None:
        await self.store.audit(guild, actor_id, action, **details)
        log.info("admin_action", action=action, by=actor_id, guild_id=guild, **details)

    async def usage_today(self, interaction: discord.Interaction) -> str:
        """/status' line on cost: what the person and this server used today (UTC)."""
        since = period_start("day", dt.datetime.now(dt.timezone.utc)).timestamp()
        mine = await self.store.usage(interaction.guild_id, interaction.user.id, since)
        here = await self.store.usage(interaction.guild_id, None, since)
        currency = self.settings.cost_currency
        return f"You: {usage_line(mine, currency)}. This server: {usage_line(here, currency)}."

    def is_admin(self, interaction: discord.Interaction) -> bool:
        """Bot-wide admin (ADMIN_USER_IDS)."""
        return interaction.user.id in self.settings.admin_user_ids

    def is_server_admin(self, interaction: discord.Interaction) -> bool:
        """An admin of this Discord server (Manage Server), or a bot-wide admin."""
        return self.is_admin(interaction) or (interaction.guild_id is not None and interaction.permissions.manage_guild)

    async def service_refusal(self, guild_id: int | None, user_id: int, request: dict, images: int) -> str | None:
        """Why this job may not queue (blocked member, blocked term, a quota reached), as a sentence; None if it may."""
        guild = guild_id or 0
        blocks = await self.store.controls("block")
        if f"{guild}:{user_id}" in blocks:
            return "a moderator blocked you from using this bot here"
        texts = [str(request.get(key) or "") for key in ("prompt", "negative_prompt", "style_prompt", "style_negative")]
        if await self._has_blocked_term(guild, texts):
            return "your prompt has a word or phrase this server does not allow; change it and try again"
        return await self._quota_refusal(guild_id, user_id, images)

    async def _has_blocked_term(self, guild: int, texts: list[str]) -> bool:
        terms = [(scope.split(":", 1)[1], value.get("regex", False)) for scope, value in
                 (await self.store.controls("term")).items() if scope.split(":", 1)[0] == str(guild)]
        if not terms:
            return False

        def check() -> bool:
            return any(term_pattern(term, regex).search(text) for term, regex in terms for text in texts if text)

        try:  # in a thread, bounded: an admin's regular expression must never stall the bot
            return await asyncio.wait_for(asyncio.to_thread(check), TERM_CHECK_TIMEOUT)
        except TimeoutError:
            log.warning("blocked_terms_check_timed_out", guild_id=guild)
            return True

    async def _quota_refusal(self, guild_id: int | None, user: int, images: int) -> str | None:
        guild = guild_id or 0
        quotas = await self.store.controls("quota")
        now = dt.datetime.now(dt.timezone.utc)
        for scope, value in sorted(quotas.items()):
            who, quota_guild, quota_user, period, unit = scope.split(":")
            if int(quota_guild) != guild or (who == "user" and int(quota_user) not in (0, user)):
                continue
            if who == "user" and quota_user == "0" and f"user:{guild}:{user}:{period}:{unit}" in quotas:
                continue  # this person has a limit of their own
            used = await self.store.usage(guild_id, user if who == "user" else None,
                                          period_start(period, now).timestamp())
            limit = float(value["limit"])
            amount = {"images": used.images, "gpu_seconds": used.gpu_seconds, "cost": used.cost}[unit]
            if (amount + images > limit) if unit == "images" else amount >= limit:
                return quota_sentence(who, period, unit, amount, limit, period_end(period, now) - now,
                                      self.settings.cost_currency)
        return None

    # reports to the mod-log ----------------------------------------------------------------

    async def on_report_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Report: the result, its prompt and who reported it go to the server's mod-log channel."""
        generation = await self.store.get_generation(generation_id)
        if generation is None or generation.deleted_at is not None:
            await interaction.response.send_message("That result is not kept any more.", ephemeral=True)
            return
        modlog = (await self.store.controls("modlog")).get(str(interaction.guild_id or 0))
        if modlog is None:
            await interaction.response.send_message(
                "This server has no mod-log channel yet; a moderator can set one with /admin modlog.", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        embed = result_embed(generation)
        embed.title = "Reported result"
        embed.color = 0xE67E22
        if generation.attachment_urls and not generation.files[0].lower().endswith((".mp4", ".webm")):
            embed.set_image(url=generation.attachment_urls[0])
        view = discord.ui.View(timeout=None)
        view.add_item(ModerateButton(generation_id, "delete"))
        view.add_item(ModerateButton(generation_id, "block"))
        text = (f"🚩 <@{interaction.user.id}> reported a result by <@{generation.user_id}>"
                + (f": {jump_url(vars(generation))}" if generation.message_id else "."))
        try:
            await self.get_partial_messageable(int(modlog["channel_id"])).send(
                text, embed=embed, view=view, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as error:
            log.warning("report_not_posted", status=error.status, guild_id=interaction.guild_id)
            await interaction.edit_original_response(content="The report could not be posted in the mod-log channel; "
                                                             "please tell a moderator.")
            return
        finally:
            view.stop()
        await self.store.audit(interaction.guild_id or 0, interaction.user.id, "report", generation_id=generation_id,
                               author_id=generation.user_id,
                               link=jump_url(vars(generation)) if generation.message_id else None)
        log.info("result_reported", generation_id=generation_id, by=interaction.user.id)
        await interaction.edit_original_response(content="🚩 Thank you: the moderators have it.")

    async def on_moderate_button(self, interaction: discord.Interaction, generation_id: int, action: str) -> None:
        """In the mod-log: delete the reported result, or block its author here (moderators only)."""
        if not interaction.permissions.manage_messages and not self.is_server_admin(interaction):
            await interaction.response.send_message("Only moderators can do that.", ephemeral=True)
            return
        generation = await self.store.get_generation(generation_id)
        if generation is None:
            await interaction.response.send_message("That result is not known to this bot.", ephemeral=True)
            return
        if action == "delete":
            await self.on_delete_button(interaction, generation_id, True)
            await self.store.audit(interaction.guild_id or 0, interaction.user.id, "delete_reported",
                                   generation_id=generation_id)
            return
        said = await self.admin_block(interaction.guild_id or 0, interaction.user.id, generation.user_id,
                                      "reported result", True)
        await interaction.response.send_message(said.removeprefix("⛔ "), ephemeral=True)


def quota_sentence(who: str, period: str, unit: str, used: float, limit: float, left: dt.timedelta,
                   currency: str) -> str:
    """Which limit was reached and when it resets: "you have made 20 of your 20 images today; ...". """
    whose = "you have" if who == "user" else "this server has"
    span = "today" if period == "day" else "this month"
    amount = {"images": f"made {used:g} of {limit:g} images",
              "gpu_seconds": f"used {used:.1f} of {limit:g} GPU seconds",
              "cost": f"used {used:.2f} of {limit:.2f} {currency}"}[unit]
    resets = "at 00:00 UTC" if period == "day" else "on the 1st at 00:00 UTC"
    return (f"{whose} {amount} allowed {span}{'' if who == 'user' else ' for everyone here'}; "
            f"the limit resets {resets}, in {wording.seconds(left.total_seconds())}")


def usage_line(used, currency: str) -> str:
    """"3 images, 12.5 GPU seconds, 0.40 USD" (no cost while no server has a price)."""
    cost = f", {used.cost:.2f} {currency}" if used.cost else ""
    return f"{wording.plural(used.images, 'image')}, {used.gpu_seconds:.1f} GPU seconds{cost}"
