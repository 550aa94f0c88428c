"""Image jobs: text to image, image to image, ControlNet and upscale. A request becomes a bound workflow
and files.

Requests are checked here against the configured limits, so a bad value is a
sentence for the user before anything reaches ComfyUI. Knows nothing of Discord.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from config import Settings
from jobs.styles import Style, apply as apply_style
from backends.runner import Engine, EventHandler, JobResult, run_workflow

SEED_LIMIT = 2**53  # seeds stay exact in JSON and in Discord's embeds
UPSCALE_FACTORS = (2, 4, 8)
POSTED_BYTES_PER_PIXEL = 0.25  # what an upscaled image weighs as the JPEG it is posted as, at worst about
MIN_SIDE = 64  # the least width or height a job may have
STRENGTH = (0.05, 1.0, 0.6)  # img2img: the least, the most and the default share of the image redrawn


class RequestError(ValueError):
    """A request value is out of bounds; the message says which and what is allowed."""


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int | None = None
    batch: int = 1
    checkpoint: str | None = None
    sampler: str | None = None
    scheduler: str | None = None
    loras: list | None = None  # [[file, strength], ...]
    style_prompt: str | None = None  # the style's template, with {prompt}
    style_negative: str | None = None
    sfw_negative: str | None = None  # the operator's, outside age-restricted channels


def prompt_values(request: Any, *, required: bool = True) -> dict[str, str]:
    """The prompt and negative prompt ComfyUI gets: the person's, through their style, with the
    operator's SFW negative. `request` is a mapping or an ImageRequest."""
    get = request.get if isinstance(request, dict) else lambda key: getattr(request, key, None)
    prompt, negative = str(get("prompt") or ""), str(get("negative_prompt") or "")
    if required and not prompt.strip():
        raise RequestError("prompt must not be empty")
    if get("style_prompt"):
        prompt, negative = apply_style(Style("style", str(get("style_prompt")), str(get("style_negative") or "")),
                                       prompt, negative)
    negative = ", ".join(part for part in (negative.strip(), str(get("sfw_negative") or "").strip()) if part)
    return {"prompt": prompt, "negative_prompt": negative}


def sampling_values(request: Any) -> dict[str, Any]:
    """The sampler, scheduler and LoRAs a request chose (none: the workflow's own)."""
    get = request.get if isinstance(request, dict) else lambda key: getattr(request, key, None)
    values: dict[str, Any] = {key: get(key) for key in ("sampler", "scheduler") if get(key)}
    if get("loras"):
        values["loras"] = [[str(name), float(strength)] for name, strength in get("loras")]
    return values


def resolve_seed(seed: int | None) -> int:
    """The seed a job runs with: the one asked for, or a fresh random one. Resolved once."""
    if seed is None:
        return secrets.randbelow(SEED_LIMIT)
    if not 0 <= seed < SEED_LIMIT:
        raise RequestError(f"seed must be between 0 and {SEED_LIMIT - 1}")
    return seed


def area_size(size: tuple[int, int], area: int, max_w: int, max_h: int) -> tuple[int, int]:
    """A width and height of the shape of `size`, about `area` pixels, multiples of 8, within the limits."""
    width, height = max(1, size[0]), max(1, size[1])
    scale = min((area / (width * height)) ** 0.5, max_w / width, max_h / height)
    return max(MIN_SIDE, int(width * scale) // 8 * 8), max(MIN_SIDE, int(height * scale) // 8 * 8)


def _within(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low:g} and {high:g} (got {value:g})")


def txt2img_values(settings: Settings, request: ImageRequest) -> dict[str, Any]:
    """The workflow values of a text-to-image request, checked against the limits; the seed resolved."""
    prompts = prompt_values(request)
    width = request.width or settings.default_width
    height = request.height or settings.default_height
    steps = request.steps or settings.default_steps
    cfg = settings.default_cfg if request.cfg is None else request.cfg
    _within("width", width, MIN_SIDE, settings.max_width)
    _within("height", height, MIN_SIDE, settings.max_height)
    _within("steps", steps, 1, settings.max_steps)
    _within("cfg", cfg, 0, 30)
    _within("batch", request.batch, 1, settings.max_batch)
    return {
        **prompts,
        **sampling_values(request),
        "width": width,
        "height": height,
        "steps": steps,
        "cfg": cfg,
        "seed": resolve_seed(request.seed),
        "batch": request.batch,
        "checkpoint": request.checkpoint or settings.checkpoint,
    }


async def text_to_image(engine: Engine, request: ImageRequest, *, on_event: EventHandler | None = None,
                        prompt_id: str | None = None, attach: bool = False) -> JobResult:
    values = txt2img_values(engine.settings, request)
    return await run_workflow(engine, "txt2img", values, on_event=on_event, prompt_id=prompt_id, attach=attach)


async def upload(engine: Engine, image: Path) -> str:
    """Send a local image to the server; returns the name its LoadImage must use.

    The name is the content's hash, so ComfyUI keeps one copy of an image however
    often it is upscaled or animated (it answers an identical upload with the same name).
    """
    try:
        data = await asyncio.to_thread(image.read_bytes)
    except OSError as error:
        raise RequestError(f"the input image {image.name} cannot be read ({error.strerror})") from None
    name = f"bot-{hashlib.sha256(data).hexdigest()[:24]}{image.suffix.lower() or '.png'}"
    return await engine.client.upload_image(data, name)


def upscale_fits(width: int, height: int, factor: int, post_limit: int) -> bool:
    """Whether an image of this size, upscaled `factor` times, can still be posted whole: under the pixel
    count the bot reads back, and small enough to fit Discord's upload limit without being shrunk."""
    pixels = width * height * factor * factor
    return 0 < pixels <= Image.MAX_IMAGE_PIXELS and pixels * POSTED_BYTES_PER_PIXEL <= post_limit


def check_upscale(request: dict[str, Any]) -> None:
    """An upscale request's factor, and for 8x whether the result could still be posted."""
    factor = request.get("factor")
    if factor not in UPSCALE_FACTORS:
        raise RequestError(f"upscale factor must be one of {', '.join(f'{f}x' for f in UPSCALE_FACTORS)}")
    width, height = int(request.get("width") or 0), int(request.get("height") or 0)
    if factor > 4 and not upscale_fits(width, height, factor, int(request.get("upload_limit") or 0)):
        raise RequestError(f"upscaled {factor}x, this image would be too large to post here; upscale it 4x instead")


async def upscale(engine: Engine, image: Path | list[Path], factor: int, *, on_event: EventHandler | None = None,
                  prompt_id: str | None = None, attach: bool = False) -> JobResult:
    """Upscale 2x, 4x or 8x: one image, or several of one size (a batch) in one prompt. A workflow with
    an upscale model does the model's scale, then resizes to the factor."""
    if factor not in UPSCALE_FACTORS:
        raise RequestError(f"upscale factor must be one of {', '.join(f'{f}x' for f in UPSCALE_FACTORS)}")
    settings = engine.settings
    uses_model = "upscale_model" in engine.workflow("upscale").params
    names = [await upload(engine, path) for path in (image if isinstance(image, list) else [image])]
    values = {
        "image": names if len(names) > 1 else names[0],
        "upscale_model": settings.upscale_model,
        "scale": factor / settings.upscale_model_scale if uses_model else float(factor),
    }
    result = await run_workflow(engine, "upscale", values, on_event=on_event, prompt_id=prompt_id, attach=attach)
    result.params["factor"] = factor
    return result


def img2img_values(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """The workflow values of an image-to-image request (all but the uploaded image), checked; the seed resolved."""
    prompts = prompt_values(request)
    low, high, default = STRENGTH
    strength = default if request.get("strength") is None else float(request["strength"])
    steps = request.get("steps") or settings.default_steps
    cfg = settings.default_cfg if request.get("cfg") is None else request["cfg"]
    _within("strength", strength, low, high)
    _within("steps", steps, 1, settings.max_steps)
    _within("cfg", cfg, 0, 30)
    return {**prompts, **sampling_values(request), "strength": strength, "steps": steps, "cfg": cfg, "seed": resolve_seed(request.get("seed")),
            "checkpoint": request.get("checkpoint") or settings.checkpoint}


async def image_to_image(engine: Engine, image: Path, request: dict[str, Any], *,
                         on_event: EventHandler | None = None, prompt_id: str | None = None,
                         attach: bool = False) -> JobResult:
    """Redraw an image after a prompt; `strength` is how much of it is redrawn (KSampler's denoise)."""
    values = {**img2img_values(engine.settings, request), "image": await upload(engine, image)}
    return await run_workflow(engine, "img2img", values, on_event=on_event, prompt_id=prompt_id, attach=attach)


ZOOMS = (1.5, 2.0)  # how far Zoom out may go: the result is this many times the image's width and height


def outpaint_values(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """The workflow values of a zoom-out (all but the uploaded image), checked; the seed resolved.

    The border on each side is half the growth, in multiples of 8, and the result must fit the limits."""
    zoom = float(request.get("zoom") or 2.0)
    if zoom not in ZOOMS:
        raise RequestError(f"zoom must be one of {', '.join(f'{z:g}x' for z in ZOOMS)}")
    width, height = int(request.get("width") or 0), int(request.get("height") or 0)
    if width < 8 or height < 8:
        raise RequestError("the image's size is not known, so it cannot be zoomed out")
    pad_x, pad_y = int(width * (zoom - 1) / 2) // 8 * 8, int(height * (zoom - 1) / 2) // 8 * 8
    if width + 2 * pad_x > settings.max_width or height + 2 * pad_y > settings.max_height:
        raise RequestError(f"zoomed out {zoom:g}x, the image would be larger than "
                           f"{settings.max_width}×{settings.max_height}; upscale less or start from a smaller one")
    steps = request.get("steps") or settings.default_steps
    cfg = settings.default_cfg if request.get("cfg") is None else request["cfg"]
    return {**prompt_values(request, required=False), **sampling_values(request), "pad_x": pad_x, "pad_y": pad_y, "steps": steps, "cfg": cfg, "seed": resolve_seed(request.get("seed")),
            "checkpoint": request.get("checkpoint") or settings.checkpoint}


async def outpaint(engine: Engine, image: Path, request: dict[str, Any], *, on_event: EventHandler | None = None,
                   prompt_id: str | None = None, attach: bool = False) -> JobResult:
    """Zoom out: pad the image on every side and fill the new border after the prompt."""
    values = {**outpaint_values(engine.settings, request), "image": await upload(engine, image)}
    return await run_workflow(engine, "outpaint", values, on_event=on_event, prompt_id=prompt_id, attach=attach)


async def inpaint(engine: Engine, image: Path, request: dict[str, Any], *, on_event: EventHandler | None = None,
                  prompt_id: str | None = None, attach: bool = False) -> JobResult:
    """Redraw the parts of an image its mask marks white (`request["mask"]`, a file beside the image)."""
    mask = image.with_name(str(request["mask"]))
    values = {**img2img_values(engine.settings, request), "image": await upload(engine, image),
              "mask": await upload(engine, mask)}
    return await run_workflow(engine, "inpaint", values, on_event=on_event, prompt_id=prompt_id, attach=attach)


CONTROL = {"strength": (0.0, 2.0, 0.8), "start": (0.0, 1.0, 0.0), "end": (0.0, 1.0, 1.0)}  # least, most, default


def controlnet_values(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """The workflow values of a ControlNet request (all but the uploaded control image), checked; the
    seed resolved. It is a text-to-image request whose composition follows the control image."""
    control_type = str(request.get("control_type") or "canny")
    if control_type not in settings.controlnet_models:
        offered = ", ".join(map(repr, settings.controlnet_models)) or "none"
        raise RequestError(f"there is no ControlNet type {control_type!r} here (this bot offers: {offered})")
    values = txt2img_values(settings, ImageRequest(
        prompt=str(request.get("prompt") or ""), negative_prompt=str(request.get("negative_prompt") or ""),
        batch=int(request.get("batch") or 1), **{key: request.get(key) for key in (
            "width", "height", "steps", "cfg", "seed", "checkpoint", "sampler", "scheduler", "loras", "style_prompt",
            "style_negative", "sfw_negative")}))
    for name, (low, high, default) in CONTROL.items():
        value = request.get(f"control_{name}")
        values[f"control_{name}"] = default if value is None else float(value)
        _within(f"control {name}", values[f"control_{name}"], low, high)
    if values["control_start"] >= values["control_end"]:
        raise RequestError("the control must start before it ends (control_start below control_end)")
    values["control_net"] = settings.controlnet_models[control_type]
    return values


async def controlnet(engine: Engine, image: Path, request: dict[str, Any], *, on_event: EventHandler | None = None,
                     prompt_id: str | None = None, attach: bool = False) -> JobResult:
    """Draw after the prompt with the composition of a control image: its edges (canny), depth, pose or
    line art, as the workflow `controlnet_<type>` reads them."""
    values = {**controlnet_values(engine.settings, request), "image": await upload(engine, image)}
    workflow = f"controlnet_{request.get('control_type') or 'canny'}"
    return await run_workflow(engine, workflow, values, on_event=on_event, prompt_id=prompt_id, attach=attach)
