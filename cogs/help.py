"""/help: a page per topic, chosen from a menu, each written from the same limits and choices the
commands are built with, with examples. Private to the person who asked; the menu is restart-proof.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord
from discord import app_commands

from cogs.common import AreaCog

from jobs import wording
from safe_text import clip, summarize
from ui.buttons import _Guarded
from ui.views import COLOR_OK, fit_embed

TOPICS = {"make": "Making images", "edit": "Editing images", "buttons": "Buttons and menus",
          "styles": "Styles and flags", "models": "Models and LoRAs", "work": "Finding your work",
          "limits": "Limits", "faq": "Questions"}


@dataclass(frozen=True)
class HelpContext:
    """What the pages quote: the limits, and the names offered to this person here."""

    min_side: int
    max_width: int
    max_height: int
    max_steps: int
    max_batch: int
    jobs_per_user: int
    commands_per_minute: int
    presets: list[str]
    aspects: list[str]
    styles: list[str]
    control_types: list[str]


class Help(AreaCog):
    """/help, and its menu of topics."""

    @app_commands.command(name="help", description="How to use this bot: a page per topic")
    async def help_command(self, interaction: discord.Interaction) -> None:
        context = await self.bot.choices.help_context(interaction)
        await interaction.response.send_message(embed=help_page("make", context), view=help_view("make"),
                                                ephemeral=True)


def help_page(topic: str, c: HelpContext) -> discord.Embed:
    title, lines = TOPICS.get(topic, TOPICS["make"]), PAGES.get(topic, PAGES["make"])(c)
    embed = discord.Embed(title=f"Help: {title}", color=COLOR_OK, description="\n".join(lines))
    embed.set_footer(text="Pick another topic below.")  # Discord itself says only you can see it
    return fit_embed(embed)


def help_view(topic: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(HelpSelect(topic))
    return view


class HelpSelect(_Guarded, discord.ui.DynamicItem[discord.ui.Select], template=r"cf:help"):
    def __init__(self, topic: str = "make") -> None:
        options = [discord.SelectOption(label=label, value=value, default=value == topic)
                   for value, label in TOPICS.items()]
        super().__init__(discord.ui.Select(custom_id="cf:help", placeholder="Topics", options=options))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> HelpSelect:
        return cls()

    async def clicked(self, interaction: discord.Interaction) -> None:
        topic = (self.item.values or ["make"])[0]
        context = await interaction.client.choices.help_context(interaction)
        await interaction.response.edit_message(embed=help_page(topic, context), view=help_view(topic))


def _listed(names: list[str], noun: str, none: str) -> str:
    if not names:
        return none
    return clip(summarize([wording.code(name) for name in names], shown=8, noun=noun, sep=", "), 400)


def _make(c: HelpContext) -> list[str]:
    return [
        "**/generate prompt:<text>** makes images from a description, e.g. `/generate prompt:a lighthouse at dusk`.",
        "• `negative_prompt`: what you do not want to see.",
        f"• `aspect`: {', '.join(c.aspects)}; or `width` and `height`, {c.min_side} to "
        f"{c.max_width} × {c.max_height} pixels.",
        f"• `steps`: 1 to {c.max_steps}; more is slower, and often finer. `cfg`: 1 to 30, how closely to follow "
        "the prompt. `seed`: the same seed and settings give the same image.",
        f"• `batch`: 1 to {c.max_batch} images at once. `model`: {_listed(c.presets, 'models', 'the default model')}.",
        "• `style`, `sampler`, `scheduler`, `lora` and `lora_strength`: see *Styles and flags* and *Models and LoRAs*.",
        "• `priority`: for admins, puts the job ahead of the queue.",
        f"• `control_image`: ControlNet, an image whose composition to follow; `control_type` "
        f"({_listed(c.control_types, 'types', 'none here')}) says what to follow, `control_strength` how closely "
        "(0 to 2, 0.8 if left out), `control_start`/`control_end` during which share of the steps.",
        "• `workflow`: one of your own ComfyUI workflows, or one shared here (**/workflow add** brings one: its "
        "JSON or a PNG ComfyUI saved; /workflow list, show, share, rate, restore, delete); the options set what it has.",
        "**/pipeline run name:poster prompt:<text>** runs several steps as one job (generate → upscale → detail → "
        "animate), one message naming the stage, one result; /pipeline list, show, save (from `steps` or a "
        "result's link), delete.",
        "The result is posted as a new message that mentions you. /status shows the queue and your jobs.",
    ]


def _edit(c: HelpContext) -> list[str]:
    return [
        "**/edit image:<attachment> prompt:<text>** redraws an image of yours, e.g. "
        "`/edit image:photo.jpg prompt:as an oil painting strength:0.5`. PNG, JPEG, WebP or GIF; large ones are "
        "scaled down.",
        "• `strength`: 0.05 keeps the image almost as it is, 1 redraws it all; 0.6 if left out.",
        "• `mask`: white where to redraw; or send an image whose transparent parts are to be redrawn.",
        "• `negative_prompt`, `seed`, `model`, `style` and flags as for /generate.",
        "**/video prompt:<text>** makes a short video from words (`frames`, `fps`, `seed`), where a server can.",
        "**Apps menu** on any message with an image (right-click or long-press → *Apps*): **Vary**, **Upscale** "
        "or **Animate this image**, or **Use as ControlNet input** to draw a new picture that follows its shapes.",
    ]


def _buttons(c: HelpContext) -> list[str]:
    return [
        "🔍 **Upscale 2x / 4x**: a larger, sharper copy of that image; **8x** where it can still be posted.",
        "🪄 **Vary (subtle / strong)**: that image redrawn after its own prompt, a little or a lot.",
        "🎞️ **Animate**: a form with frames, frames per second, motion (1 still to 1023 wild) and seed, filled in; "
        "send it and that image becomes a short video. On the video, **Animate again…** opens it with its values.",
        "🔍 **Upscale 2x** on a video: every frame upscaled, same frame rate. 🎚️ **Interpolate (2x fps)**: a frame made "
        "between every two, twice as smooth (where a server can). A video is posted as MP4, or as WebP or GIF when "
        "the MP4 is too large for this channel; its **Format** line says why.",
        "🎲 **Reroll**: the same request again, with a new seed.",
        "🎛️ **Remix**: a form with the prompt, seed, size, steps and CFG filled in: change them and send.",
        "🔭 **Zoom out 2x / 1.5x**: that image with a new border all around, drawn after its prompt.",
        "⭐ **Favorite**: keep it in /favorites. 🗑️ **Delete**: for whoever made it, or a moderator. "
        "🚩 **Report**: show it to this server's moderators. 🔗 **Share**: a public page of it for whoever made it, "
        "with or without the prompt; **Revoke** or /share revoke takes it down.",
        "✖️ **Cancel**, while a job waits or runs: for whoever started it, or a moderator.",
        "In a batch, the buttons are numbered like the images (#1, #2), and the **More** menu holds Reroll, Remix, "
        "**Upscale all**, Zoom out and Upscale 8x.",
        "Anyone here can use the buttons, and they keep working on old results, even after the bot restarts.",
    ]


def _styles(c: HelpContext) -> list[str]:
    return [
        f"**Styles** wrap your prompt in a template: {_listed(c.styles, 'styles', 'none here yet')}. "
        "Use one with `style:` or `--style NAME`.",
        "`/style save name:ink template:ink drawing of {prompt}, bold lines negative:color` saves your own; "
        "with Manage Server, `server:True` saves one for everyone here. `/style list`, `/style delete name:ink`.",
        "**Flags** in the prompt do what the options do, and win over them:",
        "• `--ar 16:9` shape · `--seed 42` · `--steps 30` · `--cfg 6` · `--no text, watermark` (added to the "
        "negative prompt)",
        "• `--style cinematic` · `--model NAME` or a model's own flag like `--anime` · `--lora NAME:0.8` (up to 3)",
        "e.g. `/generate prompt:a fox in snow --ar 3:2 --style watercolor --no people`",
        "**/settings** saves your defaults (aspect, steps, cfg, sampler, scheduler, style, model); every command "
        "starts from them. `/settings clear:True` forgets them.",
    ]


def _models(c: HelpContext) -> list[str]:
    return [
        f"**Models**: {_listed(c.presets, 'models', 'this bot has one model')}. **/models** shows each with its "
        "description and preview, and lets you pick your default.",
        "**LoRAs** add a look or a subject to the model: `lora:` with `lora_strength:` (-2 to 2, 1 if left out), "
        "or `--lora NAME:0.8` in the prompt, up to 3. Discord suggests the LoRA files the servers have as you type.",
        "**Samplers** and **schedulers**: `sampler:` and `scheduler:` list what the servers offer; left out, the "
        "workflow's own are used.",
        "Some models, styles and LoRAs are only for age-restricted channels; the bot says where to use them.",
    ]


def _work(c: HelpContext) -> list[str]:
    return [
        "**/history** shows your results here, nine at a time as one picture of numbered thumbnails, with "
        "buttons for older and newer ones and a menu to open one (privately, with its buttons).",
        "• Filters: `search:red fox` (words in the prompt), `kind`, `model`, `favorites`, `since` and `until` "
        "(days written 2026-11-28).",
        "**/favorites** is the same for what you marked with ⭐.",
        "**/gallery** gives you a private link to all your results here on a web page (it expires; keep it "
        "to yourself).",
        "**/usage** shows what you made and used today and this month, and your limits.",
        "**/credits**, where jobs cost credits: `balance` (and the prices), `history`, `gift`; `buy`, where the bot "
        "sells them: a private button per pack opens Stripe's payment page, and the credits reach your balance "
        "here once it is paid (a refund or dispute takes them back). A job's message says what it costs; a job "
        "that fails or is cancelled is refunded.",
    ]


def _limits(c: HelpContext) -> list[str]:
    return [
        f"{wording.plural(c.jobs_per_user, 'job')} per person at a time, and about "
        f"{wording.plural(c.commands_per_minute, 'command')} or button clicks a minute. If you reach a limit, the "
        "bot tells you when to try again.",
        f"Images up to {c.max_width} × {c.max_height} pixels, {c.max_steps} steps and {c.max_batch} at once. "
        "A result too large for the channel is recompressed to fit.",
        "Jobs are taken in turn across people: one person's four jobs never hold back another's first.",
        "A server's admins may set daily or monthly limits (images, GPU time, cost); a job over one is refused "
        "with when it resets. /usage shows yours.",
    ]


def _faq(c: HelpContext) -> list[str]:
    return [
        "**Where is my image?** It is posted as a new message that mentions you, in this channel (or, for an "
        "age-restricted job, in the channel the message names).",
        "**Why the same image twice?** The same seed and settings give the same image: leave `seed` out, or Reroll.",
        "**It says a model or LoRA is not available.** No server has that file right now; pick another one.",
        "**Can I stop a job?** Yes: ✖️ Cancel under its message.",
        "**Do buttons on old results work?** Yes, even after the bot restarts.",
    ]


PAGES = {"make": _make, "edit": _edit, "buttons": _buttons, "styles": _styles, "models": _models,
         "work": _work, "limits": _limits, "faq": _faq}


Help.dynamic_items = (HelpSelect,)
