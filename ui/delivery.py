"""Posting and editing job messages on Discord: the `Notifier` the scheduler reports to.

A job has one *progress message* (the answer to its command or click) that shows it waiting,
starting and running; it is edited through the interaction's webhook while the token lives (15
minutes) and through the channel after that. When the job ends, the result (or the failure) is a
*new* message that mentions the owner, so Discord notifies them (a mention added by an edit does
not), and the progress message is deleted: one message per job is left, the one that matters.
Everything needed is read from the job record, so this works after a restart.

Exactly once: the job is recorded as `delivering` before anything is posted, and every post
carries a nonce derived from the job, which Discord uses to answer a repeated post (after a crash
mid-post) with the message it already made. The message is recorded in the store as soon as it is
posted, in a task a stop does not cut short (the bot's close waits for it, within a bound: `settle`),
and a result recorded as posted is never posted again. Only the job's owner can be pinged: the
client parses no mention unless a message names the owner explicitly (`owner_only`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import structlog

from jobs import kinds
from jobs import wording
from comfy.types import Event, Preview
from config import Settings
from results.media import fit_to_limit
from ui.progress import Progression
from store import Generation, Job
from ui.buttons import cancel_view, result_view
from ui.views import LiveMessage, jump_url, result_embed

log = structlog.get_logger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 60  # stop using a token this long before it expires: an upload can take a while
TICK = 5.0  # seconds between progress edits that only move the elapsed time
MAX_FILES = 10  # attachments Discord shows in one message
NONCE_LENGTH = 25  # Discord's limit for a message nonce
FAILURE_PART = 99  # the nonce part of a job's failure message


def owner_only(job: Job) -> discord.AllowedMentions:
    """Mentions for a message that pings the job's owner and nobody else, whatever its text echoes."""
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)],
                                   replied_user=False)


def nonce(job: Job, part: int = 0) -> str:
    """The same for every attempt to post this part of this job's result, and unlike any other job's
    (of this bot or another with its own database): the id of the job's progress message, a
    snowflake Discord made for this job alone (a hash of its interaction when it has none)."""
    if job.message_id is not None:
        return f"{job.message_id}.{part}"
    seed = f"{job.interaction_token}:{job.created_at}".encode()
    return f"j{job.id}.{part}.{hashlib.sha256(seed).hexdigest()}"[:NONCE_LENGTH]


def attachment_names(kind: str, files: list[Path]) -> list[str]:
    """What people see as file names: "image-1.png", not the server's names."""
    noun = wording.noun(kind)
    if len(files) == 1:
        return [f"{noun}{files[0].suffix.lower()}"]
    return [f"{noun}-{index}{path.suffix.lower()}" for index, path in enumerate(files, start=1)]


class Delivery:
    """Implements scheduler.Notifier for one bot."""

    def __init__(self, bot: discord.Client, settings: Settings, *, token_lifetime: float = TOKEN_LIFETIME) -> None:
        self._bot = bot
        self._settings = settings
        self._token_lifetime = token_lifetime
        self._live: dict[int, LiveMessage] = {}
        self._progress: dict[int, Progression] = {}
        self._tickers: dict[int, asyncio.Task[None]] = {}
        self._posting: set[asyncio.Task[Any]] = set()  # results being posted and recorded

    async def settle(self) -> None:
        """Wait for the results being posted to be posted and recorded (the caller bounds the wait;
        one cut short leaves its job `delivering`, posted again with the same nonce next start)."""
        if self._posting:
            await asyncio.gather(*self._posting, return_exceptions=True)

    def close(self) -> None:
        for live in self._live.values():
            live.close()
        for ticker in self._tickers.values():
            ticker.cancel()
        self._live.clear()
        self._progress.clear()
        self._tickers.clear()

    def token_alive(self, job: Job) -> bool:
        if not job.interaction_token or job.interaction_created is None:
            return False
        margin = min(TOKEN_MARGIN, self._token_lifetime / 10)
        return time.time() < job.interaction_created + self._token_lifetime - margin

    def _hook(self, job: Job) -> discord.Webhook | None:
        if job.interaction_token and job.application_id and self.token_alive(job):
            return discord.Webhook.partial(job.application_id, job.interaction_token, client=self._bot)
        return None

    def _editor(self, job: Job) -> Callable[..., Awaitable[Any]]:
        """Edits the job's message through the webhook while the token lives, then through the channel."""
        message = self._bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id)

        async def edit(**content: Any) -> Any:
            try:
                hook = self._hook(job)
                if hook is not None:
                    return await hook.edit_message(job.message_id, **content)
                return await message.edit(**content)
            finally:
                if content.get("view") is not None:
                    content["view"].stop()  # DynamicItems dispatch by custom_id: keep no view in memory

        return edit

    def _live_message(self, job: Job) -> LiveMessage:
        if job.id not in self._live:
            self._live[job.id] = LiveMessage(self._editor(job))
        return self._live[job.id]

    def _forget(self, job: Job) -> LiveMessage:
        self._stop_progress(job)
        return self._live.pop(job.id, None) or LiveMessage(self._editor(job))

    def _stop_progress(self, job: Job) -> None:
        """The job is not running (any more): no stage, no ticking clock."""
        self._progress.pop(job.id, None)
        ticker = self._tickers.pop(job.id, None)
        if ticker is not None:
            ticker.cancel()

    # while the job waits and runs ------------------------------------------------------------

    async def job_queued(self, job: Job, position: int | None, giving_up_in: float | None = None,
                         eta: float | None = None) -> None:
        self._show(job, wording.waiting(job.kind, position, giving_up_in, eta))

    async def job_starting(self, job: Job) -> None:
        self._show(job, wording.starting(job.kind))

    def _show(self, job: Job, text: str) -> None:
        self._stop_progress(job)  # a job moved off a dead server waits again: its old run stops ticking
        text = wording.stage(job.request) + wording.cost_line(job.request) + text
        if job.message_id is not None:
            self._live_message(job).update(key=text, content=text, view=cancel_view(job.id))

    async def job_advanced(self, job: Job, following: Job) -> None:
        """A pipeline's next step goes on in the same message: its edits follow the step before's."""
        self._stop_progress(job)
        live = self._live.pop(job.id, None)
        if live is not None and following.message_id == job.message_id:
            self._live[following.id] = live
        self._show(following, wording.waiting(following.kind, None))

    async def job_progress(self, job: Job, event: Event) -> None:
        if job.message_id is None:
            return
        progress = self._progress.setdefault(job.id, Progression(kind=job.kind))
        if isinstance(event, Preview):
            progress.preview, progress.preview_mime = event.image, event.mime
        else:
            progress.apply(event)
        if job.id not in self._tickers:
            self._tickers[job.id] = asyncio.create_task(self._tick(job))
        self._show_progress(job)

    def _show_progress(self, job: Job) -> None:
        progress = self._progress.get(job.id)
        if progress is None:
            return
        text = wording.stage(job.request) + wording.cost_line(job.request) + progress.text()
        content: dict[str, Any] = {"content": text, "view": cancel_view(job.id)}
        if progress.preview is not None:
            extension = {"image/jpeg": "jpg", "image/webp": "webp"}.get(progress.preview_mime, "png")
            content["attachments"] = [discord.File(io.BytesIO(progress.preview), filename=f"preview.{extension}")]
        self._live_message(job).update(key=(text, id(progress.preview)), **content)

    async def _tick(self, job: Job) -> None:
        """Keep the elapsed time moving while nothing else changes (within the edit budget)."""
        while job.id in self._progress:
            await asyncio.sleep(TICK)
            self._show_progress(job)

    # when the job ends ---------------------------------------------------------------------------

    async def deliver(self, job: Job, generation: Generation, files: list[Path]) -> tuple[int | None, list[str]]:
        """Post the result as a new message that mentions its owner: its first MAX_FILES files with the
        embed and buttons, any further files in following messages; then remove the progress message.
        Returns the first message's id and every file's URL, in order. A job that came through the HTTP
        API is not posted: its program is told (a webhook) and fetches the files from the API."""
        if not kinds.from_discord(job.channel_id):
            await self._bot.api_job_ended(job, generation, None)
            return None, []
        if generation.message_id is not None:  # posted and recorded by a run that stopped before the job ended
            log.info("result_already_posted", job_id=job.id, message_id=generation.message_id)
            message_id, urls = generation.message_id, list(generation.attachment_urls)
        else:
            posting = asyncio.create_task(self._post_result(job, generation, files))
            self._posting.add(posting)
            posting.add_done_callback(self._posting.discard)
            message_id, urls = await asyncio.shield(posting)  # a stop lets it finish (settle)
        result_channel = kinds.result_channel(job.request, job.channel_id)
        if result_channel != job.channel_id:  # posted in the age-restricted channel: say where
            live = self._forget(job)
            link = jump_url({"guild_id": job.guild_id, "channel_id": result_channel, "message_id": message_id})
            await self._quietly(live.finish(content=wording.ready_elsewhere(job.kind, job.user_id, result_channel,
                                                                            link),
                                            attachments=[], embeds=[], view=None,
                                            allowed_mentions=owner_only(job)))
        else:
            await self._remove_progress(job)
        return message_id, urls

    async def _post_result(self, job: Job, generation: Generation, files: list[Path]) -> tuple[int, list[str]]:
        """Post the result's messages and record the first one in the store; its id and the files' URLs."""
        limit = int(job.request.get("upload_limit") or self._settings.upload_limit)
        fitted = [await fit_to_limit(path, limit) for path in files]
        try:
            names = attachment_names(job.kind, fitted)
            attachments = [discord.File(io.BytesIO(await asyncio.to_thread(path.read_bytes)), filename=name)
                           for path, name in zip(fitted, names)]
            view = result_view(generation, limit)
            message = await self._post(job, 0, content=wording.ready(job.kind, job.user_id, len(files)),
                                       embed=result_embed(generation), files=attachments[:MAX_FILES], view=view,
                                       channel_id=kinds.result_channel(job.request, job.channel_id))
            if view is not None:
                view.stop()  # the buttons are DynamicItems: nothing needs to stay in memory
            urls = [attachment.url for attachment in message.attachments]
            for part, start in enumerate(range(MAX_FILES, len(attachments), MAX_FILES), start=1):
                more = await self._post(job, part, content=f"More of your {wording.noun(job.kind, 2)} ({part + 1}).",
                                        files=attachments[start:start + MAX_FILES], quiet=True,
                                        channel_id=kinds.result_channel(job.request, job.channel_id))
                urls += [attachment.url for attachment in more.attachments]
        finally:
            for path, original in zip(fitted, files):
                if path != original:
                    await asyncio.to_thread(path.unlink, missing_ok=True)
        await self._bot.store.set_generation_message(generation.id, message.id, urls)
        return message.id, urls

    async def job_failed(self, job: Job, reason: str) -> None:
        if not kinds.from_discord(job.channel_id):
            await self._bot.api_job_ended(job, None, reason)
            return
        await self._post(job, FAILURE_PART, content=wording.failed(job.kind, reason, job.user_id))
        await self._remove_progress(job)

    async def job_held(self, job: Job, reason: str) -> None:
        """The result waits for a moderator (jobs/moderation.py): its progress message says so, and why."""
        if not kinds.from_discord(job.channel_id) or job.message_id is None:
            return
        said = (f"⏳ Your {wording.noun(job.kind)} is waiting for a moderator before it is posted ({reason}). "
                "It is posted here if they release it; either way you will be told.")
        await self._quietly(self._forget(job).finish(content=said, attachments=[], embeds=[], view=None))

    async def job_cancelled(self, job: Job, by_user_id: int) -> None:
        if not kinds.from_discord(job.channel_id):
            await self._bot.api_job_ended(job, None, "cancelled")
            return
        live = self._forget(job)
        if job.message_id is not None:
            said = wording.cancelled(by_user_id, job.kind, str(job.request.get("prompt") or ""))
            await self._quietly(live.finish(content=said, attachments=[], embeds=[], view=None))

    async def _post(self, job: Job, part: int, *, quiet: bool = False, channel_id: int | None = None,
                    **content: Any) -> discord.Message:
        """A new message in the job's channel (or `channel_id`), idempotent through its nonce; where the
        bot may not post in the job's channel, a followup of the interaction while its token lives."""
        mentions = discord.AllowedMentions.none() if quiet else owner_only(job)
        channel = self._bot.get_partial_messageable(channel_id or job.channel_id)
        extra = {key: value for key, value in content.items() if value is not None}
        try:
            return await channel.send(**extra, allowed_mentions=mentions, nonce=nonce(job, part))
        except discord.Forbidden:
            hook = self._hook(job) if (channel_id or job.channel_id) == job.channel_id else None
            if hook is None:
                raise
            log.info("channel_post_forbidden", job_id=job.id)
            for file in extra.get("files", ()):
                file.reset()
            return await hook.send(**extra, allowed_mentions=mentions, wait=True)

    async def _remove_progress(self, job: Job) -> None:
        """The result or failure is posted: the progress message goes (a deleted one is fine)."""
        live = self._forget(job)
        live.close()
        if job.message_id is None:
            return
        try:
            hook = self._hook(job)
            if hook is not None:
                await hook.delete_message(job.message_id)
            else:
                await self._bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id).delete()
        except discord.NotFound:
            pass
        except discord.HTTPException as error:
            log.warning("progress_message_kept", job_id=job.id, status=error.status, error=error.text)

    async def _quietly(self, edit: Awaitable[Any]) -> None:
        try:
            await edit
        except discord.HTTPException as error:
            log.warning("message_edit_failed", status=error.status, error=error.text)
