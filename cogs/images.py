"""What a button, a select menu, an Apps menu or a modal on an image starts: Upscale, Vary, Animate,
Zoom out, Reroll, Upscale all, and ControlNet from any message's image.

`ImageActions` is a part of bot.ComfyBot (it uses the bot's store, settings, output folder and
`start_job`). Every handler answers in words: what it started, or why it could not. Nothing here
is kept in memory between a click and its job: a modal carries what it needs in its custom_id.
"""

# No `from __future__ import annotations` here, as in bot.py.

import asyncio
import re
from pathlib import Path
from urllib.parse import urlsplit

import discord
import structlog
import yarl

from jobs import kinds
from jobs import wording
from image_gen import CONTROL, area_size
from results.media import fit_input, fit_mask, verify
from results.folder import OutputError
from safe_text import clip
from cogs.creative import REMIX_MODAL
from ui.views import VARY_SUBTLE, controlnet_modal

log = structlog.get_logger("bot")

MAX_REDIRECTS = 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
VARY_PROMPT = "a variation of this image"  # for an image that comes with no words of its own
NO_CONTROLNET = "ControlNet is not available on this bot's servers right now."
CONTROLNET_MODAL = re.compile(r"cf:cnet:(?P<channel>\d{1,20}):(?P<message>\d{1,20})")


def is_image(attachment: discord.Attachment) -> bool:
    return (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(IMAGE_SUFFIXES)


class ImageActions:
    """The handlers of bot.ComfyBot that start a job from an image."""

    async def on_image_button(self, interaction: discord.Interaction, kind: str, generation_id: int,
                              index: int, factor: int = 0, strength: float | None = None,
                              zoom: float | None = None) -> None:
        """Upscale, Vary or Animate clicked: a new job whose input is that image of that generation
        (a variation redraws it after the prompt that made it, at `strength`)."""
        if await self.refuse_if_limited(interaction):
            return
        generation = await self.store.get_generation(generation_id)
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
        await self.start_job(interaction, kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id, source_index=index)

    async def on_message_image(self, interaction: discord.Interaction, message: discord.Message, action: str) -> None:
        """Apps -> Vary / Upscale / Animate this image: a job whose input is the message's first image.
        A variation of one of the bot's own results keeps its prompt; of anything else, the message's
        text is the prompt."""
        if await self.refuse_if_limited(interaction):
            return
        attachment = next((a for a in message.attachments if is_image(a)), None)
        if attachment is None:
            await interaction.response.send_message("That message has no image to use.", ephemeral=True)
            return
        callback = await interaction.response.defer(thinking=True)
        try:
            name, (width, height), _ = await self.input_image(attachment)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        generation = await self.store.generation_by_message(message.id) if message.author.id == self.user.id else None
        made = kinds.derived(await self._made(generation), generation.params) if generation is not None else {}
        request = {**made, "input": name}
        kind = {"vary": "img2img", "upscale": "upscale"}.get(action, "animate")
        if action == "vary":
            request.setdefault("prompt", clip(message.content, 1500).strip() or VARY_PROMPT)
            request.update(width=width, height=height, strength=VARY_SUBTLE)
        elif action == "upscale":
            request.update(factor=2, width=width, height=height)
        await self.start_job(interaction, kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation.id if generation is not None else None)

    async def on_reroll_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Reroll clicked: the same request as that result's, with a new seed."""
        if await self.refuse_if_limited(interaction):
            return
        generation = await self.store.get_generation(generation_id)
        job = await self.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None or "input" in job.request:
            await interaction.response.send_message("That result is not known to this bot any more.", ephemeral=True)
            return
        callback = await interaction.response.defer(thinking=True)
        request = kinds.derived(job.request, generation.params, again=True)
        await self.start_job(interaction, job.kind, request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id)

    async def _made(self, generation) -> dict:
        """The request of the job that made a result; empty when that job is gone."""
        job = await self.store.get_job(generation.job_id) if generation.job_id else None
        return job.request if job is not None else {}

    async def _input_image(self, interaction: discord.Interaction, generation, index: int) -> str:
        """The image's file name in the output folder, pinned; fetched from Discord's CDN if pruned."""
        path = self.settings.outputs_dir / generation.files[index]
        if await asyncio.to_thread(path.is_file):
            try:
                self.outputs.pin(path)
                return path.name
            except OutputError:
                pass  # pruned between the check and the pin: fall back to the attachment
        urls = list(generation.attachment_urls)
        if not urls and interaction.message is not None:
            urls = [attachment.url for attachment in interaction.message.attachments]
        if index >= len(urls):
            raise ValueError("the file is gone from the bot's folder and the message has no attachment to use")
        return (await self._fetch_attachment(urls[index], generation.files[index])).name

    async def input_image(self, attachment: discord.Attachment,
                          mask: discord.Attachment | None = None) -> tuple[str, tuple[int, int], str | None]:
        """A person's attachment as a job's input: fetched from the CDN under the cap, read by its content
        (not its name), turned upright, fitted to MAX_WIDTH x MAX_HEIGHT. Returns its name in the output
        folder (pinned), its size, and the name of a mask (white = redraw) when one was sent or the image
        has transparent parts; None otherwise."""
        fetched = await self._fetch_attachment(attachment.url, attachment.filename, checked=False)
        try:
            raw_mask = await self._fetch_attachment(mask.url, mask.filename, checked=False) if mask else None
        except BaseException:
            await self.outputs.discard(fetched)
            raise
        return await self.prepared_input(fetched, raw_mask)

    async def prepared_input(self, raw: Path, raw_mask: Path | None = None) -> tuple[str, tuple[int, int], str | None]:
        """Downloaded bytes (a Discord attachment, an API upload) as a job's input, as `input_image`
        describes; the raw files are discarded whatever happens."""
        try:
            data, size, alpha = await fit_input(raw, self.settings.max_width, self.settings.max_height)
            if raw_mask is not None:
                alpha = await fit_mask(raw_mask, size)
        finally:
            await self.outputs.discard(raw)
            if raw_mask is not None:
                await self.outputs.discard(raw_mask)
        name = (await self.outputs.save_bytes("input.png", data)).name
        masked = (await self.outputs.save_bytes("mask.png", alpha)).name if alpha is not None else None
        return name, size, masked

    async def _fetch_attachment(self, url: str, name: str, *, checked: bool = True) -> Path:
        """Download an image from Discord's CDN into the output folder, pinned: only from CDN_HOSTS
        (redirects too), streamed under DOWNLOAD_LIMIT, and (`checked`) the image its name says."""
        limit = self.settings.download_limit
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or parts.hostname not in self.settings.cdn_hosts:
                log.warning("attachment_host_refused", host=parts.hostname)
                raise ValueError("that attachment is not on Discord's CDN, so the bot will not download it")
            async with self._fetch_session.get(url, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = str(response.url.join(yarl.URL(response.headers["Location"])))
                    continue
                if response.status != 200:
                    raise ValueError(f"Discord's CDN answered {response.status} for the attachment")
                if (response.content_length or 0) > limit:
                    raise ValueError(f"the attachment is larger than {limit // (1024 * 1024)} MiB")
                path = await self.outputs.save_stream(name, response.content.iter_chunked(256 * 1024),
                                                      max_bytes=limit)
            try:
                if checked:
                    await verify(path)
            except OutputError:
                await self.outputs.discard(path)
                raise
            return path
        raise ValueError("Discord's CDN redirected too often for the attachment")

    async def on_more_select(self, interaction: discord.Interaction, generation_id: int, value: str) -> None:
        """An option of a batch's "More" menu: Reroll, Upscale all, or Zoom out / Upscale 8x of one image."""
        action, _, argument = value.partition(":")
        if action == "reroll":
            await self.on_reroll_button(interaction, generation_id)
        elif action == "remix":
            await self.on_remix_button(interaction, generation_id)
        elif action == "favorite":
            await self.on_favorite_button(interaction, generation_id)
        elif action == "delete":
            await self.on_delete_button(interaction, generation_id, False)
        elif action == "report":
            await self.on_report_button(interaction, generation_id)
        elif action == "all" and argument in ("2", "4"):
            await self.on_upscale_all(interaction, generation_id, int(argument))
        elif action in ("zoom", "zoom15") and argument.isdigit() and len(argument) <= 2:
            await self.on_image_button(interaction, "outpaint", generation_id, int(argument),
                                       zoom=2.0 if action == "zoom" else 1.5)
        elif action == "up8" and argument.isdigit() and len(argument) <= 2:
            await self.on_image_button(interaction, "upscale", generation_id, int(argument), 8)
        else:
            log.info("unknown_menu_choice", value=value[:100], user_id=interaction.user.id)
            await self.tell(interaction, "That choice is no longer supported by the bot. Start a new job instead.")
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
        if await self.refuse_if_limited(interaction):
            return
        generation = await self.store.get_generation(generation_id)
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
                self.outputs.release(self.settings.outputs_dir / name)
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        request = {"input": names[0], "inputs": names, "factor": factor,
                   "width": generation.params.get("width"), "height": generation.params.get("height")}
        await self.start_job(interaction, "upscale", request, message_id=callback.message_id if callback else None,
                             source_generation_id=generation_id)

    # ControlNet ------------------------------------------------------------------

    def offered_control_types(self) -> list[str]:
        """The ControlNet types people may choose: those the operator gave a model file whose workflow,
        preprocessor nodes and model file some server has (all of them while no node list is known)."""
        pool = self.scheduler.pool
        return [name for name, model in self.settings.controlnet_models.items()
                if pool.offers(f"controlnet_{name}", {"checkpoint": self.settings.checkpoint, "control_net": model})]

    async def control_type_offered(self, interaction: discord.Interaction, control_type: str | None) -> bool:
        """True when `control_type` is left out or offered; otherwise the person is told which ones are."""
        return await self.choice_offered(interaction, "ControlNet type", control_type, self.offered_control_types(),
                                         NO_CONTROLNET)

    async def on_controlnet_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps -> Use as ControlNet input: a form asks for the prompt, the type and the strength; the
        form's custom_id names the message, so it still works if the bot restarts while it is open."""
        if not any(is_image(attachment) for attachment in message.attachments):
            await interaction.response.send_message("That message has no image to use.", ephemeral=True)
            return
        offered = self.offered_control_types()
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
            await self.tell(interaction, f"Strength must be a number from {low:g} to {high:g}, like {default:g}.")
            return
        if not prompt:
            await self.tell(interaction, "Write what the image should show: the prompt cannot be empty.")
            return
        if not await self.control_type_offered(interaction, control_type) or await self.refuse_if_limited(interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        try:  # the person's defaults, style and flags apply here as in /generate
            request = await self.request_for(interaction, clip(prompt, 1500), {}, sized="asked")
        except ValueError as error:  # RequestError, FlagError: a sentence
            await interaction.edit_original_response(content=wording.failed("controlnet", str(error)))
            return
        try:
            source = await self.get_partial_messageable(int(match["channel"])).fetch_message(int(match["message"]))
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
            name, size, _ = await self.input_image(attachment)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        settings = self.settings
        if not request.get("width") or not request.get("height"):
            request["width"], request["height"] = area_size(size, settings.default_width * settings.default_height,
                                                            settings.max_width, settings.max_height)
        request.setdefault("model", settings.checkpoint)
        await self.start_job(interaction, "controlnet", {**request, "input": name},
                             message_id=callback.message_id if callback else None, **fields)


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
