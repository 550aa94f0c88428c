"""The buttons, menus and forms on an image, and the Apps menus on any message with one: Upscale,
Vary, Animate, Zoom out, Reroll, Remix, Upscale all, and ControlNet from any message's image.

Every handler answers in words: what it started, or why it could not. Nothing here is kept in memory
between a click and its job: a form carries what it needs in its custom_id, and its answer is read
from the interaction itself.
"""

# No `from __future__ import annotations` here: discord.py reads the cogs' annotations at runtime.

import asyncio
import re

import discord
import structlog
from discord import app_commands
from discord.ext import commands

from cogs.choices import NO_CONTROLNET
from cogs.common import AreaCog, refuse_if_limited, start_job, tell
from image_gen import CONTROL, RequestError, area_size
from jobs import kinds, wording
from results.folder import OutputError
from safe_text import clip
from ui.buttons import (VARY_SUBTLE, AnimateButton, MoreSelect, RemixButton, RerollButton, UpscaleButton, VaryButton,
                        ZoomButton)
from ui.views import controlnet_modal, remix_modal

log = structlog.get_logger("bot")

ITEMS = (UpscaleButton, VaryButton, AnimateButton, RerollButton, ZoomButton, MoreSelect, RemixButton)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
VARY_PROMPT = "a variation of this image"  # for an image that comes with no words of its own
REMIX_MODAL = re.compile(r"cf:remix:(?P<gen>\d{1,18})")
SIZE = re.compile(r"\s*(\d{2,5})\s*[x×X*]\s*(\d{2,5})\s*")
CONTROLNET_MODAL = re.compile(r"cf:cnet:(?P<channel>\d{1,20}):(?P<message>\d{1,20})")


def is_image(attachment: discord.Attachment) -> bool:
    return (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(IMAGE_SUFFIXES)


class Images(AreaCog):
    """The buttons, menus and forms on an image: each starts a job whose input is that image."""

    dynamic_items = ITEMS

    def __init__(self, bot: commands.Bot) -> None:
        super().__init__(bot)
        self.menus = context_menus()

    async def cog_load(self) -> None:
        await super().cog_load()
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        await super().cog_unload()
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A form of ours is read here, from the interaction itself: none needs to be in memory."""
        if interaction.type != discord.InteractionType.modal_submit:
            return
        try:
            await self.on_modal_submit(interaction)
        except Exception as error:
            await self.bot.on_item_error(interaction, error, str((interaction.data or {}).get("custom_id", "")))

    async def on_image_button(self, interaction: discord.Interaction, kind: str, generation_id: int,
                              index: int, factor: int = 0, strength: float | None = None,
                              zoom: float | None = None, values: dict | None = None) -> None:
        """Upscale, Vary or Animate clicked: a new job whose input is that image of that generation
        (a variation redraws it after the prompt that made it, at `strength`; `values`: what Animate's form set)."""
        if await refuse_if_limited(self.bot, interaction):
            return
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None or index >= len(generation.files):
            await interaction.response.send_message("That result is not known to this bot any more.", ephemeral=True)
            return
        callback = await interaction.response.defer(thinking=True)
        try:
            name = await self._input_image(interaction, generation, index)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        request = {**kinds.derived(await self._made(generation), generation.params), "input": name}
        if kind == "upscale":
            request.update(factor=factor, width=generation.params.get("width"), height=generation.params.get("height"))
        if strength is not None:
            request["strength"] = strength
        if zoom is not None:
            request["zoom"] = zoom
        if kind == "animate":  # the video actions its result may offer
            request.update(values or {}, offers=self.bot.choices.offered_video_actions())
        await start_job(self.bot, interaction, kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id, source_index=index)

    async def on_message_image(self, interaction: discord.Interaction, message: discord.Message, action: str) -> None:
        """Apps -> Vary / Upscale / Animate this image: a job whose input is the message's first image.
        A variation of one of the bot's own results keeps its prompt; of anything else, the message's
        text is the prompt."""
        if await refuse_if_limited(self.bot, interaction):
            return
        attachment = next((a for a in message.attachments if is_image(a)), None)
        if attachment is None:
            await interaction.response.send_message("That message has no image to use.", ephemeral=True)
            return
        callback = await interaction.response.defer(thinking=True)
        try:
            name, (width, height), _ = await self.bot.inputs.input_image(attachment)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        generation = await self.bot.store.generation_by_message(message.id) if message.author.id == self.bot.user.id else None
        made = kinds.derived(await self._made(generation), generation.params) if generation is not None else {}
        request = {**made, "input": name}
        kind = {"vary": "img2img", "upscale": "upscale"}.get(action, "animate")
        if action == "vary":
            request.setdefault("prompt", clip(message.content, 1500).strip() or VARY_PROMPT)
            request.update(width=width, height=height, strength=VARY_SUBTLE)
        elif action == "upscale":
            request.update(factor=2, width=width, height=height)
        else:  # the video actions its result may offer
            request["offers"] = self.bot.choices.offered_video_actions()
        await start_job(self.bot, interaction, kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation.id if generation is not None else None)

    async def on_reroll_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Reroll clicked: the same request as that result's, with a new seed."""
        if await refuse_if_limited(self.bot, interaction):
            return
        generation = await self.bot.store.get_generation(generation_id)
        job = await self.bot.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None or "input" in job.request:
            await interaction.response.send_message("That result is not known to this bot any more.", ephemeral=True)
            return
        callback = await interaction.response.defer(thinking=True)
        request = kinds.derived(job.request, generation.params, again=True)
        await start_job(self.bot, interaction, job.kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id)

    async def _made(self, generation) -> dict:
        """The request of the job that made a result; empty when that job is gone."""
        job = await self.bot.store.get_job(generation.job_id) if generation.job_id else None
        return job.request if job is not None else {}

    async def _input_image(self, interaction: discord.Interaction, generation, index: int) -> str:
        """The image's file name in the output folder, pinned; fetched from Discord's CDN if pruned."""
        path = self.bot.settings.outputs_dir / generation.files[index]
        if await asyncio.to_thread(path.is_file):
            try:
                self.bot.outputs.pin(path)
                return path.name
            except OutputError:
                pass  # pruned between the check and the pin: fall back to the attachment
        urls = list(generation.attachment_urls)
        if not urls and interaction.message is not None:
            urls = [attachment.url for attachment in interaction.message.attachments]
        if index >= len(urls):
            raise ValueError("the file is gone from the bot's folder and the message has no attachment to use")
        return (await self.bot.inputs.fetch(urls[index], generation.files[index])).name

    async def on_more_select(self, interaction: discord.Interaction, generation_id: int, value: str) -> None:
        """An option of a batch's "More" menu: Reroll, Upscale all, or Zoom out / Upscale 8x of one image."""
        action, _, argument = value.partition(":")
        if action == "reroll":
            await self.on_reroll_button(interaction, generation_id)
        elif action == "remix":
            await self.on_remix_button(interaction, generation_id)
        elif action == "favorite":
            await self.bot.get_cog("History").on_favorite_button(interaction, generation_id)
        elif action == "delete":
            await self.bot.get_cog("History").on_delete_button(interaction, generation_id, False)
        elif action == "report":
            await self.bot.get_cog("Admin").on_report_button(interaction, generation_id)
        elif action == "share":
            await self.bot.get_cog("Sharing").on_share_button(interaction, generation_id)
        elif action == "all" and argument in ("2", "4"):
            await self.on_upscale_all(interaction, generation_id, int(argument))
        elif action in ("zoom", "zoom15") and argument.isdigit() and len(argument) <= 2:
            await self.on_image_button(interaction, "outpaint", generation_id, int(argument),
                                       zoom=2.0 if action == "zoom" else 1.5)
        elif action == "up8" and argument.isdigit() and len(argument) <= 2:
            await self.on_image_button(interaction, "upscale", generation_id, int(argument), 8)
        else:
            log.info("unknown_menu_choice", value=value[:100], user_id=interaction.user.id)
            await tell(interaction, "That choice is no longer supported by the bot. Start a new job instead.")
        await self._reset_menu(interaction)

    async def _reset_menu(self, interaction: discord.Interaction) -> None:
        """Discord keeps showing the option just picked, and the same one cannot be picked twice: the
        message gets its menu back as it was, so Reroll can be picked again."""
        if interaction.message is None:
            return
        view = discord.ui.View.from_message(interaction.message, timeout=None)
        try:
            await interaction.message.edit(view=view)
        except discord.HTTPException as error:
            log.info("menu_not_reset", status=error.status, message_id=interaction.message.id)
        finally:
            view.stop()

    async def on_upscale_all(self, interaction: discord.Interaction, generation_id: int, factor: int) -> None:
        """Upscale all: every image of a batch upscaled in one job (one prompt, one result message)."""
        if await refuse_if_limited(self.bot, interaction):
            return
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None:
            await interaction.response.send_message("That result is not known to this bot any more.", ephemeral=True)
            return
        callback = await interaction.response.defer(thinking=True)
        names: list[str] = []
        try:
            for index in range(len(generation.files)):
                names.append(await self._input_image(interaction, generation, index))
        except (OutputError, ValueError) as error:
            for name in names:
                self.bot.outputs.release(self.bot.settings.outputs_dir / name)
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        request = {"input": names[0], "inputs": names, "factor": factor,
                   "width": generation.params.get("width"), "height": generation.params.get("height")}
        await start_job(self.bot, interaction, "upscale", request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id)

    # ControlNet ------------------------------------------------------------------

    async def on_controlnet_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps -> Use as ControlNet input: a form asks for the prompt, the type and the strength; the
        form's custom_id names the message, so it still works if the bot restarts while it is open."""
        if not any(is_image(attachment) for attachment in message.attachments):
            await interaction.response.send_message("That message has no image to use.", ephemeral=True)
            return
        offered = self.bot.choices.offered_control_types()
        if not offered:
            await interaction.response.send_message(NO_CONTROLNET, ephemeral=True)
            return
        await interaction.response.send_modal(controlnet_modal(message.channel.id, message.id, offered,
                                                               clip(message.content, 1500).strip()))

    async def on_modal_submit(self, interaction: discord.Interaction) -> None:
        """A form of ours was sent: read from the interaction itself, so none needs to be in memory."""
        data = interaction.data or {}
        fields = modal_values(data.get("components"))
        remix = REMIX_MODAL.fullmatch(str(data.get("custom_id", "")))
        if remix is not None:
            await self.on_remix_submit(interaction, int(remix["gen"]), fields)
            return
        match = CONTROLNET_MODAL.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return
        prompt = str(fields.get("prompt") or "").strip()
        control_type = (fields.get("control_type") or [None])[0] if isinstance(fields.get("control_type"), list) \
            else fields.get("control_type")
        low, high, default = CONTROL["strength"]
        try:
            strength = float(fields.get("strength") or default)
        except ValueError:
            strength = -1.0
        if not low <= strength <= high:
            await tell(interaction, f"Strength must be a number from {low:g} to {high:g}, like {default:g}.")
            return
        if not prompt:
            await tell(interaction, "Write what the image should show: the prompt cannot be empty.")
            return
        if not await self.bot.choices.control_type_offered(interaction, control_type) or await refuse_if_limited(self.bot, interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        try:  # the person's defaults, style and flags apply here as in /generate
            request = await self.bot.choices.request_for(interaction, clip(prompt, 1500), {}, sized="asked")
        except ValueError as error:  # RequestError, FlagError: a sentence
            await interaction.edit_original_response(content=wording.failed("controlnet", str(error)))
            return
        try:
            source = await self.bot.get_partial_messageable(int(match["channel"])).fetch_message(int(match["message"]))
        except discord.HTTPException:
            await interaction.edit_original_response(content=wording.cannot_use(
                "the message with the image is gone, or the bot may not read it"))
            return
        await self.start_controlnet(interaction, next((a for a in source.attachments if is_image(a)), None),
                                    {**request, "control_type": control_type, "control_strength": strength}, callback)

    async def start_controlnet(self, interaction: discord.Interaction, attachment: discord.Attachment | None,
                               request: dict, callback, **fields) -> None:
        """After defer: fetch the control image and start the job, drawn at the image's shape with the
        default number of pixels unless the request names a size."""
        if attachment is None:
            await interaction.edit_original_response(content=wording.cannot_use("that message has no image"))
            return
        try:
            name, size, _ = await self.bot.inputs.input_image(attachment)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        settings = self.bot.settings
        if not request.get("width") or not request.get("height"):
            request["width"], request["height"] = area_size(size, settings.default_width * settings.default_height,
                                                            settings.max_width, settings.max_height)
        request.setdefault("model", settings.checkpoint)
        await start_job(self.bot, interaction, "controlnet", {**request, "input": name},
                             message_id=callback.message_id if callback else None, **fields)

    # Remix -------------------------------------------------------------------------

    async def on_remix_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Remix: a form with the result's prompt, negative prompt, seed, size, steps and cfg (the values
        that made it, defaults included), to edit and send again as a new job that links its parent."""
        generation = await self.bot.store.get_generation(generation_id)
        job = await self.bot.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None or job.kind != "txt2img":
            await interaction.response.send_message("That result is not known to this bot any more.", ephemeral=True)
            return
        used = {key: generation.params[key] for key in ("seed", "steps", "cfg") if generation.params.get(key) is not None}
        if "cfg" in used:
            used["cfg"] = f"{float(used['cfg']):g}"  # 7, not 7.0
        await interaction.response.send_modal(remix_modal(generation_id, {**job.request, **used}))

    async def on_remix_submit(self, interaction: discord.Interaction, generation_id: int,
                              fields: dict) -> None:
        generation = await self.bot.store.get_generation(generation_id)
        job = await self.bot.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None:
            await tell(interaction, "That result is not known to this bot any more.")
            return
        try:
            changes = remix_changes(fields)
        except RequestError as error:
            await tell(interaction, f"That remix cannot be made: {clip(str(error), 300)}.")
            return
        if await refuse_if_limited(self.bot, interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        request = {**kinds.derived(job.request, generation.params, again=True), **changes}
        if request.get("prompt") != job.request.get("prompt"):
            request.pop("model_reason", None)  # the model stays; why model:auto chose it was the old prompt
        await start_job(self.bot, interaction, job.kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id)


def context_menus() -> list[app_commands.ContextMenu]:
    """Apps -> Vary / Upscale / Animate this image and Use as ControlNet input, on any message with an
    image: the bot's own results, other people's and other bots'."""
    def menu(name: str, action: str) -> app_commands.ContextMenu:
        async def callback(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.client.get_cog("Images").on_message_image(interaction, message, action)

        return app_commands.ContextMenu(name=name, callback=callback)

    async def controlnet(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.client.get_cog("Images").on_controlnet_menu(interaction, message)

    return [menu("Vary this image", "vary"), menu("Upscale this image", "upscale"),
            menu("Animate this image", "animate"),
            app_commands.ContextMenu(name="Use as ControlNet input", callback=controlnet)]


def modal_values(components: object) -> dict[str, str | list[str]]:
    """A submitted form's values by custom_id: a text input's text, a select's list of values.
    Fields sit in action rows (type 1) or labels (type 18); anything else is ignored."""
    values: dict[str, str | list[str]] = {}
    rows = components if isinstance(components, list) else []
    for row in rows[:10]:
        if not isinstance(row, dict):
            continue
        inner = row.get("components") if row.get("type") == 1 else [row.get("component")]
        for field in inner if isinstance(inner, list) else []:
            if isinstance(field, dict) and isinstance(field.get("custom_id"), str):
                value = field.get("values") if isinstance(field.get("values"), list) else field.get("value")
                values[field["custom_id"]] = [str(v) for v in value] if isinstance(value, list) else str(value or "")
    return values


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
