"""Moderation providers: something that scores a prompt's text or a result's images by category (the
`Provider` protocol). Two implement it: the blocked words and phrases of /admin terms (jobs/limits.py's
TermsProvider, run first by the checks before a job queues: no network, and its refusal has its own
sentence), and:

- `OpenAIModeration`: an OpenAI-compatible moderation endpoint (POST {MODERATION_URL}/moderations, the
  model MODERATION_MODEL, `Authorization: Bearer MODERATION_API_KEY`), which answers per-category scores for
  text and images. Each image goes in a request of its own (OpenAI's omni models take one image per
  request); the requests of one check run together, and the whole check is bounded by MODERATION_TIMEOUT.
  A provider that is down, slow, refuses the key or answers something else raises ModerationUnavailable.

`judge` turns scores into a verdict with the operator's thresholds (MODERATION_THRESHOLDS, or
MODERATION_NSFW_THRESHOLDS in age-restricted channels).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

ERROR_TEXT = 200  # characters of a provider's error body kept in the log
JSON = {"Content-Type": "application/json"}
MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp", b"GIF8": "image/gif"}


class ModerationUnavailable(Exception):
    """The provider gave no usable answer in time; the message says why, in words."""


@dataclass(frozen=True)
class Verdict:
    """What a check found: the categories that passed their thresholds, and every score the provider gave."""

    flagged: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    def reason(self) -> str:
        """The categories in words: "sexual, violence/graphic" (never the flagged text itself)."""
        return ", ".join(self.flagged)


class Provider(Protocol):
    """Scores text and images; raises ModerationUnavailable when it cannot."""

    async def scores(self, guild_id: int, texts: list[str], images: list[bytes]) -> tuple[dict[str, float], set[str]]:
        """The highest score of each category over the inputs, and the categories the provider itself flags."""
        ...


def judge(scores: Mapping[str, float], provider_flags: set[str], thresholds: Mapping[str, float | None]) -> Verdict:
    """Flag a category at or above its threshold; a category the thresholds leave out follows the provider's
    own flag; a threshold of None never flags."""
    flagged = [name for name, score in scores.items()
               if name in thresholds and thresholds[name] is not None and score >= thresholds[name]]
    flagged += [name for name in sorted(provider_flags) if name not in thresholds and name not in flagged]
    return Verdict(sorted(flagged), dict(scores))


class OpenAIModeration:
    """An OpenAI-compatible /moderations endpoint, over one aiohttp session (opened on first use)."""

    def __init__(self, url: str, api_key: str | None, model: str, timeout: float) -> None:
        self.url = url.rstrip("/") + "/moderations"
        self.model = model
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def scores(self, guild_id: int, texts: list[str], images: list[bytes]) -> tuple[dict[str, float], set[str]]:
        images = [await asyncio.to_thread(data_url, image) for image in images]  # megabytes: off the event loop
        inputs = [[{"type": "text", "text": "\n".join(text for text in texts if text)}]] if any(texts) else []
        inputs += [[{"type": "image_url", "image_url": {"url": image}}] for image in images]
        if not inputs:
            return {}, set()
        try:
            async with asyncio.timeout(self.timeout):
                answers = await asyncio.gather(*(self._ask(parts) for parts in inputs))
        except TimeoutError:
            raise ModerationUnavailable(f"no answer within {self.timeout:g} seconds") from None
        scores: dict[str, float] = {}
        flags: set[str] = set()
        for answer_scores, answer_flags in answers:
            for name, score in answer_scores.items():
                scores[name] = max(score, scores.get(name, 0.0))
            flags |= answer_flags
        return scores, flags

    async def _ask(self, parts: list[dict]) -> tuple[dict[str, float], set[str]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        try:
            payload = await asyncio.to_thread(json.dumps, {"model": self.model, "input": parts})
            async with self._session.post(self.url, data=payload, headers=JSON) as response:
                body = await response.read()
                if response.status != 200:
                    raise ModerationUnavailable(f"HTTP {response.status}: {body[:ERROR_TEXT].decode(errors='replace')}")
        except aiohttp.ClientError as error:
            raise ModerationUnavailable(f"{type(error).__name__}: {error}") from None
        return parse(body)


def parse(body: bytes) -> tuple[dict[str, float], set[str]]:
    """The scores and flags of a /moderations answer, the highest over its results; ModerationUnavailable
    when it is not one."""
    try:
        results = json.loads(body)["results"]
        scores: dict[str, float] = {}
        flags: set[str] = set()
        for result in results:
            for name, score in result["category_scores"].items():
                scores[str(name)] = max(float(score), scores.get(str(name), 0.0))
            flags |= {str(name) for name, on in result.get("categories", {}).items() if on is True}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModerationUnavailable(f"an answer that is not a moderation result ({type(error).__name__})") from None
    return scores, flags


def data_url(image: bytes) -> str:
    """The image as a data: URL, its type read from its first bytes (PNG when unknown)."""
    mime = next((kind for magic, kind in MIME.items() if image.startswith(magic)), "image/png")
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"
