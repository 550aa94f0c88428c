"""What a request is made of: the flags in its prompt over the command's options, over the person's
saved defaults, over the chosen model preset, over the settings. Knows nothing of Discord.

The result is the request a job stores: the person's own prompt and negative prompt, the style (its
template copied in, so a reroll is the same even if the style changes), the LoRAs, the sampler, and
what must not run outside an age-restricted channel (`nsfw_reasons`).
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from config import ModelPreset, Settings
from jobs.auto_model import choose, wants_auto
from jobs.flags import parse
from image_gen import MIN_SIDE, RequestError, area_size
from jobs.styles import Style
from comfy.workflows import LORA_LIMIT

ASPECTS = {"square": (1, 1), "portrait": (2, 3), "landscape": (3, 2), "wide": (16, 9), "tall": (9, 16)}
DEFAULTS = ("aspect", "steps", "cfg", "sampler", "scheduler", "style", "model")  # what /settings may save


def compose(settings: Settings, prompt: str, options: Mapping[str, Any], prefs: Mapping[str, Any],
            styles: Mapping[str, Style], *, sized: bool | str = True, offered: Collection[str] | None = None,
            favorites: Counter[str] | None = None) -> dict[str, Any]:
    """The request for `prompt` with these options and saved defaults. `sized`: True, the request needs
    a size (text to image); False, it takes its image's (an edit); "asked", only a size the person
    asked for here (--ar, width, height, aspect), else its control image's. Model "auto" picks a
    preset among `offered` (None: all) from the prompt and the person's `favorites` (jobs/auto_model.py),
    and the request keeps why ("model_reason"), so the result, a Reroll and a restart show it. Raises
    RequestError (or FlagError) in words."""
    flags = parse(prompt, presets=list(settings.model_presets), styles=list(styles))
    if not flags.prompt.strip():
        raise RequestError("the prompt is empty once its flags are taken out; say what to draw")
    given = {key: value for key, value in options.items() if value is not None}
    saved = {key: value for key, value in prefs.items() if key in DEFAULTS and value is not None}
    chosen = {**saved, **given, **{k: v for k, v in flags.values.items() if k not in ("no", "loras", "aspect")}}
    model, reason = chosen.get("model"), None
    if wants_auto(model, settings.model_presets):
        picked = choose(flags.prompt, settings.model_presets, settings.model_presets if offered is None else offered,
                        favorites)
        model, reason = picked.name, picked.reason
    preset = settings.model_presets.get(model) if model else None
    if model and preset is None:
        model = preset = None  # a saved default whose preset the operator removed
    request: dict[str, Any] = {
        "prompt": flags.prompt,
        "negative_prompt": _joined(given.get("negative_prompt", preset.negative_prompt if preset else ""),
                                   flags.values.get("no")),
        "seed": chosen.get("seed"),
        "steps": chosen.get("steps") or (preset.steps if preset else None),
        "cfg": chosen["cfg"] if chosen.get("cfg") is not None else (preset.cfg if preset else None),
        "sampler": chosen.get("sampler") or (preset.sampler if preset else None),
        "scheduler": chosen.get("scheduler") or (preset.scheduler if preset else None),
        "checkpoint": preset.checkpoint if preset else None,
        "model": model or settings.checkpoint,
        "loras": _loras(given, flags.values.get("loras", [])),
        **({"model_reason": reason} if reason else {}),
    }
    asked = flags.values.get("aspect") or given.get("width") or given.get("height") or given.get("aspect")
    if sized is True or (sized == "asked" and asked):
        request["width"], request["height"] = _size(settings, preset, given, saved, flags.values.get("aspect"))
    style = styles.get(chosen["style"]) if chosen.get("style") else None
    if chosen.get("style") and style is None and "style" in given:
        raise RequestError(f"there is no style called {chosen['style']!r}; /style list shows the ones you can use")
    if style is not None:
        request.update(style=style.name, style_prompt=style.prompt, style_negative=style.negative)
    return request


def nsfw_reasons(settings: Settings, request: Mapping[str, Any], styles: Mapping[str, Style]) -> list[str]:
    """What in the request is marked for age-restricted channels only: its preset, style or LoRAs."""
    reasons = []
    preset = settings.model_presets.get(str(request.get("model")))
    if preset is not None and preset.nsfw:
        reasons.append(f"the model {request['model']}")
    style = styles.get(str(request.get("style")))
    if style is not None and style.nsfw:
        reasons.append(f"the style {style.name}")
    reasons += [f"the LoRA {name}" for name, _ in request.get("loras") or () if nsfw_lora(settings, name)]
    return reasons


def nsfw_lora(settings: Settings, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.nsfw_loras)


def _joined(*parts: Any) -> str:
    return ", ".join(str(part).strip() for part in parts if part and str(part).strip())


def _loras(given: Mapping[str, Any], flagged: list[tuple[str, float]]) -> list[list[Any]]:
    chosen = ([(given["lora"], given.get("lora_strength", 1.0))] if given.get("lora") else []) + list(flagged)
    if len(chosen) > LORA_LIMIT:
        raise RequestError(f"at most {LORA_LIMIT} LoRAs can be used in one job")
    for name, strength in chosen:
        if not -2 <= strength <= 2:
            raise RequestError(f"a LoRA's strength must be between -2 and 2 (got {strength:g} for {name})")
    return [[name, float(strength)] for name, strength in chosen]


def _size(settings: Settings, preset: ModelPreset | None, given: Mapping[str, Any], saved: Mapping[str, Any],
          flagged: tuple[int, int] | None) -> tuple[int, int]:
    """--ar wins; then width/height asked for; then an aspect asked for or saved; then the preset's size."""
    base_w = (preset.width if preset and preset.width else None) or settings.default_width
    base_h = (preset.height if preset and preset.height else None) or settings.default_height
    if flagged is None and (given.get("width") or given.get("height")):
        return given.get("width") or base_w, given.get("height") or base_h
    if flagged is not None:  # exactly that ratio where multiples of 8 allow it near the area, else nearly
        ratio = _reduced(flagged)
        exact = aspect_size(ratio, base_w * base_h, settings.max_width, settings.max_height)
        smallest = aspect_size(ratio, 0, settings.max_width, settings.max_height)  # larger only as 64 px demand
        if 0.75 <= exact[0] * exact[1] / (base_w * base_h) <= 1.34 or exact == smallest:
            return exact
        return area_size(flagged, base_w * base_h, settings.max_width, settings.max_height)
    ratio = ASPECTS.get(str(given.get("aspect") or saved.get("aspect") or ""))
    if ratio is None:
        return base_w, base_h
    return aspect_size(ratio, base_w * base_h, settings.max_width, settings.max_height)


def _reduced(ratio: tuple[int, int]) -> tuple[int, int]:
    divisor = math.gcd(*ratio)
    return ratio[0] // divisor, ratio[1] // divisor


def aspect_size(ratio: tuple[int, int], area: int, max_w: int, max_h: int) -> tuple[int, int]:
    """A width and height of exactly this ratio, about this many pixels, multiples of 8, from 64 to the
    limits; where no multiple of 8 fits the ratio between those bounds, the nearest shape that does."""
    w, h = ratio
    least = -(-MIN_SIDE // (8 * min(w, h))) * 8  # the smallest unit whose shorter side reaches 64
    most = min(max_w // w, max_h // h) // 8 * 8
    if least > most:
        return area_size(ratio, area, max_w, max_h)
    unit = round((area / (w * h)) ** 0.5 / 8) * 8
    unit = min(max(unit, least), most)
    return w * unit, h * unit
