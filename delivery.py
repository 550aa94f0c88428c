"""Posting and editing job messages on Discord: the `Notifier` the scheduler reports to.

A job's message is edited through the interaction's webhook while its token
lives (15 minutes), and through the channel after that, so a long video is
still delivered: as a new channel message that mentions its owner.
Everything needed is read from the job record, so this works after a restart.

Exactly once: the job is recorded as `delivering` before anything is posted,
and every channel post carries a nonce derived from the job, which Discord uses
to answer a repeated post (after a crash mid-post) with the message it already
made. Only the job's owner can be pinged: the client parses no mention unless a
message names the owner explicitly (`owner_only`).
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

from comfy_types import Event, Preview
from config import Settings
from media import fit_to_limit
from store import Generation, Job
from views import (
    LiveMessage,
    Progression,
    cancel_view,
    cancelled_text,
    failure_text,
    queued_text,
    result_embed,
    result_view,
    running_text,
)

log = structlog.get_logger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 60  # stop using a token this long before it expires: an upload can take a while
MAX_FILES = 10  # attachments Discord shows in one message
NONCE_LENGTH = 25  # Discord's limit for a message nonce


def owner_only(job: Job) -> discord.AllowedMentions:
    """Mentions for a message that pings the job's owner and nobody else, whatever its text echoes."""
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)],
                                   replied_user=False)


def nonce(job: Job, part: int = 0) -> str:
    """The same for every attempt to post this part of this job's result, and unlike any other job's
    (of this bot or another with its own database): the job id and a hash of its interaction."""
    seed = f"{job.interaction_token}:{job.created_at}".encode()
    return f"j{job.id}.{part}.{hashlib.sha256(seed).hexdigest()}"[:NONCE_LENGTH]


class Delivery:
    """Implements scheduler.Notifier for one bot."""

    def __init__(self, bot: discord.Client, settings: Settings, *, token_lifetime: float = TOKEN_LIFETIME) -> None:
        self._bot = bot
        self._settings = settings
        self._token_lifetime = token_lifetime
        self._live: dict[int, LiveMessage] = {}
        self._progress: dict[int, Progression] = {}

    def close(self) -> None:
        for live in self._live.values():
            live.close()
        self._live.clear()
        self._progress.clear()

    def token_alive(self, job: Job) -> bool:
        if not job.interaction_token or job.interaction_created is None:
            return False
        margin = min(TOKEN_MARGIN, self._token_lifetime / 10)
        return time.time() < job.interaction_created + self._token_lifetime - margin

    def _editor(self, job: Job) -> Callable[..., Awaitable[Any]]:
        """Edits the job's message through the webhook while the token lives, then through the channel."""
        hook = None
        if job.interaction_token and job.application_id:
            hook = discord.Webhook.partial(job.application_id, job.interaction_token, client=self._bot)
        message = self._bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id)

        async def edit(**content: Any) -> Any:
            try:
                if hook is not None and self.token_alive(job):
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
        self._progress.pop(job.id, None)
        return self._live.pop(job.id, None) or LiveMessage(self._editor(job))

    async def job_queued(self, job: Job, position: int | None) -> None:
        if job.message_id is not None:
            self._live_message(job).update(content=queued_text(job.kind, position), view=cancel_view(job.id))

    async def job_progress(self, job: Job, event: Event) -> None:
        if job.message_id is None:
            return
        progress = self._progress.setdefault(job.id, Progression())
        content: dict[str, Any] = {"view": cancel_view(job.id)}
        if isinstance(event, Preview):
            progress.preview, progress.preview_mime = event.image, event.mime
        else:
            progress.apply(event)
        if progress.preview is not None:
            extension = {"image/jpeg": "jpg", "image/webp": "webp"}.get(progress.preview_mime, "png")
            content["attachments"] = [discord.File(io.BytesIO(progress.preview), filename=f"preview.{extension}")]
        self._live_message(job).update(content=running_text(job.kind, progress), **content)

    async def deliver(self, job: Job, generation: Generation, files: list[Path]) -> tuple[int, list[str]]:
        """Post the result: its first MAX_FILES files with the embed and buttons, any further files
        in following messages. Returns the first message's id and every file's URL, in order."""
        limit = int(job.request.get("upload_limit") or self._settings.upload_limit)
        fitted = [await fit_to_limit(path, limit) for path in files]
        try:
            attachments = [discord.File(io.BytesIO(await asyncio.to_thread(path.read_bytes)), filename=path.name)
                           for path in fitted]
            first, rest = attachments[:MAX_FILES], attachments[MAX_FILES:]
            mention = f"<@{job.user_id}>"
            view = result_view(generation)
            message = None
            if self.token_alive(job) and job.message_id is not None:
                try:
                    message = await self._forget(job).finish(
                        content=mention, embeds=[result_embed(generation, mention)], attachments=first,
                        allowed_mentions=owner_only(job), view=view)  # None clears the Cancel button
                except discord.NotFound:  # someone deleted the job's message: post the result anyway
                    log.info("job_message_gone", job_id=job.id)
                    for attachment in first:
                        attachment.reset()
            if message is None:
                message = await self._post_in_channel(job, generation, mention, first, view)
            if view is not None:
                view.stop()  # the buttons are DynamicItems: nothing needs to stay in memory
            urls = [attachment.url for attachment in message.attachments]
            channel = self._bot.get_partial_messageable(job.channel_id)
            for part, start in enumerate(range(0, len(rest), MAX_FILES), start=1):
                more = await channel.send(content=f"{mention} (part {part + 1})", files=rest[start:start + MAX_FILES],
                                          nonce=nonce(job, part), allowed_mentions=discord.AllowedMentions.none())
                urls += [attachment.url for attachment in more.attachments]
            return message.id, urls
        finally:
            for path, original in zip(fitted, files):
                if path != original:
                    await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _post_in_channel(self, job: Job, generation: Generation, mention: str,
                               attachments: list[discord.File], view: discord.ui.View | None) -> discord.Message:
        """The token has expired: a new message in the channel, and a pointer on the old one."""
        self._forget(job)
        channel = self._bot.get_partial_messageable(job.channel_id)
        extra = {"view": view} if view is not None else {}
        message = await channel.send(content=f"{mention} your result is ready.", embed=result_embed(generation, mention),
                                     files=attachments, allowed_mentions=owner_only(job), nonce=nonce(job), **extra)
        if job.message_id is not None:
            await self._quietly(channel.get_partial_message(job.message_id).edit(
                content=f"✅ Finished: the result is in {message.jump_url}", attachments=[], view=None))
        return message

    async def job_failed(self, job: Job, reason: str) -> None:
        text = failure_text(job.kind, reason)
        live = self._forget(job)
        if job.message_id is not None and self.token_alive(job):
            try:
                await live.finish(content=text, attachments=[], embeds=[], view=None)
                return
            except discord.NotFound:  # the job's message was deleted: tell the user in the channel
                log.info("job_message_gone", job_id=job.id)
        channel = self._bot.get_partial_messageable(job.channel_id)
        if job.message_id is not None:
            await self._quietly(channel.get_partial_message(job.message_id).edit(content=text, attachments=[], view=None))
        await channel.send(f"<@{job.user_id}> {text}", allowed_mentions=owner_only(job), nonce=nonce(job, 99))

    async def job_cancelled(self, job: Job, by_user_id: int) -> None:
        text = cancelled_text(job.kind, by_user_id)
        live = self._forget(job)
        if job.message_id is not None:
            await self._quietly(live.finish(content=text, attachments=[], embeds=[], view=None))

    async def _quietly(self, edit: Awaitable[Any]) -> None:
        try:
            await edit
        except discord.HTTPException as error:
            log.warning("message_edit_failed", status=error.status, error=error.text)
