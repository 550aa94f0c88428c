"""What the HTTP API answers about a generation: its JSON view, made from what the bot's ApiService
gave, and the URLs of its result files (the webhooks give the same ones)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safe_text import clip
from web import openapi

API = "/api/v1"  # where the API's routes are
ERROR_MAX = 500  # characters of a generation's error sentence


def file_urls(base: str, job_id: int, count: int) -> list[str]:
    """The URLs of a generation's result files, as the API and its webhooks give them; `base` is where
    clients reach the app (WEB_BASE_URL)."""
    return [f"{base.rstrip('/')}{API}/generations/{job_id}/files/{index}" for index in range(count)]


def generation_view(found: Mapping[str, Any], base: str) -> dict[str, Any]:
    """The API's view of a generation the service gave."""
    job_id = int(found["id"])
    state = str(found.get("state") or "")
    files = found.get("files") or 0
    count = len(files) if isinstance(files, list | tuple) else int(files) if isinstance(files, int) else 0
    settings = found.get("settings") or {}
    error = found.get("error")
    return {
        "id": job_id,
        "kind": str(found.get("kind") or ""),
        "state": state,
        "position": position(found.get("position")) if state == "waiting" else None,
        "error": clip(" ".join(str(error).split()), ERROR_MAX) if error and state in ("failed", "cancelled") else None,
        "files": file_urls(base, job_id, count) if state == "done" else [],
        "settings": {name: settings[name] for name in openapi.SETTINGS_SHOWN
                     if name in settings and settings[name] is not None},
        "created_at": _number(found.get("created_at")),
        "updated_at": _number(found.get("updated_at")),
    }


def position(value: Any) -> int | None:
    """A place in the queue as the service gave it, when it is one (jobs ahead: 0 or more)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
