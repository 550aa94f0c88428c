"""/admin (for ADMIN_USER_IDS and members who may manage the server), /usage, and the Report button
with the mod-log's Delete and Block buttons. Every admin action is written to the audit log, which
/admin audit lists. The switches live in the store (store/admin.py); jobs/limits.py turns them and
checks them before a job queues.

Bot-wide actions (pause everywhere, drain and undrain a ComfyUI server, reload) are for ADMIN_USER_IDS
only; the rest act on this Discord server and are also for members with Manage Server.
"""

# No `from __future__ import annotations` here: discord.py reads the parameters' annotations.

import dataclasses
import datetime as dt
import re
import time

import discord
from discord import app_commands

import structlog

from cogs.common import AreaCog, is_admin, is_server_admin
from config import ConfigError, read_settings
from jobs import wording
from ui.buttons import ModerateButton, ReportButton
from ui.views import jump_url, result_embed
from safe_text import clip
from jobs.limits import TERM_MAX, UNITS, period_start, term_pattern, usage_line
from links import dashboard_url, link_secret
from comfy.workflows import WorkflowError, load_set

log = structlog.get_logger("bot")

PERIODS = [app_commands.Choice(name="per day", value="day"), app_commands.Choice(name="per month", value="month")]
UNIT_CHOICES = [app_commands.Choice(name=label, value=value) for value, label in UNITS.items()]
NOT_ALLOWED = "Only admins of this bot, or members who may manage this server, can do that."
BOT_ADMINS_ONLY = "Only the bot's own admins (ADMIN_USER_IDS) can do that: it affects every server."


class Admin(AreaCog):
    admin = app_commands.Group(name="admin", description="Steer the bot here: pause, block, quotas, moderation",
                               guild_only=True)
    terms = app_commands.Group(name="terms", description="Blocked words and phrases", parent=admin)
    apikey = app_commands.Group(name="apikey", description="Keys for the HTTP API, for other programs", parent=admin)

    dynamic_items = (ReportButton, ModerateButton)


    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.command and interaction.command.qualified_name == "usage":
            return True
        if not is_server_admin(self.bot, interaction):
            await interaction.response.send_message(NOT_ALLOWED, ephemeral=True)
            return False
        return True

    async def _done(self, interaction: discord.Interaction, action: str, said: str, **details) -> None:
        await self.bot.limits.audited(interaction.guild_id or 0, interaction.user.id, action, **details)
        await interaction.response.send_message(said, ephemeral=True)

    # the queue -------------------------------------------------------------------------

    @admin.command(name="pause", description="Stop starting new jobs here (they wait); running ones finish")
    @app_commands.describe(everywhere="Every server the bot is in (the bot's own admins only)")
    async def pause(self, interaction: discord.Interaction, everywhere: bool = False) -> None:
        await self._pause(interaction, everywhere, True)

    @admin.command(name="resume", description="Start jobs here again")
    @app_commands.describe(everywhere="Every server the bot is in (the bot's own admins only)")
    async def resume(self, interaction: discord.Interaction, everywhere: bool = False) -> None:
        await self._pause(interaction, everywhere, False)

    async def _pause(self, interaction: discord.Interaction, everywhere: bool, on: bool) -> None:
        if everywhere and not is_admin(self.bot, interaction):
            await interaction.response.send_message(BOT_ADMINS_ONLY, ephemeral=True)
            return
        said = await self.bot.limits.pause(interaction.guild_id or 0, interaction.user.id, everywhere, on)
        await interaction.response.send_message(said, ephemeral=True)

    @admin.command(name="drain", description="Send no new jobs to a ComfyUI server; its running jobs finish")
    @app_commands.describe(server="The server's number, as /status lists them")
    async def drain(self, interaction: discord.Interaction, server: app_commands.Range[int, 1, 100]) -> None:
        await self._drain(interaction, server, True)

    @admin.command(name="undrain", description="Send jobs to a drained ComfyUI server again")
    @app_commands.describe(server="The server's number, as /status lists them")
    async def undrain(self, interaction: discord.Interaction, server: app_commands.Range[int, 1, 100]) -> None:
        await self._drain(interaction, server, False)

    async def _drain(self, interaction: discord.Interaction, number: int, on: bool) -> None:
        if not is_admin(self.bot, interaction):
            await interaction.response.send_message(BOT_ADMINS_ONLY, ephemeral=True)
            return
        try:
            said = await self.bot.limits.drain(interaction.guild_id or 0, interaction.user.id, number, on)
        except ValueError as error:
            said = str(error)
        await interaction.response.send_message(said, ephemeral=True)

    @admin.command(name="reload", description="Read the workflows, model presets and styles again, without a restart")
    async def reload(self, interaction: discord.Interaction) -> None:
        if not is_admin(self.bot, interaction):
            await interaction.response.send_message(BOT_ADMINS_ONLY, ephemeral=True)
            return
        settings = self.bot.settings
        try:
            workflows = load_set(settings.workflow_dir())
        except WorkflowError as error:
            await interaction.response.send_message(
                f"The workflows were not reloaded: {clip(str(error), 1500)}", ephemeral=True)
            return
        try:
            presets = read_settings().model_presets  # MODEL_PRESETS as the environment and .env say now
        except ConfigError as error:
            await interaction.response.send_message(f"Nothing was reloaded: {clip(str(error), 1500)}", ephemeral=True)
            return
        for backend in self.bot.scheduler.pool.backends:
            backend.engine = dataclasses.replace(backend.engine, workflows=workflows)
            if backend.object_info is not None:
                backend.learn(backend.object_info)  # what it can run is judged again
        settings.model_presets = presets
        self.bot.choices.load_builtin_styles()
        await self._done(interaction, "reload", f"Reloaded {wording.plural(len(workflows), 'workflow')}, "
                         f"{wording.plural(len(settings.model_presets), 'model preset')} and "
                         f"{wording.plural(len(self.bot.choices.builtin_styles), 'built-in style')}.")

    # members ---------------------------------------------------------------------------

    @admin.command(name="block", description="Stop a member from using the bot here")
    @app_commands.describe(member="Who", reason="Why (kept in the audit log)")
    async def block(self, interaction: discord.Interaction, member: discord.User,
                    reason: app_commands.Range[str, 1, 200]) -> None:
        said = await self.bot.limits.block(interaction.guild_id or 0, interaction.user.id, member.id, reason, True)
        await interaction.response.send_message(said, ephemeral=True)

    @admin.command(name="unblock", description="Let a blocked member use the bot here again")
    async def unblock(self, interaction: discord.Interaction, member: discord.User) -> None:
        said = await self.bot.limits.block(interaction.guild_id or 0, interaction.user.id, member.id, "", False)
        await interaction.response.send_message(said, ephemeral=True)

    @admin.command(name="quota", description="Limit what each member, one member, or this server may use")
    @app_commands.describe(period="Per day or per month (UTC)", unit="Images, GPU seconds or cost",
                           limit="The most allowed; 0 removes the limit",
                           member="One member (left out: each member; with server: the whole server)",
                           server="The limit is for the whole server together")
    @app_commands.choices(period=PERIODS, unit=UNIT_CHOICES)
    async def quota(self, interaction: discord.Interaction, period: app_commands.Choice[str],
                    unit: app_commands.Choice[str], limit: app_commands.Range[float, 0.0, 1e9],
                    member: discord.User | None = None, server: bool = False) -> None:
        who = "guild" if server else "user"
        scope = f"{who}:{interaction.guild_id}:{0 if server or member is None else member.id}:{period.value}:{unit.value}"
        await self.bot.store.set_control("quota", scope, {"limit": limit} if limit > 0 else None)
        whom = "this server" if server else f"<@{member.id}>" if member else "each member"
        what = self.bot.settings.cost_currency if unit.value == "cost" else unit.name
        said = (f"Limit set: {whom}, {limit:g} {what} {period.name}." if limit > 0
                else f"Limit removed: {whom}, {what} {period.name}.")
        await self._done(interaction, "quota", said, scope=scope, limit=limit)

    @admin.command(name="usage", description="Who used what here, today or this month")
    @app_commands.choices(period=PERIODS)
    async def usage_all(self, interaction: discord.Interaction, period: app_commands.Choice[str] | None = None) -> None:
        span = period.value if period else "day"
        since = period_start(span, dt.datetime.now(dt.timezone.utc)).timestamp()
        people = await self.bot.store.usage_by_person(interaction.guild_id, since)
        total = await self.bot.store.usage(interaction.guild_id, None, since)
        currency = self.bot.settings.cost_currency
        lines = [f"**{'Today' if span == 'day' else 'This month'} here**: {usage_line(total, currency)}"]
        lines += [f"• <@{user}>: {usage_line(used, currency)}" for user, used in people]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @admin.command(name="audit", description="The latest admin actions here")
    async def audit(self, interaction: discord.Interaction) -> None:
        entries = await self.bot.store.audit_log(interaction.guild_id or 0, 20)
        lines = [f"• {when(entry['at'])} <@{entry['actor_id']}> {entry['action']}"
                 + (f": {clip(describe(entry['details']), 150)}" if entry["details"] else "") for entry in entries]
        await interaction.response.send_message("\n".join(lines) or "No admin actions here yet.", ephemeral=True)

    @admin.command(name="dashboard", description="A private link to this server's admin dashboard on the web")
    async def dashboard(self, interaction: discord.Interaction) -> None:
        settings = self.bot.settings
        if settings.web_port is None or settings.web_base_url is None:
            await interaction.response.send_message(
                "This bot has no web app; the operator can turn it on with WEB_PORT and WEB_BASE_URL.", ephemeral=True)
            return
        url = dashboard_url(settings, await link_secret(self.bot.store, settings), interaction.user.id,
                            interaction.guild_id, time.time())
        await self._done(interaction, "dashboard_link", f"The dashboard for this server, for the next "
                         f"{settings.gallery_link_hours:g} hours (only for you: anyone with the link can act as "
                         f"you there):\n{url}")

    # moderation ------------------------------------------------------------------------

    @admin.command(name="modlog", description="Where reported results go")
    async def modlog(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        await self.bot.store.set_control("modlog", str(interaction.guild_id), {"channel_id": channel.id})
        await self._done(interaction, "modlog", f"Reports now go to <#{channel.id}>.", channel_id=channel.id)

    @terms.command(name="add", description="Refuse prompts with this word, phrase or regular expression")
    @app_commands.describe(term="A word or phrase (whole words, any case), or a regular expression",
                           regex="The term is a regular expression")
    async def terms_add(self, interaction: discord.Interaction, term: app_commands.Range[str, 1, TERM_MAX],
                        regex: bool = False) -> None:
        if regex:
            try:
                term_pattern(term, True)
            except re.error as error:
                await interaction.response.send_message(f"That is not a regular expression Python reads ({error}).",
                                                        ephemeral=True)
                return
        await self.bot.store.set_control("term", f"{interaction.guild_id}:{term.strip()}", {"regex": regex})
        await self._done(interaction, "term_add", "Added: prompts with it are refused here, without quoting it.",
                         regex=regex)

    @terms.command(name="remove", description="Allow a blocked term again")
    async def terms_remove(self, interaction: discord.Interaction, term: app_commands.Range[str, 1, TERM_MAX]) -> None:
        changed = await self.bot.store.set_control("term", f"{interaction.guild_id}:{term.strip()}", None)
        await self._done(interaction, "term_remove", "Removed." if changed else "That term was not blocked here.")

    @terms.command(name="list", description="The blocked terms here")
    async def terms_list(self, interaction: discord.Interaction) -> None:
        prefix = f"{interaction.guild_id}:"
        found = [(scope.removeprefix(prefix), value.get("regex")) for scope, value in
                 (await self.bot.store.controls("term")).items() if scope.startswith(prefix)]
        lines = [f"• {wording.code(term)}{' (regular expression)' if regex else ''}" for term, regex in sorted(found)]
        await interaction.response.send_message(clip("\n".join(lines), 1900) or "No blocked terms here.",
                                                ephemeral=True)

    # the HTTP API ------------------------------------------------------------------------

    @apikey.command(name="create", description="A key for another program to use the bot here (shown once)")
    @app_commands.describe(name="What it is for, e.g. our website")
    async def apikey_create(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 60]) -> None:
        key_id, key = await self.bot.store.create_key(interaction.guild_id, name, interaction.user.id)
        base = self.bot.settings.web_base_url or "(the bot's WEB_BASE_URL)"
        await self._done(interaction, "apikey_create", (
            f"Key {key_id} for {wording.code(name)}; copy it now, it is not shown again:\n`{key}`\n"
            f"Send it as `Authorization: Bearer <key>` to {base}/api/v1 (the document is at /api/v1/openapi.json). "
            "Its jobs count as one person here, and this server's limits apply."), key_id=key_id, name=name)

    @apikey.command(name="list", description="The API keys of this server")
    async def apikey_list(self, interaction: discord.Interaction) -> None:
        keys = await self.bot.store.keys(interaction.guild_id)
        lines = [f"• {key.id}: {wording.code(key.name)} `{key.prefix}…` by <@{key.created_by}> "
                 f"{'(revoked)' if key.revoked else ''}{' with a webhook' if key.webhook_url else ''}".rstrip()
                 for key in keys[:30]]
        await interaction.response.send_message("\n".join(lines) or "This server has no API keys.", ephemeral=True)

    @apikey.command(name="revoke", description="Stop an API key from working")
    async def apikey_revoke(self, interaction: discord.Interaction, key_id: app_commands.Range[int, 1, 2**31]) -> None:
        revoked = await self.bot.store.revoke_key(key_id, interaction.guild_id)
        await self._done(interaction, "apikey_revoke", f"Key {key_id} no longer works." if revoked else
                         f"This server has no working key {key_id}.", key_id=key_id)

    # everyone ---------------------------------------------------------------------------

    @app_commands.command(name="usage", description="What you used here today and this month, and your limits")
    async def usage(self, interaction: discord.Interaction) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        currency = self.bot.settings.cost_currency
        lines = []
        for span, label in (("day", "Today"), ("month", "This month")):
            used = await self.bot.store.usage(interaction.guild_id, interaction.user.id,
                                              period_start(span, now).timestamp())
            lines.append(f"**{label}**: {usage_line(used, currency)}")
        limits = [f"{value['limit']:g} {currency if scope.endswith(':cost') else UNITS[scope.split(':')[4]]} "
                  f"per {scope.split(':')[3]}"
                  for scope, value in sorted((await self.bot.store.controls("quota")).items())
                  if scope.split(":")[1] == str(interaction.guild_id or 0)
                  and scope.split(":")[2] in ("0", str(interaction.user.id))]
        lines.append(f"**Limits here**: {', '.join(limits) if limits else 'none'}")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    # reports to the mod-log --------------------------------------------------------------

    async def on_report_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Report: the result, its prompt and who reported it go to the server's mod-log channel."""
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None or generation.deleted_at is not None:
            await interaction.response.send_message("That result is not kept any more.", ephemeral=True)
            return
        modlog = (await self.bot.store.controls("modlog")).get(str(interaction.guild_id or 0))
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
            await self.bot.get_partial_messageable(int(modlog["channel_id"])).send(
                text, embed=embed, view=view, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as error:
            log.warning("report_not_posted", status=error.status, guild_id=interaction.guild_id)
            await interaction.edit_original_response(content="The report could not be posted in the mod-log channel; "
                                                             "please tell a moderator.")
            return
        finally:
            view.stop()
        await self.bot.store.audit(interaction.guild_id or 0, interaction.user.id, "report", generation_id=generation_id,
                               author_id=generation.user_id,
                               link=jump_url(vars(generation)) if generation.message_id else None)
        log.info("result_reported", generation_id=generation_id, by=interaction.user.id)
        await interaction.edit_original_response(content="🚩 Thank you: the moderators have it.")

    async def on_moderate_button(self, interaction: discord.Interaction, generation_id: int, action: str) -> None:
        """In the mod-log: delete the reported result, or block its author here (moderators only)."""
        if not interaction.permissions.manage_messages and not is_server_admin(self.bot, interaction):
            await interaction.response.send_message("Only moderators can do that.", ephemeral=True)
            return
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None:
            await interaction.response.send_message("That result is not known to this bot.", ephemeral=True)
            return
        if action == "delete":
            await self.bot.get_cog("History").on_delete_button(interaction, generation_id, True)
            await self.bot.store.audit(interaction.guild_id or 0, interaction.user.id, "delete_reported",
                                   generation_id=generation_id)
            return
        said = await self.bot.limits.block(interaction.guild_id or 0, interaction.user.id, generation.user_id,
                                      "reported result", True)
        await interaction.response.send_message(said.removeprefix("⛔ "), ephemeral=True)


def when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def describe(details: dict) -> str:
    return ", ".join(f"{key} {'<@' + str(value) + '>' if key == 'user_id' else value}" for key, value in details.items())
