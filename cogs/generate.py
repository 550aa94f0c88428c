"""Making images: /generate, /edit and /status, with limits and choices from the settings, and the
Cancel button.

Discord reads each option's range and choices from the annotations, so the limits a person sees
are the ones the bot enforces. A command checks what Discord cannot (a model preset, the priority
lane, the person's limits), acknowledges within Discord's 3 s, and hands a request to the bot
(`interaction.client`: bot.ComfyBot; cogs/common.start_job records the job and queues it).
"""

# No `from __future__ import annotations` here: discord.py reads the command
# parameters' annotations (Range limits taken from the settings) at runtime.

import discord
from discord import app_commands

from discord.ext import commands

from cogs.common import AreaCog, may_use_priority, refuse_if_limited, start_job
from config import Settings
from image_gen import CONTROL, SEED_LIMIT, STRENGTH
from jobs import cluster_view, wording
from jobs.compose import ASPECTS
from jobs.flags import FlagError, parse
from results.folder import OutputError
from ui.buttons import CancelButton
from ui.status import status_embed

class Generate(AreaCog):
    """/generate, /edit and /status, and the Cancel button under a job that waits or runs."""

    dynamic_items = (CancelButton,)

    def __init__(self, bot: commands.Bot) -> None:
        super().__init__(bot)
        self.slash_commands = make_commands(bot.settings)  # their ranges come from the settings

    async def cog_load(self) -> None:
        await super().cog_load()
        for command in self.slash_commands:
            self.bot.tree.add_command(command)

    async def cog_unload(self) -> None:
        await super().cog_unload()
        for command in self.slash_commands:
            self.bot.tree.remove_command(command.name)

    async def on_cancel_button(self, interaction: discord.Interaction, job_id: int) -> None:
        """Cancel: the job's owner, or anyone who may manage messages in the channel."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.bot.store.get_job(job_id)
        if job is None:
            await interaction.followup.send("That job is not known to this bot.", ephemeral=True)
            return
        if interaction.user.id != job.user_id and not interaction.permissions.manage_messages:
            await interaction.followup.send("Only the person who started this job, or a moderator, can cancel it.",
                                            ephemeral=True)
            return
        await interaction.followup.send(await self.bot.scheduler.cancel(job_id, interaction.user.id), ephemeral=True)


def make_commands(settings: Settings) -> list[app_commands.Command]:
    """The slash commands, with ranges and choices taken from the settings."""
    max_w, max_h, max_steps, max_batch = settings.max_width, settings.max_height, settings.max_steps, settings.max_batch
    low, high, default = CONTROL["strength"]

    @app_commands.command(description="Make images from a text description")
    @app_commands.describe(
        prompt="What to draw; flags like --ar 16:9 --seed 42 --no text --style anime work too (see /help)",
        negative_prompt="What to avoid", aspect="Shape of the image (ignored if width/height given)",
        width=f"Width in pixels (64-{max_w})", height=f"Height in pixels (64-{max_h})", steps=f"Sampling steps (1-{max_steps})",
        cfg="How closely to follow the prompt (1-30)", seed="Same seed and settings give the same image",
        batch=f"How many images (1-{max_batch})", model="Which model to use (see /models)",
        style="A style: a prompt template such as cinematic or watercolor (see /style list)",
        sampler="The sampler (the server's list; the workflow's if left out)", scheduler="The noise schedule",
        lora="A LoRA from the server's list (more with --lora NAME:0.8 in the prompt)",
        lora_strength="How strongly the LoRA applies (-2 to 2, default 1)",
        priority="Admins only: put this job ahead of the queue",
        control_image="ControlNet: an image whose composition to follow (its edges, depth, pose or lines)",
        control_type="ControlNet: what to follow in control_image (canny: its edges, if left out)",
        control_strength=f"ControlNet: how closely to follow it ({low:g}-{high:g}, default {default:g})",
        control_start="ControlNet: from which share of the steps it applies (0-1, default 0)",
        control_end="ControlNet: until which share of the steps it applies (0-1, default 1)",
        workflow="One of your own ComfyUI workflows, or one shared here (/workflow list); the options set what it has")
    @app_commands.choices(aspect=[app_commands.Choice(name=f"{name} ({w}:{h})", value=name) for name, (w, h) in ASPECTS.items()])
    async def generate(interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 1500],
                       negative_prompt: app_commands.Range[str, 0, 1500] | None = None,
                       aspect: app_commands.Choice[str] | None = None,
                       width: app_commands.Range[int, 64, max_w] | None = None,
                       height: app_commands.Range[int, 64, max_h] | None = None,
                       steps: app_commands.Range[int, 1, max_steps] | None = None,
                       cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
                       seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None,
                       batch: app_commands.Range[int, 1, max_batch] = 1,
                       model: str | None = None, style: app_commands.Range[str, 1, 32] | None = None,
                       sampler: app_commands.Range[str, 1, 100] | None = None,
                       scheduler: app_commands.Range[str, 1, 100] | None = None,
                       lora: app_commands.Range[str, 1, 200] | None = None,
                       lora_strength: app_commands.Range[float, -2.0, 2.0] | None = None,
                       priority: bool = False,
                       control_image: discord.Attachment | None = None, control_type: str | None = None,
                       control_strength: app_commands.Range[float, low, high] | None = None,
                       control_start: app_commands.Range[float, 0.0, 1.0] | None = None,
                       control_end: app_commands.Range[float, 0.0, 1.0] | None = None,
                       workflow: app_commands.Range[str, 1, 100] | None = None) -> None:
        bot = interaction.client  # bot.ComfyBot
        if priority and not may_use_priority(bot, interaction):
            await interaction.response.send_message("Only admins can use the priority lane.", ephemeral=True)
            return
        controls = {"control_type": control_type, "control_strength": control_strength,
                    "control_start": control_start, "control_end": control_end}
        if workflow is not None and control_image is not None:
            await interaction.response.send_message(
                "A `workflow` takes no `control_image`; leave one of them out.", ephemeral=True)
            return
        if control_image is None and any(value is not None for value in controls.values()):
            await interaction.response.send_message(
                "The control options need a `control_image` to follow; add one, or leave them out.", ephemeral=True)
            return
        if not await bot.choices.model_offered(interaction, model) or await refused_flags(interaction, prompt):
            return
        if control_image is not None and not await bot.choices.control_type_offered(interaction, control_type):
            return
        if await refuse_if_limited(bot, interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        options = {"negative_prompt": negative_prompt, "aspect": aspect.value if aspect else None, "width": width,
                   "height": height, "steps": steps, "cfg": cfg, "seed": seed, "model": model, "style": style,
                   "sampler": sampler, "scheduler": scheduler, "lora": lora, "lora_strength": lora_strength}
        if workflow is not None:  # someone's own workflow: cogs/workflows.py binds what it has
            await bot.get_cog("Workflows").start(interaction, workflow, prompt, options, batch, callback,
                                                 priority=1 if priority else 0)
            return
        kind = "controlnet" if control_image is not None else "txt2img"
        try:  # a control image gives its shape unless a size is asked for
            request = await bot.choices.request_for(interaction, prompt, options, sized=True if kind == "txt2img" else "asked")
        except ValueError as error:  # RequestError, FlagError: a sentence
            await interaction.edit_original_response(content=wording.failed(kind, str(error)))
            return
        request["batch"] = batch
        if control_image is not None:
            await bot.get_cog("Images").start_controlnet(interaction, control_image, {**request, **controls}, callback,
                                       priority=1 if priority else 0)
            return
        await start_job(bot, interaction, "txt2img", request, message_id=callback.message_id if callback else None,
                            priority=1 if priority else 0)

    @app_commands.command(name="edit", description="Redraw an image of yours after a prompt")
    @app_commands.describe(
        image="The image to start from: PNG, JPEG, WebP or GIF", prompt="What it should become (flags work too)",
        mask="Optional: white where the image is redrawn (or send an image whose transparent parts are)",
        strength="How much to redraw: 0.05 keeps it, 1 redraws it all (default 0.6)",
        negative_prompt="What to avoid", seed="Same seed and settings give the same image", model="Which model to use",
        style="A style: a prompt template such as cinematic or watercolor")
    async def edit(interaction: discord.Interaction, image: discord.Attachment,
                   prompt: app_commands.Range[str, 1, 1500],
                   strength: app_commands.Range[float, STRENGTH[0], STRENGTH[1]] = STRENGTH[2],
                   negative_prompt: app_commands.Range[str, 0, 1500] | None = None,
                   seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None, model: str | None = None,
                   mask: discord.Attachment | None = None, style: app_commands.Range[str, 1, 32] | None = None) -> None:
        bot = interaction.client  # bot.ComfyBot
        if not await bot.choices.model_offered(interaction, model) or await refused_flags(interaction, prompt):
            return
        if await refuse_if_limited(bot, interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        kind = "inpaint" if mask is not None else "img2img"
        try:
            request = await bot.choices.request_for(interaction, prompt, {"negative_prompt": negative_prompt, "seed": seed,
                                                                  "model": model, "style": style}, sized=False)
        except ValueError as error:  # RequestError, FlagError: a sentence
            await interaction.edit_original_response(content=wording.failed(kind, str(error)))
            return
        try:
            name, (width, height), masked = await bot.inputs.input_image(image, mask)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        request.update(input=name, mask=masked, strength=strength, width=width, height=height)
        kind = "inpaint" if masked else "img2img"  # a mask: only its white part is redrawn
        await start_job(bot, interaction, kind, request, message_id=callback.message_id if callback else None)

    @generate.autocomplete("control_type")
    async def control_types(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        bot = interaction.client  # bot.ComfyBot
        return [app_commands.Choice(name=name, value=name) for name in bot.choices.offered_control_types()
                if current.lower() in name.lower()][:25]

    @edit.autocomplete("model")
    @generate.autocomplete("model")
    async def model_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(interaction.client.choices.model_names(interaction.channel), current)

    @edit.autocomplete("style")
    @generate.autocomplete("style")
    async def style_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(await interaction.client.choices.offered_styles(interaction), current)

    @generate.autocomplete("workflow")
    async def workflow_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await interaction.client.get_cog("Workflows").names(interaction, current)

    @generate.autocomplete("lora")
    async def lora_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(interaction.client.choices.offered_loras(interaction.channel), current)

    @generate.autocomplete("sampler")
    async def sampler_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(interaction.client.choices.values("KSampler", "sampler_name"), current)

    @generate.autocomplete("scheduler")
    async def scheduler_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(interaction.client.choices.values("KSampler", "scheduler"), current)

    @app_commands.command(name="status", description="The ComfyUI servers, the queue, and your jobs")
    async def status_command(interaction: discord.Interaction) -> None:
        bot = interaction.client  # bot.ComfyBot
        status = await cluster_view.status(bot.scheduler, bot.store, interaction.user.id)
        members = await cluster_view.members(bot.store) if bot.scheduler.shared else None
        embed = status_embed(status, members)
        embed.add_field(name="Today", inline=False, value=await bot.limits.usage_today(interaction.guild_id, interaction.user.id))
        await interaction.response.send_message(embed=embed, ephemeral=True)

    return [generate, edit, status_command]


async def refused_flags(interaction: discord.Interaction, prompt: str) -> bool:
    """A flag that is unknown, badly given or names a model no server has: refused before anything is
    started, privately (only the person sees it), offering the flags that can be used here."""
    if "--" not in prompt and "—" not in prompt:
        return False
    bot = interaction.client  # bot.ComfyBot
    presets = bot.settings.model_presets
    offered = [name for name, preset in presets.items()
               if bot.scheduler.pool.offers("txt2img", {"checkpoint": preset.checkpoint})]
    try:
        parse(prompt, presets=list(presets), styles=list(await bot.choices.styles_for(interaction)), offered=offered)
    except FlagError as error:
        await interaction.response.send_message(wording.not_queued(str(error)), ephemeral=True)
        return True
    return False


def matching(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    """Autocomplete: the names containing what was typed so far, at most 25 (Discord's limit)."""
    typed = current.lower()
    return [app_commands.Choice(name=name[:100], value=name[:100]) for name in names if typed in name.lower()][:25]
