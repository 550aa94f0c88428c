"""Style presets: a prompt template with `{prompt}` in it, and a negative prompt.

The operator's styles are in `styles.toml`; a person may save their own with `make()`.
`apply()` puts a prompt into a template with str.replace, never str.format: whatever
braces, `%s` or `{prompt}` a prompt or a template holds stay literal text.
Standard library only; knows nothing of Discord.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
NAME_RULE = "1 to 32 characters (a to z, 0 to 9, - and _), starting with a letter or digit"
SLOT = "{prompt}"
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # a TOML key written without quotes
LIMITS = {"prompt": 1000, "negative": 1000, "description": 100}
KEYS = ("prompt", "negative", "description", "nsfw")
SHIPPED = Path(__file__).resolve().parents[1] / "styles.toml"

# What make() says to a person, field by field (load() names the TOML key instead).
PERSON_LABELS = {"prompt": "The template", "negative": "The negative prompt", "description": "The description"}
PERSON_SLOT = "The template must contain {prompt} once, where your prompt goes."


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str  # template with {prompt}
    negative: str = ""
    description: str = ""
    nsfw: bool = False


class StyleError(ValueError):
    """A style that cannot be used; the message is one sentence for a person or an operator."""


def check_name(name: str) -> str:
    """The name lower-cased and stripped, or StyleError saying what names may contain."""
    cleaned = name.strip().lower() if isinstance(name, str) else ""
    if not NAME.fullmatch(cleaned):
        raise StyleError(f"A style name is {NAME_RULE}.")
    return cleaned


def make(name: str, prompt: str, negative: str = "", *, description: str = "", nsfw: bool = False) -> Style:
    """A person's own style, checked as the file's are; StyleError speaks to that person."""
    name = check_name(name)
    values = {key: value.strip() if isinstance(value, str) else value
              for key, value in (("prompt", prompt), ("negative", negative), ("description", description))}
    for key, value in values.items():
        label = PERSON_LABELS[key]
        if not isinstance(value, str):
            raise StyleError(f"{label} must be text.")
        if len(value) > LIMITS[key]:
            raise StyleError(f"{label} has {len(value)} characters; the most is {LIMITS[key]}.")
        if key == "prompt" and value.count(SLOT) != 1:
            raise StyleError(PERSON_SLOT)
    if not isinstance(nsfw, bool):
        raise StyleError("The nsfw flag must be true or false.")
    return Style(name, values["prompt"], values["negative"], values["description"], nsfw)


def load(path: Path) -> dict[str, Style]:
    """The styles in the operator's file, in file order; StyleError lists every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StyleError(f"{path} cannot be read ({error.strerror or error}).") from None
    except UnicodeDecodeError:
        raise StyleError(f"{path} is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as error:
        raise StyleError(f"{path} is not valid TOML ({error}).") from None
    styles, problems = {}, []
    for name, table in data.items():
        found = _file_problems(name, table)
        if found:
            header = f"[{name}]" if BARE_KEY.fullmatch(name) else f"[{json.dumps(name, ensure_ascii=False)}]"
            problems += [f"{header}: {problem}" for problem in found]
        else:
            styles[name] = Style(name, table["prompt"], table.get("negative", ""),
                                 table.get("description", ""), table.get("nsfw", False))
    if problems:
        raise StyleError(f"{path}: {'; '.join(problems)}.")
    return styles


def _file_problems(name: str, table: object) -> list[str]:
    """What is wrong with one style of the file, each as a phrase that follows "[name]: "."""
    if not isinstance(table, dict):
        return ["must be a table (write [name] on a line of its own, then prompt = \"... {prompt} ...\" under it)"]
    found = [] if NAME.fullmatch(name) else [f"the name must be {NAME_RULE}"]
    found += [f"unknown key {json.dumps(key, ensure_ascii=False)} (the keys are prompt, negative, "
              "description and nsfw)" for key in table if key not in KEYS]
    if "prompt" not in table:
        found.append("needs prompt = \"... {prompt} ...\"")
    for key, limit in LIMITS.items():
        value = table.get(key, "")
        if not isinstance(value, str):
            found.append(f"{key} must be a string")
        elif len(value) > limit:
            found.append(f"{key} has {len(value)} characters; the most is {limit}")
    count = table["prompt"].count(SLOT) if isinstance(table.get("prompt"), str) else 1
    if count != 1:
        found.append(f"prompt must contain {SLOT} once, where the person's prompt goes (it has {count})")
    if not isinstance(table.get("nsfw", False), bool):
        found.append("nsfw must be true or false")
    return found


def apply(style: Style, prompt: str, negative: str) -> tuple[str, str]:
    """The styled prompt and negative prompt.

    The template's {prompt} becomes the prompt, once and literally (str.replace: the prompt
    is not read again, so a "{prompt}" inside it stays as written). The person's negative
    comes first, then the style's, joined with ", "; empty ones are left out.
    """
    styled = style.prompt.replace(SLOT, prompt, 1)
    parts = (part.strip(" \t\r\n,") for part in (negative, style.negative))
    return styled, ", ".join(part for part in parts if part)
