"""How long a job will take: learned from the GPU time of finished jobs, per server, model and size.

A sampling job's work is its steps times its images times its megapixels; an upscale or animation
counts as one unit.
Each (server, kind, model, size class) keeps a moving average of seconds per unit of work, and an
estimate falls back to the same kind and model on any server, then to the kind alone, then to
nothing (no number is better than a made-up one). Knows nothing of Discord; the history is read
back from the store at start, so nothing here lives only in memory.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

WEIGHT = 0.3  # how much the newest job moves an average
SAMPLING = ("txt2img", "img2img", "inpaint", "outpaint", "controlnet")
KEYS_MAX = 2000  # distinct averages kept (servers x kinds x models x sizes), so memory stays bounded


def work(kind: str, request: Mapping[str, Any], default_steps: int) -> float:
    """The units of work of a request: steps x images x megapixels for sampling kinds, else 1."""
    if kind in SAMPLING:
        pixels = float(request.get("width") or 512) * float(request.get("height") or 512) / 1_048_576
        return float(request.get("steps") or default_steps) * max(1, int(request.get("batch") or 1)) * pixels
    return 1.0


def size_class(request: Mapping[str, Any]) -> int:
    """The request's megapixels, rounded up to a power of two (0.25, 0.5, 1, 2, 4 ...) as a small int."""
    pixels = float(request.get("width") or 512) * float(request.get("height") or 512)
    return max(-2, math.ceil(math.log2(max(pixels, 1) / 1_048_576)))


class Estimates:
    def __init__(self, default_steps: int) -> None:
        self._default_steps = default_steps
        self._rates: dict[tuple[Any, ...], float] = {}  # key -> seconds per unit of work
        self._servers: set[str] = set()

    def learn(self, server: str, kind: str, request: Mapping[str, Any], seconds: float) -> None:
        """A finished job: it took `seconds` of GPU time on `server`."""
        if not seconds or seconds <= 0 or not math.isfinite(seconds):
            return
        rate = seconds / work(kind, request, self._default_steps)
        if len(self._servers) < KEYS_MAX:
            self._servers.add(server)
        for key in self._keys(server, kind, request):
            old = self._rates.get(key)
            if old is None and len(self._rates) >= KEYS_MAX:
                continue
            self._rates[key] = rate if old is None else old + WEIGHT * (rate - old)

    def learn_all(self, history: Iterable[tuple[str, str, Mapping[str, Any], float]]) -> None:
        for server, kind, request, seconds in history:
            self.learn(server, kind, request, seconds)

    def job(self, kind: str, request: Mapping[str, Any], server: str | None = None) -> float | None:
        """Seconds the job should take on `server`, or None when nothing like it ran yet. Without a
        server (a waiting job does not know where it will run): the mean over the servers that ran
        jobs like it."""
        if server is None:
            found = [rate for name in self._servers if (rate := self._rates.get(self._keys(name, kind, request)[0]))]
            if found:
                return statistics.fmean(found) * work(kind, request, self._default_steps)
            server = "*"
        rate = next((self._rates[key] for key in self._keys(server, kind, request) if key in self._rates), None)
        return None if rate is None else rate * work(kind, request, self._default_steps)

    def _keys(self, server: str, kind: str, request: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """From the most to the least specific."""
        model = str(request.get("checkpoint") or request.get("model") or "")
        return [(server, kind, model, size_class(request)), ("*", kind, model, size_class(request)),
                ("*", kind, model), ("*", kind)]


def wait(ahead: list[float | None], running_left: list[float], servers: int) -> float | None:
    """Seconds until a job that has `ahead` before it can start, with `servers` servers taking jobs:
    the work ahead and what is left of the running jobs, shared by the servers. None when a job ahead
    has no estimate."""
    if any(seconds is None for seconds in ahead) or servers < 1:
        return None
    return (sum(ahead) + sum(max(0.0, left) for left in running_left)) / servers  # type: ignore[arg-type]
