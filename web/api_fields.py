"""The fields of a generation request (`POST /api/v1/generations`): the table of them with this bot's
limits, which the API checks bodies against and web/openapi.py documents, and the checking itself,
from a JSON body to (kind, checked values, decoded images).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from config import MIB, Settings
from image_gen import CONTROL, SEED_LIMIT, STRENGTH, UPSCALE_FACTORS, ZOOMS
from jobs.kinds import KINDS as ALL_KINDS
from safe_text import clip
from web import openapi
from web.api_errors import ApiError, InvalidField

IMAGE_LIMIT = 16 * MIB  # bytes of one decoded image
PROMPT_MAX = 1500  # characters, as in Discord
NAME_MAX = 100  # characters of a model, style, sampler, scheduler or control type name
LORAS_MAX = 3

# what other programs may start: every kind but those that take one of the bot's videos (the API takes images)
KINDS = {name: kind for name, kind in ALL_KINDS.items() if not kind.video_input}
SAMPLING = tuple(name for name, kind in KINDS.items() if "prompt" in kind.shown)
IMAGE_KINDS = tuple(name for name, kind in KINDS.items() if kind.image_input)
PROMPT_OPTIONAL = ("outpaint",)  # zooming out may go without a prompt


def _of(*names: str) -> tuple[str, ...]:
    return tuple(name for name in names if name in KINDS)


def request_fields(settings: Settings) -> list[openapi.RequestField]:
    """The fields of `POST /api/v1/generations` with this bot's limits (kind aside)."""
    field = openapi.RequestField
    prompted = tuple(name for name in SAMPLING if name not in PROMPT_OPTIONAL)
    low, high, _ = STRENGTH
    return [
        field("prompt", "string", "What to draw.", SAMPLING, prompted, max_length=PROMPT_MAX),
        field("negative_prompt", "string", "What to avoid.", SAMPLING, max_length=PROMPT_MAX),
        field("width", "integer", "Width in pixels.", _of("txt2img", "controlnet", "workflow"), minimum=64,
              maximum=settings.max_width),
        field("height", "integer", "Height in pixels.", _of("txt2img", "controlnet", "workflow"), minimum=64,
              maximum=settings.max_height),
        field("steps", "integer", "Sampling steps.", SAMPLING, minimum=1, maximum=settings.max_steps),
        field("cfg", "number", "How closely to follow the prompt.", SAMPLING, minimum=0, maximum=30),
        field("seed", "integer", "The same seed and settings give the same image; left out, a random one.",
              (*SAMPLING, *_of("animate")), minimum=0, maximum=SEED_LIMIT - 1),
        field("batch", "integer", "Images in one generation.", _of("txt2img", "controlnet", "workflow"), minimum=1,
              maximum=settings.max_batch),
        field("model", "string", "One of the operator's model presets (/models in Discord).", SAMPLING,
              max_length=NAME_MAX),
        field("style", "string", "A style name: built in, or saved on the key's server.", SAMPLING,
              max_length=NAME_MAX),
        field("sampler", "string", "A sampler the servers have; left out, the workflow's own.", SAMPLING,
              max_length=NAME_MAX),
        field("scheduler", "string", "A noise schedule the servers have; left out, the workflow's own.", SAMPLING,
              max_length=NAME_MAX),
        field("loras", "loras", f"Up to {LORAS_MAX} LoRA files the servers have, each with a strength.", SAMPLING,
              maximum=LORAS_MAX),
        field("strength", "number", "How much of the image is redrawn.", _of("img2img", "inpaint"), minimum=low,
              maximum=high),
        field("factor", "integer", "How many times larger.", _of("upscale"), _of("upscale"),
              choices=UPSCALE_FACTORS),
        field("zoom", "number", "How far to zoom out.", _of("outpaint"), choices=ZOOMS),
        field("control_type", "string", "What to follow in the control image: canny, or another type the bot "
              "offers.", _of("controlnet"), max_length=NAME_MAX),
        *(field(f"control_{name}", "number", f"ControlNet {name} (default {default:g}).", _of("controlnet"),
                minimum=least, maximum=most) for name, (least, most, default) in CONTROL.items()),
        field("image", "base64", "The image to start from (for controlnet: the control image).", IMAGE_KINDS,
              IMAGE_KINDS, max_length=IMAGE_LIMIT),
        field("workflow", "string", "A workflow shared in the key's Discord server (/workflow share): its name, "
              "or #id. The values given bind where it has them; one it has no place for is refused.",
              _of("workflow"), _of("workflow"), max_length=NAME_MAX),
        field("mask", "base64", "White where the image is redrawn, black where it stays.", _of("inpaint"),
              _of("inpaint"), max_length=IMAGE_LIMIT),
    ]


def parse_request(body: Any, fields: list[openapi.RequestField]) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """(kind, checked request values, decoded images) of a `POST /api/v1/generations` body; InvalidField
    naming the first wrong field, or ApiError 413 for an image over its limit."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object")
    by_name = {spec.name: spec for spec in fields}
    kind = body.get("kind", openapi.DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidField("kind", f"kind must be one of {', '.join(KINDS)}")
    for name in body:
        if name != "kind" and name not in by_name:
            raise InvalidField(str(name)[:50], f"{clip(name, 50)} is not a field of this API")
    request: dict[str, Any] = {}
    images: dict[str, bytes] = {}
    for spec in fields:
        value = body.get(spec.name)
        if value is None and spec.name in body:  # the schemas have no nulls: a value, or the field left out
            raise InvalidField(spec.name, f"{spec.name} must not be null; leave it out instead")
        if value is None:
            if kind in spec.required_for:
                raise InvalidField(spec.name, f"{spec.name} is needed for {kind}")
            continue
        if kind not in spec.kinds:
            raise InvalidField(spec.name, f"{spec.name} is not taken by {kind} (only by {', '.join(spec.kinds)})")
        if spec.type == "base64":
            images[spec.name] = _image(spec, value)
        else:
            request[spec.name] = _value(spec, value)
            if spec.name == "prompt" and kind in spec.required_for and not value.strip():
                raise InvalidField("prompt", "prompt must not be empty")
    return kind, request, images


def _value(spec: openapi.RequestField, value: Any) -> Any:
    name = spec.name
    if spec.type == "string":
        if not isinstance(value, str):
            raise InvalidField(name, f"{name} must be a string")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InvalidField(name, f"{name} must be at most {spec.max_length} characters")
        return value
    if spec.type == "loras":
        return _loras(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidField(name, f"{name} must be a number")
    if spec.type == "integer":
        if isinstance(value, float) and not value.is_integer():
            raise InvalidField(name, f"{name} must be a whole number")
        value = int(value)
    if spec.choices and value not in spec.choices:
        raise InvalidField(name, f"{name} must be one of {', '.join(f'{choice:g}' for choice in spec.choices)}")
    low = spec.minimum if spec.minimum is not None else -math.inf
    high = spec.maximum if spec.maximum is not None else math.inf
    if not low <= value <= high:
        raise InvalidField(name, f"{name} must be from {low:g} to {high:g}")
    return value


def _loras(value: Any) -> list[list[Any]]:
    if not isinstance(value, list) or len(value) > LORAS_MAX:
        raise InvalidField("loras", f"loras must be a list of at most {LORAS_MAX} {{\"name\", \"strength\"}} objects")
    found = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"name", "strength"}:
            raise InvalidField("loras", "each of loras must be an object with a name and a strength")
        name, strength = item.get("name"), item.get("strength", 1)
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidField("loras", "each of loras needs a name (a LoRA file's name)")
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not -2 <= strength <= 2:
            raise InvalidField("loras", "each strength in loras must be a number from -2 to 2")
        found.append([name, float(strength)])
    return found


_IMAGE_STARTS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def _image(spec: openapi.RequestField, value: Any) -> bytes:
    name, limit = spec.name, spec.max_length or IMAGE_LIMIT
    if not isinstance(value, str):
        raise InvalidField(name, f"{name} must be a base64 string")
    text = value.strip()
    if text.startswith("data:"):
        head, comma, text = text.partition(",")
        if not comma or not head.endswith(";base64"):
            raise InvalidField(name, f"{name} is a data: URL that is not base64")
    text = "".join(text.split())
    if len(text) > (limit + 2) // 3 * 4 + 4:
        raise ApiError(413, "too_large", f"{name} is larger than {limit // MIB} MiB", field=name)
    try:
        urlsafe = "-" in text or "_" in text
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(name, f"{name} is not valid base64") from None
    if len(data) > limit:
        raise ApiError(413, "too_large", f"{name} is larger than {limit // MIB} MiB", field=name)
    if not (data.startswith(_IMAGE_STARTS) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        raise InvalidField(name, f"{name} must be a PNG, JPEG, WebP or GIF image")
    return data


# the bot's sentences about a field that do not start with its name
_ALIASES = {"upscale factor": "factor", "upscaled": "factor", "the control must start": "control_start",
            "there is no ControlNet type": "control_type", "zoomed out": "zoom"}


def request_error(message: str, names: list[str]) -> InvalidField:
    """A RequestError from the bot ("width must be between 64 and 2048 (got 4000)") as InvalidField,
    naming the field its sentence starts with ("request" when none)."""
    found = [name for name in names if message.startswith((name + " ", name.replace("_", " ") + " "))]
    if found:
        return InvalidField(max(found, key=len), message)
    alias = next((field for start, field in _ALIASES.items() if message.startswith(start)), "request")
    return InvalidField(alias, message)
