"""What Discord shows: progress text, result embeds, /help, and the restart-proof buttons.

Buttons are `DynamicItem`s: their `custom_id` names the generation and the image,
and the click handler loads everything else from the store, so a button works
on a message posted before any number of restarts. Nothing here holds job state.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord
import structlog

from comfy_types import NodeStarted, Progress
from safe_text import clip, summarize
from store import Generation

log = structlog.get_logger(__name__)

EDIT_INTERVAL = 1.5  # seconds between progress edits of one message
BAR_WIDTH = 12
COLOR_OK = 0x2ECC71
COLOR_FAIL = 0xE74C3C
CONTENT_LIMIT = 2000  # Discord's limits on what a message shows
TITLE_LIMIT, DESCRIPTION_LIMIT, FOOTER_LIMIT, AUTHOR_LIMIT = 256, 4096, 2048, 256
FIELD_NAME_LIMIT, FIELD_VALUE_LIMIT, FIELDS_MAX, EMBED_LIMIT = 256, 1024, 25, 6000


# progress ---------------------------------------------------------------------


@dataclass
class Progression:
    """What a running job's message shows; fed by ComfyUI events."""

    started: float | None = None
    value: int = 0
    maximum: int = 0
    node: str = ""
    preview: bytes | None = None
    preview_mime: str = "image/png"

    def apply(self, event: Any) -> None:
        if self.started is None:
            self.started = time.monotonic()
        if isinstance(event, NodeStarted):
            self.node = event.class_type or f"node {event.node}"
            self.value = self.maximum = 0
        elif isinstance(event, Progress):
            self.value, self.maximum = event.value, event.max


def queued_text(kind: str, position: int | None) -> str:
    if position is None:
        where = "in the queue"
    elif position == 0:
        where = "next in the queue"
    else:
        where = f"position {position + 1} in the queue ({position} ahead)"
    return clip(f"⏳ {_label(kind)}: waiting, {where}.", CONTENT_LIMIT)


def cancelled_text(kind: str, by_user_id: int) -> str:
    return clip(f"🚫 {_label(kind)} cancelled by <@{by_user_id}>.", CONTENT_LIMIT)


def running_text(kind: str, progress: Progression) -> str:
    elapsed = time.monotonic() - progress.started if progress.started else 0.0
    lines = [f"🎨 {_label(kind)}: running ({elapsed:.0f} s)"]
    if progress.maximum:
        share = min(1.0, progress.value / progress.maximum)
        filled = round(share * BAR_WIDTH)
        lines.append(f"`{'█' * filled}{'░' * (BAR_WIDTH - filled)}` {share:.0%} · step {progress.value}/{progress.maximum}")
    if progress.node:
        lines.append(f"node: {clip(progress.node, 100)}")
    return clip("\n".join(lines), CONTENT_LIMIT)


LABELS = {"txt2img": "Image", "upscale": "Upscale", "animate": "Animation"}


def _label(kind: str) -> str:
    return LABELS.get(kind) or clip(kind, 40)


class LiveMessage:
    """One job's message: progress edits coalesced to one per `interval`; the final edit goes at once.

    `update()` only records the latest state; a single flusher task sends it when
    the interval allows. `finish()` drops any pending progress, waits for an edit
    already on the wire (so it cannot land after the result), then sends.
    """

    def __init__(self, edit: Callable[..., Awaitable[Any]], interval: float = EDIT_INTERVAL) -> None:
        self._edit = edit
        self._interval = interval
        self._pending: dict[str, Any] | None = None
        self._last = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Task[Any] | None = None
        self._closed = False

    def update(self, **content: Any) -> None:
        if self._closed:
            return
        self._pending = content
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(max(0.0, self._last + self._interval - time.monotonic()))
        content, self._pending = self._pending, None
        if content is None or self._closed:
            return
        self._last = time.monotonic()
        self._in_flight = asyncio.create_task(self._edit(**content))
        try:
            await self._in_flight
        except discord.HTTPException as error:
            log.warning("progress_edit_failed", status=error.status, error=error.text)

    def close(self) -> None:
        """Drop any pending progress edit (the bot is stopping)."""
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()

    async def finish(self, **content: Any) -> Any:
        self._closed = True
        if self._flusher is not None and not self._flusher.done() and (self._in_flight is None or self._in_flight.done()):
            self._flusher.cancel()
        if self._in_flight is not None and not self._in_flight.done():
            await asyncio.wait([self._in_flight], timeout=10)
        return await self._edit(**content)


# results ----------------------------------------------------------------------


def result_embed(generation: Generation, user_mention: str) -> discord.Embed:
    params = generation.params
    title = {"txt2img": "Image", "upscale": f"Upscaled {params.get('factor', '')}x", "animate": "Animation"}
    embed = discord.Embed(title=title.get(generation.kind) or _label(generation.kind), color=COLOR_OK)
    if params.get("prompt"):
        embed.description = str(params["prompt"])
    fields = [
        ("Negative prompt", params.get("negative_prompt")),
        ("Seed", params.get("seed")),
        ("Size", f"{params['width']}×{params['height']}" if params.get("width") else None),
        ("Steps", params.get("steps")),
        ("CFG", params.get("cfg")),
        ("Model", clip(params["model"], 200) if params.get("model") else None),
        ("Frames", f"{params['frames']} at {params['fps']} fps" if params.get("frames") else None),
        ("Time", f"{generation.duration:.1f} s"),
    ]
    for name, value in fields:
        if value not in (None, ""):
            embed.add_field(name=name, value=str(value), inline=name not in ("Negative prompt",))
    embed.set_footer(text=f"generation {generation.id} · for {clip(user_mention.strip('<@>'), 40)} · "
                          f"{clip(generation.server, 100)}")
    return fit_embed(embed)


def failure_text(kind: str, reason: str) -> str:
    """At most 1900 characters: room for a mention in front."""
    return clip(f"❌ {_label(kind)} failed: {clip(reason, 1500)}", CONTENT_LIMIT - 100)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """`embed` cut to Discord's limits: each part clipped, at most 25 fields, and 6000 in all
    (the description is shortened first, then the last fields, then fields are dropped from the end)."""
    if embed.title:
        embed.title = clip(embed.title, TITLE_LIMIT)
    if embed.description:
        embed.description = clip(embed.description, DESCRIPTION_LIMIT)
    if embed.footer.text:
        embed.set_footer(text=clip(embed.footer.text, FOOTER_LIMIT), icon_url=embed.footer.icon_url)
    if embed.author.name:
        author = embed.author
        embed.set_author(name=clip(author.name, AUTHOR_LIMIT), url=author.url, icon_url=author.icon_url)
    fields = embed.fields[:FIELDS_MAX]
    embed.clear_fields()
    for field in fields:
        embed.add_field(name=clip(field.name, FIELD_NAME_LIMIT) or "\u200b",
                        value=clip(field.value, FIELD_VALUE_LIMIT) or "\u200b", inline=field.inline)
    excess = len(embed) - EMBED_LIMIT
    if excess > 0 and embed.description:
        embed.description = clip(embed.description, max(200, len(embed.description) - excess))
    for index in reversed(range(len(embed.fields))):
        excess = len(embed) - EMBED_LIMIT
        if excess <= 0:
            break
        field = embed.fields[index]
        embed.set_field_at(index, name=field.name, value=clip(field.value, max(30, len(field.value) - excess)),
                           inline=field.inline)
    while len(embed) > EMBED_LIMIT and embed.fields:
        embed.remove_field(len(embed.fields) - 1)
    return embed


ID = r"\d{1,18}"  # ids in custom_ids: longer ones are out of SQLite's range and match no button


class _Guarded:
    """A button whose failure is answered in words (bot.on_item_error), never left as "interaction failed"."""

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self.clicked(interaction)
        except Exception as error:
            await interaction.client.on_item_error(interaction, error, self.custom_id)


class UpscaleButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                    template=rf"cf:up:(?P<gen>{ID}):(?P<idx>\d{{1,2}}):(?P<factor>[24])"):
    def __init__(self, generation_id: int, index: int, factor: int) -> None:
        self.generation_id, self.index, self.factor = generation_id, index, factor
        super().__init__(discord.ui.Button(
            label=f"Upscale {factor}x" + (f" #{index + 1}" if index else ""), style=discord.ButtonStyle.secondary,
            custom_id=f"cf:up:{generation_id}:{index}:{factor}", emoji="🔍", row=min(index, 4)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> UpscaleButton:
        return cls(int(match["gen"]), int(match["idx"]), int(match["factor"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await interaction.client.on_image_button(interaction, "upscale", self.generation_id, self.index, self.factor)


class AnimateButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:anim:(?P<gen>{ID}):(?P<idx>\d{{1,2}})"):
    def __init__(self, generation_id: int, index: int) -> None:
        self.generation_id, self.index = generation_id, index
        super().__init__(discord.ui.Button(
            label="Animate" + (f" #{index + 1}" if index else ""), style=discord.ButtonStyle.primary,
            custom_id=f"cf:anim:{generation_id}:{index}", emoji="🎞️", row=min(index, 4)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> AnimateButton:
        return cls(int(match["gen"]), int(match["idx"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await interaction.client.on_image_button(interaction, "animate", self.generation_id, self.index, 0)


class CancelButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:cancel:(?P<job>{ID})"):
    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.danger,
                                           custom_id=f"cf:cancel:{job_id}", emoji="✖️"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> CancelButton:
        return cls(int(match["job"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await interaction.client.on_cancel_button(interaction, self.job_id)


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(generation: Generation) -> discord.ui.View | None:
    """Buttons under a result: per image Upscale 2x/4x and Animate; an upscaled image gets Animate only."""
    if generation.kind == "animate":
        return None
    view = discord.ui.View(timeout=None)
    for index in range(min(len(generation.files), 5)):
        if generation.kind == "txt2img":
            view.add_item(UpscaleButton(generation.id, index, 2))
            view.add_item(UpscaleButton(generation.id, index, 4))
        view.add_item(AnimateButton(generation.id, index))
    return view


DYNAMIC_ITEMS = (UpscaleButton, AnimateButton, CancelButton)


# help -------------------------------------------------------------------------


def help_embed(limits: dict[str, Any], presets: list[str]) -> discord.Embed:
    embed = discord.Embed(title="How to use this bot", color=COLOR_OK, description=(
        "Make images and videos with ComfyUI. Everything you make is posted in the channel, "
        "and anyone here can use the buttons under a result."))
    embed.add_field(name="/generate prompt:<text>", inline=False, value="\n".join([
        "Makes images from a description. Options:",
        "• `negative_prompt`: what you do not want to see",
        f"• `aspect`: square, portrait or landscape; or `width` and `height` ({limits['min_side']} to {limits['max_width']} × {limits['max_height']})",
        f"• `steps`: 1 to {limits['max_steps']} (more is slower, often finer)",
        "• `cfg`: 1 to 30, how closely to follow the prompt",
        "• `seed`: the same seed and settings give the same image",
        f"• `batch`: 1 to {limits['max_batch']} images at once",
        f"• `model`: {_presets(presets)}",
        "• `priority`: admins only, puts the job ahead of the queue",
    ]))
    embed.add_field(name="Buttons under a result", inline=False, value="\n".join([
        "🔍 **Upscale 2x / 4x**: a larger, sharper copy of that image",
        "🎞️ **Animate**: turns that image into a short MP4 video",
        "✖️ **Cancel** (while a job waits or runs): for whoever started it, or a moderator",
        "Buttons keep working on old results, even after the bot restarts.",
    ]))
    embed.add_field(name="/status", inline=False, value="The ComfyUI servers, the queue, and your jobs with their positions.")
    embed.add_field(name="Limits", inline=False, value=(
        f"{limits['jobs_per_user']} jobs per person at a time; about {limits['commands_per_minute']} commands "
        "and button clicks per minute. If you hit a limit, the bot tells you when to try again."))
    return fit_embed(embed)


def _presets(presets: list[str]) -> str:
    if not presets:
        return "the default model"
    return clip(summarize([clip(name, 40) for name in presets], shown=8, noun="models", sep=", "), 400)


def status_embed(status: Any) -> discord.Embed:
    """/status: each server's state and load, the queue, and the caller's own jobs."""
    embed = discord.Embed(title="Status", color=COLOR_OK if any(s.healthy for s in status.servers) else COLOR_FAIL)
    for server in status.servers[:SERVERS_SHOWN]:
        state = "🟢 up" if server.healthy else f"⚠️ unusable: {clip(server.problem, 300)}" if server.problem else "🔴 down"
        loaded = f", last model: {clip(server.last_model, 100)}" if server.last_model else ""
        embed.add_field(name=clip(server.name, 80), inline=False,
                        value=f"{state}, {server.load}/{server.capacity} of our jobs{loaded}")
    if len(status.servers) > SERVERS_SHOWN:
        embed.add_field(name="…", inline=False, value=f"and {len(status.servers) - SERVERS_SHOWN} more servers")
    embed.add_field(name="Queue", inline=False,
                    value=f"{status.waiting} waiting, {status.running} on the servers")
    lines = []
    for job, position in status.mine[:10]:
        where = f"position {position + 1}" if position is not None else clip(job.state, 40)
        lines.append(f"• job {job.id} ({_label(job.kind)}): {where}")
    embed.add_field(name="Your jobs", inline=False, value="\n".join(lines) or "none")
    return fit_embed(embed)


SERVERS_SHOWN = 15  # with the queue and the caller's jobs, the embed stays within Discord's 6000 characters
