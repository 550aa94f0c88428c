"""What a person chooses once: /models (the presets, and one as their default), /style (their own
styles and, for members who may manage the server, the server's) and /settings (the defaults every
command starts from). One discord.py Cog; the values live in the store (store/people.py).
"""

# No `from __future__ import annotations` here: discord.py reads the parameters' annotations.

import re

import discord
from discord import app_commands

from cogs.common import AreaCog

from jobs import wording
from jobs.compose import ASPECTS
from safe_text import clip
from store.people import SavedStyle
from cogs.generate import matching
from jobs.styles import StyleError, check_name, make
from ui.buttons import _Guarded

STYLES_PER_PERSON, STYLES_PER_SERVER = 25, 50
MODELS_SHOWN = 10  # Discord shows at most 10 embeds in one message


class Preferences(AreaCog):
    """/models, /settings and /style: what a person (or a server) keeps as defaults."""

    # /models -------------------------------------------------------------------------

    @app_commands.command(name="models", description="The models you can choose, and which one you use by default")
    async def models(self, interaction: discord.Interaction) -> None:
        bot, settings = self.bot, self.bot.settings
        offered = bot.choices.offered_presets(interaction.channel)
        prefs = await bot.store.preferences(interaction.user.id)
        if not offered:
            await interaction.response.send_message(
                f"This bot has no models to choose from; every image uses {wording.code(settings.checkpoint)}.",
                ephemeral=True)
            return
        embeds = [model_embed(name, settings.model_presets[name], name == prefs.get("model"))
                  for name in offered[:MODELS_SHOWN]]
        view = discord.ui.View(timeout=None)
        view.add_item(ModelPick(offered[:25]))
        default = prefs.get("model") if prefs.get("model") in bot.choices.model_names(interaction.channel) else None
        await interaction.response.send_message(
            f"Your default: {wording.code(default) if default else 'none'}. "
            "Pick one below to make it your default; `model:` or `--model` still chooses for one image.",
            embeds=embeds, view=view, ephemeral=True)
        view.stop()

    # /settings -----------------------------------------------------------------------

    @app_commands.command(name="settings", description="Your defaults: every command starts from them")
    @app_commands.describe(aspect="Shape of your images", steps="Sampling steps", cfg="How closely to follow the prompt",
                           sampler="The sampler", scheduler="The noise schedule", style="A style for every image",
                           model="Your model", clear="Forget all your defaults")
    @app_commands.choices(aspect=[app_commands.Choice(name=f"{name} ({w}:{h})", value=name)
                                  for name, (w, h) in ASPECTS.items()])
    async def settings_command(self, interaction: discord.Interaction, aspect: app_commands.Choice[str] | None = None,
                               steps: app_commands.Range[int, 1, 10000] | None = None,
                               cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
                               sampler: app_commands.Range[str, 1, 100] | None = None,
                               scheduler: app_commands.Range[str, 1, 100] | None = None,
                               style: app_commands.Range[str, 1, 32] | None = None,
                               model: str | None = None, clear: bool = False) -> None:
        bot = self.bot
        changes = {"aspect": aspect.value if aspect else None, "steps": steps, "cfg": cfg, "sampler": sampler,
                   "scheduler": scheduler, "style": style, "model": model}
        changes = {key: value for key, value in changes.items() if value is not None}
        problem = await self._settings_problem(interaction, changes)
        if problem:
            await interaction.response.send_message(problem, ephemeral=True)
            return
        prefs = {} if clear else await bot.store.preferences(interaction.user.id)
        prefs.update(changes)
        if clear or changes:
            await bot.store.set_preferences(interaction.user.id, prefs)
        await interaction.response.send_message(defaults_text(prefs, clear=clear, changed=bool(changes)), ephemeral=True)

    async def _settings_problem(self, interaction: discord.Interaction, changes: dict) -> str | None:
        bot, settings = self.bot, self.bot.settings
        if changes.get("steps", 0) > settings.max_steps:
            return f"Steps can be at most {settings.max_steps} here."
        if "model" in changes and changes["model"] not in bot.choices.model_names(interaction.channel):
            return f"There is no model called {wording.code(changes['model'])}; /models lists them."
        if "style" in changes and changes["style"] not in await bot.choices.offered_styles(interaction):
            return f"There is no style called {wording.code(changes['style'])}; /style list shows them."
        for key, name in (("sampler", "sampler_name"), ("scheduler", "scheduler")):
            known = bot.choices.values("KSampler", name)
            if key in changes and known and changes[key] not in known:
                return f"There is no {key} called {wording.code(changes[key])}; Discord suggests them as you type."
        return None

    # /style --------------------------------------------------------------------------

    style = app_commands.Group(name="style", description="Styles: prompt templates such as cinematic or watercolor")

    @style.command(name="save", description="Save a style of your own (or, with Manage Server, the server's)")
    @app_commands.describe(name="Its name: a-z, 0-9, - and _", template="The prompt, with {prompt} where yours goes",
                           negative="What it avoids", server="Save it for everyone here (needs Manage Server)",
                           nsfw="Only for age-restricted channels")
    async def style_save(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 32],
                         template: app_commands.Range[str, 1, 1000], negative: app_commands.Range[str, 0, 1000] = "",
                         server: bool = False, nsfw: bool = False) -> None:
        bot = self.bot
        if server and not self._may_manage(interaction):
            await interaction.response.send_message("Only members who may manage this server can save its styles.",
                                                    ephemeral=True)
            return
        try:
            made = make(name, template, negative, nsfw=nsfw)
        except StyleError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        owner = 0 if server else interaction.user.id
        saved = await bot.store.save_style(SavedStyle(interaction.guild_id or 0, owner, made.name, made.prompt,
                                                      made.negative, made.nsfw, interaction.user.id),
                                           limit=STYLES_PER_SERVER if server else STYLES_PER_PERSON)
        if not saved:
            limit = STYLES_PER_SERVER if server else STYLES_PER_PERSON
            await interaction.response.send_message(
                f"{'This server has' if server else 'You have'} {limit} styles, the most; delete one first "
                "with /style delete.", ephemeral=True)
            return
        whose = "the server's style" if server else "your style"
        await interaction.response.send_message(
            f"Saved {whose} {wording.code(made.name)}. Use it with `style:{made.name}` or `--style {made.name}`.",
            ephemeral=True)

    @style.command(name="list", description="The styles you can use here")
    async def style_list(self, interaction: discord.Interaction) -> None:
        bot = self.bot
        saved = await bot.store.styles(interaction.guild_id or 0, interaction.user.id)
        offered = set(await bot.choices.offered_styles(interaction))
        mine = [s.name for s in saved if s.owner_id and s.name in offered]
        server = [s.name for s in saved if not s.owner_id and s.name in offered]
        built_in = [name for name in bot.choices.builtin_styles if name in offered]
        lines = [f"**Yours**: {names(mine)}", f"**This server's**: {names(server)}", f"**Built in**: {names(built_in)}",
                 "Use one with `style:` or `--style NAME`; save your own with /style save (a template with "
                 "{prompt} in it)."]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @style.command(name="delete", description="Delete a style of yours (or, with Manage Server, the server's)")
    @app_commands.describe(name="The style's name", server="Delete the server's style of that name")
    async def style_delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 32],
                           server: bool = False) -> None:
        if server and not self._may_manage(interaction):
            await interaction.response.send_message("Only members who may manage this server can delete its styles.",
                                                    ephemeral=True)
            return
        try:
            name = check_name(name)
        except StyleError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        deleted = await self.bot.store.delete_style(interaction.guild_id or 0, 0 if server else interaction.user.id,
                                                    name)
        whose = "The server has" if server else "You have"
        await interaction.response.send_message(
            f"Deleted {wording.code(name)}." if deleted else f"{whose} no style called {wording.code(name)}.",
            ephemeral=True)

    @settings_command.autocomplete("style")
    async def style_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(await self.bot.choices.offered_styles(interaction), current)

    @settings_command.autocomplete("model")
    async def model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(self.bot.choices.model_names(interaction.channel), current)

    @settings_command.autocomplete("sampler")
    async def sampler_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(self.bot.choices.values("KSampler", "sampler_name"), current)

    @settings_command.autocomplete("scheduler")
    async def scheduler_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(self.bot.choices.values("KSampler", "scheduler"), current)

    def _may_manage(self, interaction: discord.Interaction) -> bool:
        return interaction.guild_id is not None and (interaction.permissions.manage_guild
                                                     or interaction.user.id in self.bot.settings.admin_user_ids)


class ModelPick(_Guarded, discord.ui.DynamicItem[discord.ui.Select], template=r"cf:pickmodel"):
    """/models' menu: the picked preset becomes the picker's default. Restart-proof like the buttons."""

    def __init__(self, names: list[str] | list[discord.SelectOption]) -> None:
        options = [name if isinstance(name, discord.SelectOption) else discord.SelectOption(label=name[:100])
                   for name in names]
        super().__init__(discord.ui.Select(custom_id="cf:pickmodel", placeholder="Make one my default",
                                           options=options))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> "ModelPick":
        return cls(item.options)

    async def clicked(self, interaction: discord.Interaction) -> None:
        bot = interaction.client  # bot.ComfyBot
        picked = (self.item.values or [""])[0]
        if picked not in bot.choices.offered_presets(interaction.channel):
            await interaction.response.send_message(f"{wording.code(picked)} is not offered any more; see /models.",
                                                    ephemeral=True)
            return
        prefs = await bot.store.preferences(interaction.user.id)
        await bot.store.set_preferences(interaction.user.id, {**prefs, "model": picked})
        await interaction.response.send_message(
            f"{wording.code(picked)} is now your default model.", ephemeral=True)


def model_embed(name: str, preset, chosen: bool) -> discord.Embed:
    """One preset in /models: its name, description, tags and preview."""
    embed = discord.Embed(title=clip(name, 100) + (" (your default)" if chosen else ""),
                          description=clip(preset.description, 300) or None, color=0x2ECC71 if chosen else 0x95A5A6)
    if preset.tags:
        embed.add_field(name="Tags", value=clip(", ".join(preset.tags), 200))
    if preset.width and preset.height:
        embed.add_field(name="Size", value=f"{preset.width}×{preset.height}")
    if preset.nsfw:
        embed.add_field(name="Age-restricted", value="only in age-restricted channels")
    if preset.preview:
        embed.set_thumbnail(url=preset.preview)
    embed.set_footer(text=f"--model {name}" if " " in name else f"--{name} or --model {name}")
    return embed


def names(found: list[str]) -> str:
    return clip(", ".join(map(wording.code, found)), 600) if found else "none"


def defaults_text(prefs: dict, *, clear: bool, changed: bool) -> str:
    """What /settings answers: the person's saved defaults, or in a sentence that there are none."""
    if not prefs:
        return ("Forgotten: you have no saved defaults now, so each job uses the bot's own settings." if clear else
                "You have no saved defaults, so each job uses the bot's own settings. "
                "Save one with `/settings`, like `/settings steps:30`.")
    shown = "\n".join(f"• {key}: {wording.code(value)}" for key, value in prefs.items())
    said = "Forgotten; these are" if clear else "Saved; these are" if changed else "These are"
    return f"{said} your defaults:\n{shown}"


Preferences.dynamic_items = (ModelPick,)
