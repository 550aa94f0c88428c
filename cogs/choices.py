"""What people may choose here, and the request their choices make: the model presets, LoRAs,
samplers, schedulers, styles and ControlNet types the servers have (those marked nsfw only where they
are allowed), and a request composed from flags, options, saved defaults, presets and styles
(jobs/compose.py), kept out of channels it does not belong in.

One `Choices` per bot (`bot.choices`); the cogs ask it.
"""

# No `from __future__ import annotations` here: discord.py reads the cogs' annotations at runtime.

from collections import Counter
from typing import Any

import discord
import structlog

from cogs.help import HelpContext
from image_gen import RequestError
from jobs import wording
from jobs.auto_model import AUTO, wants_auto
from jobs.compose import ASPECTS, compose, nsfw_lora, nsfw_reasons
from jobs.styles import Style, StyleError, load as load_styles
from safe_text import clip
from store import Query

log = structlog.get_logger("bot")

NO_CONTROLNET = "ControlNet is not available on this bot's servers right now."
FAVORITES_READ = 500  # the newest favorites whose presets model:auto counts


def is_nsfw(channel: object) -> bool:
    """Whether a channel (or a thread's parent) is age-restricted."""
    parent = getattr(channel, "parent", None)
    return bool(getattr(channel, "nsfw", False) or getattr(parent, "nsfw", False))


class Choices:
    """The lookups of the cogs for models, LoRAs, samplers, styles and ControlNet types."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot  # bot.ComfyBot: its settings, store and scheduler
        self.settings = bot.settings
        self.builtin_styles: dict[str, Style] = {}

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
        saved = await self.bot.store.styles(interaction.guild_id or 0, interaction.user.id)
        found = dict(self.builtin_styles)
        for style in reversed(saved):  # the server's first, then the person's own over them
            found[style.name] = Style(style.name, style.prompt, style.negative, nsfw=style.nsfw)
        return found

    def values(self, class_type: str, name: str) -> list[str]:
        """The values the servers list for a node input (LoRA files, samplers, schedulers), in the order
        the first server lists them, then the others'."""
        seen: dict[str, None] = {}
        for backend in self.bot.scheduler.pool.backends:
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
        return [name for name in self.values("LoraLoader", "lora_name")
                if self.nsfw_allowed(channel) or not nsfw_lora(self.settings, name)]

    async def offered_styles(self, interaction: discord.Interaction) -> list[str]:
        return [name for name, style in (await self.styles_for(interaction)).items()
                if self.nsfw_allowed(interaction.channel) or not style.nsfw]

    def offered_presets(self, channel: object = None) -> list[str]:
        """The model presets people may choose here: those whose checkpoint some server has (all of them
        while no server's node list is known yet), and those marked nsfw only where they are allowed."""
        pool = self.bot.scheduler.pool
        return [name for name, preset in self.settings.model_presets.items()
                if pool.offers("txt2img", {"checkpoint": preset.checkpoint})
                and (not preset.nsfw or self.nsfw_allowed(channel))]

    def model_names(self, channel: object = None) -> list[str]:
        """What `model:` may name here: the presets offered, and "auto" (the bot chooses) when there are some."""
        offered = self.offered_presets(channel)
        return [*offered, AUTO] if offered and wants_auto(AUTO, self.settings.model_presets) else offered

    def offered_control_types(self) -> list[str]:
        """The ControlNet types people may choose: those the operator gave a model file whose workflow,
        preprocessor nodes and model file some server has (all of them while no node list is known)."""
        pool = self.bot.scheduler.pool
        return [name for name, model in self.settings.controlnet_models.items()
                if pool.offers(f"controlnet_{name}", {"checkpoint": self.settings.checkpoint, "control_net": model})]

    def offered_video_actions(self) -> list[str]:
        """What a video result may offer (Upscale, Interpolate): the workflows some server can run with the
        models the settings name (all of them while no node list is known; Interpolate only with INTERPOLATE_MODEL)."""
        pool, s = self.bot.scheduler.pool, self.settings
        wanted = {"video_upscale": {"upscale_model": s.upscale_model}}
        if s.interpolate_model:
            wanted["interpolate"] = {"interpolate_model": s.interpolate_model}
        return [name for name, models in wanted.items() if pool.offers(name, models)]

    def text_video_offered(self) -> bool:
        """Whether /video can run: ANIMATEDIFF_MODEL is set and some server has its nodes and files."""
        s = self.settings
        return bool(s.animatediff_model) and self.bot.scheduler.pool.offers(
            "text_to_video", {"checkpoint": s.checkpoint, "motion_model": s.animatediff_model})

    async def model_offered(self, interaction: discord.Interaction, model: str | None) -> bool:
        """True when `model` is left out, "auto" or offered; otherwise the person is told which ones are."""
        if wants_auto(model, self.settings.model_presets):
            return True
        preset = self.settings.model_presets.get(model or "")
        if preset is not None and not self.bot.scheduler.pool.offers("txt2img", {"checkpoint": preset.checkpoint}):
            offered = self.offered_presets(interaction.channel)
            await interaction.response.send_message(wording.model_not_available(model, offered), ephemeral=True)
            return False
        return await self.choice_offered(interaction, "model", model, self.offered_presets(interaction.channel),
                                         "This server has no models to choose from; leave `model` out.")

    async def control_type_offered(self, interaction: discord.Interaction, control_type: str | None) -> bool:
        """True when `control_type` is left out or offered; otherwise the person is told which ones are."""
        return await self.choice_offered(interaction, "ControlNet type", control_type, self.offered_control_types(),
                                         NO_CONTROLNET)

    @staticmethod
    async def choice_offered(interaction: discord.Interaction, noun: str, value: str | None,
                             offered: list[str], when_none: str) -> bool:
        """True when `value` is left out or one of `offered`; otherwise the person is told, privately,
        which ones are (or `when_none`)."""
        if value is None or value in offered:
            return True
        choose = f"Choose one of: {clip(', '.join(map(wording.code, offered)), 1500)}." if offered else when_none
        await interaction.response.send_message(f"There is no {noun} called {wording.code(clip(value, 100))}. {choose}",
                                                ephemeral=True)
        return False

    async def request_for(self, interaction: discord.Interaction, prompt: str, options: dict, *,
                          sized: bool | str = True) -> dict:
        """The request for a command: composed from the prompt's flags, the options, the person's saved
        defaults, the preset and the style; then kept out of channels it does not belong in. A job
        marked nsfw outside an age-restricted channel is refused, or, with NSFW_CHANNEL_ID, posted
        there. Raises RequestError with the sentence to show."""
        styles = await self.styles_for(interaction)
        prefs = await self.bot.store.preferences(interaction.user.id)
        auto: dict[str, Any] = {}
        if AUTO in f"{prompt} {options.get('model')} {prefs.get('model')}".casefold():  # may ask for model:auto
            auto["offered"] = [name for name in self.offered_presets(interaction.channel)  # nsfw only where it is
                               if is_nsfw(interaction.channel) or not self.settings.model_presets[name].nsfw]
            auto["favorites"] = await self.favorite_presets(interaction)
        request = compose(self.settings, prompt, options, prefs, styles, sized=sized, **auto)
        if not request["loras"]:
            del request["loras"]
        if is_nsfw(interaction.channel):
            return request
        reasons = nsfw_reasons(self.settings, request, styles)
        if reasons and self.settings.nsfw_channel_id is None:
            raise RequestError(f"{wording.and_list(reasons)} can only be used in an age-restricted channel"
                               f"{_nsfw_channels(interaction)}")
        if reasons:
            request["deliver_to"] = self.settings.nsfw_channel_id
            log.info("job_sent_to_nsfw_channel", user_id=interaction.user.id, reasons=reasons)
        elif self.settings.sfw_negative:
            request["sfw_negative"] = self.settings.sfw_negative
        return request

    async def favorite_presets(self, interaction: discord.Interaction) -> Counter[str]:
        """How many of the person's favorites here each preset made (a result's params name its preset)."""
        found, _ = await self.bot.store.find_generations(
            Query(interaction.user.id, interaction.guild_id, favorites=True), limit=FAVORITES_READ)
        presets = self.settings.model_presets
        return Counter(str(g.params["model"]) for g in found if str(g.params.get("model")) in presets)

    async def help_context(self, interaction: discord.Interaction) -> HelpContext:
        s = self.settings
        return HelpContext(64, s.max_width, s.max_height, s.max_steps, s.max_batch, s.jobs_per_user,
                           s.commands_per_minute, self.offered_presets(interaction.channel),
                           [f"{name} ({w}:{h})" for name, (w, h) in ASPECTS.items()],
                           await self.offered_styles(interaction), self.offered_control_types())


def _nsfw_channels(interaction: discord.Interaction) -> str:
    guild = interaction.guild
    channels = [channel for channel in (guild.text_channels if guild else []) if channel.nsfw][:3]
    return f", such as {', '.join(channel.mention for channel in channels)}" if channels else \
        " (this server has none)"
