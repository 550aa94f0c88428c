"""The creative controls of bot.ComfyBot: a request composed from flags, options, saved defaults,
presets and styles (compose.py); the LoRAs, samplers and styles people may choose here; what is kept
for age-restricted channels; and Remix.

`CreativeControls` is a part of bot.ComfyBot, like actions.ImageActions.
"""

# No `from __future__ import annotations` here, as in bot.py.

import re

import discord
import structlog

from jobs import kinds
from jobs import wording
from jobs.compose import ASPECTS, compose, nsfw_lora, nsfw_reasons
from cogs.help import HelpContext
from image_gen import RequestError
from safe_text import clip
from jobs.styles import Style, StyleError, load as load_styles
from ui.views import remix_modal

log = structlog.get_logger("bot")

REMIX_MODAL = re.compile(r"cf:remix:(?P<gen>\d{1,18})")
SIZE = re.compile(r"\s*(\d{2,5})\s*[x×X*]\s*(\d{2,5})\s*")


def is_nsfw(channel: object) -> bool:
    """Whether a channel (or a thread's parent) is age-restricted."""
    parent = getattr(channel, "parent", None)
    return bool(getattr(channel, "nsfw", False) or getattr(parent, "nsfw", False))


class CreativeControls:
    """The handlers and lookups of bot.ComfyBot for models, LoRAs, samplers, styles and Remix."""

    builtin_styles: dict[str, Style] = {}

    def load_builtin_styles(self) -> None:
        """The operator's style file; a broken one is logged and leaves no built-in styles."""
        try:
            self.builtin_styles = load_styles(self.settings.styles_file)
        except StyleError as error:
            log.error("styles_not_loaded", file=str(self.settings.styles_file), error=str(error))
            self.builtin_styles = {}

    async def styles_for(self, interaction: discord.Interaction) -> dict[str, Style]:
        """The styles this person may use here: their own, then the server's, then the built-in ones
        (a name they saved hides the same name further down); those marked nsfw only in
        age-restricted channels."""
        saved = await self.store.styles(interaction.guild_id or 0, interaction.user.id)
        found = dict(self.builtin_styles)
        for style in reversed(saved):  # the server's first, then the person's own over them
            found[style.name] = Style(style.name, style.prompt, style.negative, nsfw=style.nsfw)
        return found

    def choices(self, class_type: str, name: str) -> list[str]:
        """The values the servers list for a node input (LoRA files, samplers, schedulers), in the order
        the first server lists them, then the others'."""
        seen: dict[str, None] = {}
        for backend in self.scheduler.pool.backends:
            spec = ((backend.object_info or {}).get(class_type) or {}).get("input", {}).get("required", {}).get(name)
            listed = spec[0] if isinstance(spec, list) and spec and isinstance(spec[0], list) else \
                (spec[1].get("options") if isinstance(spec, list) and len(spec) > 1 and spec[0] == "COMBO" else [])
            seen.update((str(value), None) for value in listed or [] if isinstance(value, str))
        return list(seen)

    def nsfw_allowed(self, channel: object) -> bool:
        """Whether what is marked nsfw may be offered here: in an age-restricted channel, or anywhere
        when NSFW_CHANNEL_ID takes such jobs."""
        return is_nsfw(channel) or self.settings.nsfw_channel_id is not None

    def offered_loras(self, channel: object) -> list[str]:
        return [name for name in self.choices("LoraLoader", "lora_name")
                if self.nsfw_allowed(channel) or not nsfw_lora(self.settings, name)]

    async def offered_styles(self, interaction: discord.Interaction) -> list[str]:
        return [name for name, style in (await self.styles_for(interaction)).items()
                if self.nsfw_allowed(interaction.channel) or not style.nsfw]

    async def request_for(self, interaction: discord.Interaction, prompt: str, options: dict, *,
                          sized: bool | str = True) -> dict:
        """The request for a command: composed from the prompt's flags, the options, the person's saved
        defaults, the preset and the style; then kept out of channels it does not belong in. A job
        marked nsfw outside an age-restricted channel is refused, or, with NSFW_CHANNEL_ID, posted
        there. Raises RequestError with the sentence to show."""
        styles = await self.styles_for(interaction)
        prefs = await self.store.preferences(interaction.user.id)
        request = compose(self.settings, prompt, options, prefs, styles, sized=sized)
        if not request["loras"]:
            del request["loras"]
        if is_nsfw(interaction.channel):
            return request
        reasons = nsfw_reasons(self.settings, request, styles)
        if reasons and self.settings.nsfw_channel_id is None:
            raise RequestError(f"{wording.and_list(reasons)} can only be used in an age-restricted channel"
                               f"{self._nsfw_channels(interaction)}")
        if reasons:
            request["deliver_to"] = self.settings.nsfw_channel_id
            log.info("job_sent_to_nsfw_channel", user_id=interaction.user.id, reasons=reasons)
        elif self.settings.sfw_negative:
            request["sfw_negative"] = self.settings.sfw_negative
        return request

    def _nsfw_channels(self, interaction: discord.Interaction) -> str:
        guild = interaction.guild
        channels = [channel for channel in (guild.text_channels if guild else []) if channel.nsfw][:3]
        return f", such as {', '.join(channel.mention for channel in channels)}" if channels else \
            " (this server has none)"

    async def help_context(self, interaction: discord.Interaction) -> HelpContext:
        s = self.settings
        return HelpContext(64, s.max_width, s.max_height, s.max_steps, s.max_batch, s.jobs_per_user,
                           s.commands_per_minute, self.offered_presets(interaction.channel),
                           [f"{name} ({w}:{h})" for name, (w, h) in ASPECTS.items()],
                           await self.offered_styles(interaction), self.offered_control_types())

    # Remix -------------------------------------------------------------------------

    async def on_remix_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Remix: a form with the result's prompt, negative prompt, seed, size, steps and cfg (the values
        that made it, defaults included), to edit and send again as a new job that links its parent."""
        generation = await self.store.get_generation(generation_id)
        job = await self.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None or job.kind != "txt2img":
            await interaction.response.send_message("That result is not known to this bot any more.", ephemeral=True)
            return
        used = {key: generation.params[key] for key in ("seed", "steps", "cfg") if generation.params.get(key) is not None}
        if "cfg" in used:
            used["cfg"] = f"{float(used['cfg']):g}"  # 7, not 7.0
        await interaction.response.send_modal(remix_modal(generation_id, {**job.request, **used}))

    async def on_remix_submit(self, interaction: discord.Interaction, generation_id: int,
                              fields: dict) -> None:
        generation = await self.store.get_generation(generation_id)
        job = await self.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None:
            await self.tell(interaction, "That result is not known to this bot any more.")
            return
        try:
            changes = remix_changes(fields)
        except RequestError as error:
            await self.tell(interaction, f"That remix cannot be made: {clip(str(error), 300)}.")
            return
        if await self.refuse_if_limited(interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        request = {**kinds.derived(job.request, generation.params, again=True), **changes}
        await self.start_job(interaction, job.kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id)


def remix_changes(fields: dict) -> dict:
    """The request values a Remix form sets; RequestError for a size, seed or number that is not one."""
    changes: dict = {"prompt": str(fields.get("prompt") or "").strip(),
                     "negative_prompt": str(fields.get("negative_prompt") or "").strip()}
    seed = str(fields.get("seed") or "").strip()
    if seed and not seed.isdigit():
        raise RequestError("the seed must be a whole number, or empty for a new one")
    changes["seed"] = int(seed) if seed else None
    size = str(fields.get("size") or "").strip()
    if size:
        match = SIZE.fullmatch(size)
        if match is None:
            raise RequestError("the size must be written like 512x768")
        changes["width"], changes["height"] = int(match[1]), int(match[2])
    numbers = str(fields.get("steps_cfg") or "").replace(",", " ").split()
    if len(numbers) > 2:
        raise RequestError("steps and CFG are two numbers, like 30 6.5")
    for (name, kind), text in zip((("steps", int), ("cfg", float)), numbers):
        try:
            changes[name] = kind(text)
        except ValueError:
            raise RequestError(f"{name} must be a number, like {'30' if kind is int else '6.5'}") from None
    return changes
