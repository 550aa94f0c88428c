"""Bounded, inert text: what the bot shows must fit Discord's limits and leak nothing.

ComfyUI (or a proxy in front of it) can answer with anything: a 20,000-line
traceback, an HTML error page, a header dump with a token in it. These helpers
turn such text into one short, readable line, and cut any text to a length.
Standard library only: comfy_types and views import this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

HIDDEN = "[hidden]"

_TITLE = re.compile(r"(?i)<title[^>]*>([^<]*)<")
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?@#:&])")  # a leftover "<" that could open a tag or a mention
_MASS_MENTION = re.compile(r"@(?=everyone|here)", re.I)
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f\u202a-\u202e\u2066-\u2069]")
_SECRETS = [  # in this order: a header hides the rest of its line, whatever URL or token is in it
    re.compile(r"(?i)(?:proxy-authorization|authorization|www-authenticate|proxy-authenticate|set-cookie|cookie"
               r"|api-key|auth-token|\bx-[\w-]+)[\"']?\s*[:=].*"),
    re.compile(r"(?<!\S)\S*://\S*"),  # any URL, with whatever credentials it carries
    re.compile(r"(?<!\S)\S*:\S*@\S+"),  # user:password@host
    re.compile(r"(?i)bearer\s+\S+"),
    re.compile(r"(?i)(?<![\w-])[\w-]*(?:token|secret|password|passwd|pwd|(?:api|access|private)[_-]?key|apikey"
               r"|session[_-]?id)[\"']?\s*[=:]\s*[\"']?[^\s\"'&,;]*[\"']?"),
]
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")  # a key, a hash, a session id ...
_UP_TO_LAST_SPACE = re.compile(r"(?s).*\s")
_SPACE = re.compile(r"\s+")
_WORDY = re.compile(r"\w")


def clip(text: object, limit: int) -> str:
    """`text` cut to at most `limit` characters; a cut text ends with "…"."""
    text = str(text)
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1].rstrip() + "…"


def server_line(text: object, limit: int = 300) -> str:
    """The first meaningful line of a server-supplied text, safe to show; "" for an empty text.

    Markup is dropped (an HTML page gives its title); headers, URLs, credentials and
    long secrets become "[hidden]"; whitespace is collapsed. For a Python traceback
    it is the exception line, the last one.
    """
    text = str(text)
    title = _TITLE.search(text, 0, 20_000)
    lines = [title.group(1)] if title and _WORDY.search(title.group(1)) else text.splitlines()
    line = next((line for line in lines if _WORDY.search(_TAG.sub(" ", line))), "")
    if line.lstrip().startswith("Traceback (most recent call last)"):
        line = next((last for last in reversed(lines) if last[:1].strip() and _WORDY.search(last)), line)
    cap = max(4 * limit, 1000)
    if len(line) > cap:  # cut at a space, so that no secret is left half there and unrecognised
        head = _UP_TO_LAST_SPACE.match(line, 0, cap)
        line = head.group() if head else HIDDEN
    line = _CONTROL.sub("", _TAG.sub(" ", line))
    for secret in _SECRETS:
        line = secret.sub(HIDDEN, line)
    line = _LONG_RUN.sub(_hide_random, line)
    line = _MASS_MENTION.sub("@\u200b", _TAG_START.sub("‹", line))
    return clip(_SPACE.sub(" ", line).strip(), limit)


def _hide_random(match: re.Match[str]) -> str:
    run = match.group()
    hexadecimal = all(c in "0123456789abcdefABCDEF" for c in run)
    looks_random = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return HIDDEN if hexadecimal or looks_random else run


def summarize(items: Sequence[object], shown: int = 3, noun: str = "problems", sep: str = "; ",
              limit: int = 400) -> str:
    """The first `shown` items (each clipped to `limit`), then "… and N more problems"."""
    parts = [clip(item, limit) for item in items[:shown]]
    rest = len(items) - len(parts)
    if rest > 0:
        parts.append(f"… and {rest} more {noun if rest > 1 else noun.removesuffix('s')}")
    return sep.join(parts)
