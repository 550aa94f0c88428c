"""Power-user flags in a prompt, as people know them from other image bots: --ar 16:9, --seed 42,
--steps 30, --cfg 7, --no text, --style ink, --model anime (or --anime), --lora ink_v2:0.7.

parse() takes the flags out of the prompt and checks their values; anything wrong is a FlagError
whose message is a sentence for the user. Knows nothing of Discord; the bot checks the values
against its own limits (the most steps, the LoRA files a server has). Linear time: the prompt is
split on whitespace once and each word is looked at a bounded number of times.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from jobs.auto_model import AUTO

SEED_MAX = 2**53 - 1  # seeds stay exact in JSON and in Discord's embeds, as in image_gen
BUILT_IN = ("ar", "seed", "steps", "cfg", "no", "style", "model", "lora")
ALIASES = {"aspect": "ar"}
TARGETS = {"ar": "aspect", "lora": "loras"}  # the values key of a built-in flag, where it is not the flag's name
WHAT = {"aspect": "aspect ratio", "model": "model"}  # what two different flags both set
SHOWN = 10  # names listed in a message before "…"
ECHO = 40  # the most characters of the user's text a message echoes
LORA_CHARS = frozenset("/\\.-_")

_WHOLE = re.compile(r"[0-9]{1,18}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # no exponent, no nan or inf
_RATIO = re.compile(r"([0-9]{1,3}):([0-9]{1,3})")


@dataclass(frozen=True)
class Flags:
    prompt: str  # the prompt with every flag removed, whitespace tidied
    values: dict[str, Any]  # what the flags set (only the ones given)


class FlagError(ValueError):
    """A flag is unknown, repeated or has a bad value; the message is a sentence for the user."""


def flag_name(word: str) -> str | None:
    """The name in a flag ("seed" for "--seed" or "—seed"); None when the word is not a flag."""
    name = word[2:] if word.startswith("--") else word[1:] if word.startswith("—") else ""
    return name if name[:1].isalnum() else None


def parse(prompt: str, *, presets: Collection[str] = (), styles: Collection[str] = (), max_loras: int = 3,
          offered: Collection[str] | None = None) -> Flags:
    """The prompt without its flags, and what the flags set. `offered`: the presets whose model some
    server has (None: all); another preset is refused as not available. Raises FlagError, and nothing else."""
    models, style_names = _names(presets), _names(styles)
    available = set(models.values()) if offered is None else set(offered)
    preset_flags = {key: name for key, name in models.items()
                    if " " not in key and key not in BUILT_IN and key not in ALIASES and flag_name("--" + key)}
    words = str(prompt).split()
    kept: list[str] = []
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # values key -> the flag that set it
    i = 0
    while i < len(words):
        name = flag_name(words[i])
        i += 1
        if name is None:
            kept.append(words[i - 1])
            continue
        typed = name.casefold()
        flag = _echo("--" + typed)
        key = ALIASES.get(typed, typed)
        if key in BUILT_IN:
            target = TARGETS.get(key, key)
        elif key in preset_flags:
            target = "model"
        else:
            raise FlagError(_unknown(name, {key: preset for key, preset in preset_flags.items() if preset in available}))
        if target in given and target not in ("no", "loras"):
            if given[target] == flag:
                raise FlagError(f"{flag} is given twice; keep one.")
            raise FlagError(f"{given[target]} and {flag} both set the {WHAT.get(target, target)}; keep one.")
        given[target] = flag
        value = words[i] if i < len(words) and flag_name(words[i]) is None else ""
        if key in preset_flags:
            values["model"] = _available(preset_flags[key], available)
            continue
        if key == "no":
            start = i
            while i < len(words) and flag_name(words[i]) is None:
                i += 1
            text = " ".join(words[start:i]).strip(" ,")
            if not text:
                raise FlagError("--no needs what to leave out, like --no text, watermark.")
            values["no"] = f"{values['no']}, {text}" if "no" in values else text
            continue
        if key == "style":
            values[key], i = _pick(words, i, style_names, key)
            continue
        if key == "model":  # --model auto: the bot chooses (jobs/auto_model.py), where there are presets
            choosable = {**models, AUTO: models.get(AUTO, AUTO)} if models else models  # a preset "auto" wins
            chosen, i = _pick(words, i, choosable, key, [*available, AUTO])
            values[key] = chosen if chosen == AUTO and AUTO not in models else _available(chosen, available)
            continue
        if key == "lora":
            values.setdefault("loras", []).append(_lora(value, len(values.get("loras", ())), max_loras))
        else:
            values[target] = _number(key, flag, value)
        i += 1
    return Flags(" ".join(kept), values)


def _number(key: str, flag: str, value: str) -> Any:
    """The value of --ar, --seed, --steps or --cfg, checked."""
    if key == "ar":
        match = _RATIO.fullmatch(value)
        if match:
            width, height = int(match[1]), int(match[2])
            if 1 <= width <= 100 and 1 <= height <= 100 and max(width, height) <= 4 * min(width, height):
                return width, height
        raise FlagError(f"{flag} needs a width and height from 1 to 100, from 1:4 to 4:1, like {flag} 16:9.")
    if key == "seed":
        if _WHOLE.fullmatch(value) and int(value) <= SEED_MAX:
            return int(value)
        raise FlagError(f"--seed needs a whole number from 0 to {SEED_MAX}, like --seed 42.")
    if key == "steps":
        if _WHOLE.fullmatch(value) and int(value) >= 1:
            return int(value)
        raise FlagError("--steps needs a whole number of steps, like --steps 30.")
    if len(value) <= 32 and _NUMBER.fullmatch(value) and 0 <= float(value) <= 30:
        return float(value)
    raise FlagError("--cfg needs a number from 0 to 30, like --cfg 7.5.")


def _lora(value: str, count: int, max_loras: int) -> tuple[str, float]:
    """A --lora's name and strength, checked; refused past the `max_loras`-th."""
    if max_loras <= 0:
        raise FlagError("LoRAs can't be used here; remove --lora.")
    if count >= max_loras:
        raise FlagError(f"At most {max_loras} LoRA{'s' if max_loras > 1 else ''} can be used at once; remove a --lora.")
    name, _, strength = value.rpartition(":") if ":" in value else (value, "", "1")
    if (name and all(ch.isalnum() or ch in LORA_CHARS for ch in name) and name[0] not in "/\\"
            and ".." not in re.split(r"[/\\]", name) and len(strength) <= 32 and _NUMBER.fullmatch(strength)
            and -2 <= float(strength) <= 2):
        return name, float(strength)
    raise FlagError("--lora needs a LoRA name and, if you like, a strength from -2 to 2, like --lora ink_v2:0.7.")


def _available(preset: str, available: Collection[str]) -> str:
    """A preset named by a flag, refused when no server has its model."""
    if preset not in available:
        others = _listing(sorted(available))
        raise FlagError(f"The model {_code(preset)} is not available on this server right now. "
                        + (f"Models you can use: {others}." if others else "Leave the model out to use the default."))
    return preset


def _pick(words: list[str], i: int, names: dict[str, str], kind: str,
          shown: Collection[str] | None = None) -> tuple[str, int]:
    """The style or model named from words[i] on (the longest name that fits), and the index past it.
    `shown`: the names to offer when none fits (all of them by default)."""
    if not names:
        raise FlagError(f"No {kind}s are set up, so --{kind} can't be used.")
    longest = max(key.count(" ") + 1 for key in names)
    end = i
    while end < len(words) and end - i < longest and flag_name(words[end]) is None:
        end += 1
    for stop in range(end, i, -1):
        name = names.get(" ".join(words[i:stop]).casefold())
        if name is not None:
            return name, stop
    listing = _listing([name for name in names.values() if shown is None or name in shown])
    if end == i:
        raise FlagError(f"--{kind} needs a {kind} name: {listing}.")
    raise FlagError(f"There is no {kind} called {_echo(words[i])}. The {kind}s are: {listing}.")


def _names(names: Collection[str]) -> dict[str, str]:
    """Each name by its case-folded, whitespace-tidied form; the first of names that differ only in case wins."""
    found: dict[str, str] = {}
    for name in names:
        key = " ".join(str(name).split()).casefold()
        if key:
            found.setdefault(key, str(name))
    return found


def _unknown(name: str, preset_flags: dict[str, str]) -> str:
    """An unknown flag, and the flags that can be used: the built-in ones and those of the presets offered."""
    built_in = ", ".join(_code("--" + flag) for flag in BUILT_IN)
    known = f"{_code('--' + name)} is not a flag I know. Flags you can use: {built_in}"
    if not preset_flags:
        return f"{known}."
    return f"{known}, and a model's own flag: {_listing(['--' + preset for preset in preset_flags.values()])}."


def _listing(names: list[str]) -> str:
    return ", ".join(_code(name) for name in names[:SHOWN]) + (", …" if len(names) > SHOWN else "")


def _code(text: str) -> str:
    """A flag or a name in code formatting: Discord never breaks a line inside it."""
    return f"`{_echo(text)}`"


def _echo(text: str) -> str:
    """The user's (or a name's) text, safe to show: no mention, no code span, no control character; clipped."""
    text = "".join(ch for ch in text[:4 * ECHO] if ch.isprintable() and ch not in "`@<>")
    return text if len(text) <= ECHO else text[:ECHO - 1] + "…"
