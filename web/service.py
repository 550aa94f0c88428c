"""The HTTP API's view of the bot (web/api.py's ApiService): jobs made by other programs go through the
same checks, queue, fairness and limits as Discord users' jobs. An API key is one person: its jobs are
stored with user_id = -key id (Discord ids are positive) and no Discord channel (kinds.API_CHANNEL),
in the key's Discord server, so that server's quotas, blocks and terms apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from jobs import cluster_view, kinds, user_workflow
from jobs.auto_model import wants_auto
from jobs.compose import compose, nsfw_reasons
from jobs.styles import Style
from jobs.wording import and_list
from image_gen import RequestError
from image_gen import area_size
from results.folder import OutputError
from jobs.scheduler import QueueFull
from store import Job
from web.api_errors import ApiError, LimitReached

log = structlog.get_logger("bot")

IMAGE_KINDS = {name for name, kind in kinds.KINDS.items() if kind.image_input}
OPTIONS = ("negative_prompt", "width", "height", "steps", "cfg", "seed", "model", "style", "sampler", "scheduler")


def person(key: Any) -> int:
    """The user id an API key's jobs are stored under."""
    return -int(key.id)


class BotApi:
    def __init__(self, bot: Any) -> None:
        self.bot = bot  # bot.ComfyBot

    async def submit(self, key: Any, kind: str, request: dict[str, Any], images: dict[str, bytes]) -> dict:
        bot, settings = self.bot, self.bot.settings
        composed = "prompt" in request and kind != user_workflow.NAME  # a workflow's values are bound as given
        request = await self._composed(key, kind, dict(request)) if composed else dict(request)
        names: list[str] = []
        try:
            if kind in IMAGE_KINDS:
                names = await self._inputs(request, images, kind)
            refusal = await bot.limits.refusal(key.guild_id, person(key), request,
                                                int(request.get("batch") or 1))
            if refusal is not None:
                raise LimitReached(refusal[:1].upper() + refusal[1:] + ".")
            request["upload_limit"] = settings.upload_limit
            job = await bot.scheduler.submit(Job(
                id=None, kind=kind, user_id=person(key), channel_id=kinds.API_CHANNEL, guild_id=key.guild_id,
                request=request))
        except QueueFull as error:
            self._release(names)
            raise LimitReached(str(error), retry_after=30) from None
        except BaseException:
            self._release(names)
            raise
        await bot.store.add_api_job(key.id, job.id)
        log.info("api_job_started", job_id=job.id, key_id=key.id, kind=kind)
        return {"id": job.id, "state": job.state, "position": await cluster_view.position(bot.scheduler, bot.store, job.id)}

    async def _composed(self, key: Any, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        """A prompted request as Discord's commands make it (jobs/compose.py): the model preset's checkpoint
        and settings, `auto` choosing one from the prompt, the style's template (built in, or the key's
        server's), flags in the prompt. An API key has no age-restricted channel: what is marked nsfw is
        refused, and the operator's SFW_NEGATIVE is added. RequestError in words."""
        settings, choices = self.bot.settings, self.bot.choices
        styles = dict(choices.builtin_styles)
        styles.update((s.name, Style(s.name, s.prompt, s.negative, nsfw=s.nsfw))
                      for s in await self.bot.store.styles(key.guild_id or 0, person(key)))
        model, style = request.get("model"), request.get("style")
        offered = [name for name in choices.offered_presets() if not settings.model_presets[name].nsfw]
        if model is not None and not wants_auto(model, settings.model_presets) and model not in offered:
            raise RequestError(f"model {model!r} is not a model preset here (/models in Discord lists them)"
                               if model not in settings.model_presets else
                               f"model {model!r} is not available here now (no server has it, or it is for "
                               "age-restricted channels)")
        if style is not None and style not in styles:
            raise RequestError(f"style {style!r} is not a style here (the built-in ones, or this server's)")
        options = {name: request.get(name) for name in OPTIONS}
        composed = compose(settings, request["prompt"], options, {}, styles, offered=offered,
                           sized=True if kind == "txt2img" else "asked" if kind == "controlnet" else False)
        composed["loras"] = request.get("loras") or composed["loras"]
        if not composed["loras"]:
            del composed["loras"]
        reasons = nsfw_reasons(settings, composed, styles)
        if reasons:
            raise RequestError(f"{and_list(reasons)} can only be used in age-restricted channels, not through the API")
        if settings.sfw_negative:
            composed["sfw_negative"] = settings.sfw_negative
        return {**request, **{name: value for name, value in composed.items() if value is not None}}

    async def _inputs(self, request: dict[str, Any], images: dict[str, bytes], kind: str) -> list[str]:
        """The image (and mask) as /edit takes them: read by content, upright, fitted to the limits."""
        bot, settings = self.bot, self.bot.settings
        raw = await bot.outputs.save_bytes("api-input", images["image"], max_bytes=settings.download_limit)
        try:
            raw_mask = await bot.outputs.save_bytes("api-mask", images["mask"], max_bytes=settings.download_limit) \
                if "mask" in images else None
        except BaseException:
            await bot.outputs.discard(raw)
            raise
        try:
            name, size, masked = await bot.inputs.prepared_input(raw, raw_mask)
        except (OutputError, ValueError) as error:
            raise ApiError(400, "bad_image", f"The image cannot be used: {error}", field="image") from None
        request["input"] = name
        if kind == "inpaint" and masked is None:
            self._release([name])
            raise ApiError(400, "bad_mask", "Inpainting needs a mask, or an image with transparent parts.",
                           field="mask")
        if kind == "inpaint":
            request["mask"] = masked
        elif masked is not None:
            self._release([masked])  # only inpainting uses a mask
        names = [name, *([masked] if kind == "inpaint" else [])]
        if kind == "controlnet":
            if not request.get("width") or not request.get("height"):
                request["width"], request["height"] = area_size(size, settings.default_width * settings.default_height,
                                                                settings.max_width, settings.max_height)
        else:
            request["width"], request["height"] = size
        return names

    def _release(self, names: list[str]) -> None:
        for name in names:
            self.bot.outputs.release(self.bot.settings.outputs_dir / name)

    async def get(self, key: Any, job_id: int) -> dict | None:
        job = await self._own(key, job_id)
        if job is None:
            return None
        generation = await self.bot.store.get_generation(job.generation_id) if job.generation_id else None
        place = await cluster_view.position(self.bot.scheduler, self.bot.store, job.id)
        return {"id": job.id, "kind": job.kind, "state": job.state, "position": place,
                "error": job.error, "files": len(generation.files) if generation is not None else 0,
                "settings": job.request, "created_at": job.created_at, "updated_at": job.updated_at}

    async def cancel(self, key: Any, job_id: int) -> dict | None:
        job = await self._own(key, job_id)
        if job is None:
            return None
        await self.bot.scheduler.cancel(job_id, person(key), by=f"the API key {key.name!r}")
        return await self.get(key, job_id)

    async def list(self, key: Any, limit: int, before: int | None) -> list[dict]:
        found = [await self.get(key, job_id) for job_id in await self.bot.store.api_job_ids(key.id, limit, before)]
        return [item for item in found if item is not None]

    async def file(self, key: Any, job_id: int, index: int) -> Path | str | None:
        job = await self._own(key, job_id)
        generation = await self.bot.store.get_generation(job.generation_id) if job and job.generation_id else None
        if generation is None or not 0 <= index < len(generation.files):
            return None
        name = generation.files[index]
        try:  # with OUTPUT_STORE: a short-lived presigned URL the API redirects to
            link = await self.bot.outputs.link(name)
        except OutputError:
            link = None  # not in the bucket, or the store failed: a copy here, else "gone"
        return link or self.bot.settings.outputs_dir / name

    async def _own(self, key: Any, job_id: int) -> Job | None:
        if await self.bot.store.api_job_key(job_id) != key.id:
            return None
        return await self.bot.store.get_job(job_id)
