"""Decoding ComfyUI's websocket frames, total over any input.

A server (or a proxy in front of it) can send anything: a `data` that is a
string, a `progress` of 1e400, preview metadata that is a list, a frame of three
bytes. Every function here either returns a well-typed value or raises
`BadFrame` with a short reason; nothing else escapes, so the reader of the
socket (comfy/listener.py) can drop one bad frame and go on.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from comfy.types import Output, Preview

PREVIEW_FORMATS = {1: "image/jpeg", 2: "image/png"}
MAX_COUNT = 2**31 - 1  # progress values beyond this are nonsense from a hostile server
MAX_META = 64 * 1024  # preview metadata is a few hundred bytes of JSON
MAX_PREVIEW = 4 * 1024 * 1024  # a latent preview is a small JPEG or PNG; a larger one is not shown


class BadFrame(ValueError):
    """A frame that does not parse into a known event; the message says why, briefly."""


@dataclass(frozen=True, slots=True)
class Text:
    """A JSON frame: its type and its `data` object (`{}` when absent)."""

    kind: str
    data: dict[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) else None


def parse_text(raw: str) -> Text:
    try:
        message = json.loads(raw)
    except ValueError:
        raise BadFrame("not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadFrame("not an object with a string 'type'")
    data = message.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadFrame(f"'data' is {type(data).__name__}, not an object")
    return Text(message["type"], data)


def node_id(value: Any, *, nullable: bool = False) -> str | None:
    """A node id as ComfyUI sends it: a string (or a number, which some servers send)."""
    if value is None and nullable:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadFrame(f"node id {_kind(value)}")


def count(value: Any) -> int:
    """A progress value or maximum: a finite, non-negative number of sane size."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadFrame(f"progress value {_kind(value)}")
    if not 0 <= value <= MAX_COUNT:
        raise BadFrame("progress value out of range")
    return int(value)


def node_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadFrame(f"node list {_kind(value)}")
    return tuple(node_id(item) or "" for item in value)


def output(data: dict[str, Any]) -> Output:
    ui = data.get("output")
    if ui is None:
        ui = {}
    if not isinstance(ui, dict):
        raise BadFrame(f"'output' {_kind(ui)}")
    return Output.from_ui(node_id(data.get("node")) or "", ui)


def parse_binary(frame: bytes) -> tuple[int, dict[str, Any] | None, bytes]:
    """(event type, metadata or None, payload) of a binary frame.

    Type 4 carries JSON metadata (which prompt and node the preview is for);
    type 1 carries an image format number, mapped to a mime type in the metadata.
    Other types (3: text) come back with no metadata and are not previews.
    """
    try:
        (kind,) = struct.unpack_from(">I", frame)
        if kind == 4:
            (length,) = struct.unpack_from(">I", frame, 4)
            if length > min(MAX_META, len(frame) - 8):
                raise BadFrame("preview metadata longer than the frame")
            meta = json.loads(frame[8:8 + length])
            if not isinstance(meta, dict):
                raise BadFrame(f"preview metadata {_kind(meta)}")
            return kind, meta, frame[8 + length:]
        if kind == 1:
            (image_format,) = struct.unpack_from(">I", frame, 4)
            return kind, {"image_type": PREVIEW_FORMATS.get(image_format, "image/png")}, frame[8:]
        return kind, None, frame[4:]
    except (struct.error, ValueError) as error:
        if isinstance(error, BadFrame):
            raise
        raise BadFrame(f"binary frame: {error.__class__.__name__}") from None


def preview(meta: dict[str, Any], image: bytes) -> Preview:
    if len(image) > MAX_PREVIEW:
        raise BadFrame(f"preview of {len(image)} bytes")
    mime = meta.get("image_type")
    node = meta.get("node_id")
    return Preview(image, mime if mime in ("image/png", "image/jpeg", "image/webp") else "image/png",
                   node if isinstance(node, str) else None)


def excerpt(message: str | bytes, limit: int = 120) -> str:
    """A short, printable sample of a bad frame for the log."""
    if isinstance(message, bytes):
        return f"{len(message)} bytes: {message[:24].hex()}"
    text = message[:limit].encode("ascii", "backslashreplace").decode("ascii")
    return text + ("…" if len(message) > limit else "")


def _kind(value: Any) -> str:
    return f"is {type(value).__name__}" if not isinstance(value, str) else "is empty"
