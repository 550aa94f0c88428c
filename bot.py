"""Entry point and the Discord bot.

`python bot.py` runs the bot; `python bot.py check [--smoke]` checks ComfyUI.
The bot acknowledges every interaction first (Discord allows 3 s), writes the
job to the store, and lets the scheduler run it. Presentation is in views.py,
message editing in delivery.py.
"""

# No `from __future__ import annotations` here: discord.py reads the command
# parameters' annotations (Range limits taken from the settings) at runtime.

import argparse
import asyncio
import sys
import time
from collections import deque

import aiohttp
import discord
import structlog
from discord import app_commands
from discord.ext import commands

from jobs import kinds
from cogs import lifecycle
import logs
import tasks
from jobs import wording
from cogs.images import ImageActions
from cogs.admin import Admin
from web.panel import BotPanel
from web.service import BotApi
from comfy.types import ComfyError
from comfy.client import ComfyClient
from config import Settings, load_settings
from cogs.creative import CreativeControls
from ui.delivery import TOKEN_LIFETIME, Delivery
from cogs.help import HelpSelect
from cogs.history import ITEMS as HISTORY_ITEMS, History, HistoryActions
from image_gen import RequestError
from metrics import Metrics, watch_loop
from results.folder import OutputFolder
from backends.pool import open_backends
from cogs.preferences import ModelPick, Preferences
from safe_text import clip
from jobs.scheduler import QueueFull, Scheduler
from jobs.limits import ServiceControls
from cogs.generate import make_commands
from store import Job, Store
from ui.views import DYNAMIC_ITEMS
from web.api import file_urls
from web.app import WebServer
from web.thumbs import Thumbnails
from web.webhooks import WebhookSender
from comfy.workflows import WorkflowError, load_set, validate

log = structlog.get_logger("bot")
ITEMS = (*DYNAMIC_ITEMS, *HISTORY_ITEMS, ModelPick, HelpSelect)  # every restart-proof button and menu

class RateLimiter:
    """At most `count` hits per `per` seconds for each key (a sliding window)."""

    def __init__(self, count: int, per: float) -> None:
        self._count, self._per = count, per
        self._hits: dict[int, deque[float]] = {}

    def hit(self, key: int) -> float:
        """0 when allowed (and counted); otherwise the seconds until the next hit is allowed."""
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


class ComfyBot(ImageActions, CreativeControls, HistoryActions, ServiceControls, lifecycle.Lifecycle, commands.Bot):
    def __init__(self, settings: Settings, *, token_lifetime: float = TOKEN_LIFETIME, **options) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(),
                         help_command=None, chunk_guilds_at_startup=False,
                         # nothing the bot echoes (prompts, node ids, error texts) may ping anyone:
                         # a message that notifies the job's owner says so itself (delivery.owner_only)
                         allowed_mentions=discord.AllowedMentions.none(), **options)
        self.settings = settings
        self.store = Store(settings.data_dir / "bot.sqlite3")
        self.outputs = OutputFolder(settings.outputs_dir, settings.output_limit)
        self.clients: list[ComfyClient] = []
        self.limiter = RateLimiter(settings.commands_per_minute, 60.0)
        self.delivery = Delivery(self, settings, token_lifetime=token_lifetime)
        self.scheduler: Scheduler | None = None
        self._fetch_session: aiohttp.ClientSession | None = None
        self._validation: asyncio.Task[None] | None = None
        self.web: WebServer | None = None
        self.metrics = Metrics()
        self._lag: asyncio.Task[None] | None = None
        self.webhooks = WebhookSender(self.store, allow_private=settings.webhook_private_ok)
        self._webhooks: asyncio.Task[None] | None = None
        self.thumbs = Thumbnails(settings.outputs_dir, settings.data_dir / "thumbs")  # /history's and the gallery's

    async def setup_hook(self) -> None:
        settings = self.settings
        workflows = load_set(settings.workflow_dir())
        await self.store.open()
        await self.outputs.open()
        self._lag = asyncio.create_task(tasks.supervise("watch", self._watch))
        if settings.web_port is not None:  # the gallery, metrics and health: same process, same loop
            self.web = WebServer(self.store, settings, metrics=self.metrics, ready=self.ready, admin=BotPanel(self),
                                 api=BotApi(self))
            await self.web.start()
            self._webhooks = asyncio.create_task(tasks.supervise("webhooks", self.webhooks.run))
        instance = await self.store.instance_id()
        backends = await open_backends(settings, workflows, self.outputs, instance=instance, store=self.store)
        self.clients = [backend.client for backend in backends]
        self._fetch_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.scheduler = Scheduler(self.store, backends, self.outputs, settings, self.delivery, instance=instance,
                                   metrics=self.metrics)
        self.load_builtin_styles()
        self.add_dynamic_items(*ITEMS)
        await self.add_cog(Preferences(self))
        await self.add_cog(History(self))
        await self.add_cog(Admin(self))
        await self.load_switches()
        for command in make_commands(settings):
            self.tree.add_command(command)
        self.tree.on_error = self.on_command_error
        await self._sync()
        self._validation = asyncio.create_task(self._validate_workflows(workflows))
        resumed = await self.scheduler.start()
        log.info("bot_ready", resumed_jobs=resumed, workflow_set=settings.workflow_set, servers=len(backends))

    async def _sync(self) -> None:
        if not self.settings.discord_guild_ids:
            await self.tree.sync()
            return
        for guild_id in self.settings.discord_guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    async def _validate_workflows(self, workflows) -> None:
        """Tell the operator early when a workflow does not fit the server; the bot runs either way."""
        from jobs.check import workflow_values

        for client in self.clients:
            if hasattr(client, "log_start_check"):  # RunPod: no node list to validate against
                client.log_start_check(self.settings, workflows)
                continue
            try:
                await client.wait_connected(self.settings.comfyui_timeout)
                info = await client.object_info()
            except ComfyError as error:  # ComfyUI may be down at start: jobs will say so
                log.warning("comfyui_not_checked", server=client.name, error=str(error))
                continue
            for name, workflow in workflows.items():
                values = workflow_values(self.settings, name)
                for problem in validate(workflow, info, {k: v for k, v in (values or {}).items()
                                                         if k in workflow.params}) if values is not None else ():
                    log.error("workflow_problem", server=client.name, problem=str(problem))

    async def api_job_ended(self, job, generation, reason: str | None) -> None:
        """A job that came through the HTTP API ended: its key's webhook is told (when it has one)."""
        key_id = await self.store.api_job_key(job.id)
        if key_id is None:
            return
        state = "done" if generation is not None else "cancelled" if reason == "cancelled" else "failed"
        if state == "cancelled":  # the sentence stored with the job: who cancelled it
            reason = getattr(await self.store.get_job(job.id), "error", None) or "cancelled"
        base = self.settings.web_base_url or f"http://{self.settings.web_host}:{self.settings.web_port}"
        files = file_urls(base, job.id, len(generation.files)) if generation is not None else []
        await self.webhooks.notify(key_id, job.id, state, files, None if generation is not None else reason)

    def ready(self) -> tuple[bool, str]:
        """/readyz: connected to Discord, and at least one ComfyUI server usable."""
        if self.scheduler is None:
            return False, "starting"
        if (problem := self.gateway_problem()) is not None:
            return False, problem
        if not self.scheduler.pool.any_healthy():
            return False, "no ComfyUI server is usable"
        return True, ""

    async def _watch(self) -> None:
        """The event loop's lag, and whether the gateway is connected, for the metrics (runs until cancelled)."""
        lag = asyncio.create_task(watch_loop(self.metrics))
        try:
            while True:
                self.metrics.discord(self.gateway_connected)
                await asyncio.sleep(1.0)
        finally:
            lag.cancel()

    # every interaction ends in words -------------------------------------------

    async def on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Any slash command that fails: the person is told privately, the operator gets the traceback."""
        if isinstance(error, app_commands.CommandInvokeError):
            error = error.original
        log.error("command_failed", command=interaction.command.name if interaction.command else None,
                  user_id=interaction.user.id, error=repr(error)[:500], exc_info=error)
        await self.tell(interaction, wording.OOPS)

    async def on_item_error(self, interaction: discord.Interaction, error: Exception, custom_id: str) -> None:
        """A button that fails: the same promise as commands."""
        log.error("button_failed", custom_id=custom_id[:100], user_id=interaction.user.id,
                  error=repr(error)[:500], exc_info=error)
        await self.tell(interaction, wording.OOPS)

    async def tell(self, interaction: discord.Interaction, text: str) -> None:
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

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A form of ours is read here (actions.on_modal_submit); a click on a button of ours that no
        handler knows (an old or forged custom_id) is answered, not left to "This interaction failed"."""
        if interaction.type == discord.InteractionType.modal_submit:
            try:
                await self.on_modal_submit(interaction)
            except Exception as error:
                await self.on_item_error(interaction, error, str((interaction.data or {}).get("custom_id", "")))
            return
        if interaction.type != discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        if custom_id.startswith("cf:") and not any(item.__discord_ui_compiled_template__.fullmatch(custom_id)
                                                   for item in ITEMS):
            log.info("unknown_button", custom_id=custom_id[:100], user_id=interaction.user.id)
            await self.tell(interaction, "This button is no longer supported by the bot. Start a new job instead.")

    # shared by commands and buttons --------------------------------------------

    async def refuse_if_limited(self, interaction: discord.Interaction) -> bool:
        """Answer with an ephemeral message and return True when the user must wait."""
        wait = self.limiter.hit(interaction.user.id)
        if wait:
            await interaction.response.send_message(
                wording.limit(f"You are going a bit fast. Try again in {wording.seconds(max(1.0, wait))}."), ephemeral=True)
            return True
        try:
            active = await asyncio.wait_for(self.store.active_job_count(interaction.user.id), 1.0)
        except TimeoutError:  # never risk the 3 s acknowledgement on a slow disk
            return False
        if active >= self.settings.jobs_per_user:
            await interaction.response.send_message(
                wording.limit(wording.too_many_jobs(active, self.settings.jobs_per_user)), ephemeral=True)
            return True
        return False

    async def start_job(self, interaction: discord.Interaction, kind: str, request: dict, **fields) -> None:
        """After defer: record the job (before anything else can fail) and hand it to the scheduler."""
        message_id = fields.pop("message_id", None)
        self.metrics.acked((discord.utils.utcnow() - interaction.created_at).total_seconds())
        if message_id is None:
            original = await interaction.original_response()
            message_id = original.id
        request["upload_limit"] = interaction.filesize_limit or self.settings.upload_limit
        try:
            images = int(request.get("batch") or len(request.get("inputs") or ()) or 1)
            refusal = await self.service_refusal(interaction.guild_id, interaction.user.id, request, images)
            if refusal is not None:  # blocked, a blocked term, a quota reached: nothing is queued
                raise RequestError(refusal)
            job = await self.scheduler.submit(Job(
                id=None, kind=kind, user_id=interaction.user.id, channel_id=interaction.channel_id,
                guild_id=interaction.guild_id, request=request, interaction_token=interaction.token,
                application_id=interaction.application_id, interaction_created=interaction.created_at.timestamp(),
                message_id=message_id, **fields))
        except (QueueFull, RequestError) as error:
            for name in kinds.files(request):
                self.outputs.release(self.settings.outputs_dir / name)
            log.info("job_refused", kind=kind, user_id=interaction.user.id, reason=str(error))
            await interaction.edit_original_response(content=wording.failed(kind, str(error)))
            return
        log.info("job_started", job_id=job.id, kind=kind, interaction_id=interaction.id)
        await self.scheduler.show_positions()  # its message and everyone's, from one view of the queue

    async def on_cancel_button(self, interaction: discord.Interaction, job_id: int) -> None:
        """Cancel: the job's owner, or anyone who may manage messages in the channel."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.store.get_job(job_id)
        if job is None:
            await interaction.followup.send("That job is not known to this bot.", ephemeral=True)
            return
        if interaction.user.id != job.user_id and not interaction.permissions.manage_messages:
            await interaction.followup.send("Only the person who started this job, or a moderator, can cancel it.",
                                            ephemeral=True)
            return
        await interaction.followup.send(await self.scheduler.cancel(job_id, interaction.user.id), ephemeral=True)

    def offered_presets(self, channel: object = None) -> list[str]:
        """The model presets people may choose here: those whose checkpoint some server has (all of them
        while no server's node list is known yet), and those marked nsfw only where they are allowed."""
        pool = self.scheduler.pool
        return [name for name, preset in self.settings.model_presets.items()
                if pool.offers("txt2img", {"checkpoint": preset.checkpoint})
                and (not preset.nsfw or self.nsfw_allowed(channel))]

    async def model_offered(self, interaction: discord.Interaction, model: str | None) -> bool:
        """True when `model` is left out or offered; otherwise the person is told which ones are."""
        preset = self.settings.model_presets.get(model or "")
        if preset is not None and not self.scheduler.pool.offers("txt2img", {"checkpoint": preset.checkpoint}):
            offered = self.offered_presets(interaction.channel)
            await interaction.response.send_message(wording.model_not_available(model, offered), ephemeral=True)
            return False
        return await self.choice_offered(interaction, "model", model, self.offered_presets(interaction.channel),
                                         "This server has no models to choose from; leave `model` out.")

    async def choice_offered(self, interaction: discord.Interaction, noun: str, value: str | None,
                             offered: list[str], when_none: str) -> bool:
        """True when `value` is left out or one of `offered`; otherwise the person is told, privately,
        which ones are (or `when_none`)."""
        if value is None or value in offered:
            return True
        choose = f"Choose one of: {clip(', '.join(map(wording.code, offered)), 1500)}." if offered else when_none
        await interaction.response.send_message(f"There is no {noun} called {wording.code(clip(value, 100))}. {choose}",
                                                ephemeral=True)
        return False

    def may_use_priority(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id in self.settings.admin_user_ids or interaction.permissions.manage_guild


class ShardedComfyBot(commands.AutoShardedBot, ComfyBot):
    """The same bot as several gateway shards, for very large deployments (DISCORD_SHARDED=true)."""


def bot_class(settings: Settings) -> type[ComfyBot]:
    return ShardedComfyBot if settings.discord_sharded else ComfyBot


async def run(settings: Settings) -> int:
    """Run until stopped (lifecycle.run); jobs resume next start."""
    return await lifecycle.run(bot_class(settings)(settings), settings.discord_token.get_secret_value())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot.py", description="A Discord bot that makes images and videos with ComfyUI.")
    subcommands = parser.add_subparsers(dest="command")
    check = subcommands.add_parser("check", help="check the settings, the ComfyUI server and the workflows")
    check.add_argument("--smoke", action="store_true", help="also run text to image, upscale and animate once")
    args = parser.parse_args(argv)
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_json, secrets=settings.secrets())
    if args.command == "check":
        from jobs.check import run_check

        return asyncio.run(run_check(settings, smoke=args.smoke))
    if settings.discord_token is None:
        print("config error: DISCORD_TOKEN: required to run the bot (see .env.example)", file=sys.stderr)
        return 2
    try:
        load_set(settings.workflow_dir())
    except WorkflowError as error:
        print(f"config error: WORKFLOW_SET: the set in {settings.workflow_dir()} cannot be used:\n{error}", file=sys.stderr)
        return 2
    if (problem := lifecycle.folder_problem(settings)) is not None:
        print(problem, file=sys.stderr)
        return 2
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
