"""What Discord shows of a job: its one live message (progress edits coalesced), the result's embed,
and the forms (Remix, ControlNet) whose answers the cogs read back from the interaction, so a form
still works after a restart. The restart-proof buttons are in ui/buttons.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord
import structlog

from jobs import kinds
from jobs import wording
from image_gen import CONTROL
from safe_text import clip
from store import Generation

log = structlog.get_logger(__name__)

EDIT_INTERVAL = 1.5  # seconds between progress edits of one message
COLOR_OK = 0x2ECC71
COLOR_FAIL = 0xE74C3C
TITLE_LIMIT, DESCRIPTION_LIMIT, FOOTER_LIMIT, AUTHOR_LIMIT = 256, 4096, 2048, 256
FIELD_NAME_LIMIT, FIELD_VALUE_LIMIT, FIELDS_MAX, EMBED_LIMIT = 256, 1024, 25, 6000
WIDE_FIELDS = ("Negative prompt", "From", "Why this model", "Format", "Pipeline")  # a line of their own in the result's embed
TRY_ANOTHER = "to try another, `/generate model:<name>` (/models lists them)"  # under model:auto's choice


# the job's message ---------------------------------------------------------------


class LiveMessage:
    """One job's message: edits coalesced to one per `interval`, and none that would show the same.

    `update()` only records the latest state; a single flusher task sends it when the interval
    allows. An update whose `key` equals what was last sent (or is about to be) is dropped.
    `finish()` drops any pending edit, waits for one already on the wire (so it cannot land
    after the final one), then sends; `stop()` does the same without a final edit.
    """

    def __init__(self, edit: Callable[..., Awaitable[Any]], interval: float = EDIT_INTERVAL) -> None:
        self._edit = edit
        self._interval = interval
        self._pending: dict[str, Any] | None = None
        self._pending_key: Any = None
        self._sent_key: Any = None
        self._last = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Task[Any] | None = None
        self._closed = False

    def update(self, key: Any = None, **content: Any) -> None:
        if self._closed or (key is not None and key == (self._pending_key if self._pending else self._sent_key)):
            return
        self._pending, self._pending_key = content, key
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Send the latest state, then any state recorded while that edit was on the wire."""
        while self._pending is not None and not self._closed:
            await asyncio.sleep(max(0.0, self._last + self._interval - time.monotonic()))
            content, key, self._pending = self._pending, self._pending_key, None
            if content is None or self._closed:
                return
            self._last, self._sent_key = time.monotonic(), key
            self._in_flight = asyncio.create_task(self._edit(**content))
            try:
                await self._in_flight
            except discord.HTTPException as error:
                log.warning("progress_edit_failed", status=error.status, error=error.text)

    def close(self) -> None:
        """Drop any pending edit (the bot is stopping)."""
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()

    async def stop(self) -> None:
        """Drop any pending edit and wait (10 s at most) for one already on the wire."""
        self._closed = True
        if self._flusher is not None and not self._flusher.done() and (self._in_flight is None or self._in_flight.done()):
            self._flusher.cancel()
        if self._in_flight is not None and not self._in_flight.done():
            await asyncio.wait([self._in_flight], timeout=10)

    async def finish(self, **content: Any) -> Any:
        await self.stop()
        return await self._edit(**content)


# results ----------------------------------------------------------------------


def result_embed(generation: Generation) -> discord.Embed:
    """What a result shows beside its files: the prompt, what it came from, the settings that made it
    and the time it took. Nobody's id, no file or server names: the message's text names its owner."""
    params = generation.params
    kind = kinds.KINDS.get(generation.kind)
    title = kind.title(params, len(generation.files)) if kind is not None else "Result"
    embed = discord.Embed(title=title, color=COLOR_OK)
    if params.get("prompt"):
        embed.description = str(params["prompt"])
    source = params.get("source") or {}
    fields = [
        ("From", f"[the original image]({jump_url(source)})" if source.get("message_id") else None),
        ("Negative prompt", params.get("negative_prompt")),
        ("Model", wording.model_name(str(params["model"])) if params.get("model") else None),
        ("Why this model", f"{clip(str(params['model_reason']), 300)} · {TRY_ANOTHER}" if params.get("model_reason")
         else None),
        ("Style", params.get("style")),
        ("LoRAs", ", ".join(f"{wording.model_name(str(name))} {strength:g}" for name, strength in params["loras"])
         if params.get("loras") else None),
        ("Sampler", params.get("sampler")),
        ("Size", f"{params['width']}×{params['height']}" if params.get("width") and params.get("height") else None),
        ("Seed", params.get("seed")),
        ("Steps", params.get("steps")),
        ("CFG", params.get("cfg")),
        ("Strength", f"{params['strength']:.2f}" if isinstance(params.get("strength"), int | float) else None),
        ("Control", f"{params['control_type']} at {params.get('control_strength', 1):.2f}"
         if params.get("control_type") else None),
        ("Frames", f"{params['frames']} at {params['fps']} fps" if params.get("frames") else None),
        ("Motion", params.get("motion")),
        ("Format", params.get("format")),  # why a video is an MP4, WebP or GIF: the channel's upload limit
        ("Time", _time(params, generation.duration)),
        ("Pipeline", _stages(params["pipeline"]) if isinstance(params.get("pipeline"), dict) else None),
    ]
    for name, value in fields:
        if value not in (None, ""):
            embed.add_field(name=name, value=str(value), inline=name not in WIDE_FIELDS)
    return fit_embed(embed)


def _stages(pipeline: dict[str, Any]) -> str:
    """A pipeline result's stages, one a line: what each did and its GPU time, or why it was skipped."""
    lines = [f"**{pipeline.get('name')}**"]
    for stage in pipeline.get("stages") or ():
        done = f"skipped: {stage['skipped']}" if stage.get("skipped") else f"GPU {wording.seconds(stage.get('gpu') or 0)}"
        lines.append(f"{stage.get('step')}. {clip(str(stage.get('label')), 80)} · {done}")
    return "\n".join(lines)


def jump_url(source: dict[str, Any]) -> str:
    return f"https://discord.com/channels/{source.get('guild_id') or '@me'}/{source['channel_id']}/{source['message_id']}"


def _time(params: dict[str, Any], duration: float) -> str:
    if "ran" not in params:
        return wording.seconds(duration)
    return f"waited {wording.seconds(params.get('waited', 0))}, ran {wording.seconds(params['ran'])}"


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


# forms ---------------------------------------------------------------------------------

TOKEN_MINUTES = 15  # Discord answers a form's submission for as long as its interaction lives
CONTROL_HELP = "canny: its edges; depth: near and far; openpose: people's poses; lineart: its lines"
CONTROL_TYPES = {"canny": "Its edges and outlines", "depth": "What is near and what is far",
                 "openpose": "The poses of the people in it", "lineart": "Its lines, as a drawing"}


def remix_modal(generation_id: int, request: dict[str, Any]) -> discord.ui.Modal:
    """Remix's form: what made the result, to edit. Read back by bot.on_modal_submit, so it works
    after a restart too."""
    modal = discord.ui.Modal(title="Remix", custom_id=f"cf:remix:{generation_id}", timeout=TOKEN_MINUTES * 60)
    size = f"{request['width']}x{request['height']}" if request.get("width") and request.get("height") else ""
    fields = [("Prompt", "prompt", request.get("prompt"), discord.TextStyle.paragraph, True, 1500),
              ("Negative prompt", "negative_prompt", request.get("negative_prompt"), discord.TextStyle.paragraph,
               False, 1500),
              ("Seed", "seed", request.get("seed"), discord.TextStyle.short, False, 20),
              ("Size (width x height)", "size", size, discord.TextStyle.short, False, 11),
              ("Steps and CFG", "steps_cfg", " ".join(str(request[key]) for key in ("steps", "cfg")
                                                       if request.get(key) is not None),
               discord.TextStyle.short, False, 20)]
    for label, custom_id, value, style, required, limit in fields:
        modal.add_item(discord.ui.TextInput(label=label, custom_id=custom_id, style=style, required=required,
                                            max_length=limit, default=clip(str(value), limit) if value else None))
    return modal


ANIMATE_FIELDS = (("Frames", "frames"), ("Frames per second", "fps"), ("Motion (1 still to 1023 wild; 127 usual)",
                                                                     "motion"), ("Seed (empty: a new one)", "seed"))


def animate_modal(generation_id: int, values: dict[str, Any], index: int | None = None) -> discord.ui.Modal:
    """Animate's form: frames, frame rate, motion and seed, filled in with the current values. Of an image
    (`index`: Animate under a result), or of an animation (Animate again). Read back by cogs/video.py from the
    interaction, so it works after a restart too."""
    custom_id = f"cf:animform:{generation_id}" if index is None else f"cf:animimg:{generation_id}:{index}"
    modal = discord.ui.Modal(title="Animate", custom_id=custom_id, timeout=TOKEN_MINUTES * 60)
    for label, custom_id in ANIMATE_FIELDS:
        value = values.get(custom_id)
        modal.add_item(discord.ui.TextInput(label=label, custom_id=custom_id, required=custom_id != "seed",
                                            max_length=20, default=str(value) if value is not None else None))
    return modal


def controlnet_modal(channel_id: int, message_id: int, types: list[str], prompt: str) -> discord.ui.Modal:
    """Apps -> Use as ControlNet input: the prompt, the control type and its strength. The custom_id
    names the message, and the bot reads the answer from the interaction (bot.on_modal_submit)."""
    low, high, default = CONTROL["strength"]
    modal = discord.ui.Modal(title="Draw with this image's composition", custom_id=f"cf:cnet:{channel_id}:{message_id}",
                             timeout=TOKEN_MINUTES * 60)
    modal.add_item(discord.ui.Label(text="Prompt", description="What to draw, following the image's shapes", component=(
        discord.ui.TextInput(custom_id="prompt", style=discord.TextStyle.paragraph, max_length=1500,
                             default=prompt or None))))
    modal.add_item(discord.ui.Label(text="What to follow", description=CONTROL_HELP, component=discord.ui.Select(
        custom_id="control_type", options=[discord.SelectOption(label=name, value=name, default=index == 0,
                                                                description=CONTROL_TYPES.get(name))
                                           for index, name in enumerate(types[:25])])))
    modal.add_item(discord.ui.Label(text="Strength", description=f"{low:g} to {high:g}: how closely to follow it",
                                    component=discord.ui.TextInput(custom_id="strength", required=False, max_length=5,
                                                                   placeholder=f"{default:g}")))
    return modal
