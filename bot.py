"""Entry point and the Discord bot: `python bot.py` runs it, `python bot.py check [--smoke]` checks
ComfyUI. This module only wires the parts together; each feature is a cog in cogs/, the queue and
its jobs are in jobs/, the servers in backends/ and comfy/, the database in store/, the web app in
web/ (see the README's layout section).
"""

# No `from __future__ import annotations` here: discord.py reads the cogs' annotations at runtime.

import argparse
import asyncio
import itertools
import sys
from typing import Any

import discord
import structlog
from discord import app_commands
from discord.ext import commands

import logs
import tasks
from backends.pool import Backend, open_backends
from cluster import Cluster, Heartbeat, SharedRateLimiter, make_cluster, process_name
from cogs import lifecycle
from cogs.admin import Admin
from cogs.choices import Choices
from cogs.common import RateLimiter, tell
from cogs.credits import Credits
from cogs.generate import Generate
from cogs.help import Help
from cogs.history import History
from cogs.images import Images
from cogs.moderation import ModerationQueue
from cogs.payments import Payments
from cogs.pipelines import Pipelines
from cogs.preferences import Preferences
from cogs.sharing import Sharing
from cogs.video import Video
from cogs.workflows import Workflows
from comfy.types import ComfyError
from comfy.workflows import WorkflowError, load_set, validate
from config import Settings, load_settings
from jobs import cluster_view, kinds, wording
from jobs.limits import Limits
from jobs.scheduler import Scheduler
from metrics import Metrics, watch_loop
from results.keeper import make_results, retention_loop
from results.inputs import Inputs
from store import ACTIVE_STATES, StoreError, make_store
from ui.delivery import TOKEN_LIFETIME, Delivery
from version import VERSION
from web.api_views import file_urls
from web.app import WebServer
from web.panel import BotPanel
from web.service import BotApi
from web.thumbs import Thumbnails
from web.webhooks import WebhookSender

log = structlog.get_logger("bot")
COGS = (Generate, Images, History, Preferences, Admin, ModerationQueue, Workflows, Video, Pipelines, Credits, Payments, Sharing, Help)  # one per area, each with its commands and buttons


class ComfyBot(commands.Bot):
    def __init__(self, settings: Settings, *, token_lifetime: float = TOKEN_LIFETIME, **options) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(),
                         help_command=None, chunk_guilds_at_startup=False,
                         # nothing the bot echoes (prompts, node ids, error texts) may ping anyone:
                         # a message that notifies the job's owner says so itself (delivery.owner_only)
                         allowed_mentions=discord.AllowedMentions.none(), **options)
        self.settings = settings
        self.store = make_store(settings)
        self.outputs = make_results(settings)  # the capped folder, or with OUTPUT_STORE the bucket and the folder
        self.inputs = Inputs(settings, self.outputs)  # images people bring, from the CDN or the API
        self.cluster: Cluster | None = None  # the other bot processes on this database, if any
        self.heartbeat: Heartbeat | None = None
        self.limiter = RateLimiter(settings.commands_per_minute, 60.0)
        self.delivery = Delivery(self, settings, token_lifetime=token_lifetime)
        self.choices = Choices(self)  # what people may choose here, and the requests they make
        self.gateway = lifecycle.Gateway(self)  # whether Discord is connected right now
        self.scheduler: Scheduler | None = None
        self.limits: Limits | None = None
        self.web: WebServer | None = None
        self.metrics = Metrics()
        self.webhooks = WebhookSender(self.store, allow_private=settings.webhook_private_ok, metrics=self.metrics)
        self.thumbs = Thumbnails(settings.outputs_dir, settings.data_dir / "thumbs",  # /history's and the gallery's
                                 results=self.outputs if settings.output_store else None)
        self.background: list[asyncio.Task[None]] = []  # cancelled first when the bot stops

    async def setup_hook(self) -> None:
        settings = self.settings
        workflows = load_set(settings.workflow_dir())
        await self.store.open()
        await self.outputs.open()
        await self.inputs.open()
        self.background.append(asyncio.create_task(tasks.supervise("watch", self._watch)))
        if settings.web_port is not None:  # the gallery, metrics and health: same process, same loop
            self.web = WebServer(self.store, settings, metrics=self.metrics, ready=self.ready, admin=BotPanel(self),
                                 api=BotApi(self), results=self.outputs)
            await self.web.start()
            self.background.append(asyncio.create_task(tasks.supervise("webhooks", self.webhooks.run)))
        self.cluster = make_cluster(settings, self.store)
        await self.cluster.start()
        instance = await self.store.instance_id()

        async def connect(leader: bool) -> list[Backend]:  # a follower watches under ids of its own
            return await open_backends(settings, workflows, self.outputs, instance=instance, store=self.store,
                                       watcher=None if leader else self.cluster.name)

        backends = await connect(not self.cluster.shared)
        self.scheduler = Scheduler(self.store, backends, self.outputs, settings, self.delivery, instance=instance,
                                   metrics=self.metrics, cluster=self.cluster,
                                   connect=connect if self.cluster.shared else None)
        self.limits = Limits(self.store, settings, self.scheduler)
        if self.cluster.shared:  # one limit on commands for the whole cluster; the others see this process
            self.limiter = SharedRateLimiter(self.store, settings.commands_per_minute, 60.0)
            self.heartbeat = Heartbeat(self.store, self.cluster.name, self._report)
            self.heartbeat.start()
        self.choices.load_builtin_styles()
        for cog in COGS:
            await self.add_cog(cog(self))
        self.tree.on_error = self.on_command_error
        await self._sync()
        self._validation = asyncio.create_task(self._validate_workflows(workflows))
        self.background.append(self._validation)
        resumed = await self.scheduler.start()
        if settings.output_store:  # retention of the bucket, once the scheduler pinned what is pending
            self.background.append(asyncio.create_task(tasks.supervise(
                "retention", lambda: retention_loop(self.outputs, self._pending_files))))
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
        from jobs.kinds import model_files_needed

        for client in self.clients:
            if hasattr(client, "log_start_check"):  # RunPod: no node list to validate against
                client.log_start_check(model_files_needed(self.settings, workflows))
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

    def _report(self) -> dict[str, Any]:
        """What this process's heartbeat says of it: its shards, and the queue when it dispatches."""
        return cluster_view.report(self.scheduler, getattr(self, "shard_ids", None))

    @property
    def clients(self) -> list[Any]:
        """The clients of the servers this process is connected to now."""
        return [backend.client for backend in self.scheduler.pool.backends] if self.scheduler is not None else []

    def dispatch(self, event_name: str, /, *args, **kwargs) -> None:
        self.gateway.saw(event_name, args)  # synchronously, while discord.py's error (if any) is at hand
        super().dispatch(event_name, *args, **kwargs)

    async def close(self) -> None:
        """Stop within seconds in every state (lifecycle.stop); jobs resume at the next start."""
        await lifecycle.stop(self, super().close)
        await self.outputs.close()

    async def _pending_files(self) -> list[str]:
        """What retention never removes: results still to be delivered and the inputs of active jobs."""
        jobs = await self.store.jobs_in(ACTIVE_STATES)
        return [*await self.store.pending_files(), *(name for job in jobs for name in kinds.files(job.request))]

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
        if (problem := self.gateway.problem()) is not None:
            return False, problem
        if self.cluster is not None and self.cluster.shared and not self.cluster.bus.connected:
            return False, "the database cannot be reached"
        if not self.scheduler.pool.any_healthy():
            return False, "no ComfyUI server is usable"
        return True, ""

    async def _watch(self) -> None:
        """The event loop's lag, and whether the gateway is connected, for the metrics (runs until cancelled)."""
        lag = asyncio.create_task(watch_loop(self.metrics))
        try:
            for tick in itertools.count():
                self.metrics.discord(self.gateway.connected)
                if tick % 5 == 0 and self.scheduler is not None:
                    await self._count_processes()
                await asyncio.sleep(1.0)
        finally:
            lag.cancel()

    async def _count_processes(self) -> None:
        """For the metrics: whether this process dispatches, and the processes heard from lately."""
        count = 1
        if self.scheduler.shared:
            try:
                async with asyncio.timeout(5.0):
                    count = len(await cluster_view.members(self.store))
            except (StoreError, TimeoutError) as error:
                log.warning("processes_not_counted", error=str(error))
        self.metrics.cluster(leading=self.scheduler.leading, processes=count)

    # every interaction ends in words -------------------------------------------

    async def on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Any slash command that fails: the person is told privately, the operator gets the traceback."""
        if isinstance(error, app_commands.CommandInvokeError):
            error = error.original
        log.error("command_failed", command=interaction.command.name if interaction.command else None,
                  user_id=interaction.user.id, error=repr(error)[:500], exc_info=error)
        await tell(interaction, wording.OOPS)

    async def on_item_error(self, interaction: discord.Interaction, error: Exception, custom_id: str) -> None:
        """A button that fails: the same promise as commands."""
        log.error("button_failed", custom_id=custom_id[:100], user_id=interaction.user.id,
                  error=repr(error)[:500], exc_info=error)
        await tell(interaction, wording.OOPS)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A click on a button of ours that no cog knows (an old or forged custom_id) is answered, not left
        to "This interaction failed" (forms are read by the Images cog)."""
        if interaction.type != discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        items = [item for cog in self.cogs.values() for item in getattr(cog, "dynamic_items", ())]
        if custom_id.startswith("cf:") and not any(item.__discord_ui_compiled_template__.fullmatch(custom_id)
                                                   for item in items):
            log.info("unknown_button", custom_id=custom_id[:100], user_id=interaction.user.id)
            await tell(interaction, "This button is no longer supported by the bot. Start a new job instead.")


class ShardedComfyBot(commands.AutoShardedBot, ComfyBot):
    """The same bot as several gateway shards, for very large deployments: DISCORD_SHARDED=true runs the
    count Discord recommends; SHARD_COUNT (with SHARD_IDS, the shards of this process) splits them over
    processes, each a separate client."""

    def __init__(self, settings: Settings, **options) -> None:
        if settings.shard_count is not None:
            options.setdefault("shard_count", settings.shard_count)
            options.setdefault("shard_ids", settings.shard_ids or None)  # None: every shard
        super().__init__(settings, **options)


def bot_class(settings: Settings) -> type[ComfyBot]:
    return ShardedComfyBot if settings.discord_sharded or settings.shard_count is not None else ComfyBot


async def run(settings: Settings) -> int:
    """Run until stopped (lifecycle.run); jobs resume next start."""
    return await lifecycle.run(bot_class(settings)(settings), settings.discord_token.get_secret_value())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot.py", description="A Discord bot that makes images and videos with ComfyUI.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    subcommands = parser.add_subparsers(dest="command")
    check = subcommands.add_parser("check", help="check the settings, the ComfyUI server and the workflows")
    check.add_argument("--smoke", action="store_true", help="also run every kind of job once")
    migrate = subcommands.add_parser("migrate", help="copy the SQLite database into PostgreSQL and verify the copy")
    migrate.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH", help="the bot's SQLite file")
    migrate.add_argument("--to", dest="target", required=True, metavar="postgresql://…", help="an empty database")
    args = parser.parse_args(argv)
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_json, secrets=settings.secrets())
    if settings.database_url is not None:  # several processes may log side by side: each line names its own
        structlog.contextvars.bind_contextvars(process=process_name(settings))
    if args.command == "check":
        from jobs.check import run_check

        return asyncio.run(run_check(settings, smoke=args.smoke))
    if args.command == "migrate":
        from store.copy import run_migrate

        return asyncio.run(run_migrate(args.source, args.target))
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
