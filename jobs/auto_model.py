"""`model:auto`: the bot picks a model preset for the person, and says why.

A preset's tags (and its name) are looked for in the prompt as whole words, in any case; a tag of
several words matches that phrase. The preset with most matching tags wins; a tie goes to the
preset of more of the person's favorites, then to the preset declared first. When nothing in the
prompt points to a preset, the preset most of their favorites were made with; failing that, the
operator's default model. Only presets some server offers here are picked.

The reason is a sentence people read under the result ("`anime` preset: the prompt says `manga`"),
so the words quoted from the prompt are clipped and made inert: no mention, markdown or line break
can come through. Knows nothing of Discord or the store: the caller counts the favorites.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from config import ModelPreset
from safe_text import clip

AUTO = "auto"  # the model name that asks the bot to choose (unless a preset has that name)
WORD_LIMIT = 40  # the most characters of the prompt one quoted word shows
QUOTED = 3  # the most words of the prompt a reason quotes
NO_PRESET = "the default model: nothing in the prompt or your favorites pointed to a preset"


@dataclass(frozen=True)
class Choice:
    name: str | None  # the preset chosen; None for the operator's default model
    reason: str  # why, in words, for the result's embed


def wants_auto(model: object, presets: Collection[str]) -> bool:
    """Whether a model name asks the bot to choose: "auto", unless the operator named a preset so."""
    return (isinstance(model, str) and model.strip().casefold() == AUTO
            and all(name.casefold() != AUTO for name in presets))


def choose(prompt: str, presets: Mapping[str, ModelPreset], offered: Collection[str],
           favorites: Counter[str] | None) -> Choice:
    """The preset for `prompt` among those `offered`, and the reason. `favorites`: how many of the
    person's favorites each preset made (None or empty: none known)."""
    favorites = favorites or Counter()
    candidates = [name for name in presets if name in offered]  # in the operator's declared order
    scored = []
    for order, name in enumerate(candidates):
        found = _matches(prompt, [name, *presets[name].tags])
        if found:
            scored.append((len(found), favorites[name], -order, name, found))
    if scored:
        count, liked, _, name, found = max(scored)
        words = " and ".join(_quoted(word) for _, word in sorted(found)[:QUOTED])
        reason = f"{_quoted(name)} preset: the prompt says {words}"
        rivals = [entry for entry in scored if entry[0] == count and entry[3] != name]
        if rivals and liked > max(entry[1] for entry in rivals):
            reason += " (and more of your favorites used it)"
        return Choice(name, reason)
    liked = [(favorites[name], -order, name) for order, name in enumerate(candidates) if favorites[name] > 0]
    if liked:
        name = max(liked)[2]
        return Choice(name, f"{_quoted(name)} preset: most of your favorites used it")
    return Choice(None, NO_PRESET)


def _matches(prompt: str, terms: list[str]) -> list[tuple[int, str]]:
    """Each term found in the prompt as whole words: (where it first is, the words as written there).
    A term counts once however often it is written; terms that are the same words count once."""
    found: dict[str, tuple[int, str]] = {}
    for term in terms:
        words = str(term).split()
        key = " ".join(words).casefold()
        if not words or key in found:
            continue
        pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)"
        match = re.search(pattern, prompt, re.IGNORECASE)
        if match is not None:
            found[key] = (match.start(), match.group())
    return list(found.values())


def _quoted(text: str) -> str:
    """Words from the prompt (or a preset's name) as the reason shows them: in a code span, so no
    mention or markdown works, on one line, without backticks or control characters, clipped."""
    text = " ".join("".join(ch for ch in " ".join(text[:4 * WORD_LIMIT].split()) if ch.isprintable() and ch != "`")
                    .split())
    return f"`{clip(text, WORD_LIMIT) or '?'}`"
