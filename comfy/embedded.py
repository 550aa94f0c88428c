"""The workflow ComfyUI embeds in the images it saves, read without decoding a pixel.

ComfyUI's SaveImage writes PNG text chunks named "prompt" (the API graph it ran) and "workflow" (the
editor's graph), before the image data; SaveAnimatedPNG writes the same pairs in private "comf"
chunks after the frames; its animated WebP writer puts them in the EXIF block instead,
as strings "prompt:{...}" (tag 0x0110) and "workflow:{...}" (tag 0x010F and down). A person who has
only the image can still share the workflow, so `/workflow add` accepts both.

Attachments come from anyone, so the work is bounded: the file's size is checked first, the PNG and
RIFF containers are walked chunk by chunk with every length checked against the bytes present, text
is inflated only up to a limit, and the EXIF table is read entry by entry with its offsets checked
(no image library is involved). Every way a file can be wrong ends in an `EmbeddedError` saying what is wrong; no
other exception leaves `read_embedded`.
"""

from __future__ import annotations

import json
import struct
import zlib

MAX_BYTES = 64 * 1024 * 1024
MAX_TEXT = 16 * 1024 * 1024  # the most one metadata text may inflate to
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt", b"comf")  # comf: SaveAnimatedPNG's own, after the frames
KEYS = ("prompt", "workflow")
EXIF_PREFIX = b"Exif\x00\x00"


class EmbeddedError(ValueError):
    """The file cannot be read for an embedded workflow; str() says why, in words."""


def read_embedded(data: bytes, limit: int = MAX_BYTES) -> tuple[dict | None, dict | None]:
    """(prompt, workflow) embedded by ComfyUI in a PNG or WebP; None for each one absent."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EmbeddedError("the attachment is not a file's bytes")
    data = bytes(data)
    if len(data) > limit:
        raise EmbeddedError(f"the image is {len(data):,} bytes; at most {limit:,} are read for a workflow")
    try:
        if data.startswith(PNG_SIGNATURE):
            texts = _png_texts(data)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            texts = _webp_texts(data)
        else:
            raise EmbeddedError("the file is neither a PNG nor a WebP, so it holds no ComfyUI workflow")
        return _parse(texts.get("prompt"), "prompt"), _parse(texts.get("workflow"), "workflow")
    except EmbeddedError:
        raise
    except Exception as error:  # a malformed file must never surface as a crash
        raise EmbeddedError(f"the image could not be read ({type(error).__name__})") from None


def _png_texts(data: bytes) -> dict[str, str]:
    """The "prompt" and "workflow" texts of a PNG, walking its chunks up to IEND."""
    texts: dict[str, str] = {}
    position, first = len(PNG_SIGNATURE), True
    while True:
        if position + 8 > len(data):
            raise EmbeddedError("the PNG is cut short: it ends before its last chunk")
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        end = position + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise EmbeddedError(f"the PNG is cut short: its {_name(kind)} chunk at byte {position} runs past the end")
        if first and kind != b"IHDR":
            raise EmbeddedError("the file starts like a PNG but its first chunk is not the image header")
        first = False
        body = data[position + 8:position + 8 + length]
        if kind in TEXT_CHUNKS:
            (stored,) = struct.unpack(">I", data[end - 4:end])
            if zlib.crc32(kind + body) != stored:
                raise EmbeddedError(f"the PNG's {_name(kind)} chunk at byte {position} is damaged (bad checksum)")
            key, text = _text_chunk(kind, body)
            if key in KEYS and key not in texts:
                texts[key] = text
        if kind == b"IEND":
            return texts
        position = end


def _text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    key, separator, rest = body.partition(b"\x00")
    if not separator:
        raise EmbeddedError(f"the PNG has a {_name(kind)} chunk without a keyword")
    name = key.decode("latin-1")
    if name not in KEYS:
        return name, ""
    if kind in (b"tEXt", b"comf"):
        return name, rest.decode("latin-1")
    if kind == b"zTXt":
        return name, _inflate(rest[1:], name).decode("latin-1")
    if len(rest) < 2:
        raise EmbeddedError(f"the PNG's iTXt chunk \"{name}\" is cut short")
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    raw = _inflate(text, name) if compressed else text
    try:
        return name, raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EmbeddedError(f"the PNG's \"{name}\" text is not UTF-8") from None


def _inflate(compressed: bytes, name: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, MAX_TEXT)
    except zlib.error:
        raise EmbeddedError(f"the PNG's compressed \"{name}\" text is damaged") from None
    if inflater.unconsumed_tail:
        raise EmbeddedError(f"the PNG's \"{name}\" text inflates past {MAX_TEXT:,} bytes")
    return out


def _webp_texts(data: bytes) -> dict[str, str]:
    """The "prompt" and "workflow" strings of a WebP's EXIF block, if it has one."""
    (size,) = struct.unpack("<I", data[4:8])
    stop = min(len(data), 8 + size)
    position = 12
    while position + 8 <= stop:
        kind, length = struct.unpack("<4sI", data[position:position + 8])
        if position + 8 + length > len(data):
            raise EmbeddedError(f"the WebP is cut short: its {_name(kind)} chunk at byte {position} runs past the end")
        if kind == b"EXIF":
            return _exif_texts(data[position + 8:position + 8 + length])
        position += 8 + length + (length & 1)
    if stop < 8 + size:
        raise EmbeddedError("the WebP is cut short: it is smaller than its header says")
    return {}


def _exif_texts(block: bytes) -> dict[str, str]:
    """The "prompt:"/"workflow:" strings among the first EXIF table's text entries. The table is read
    here, strictly: every entry and value must lie inside the block."""
    if block.startswith(EXIF_PREFIX):
        block = block[len(EXIF_PREFIX):]
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(block[:4])
    if order is None or len(block) < 8:
        raise EmbeddedError("the WebP's EXIF block is damaged (no TIFF header)")
    (table,) = struct.unpack(order + "I", block[4:8])
    if table + 2 > len(block):
        raise EmbeddedError("the WebP's EXIF block is damaged (its table lies outside it)")
    (count,) = struct.unpack(order + "H", block[table:table + 2])
    if table + 2 + 12 * count > len(block):
        raise EmbeddedError(f"the WebP's EXIF block is damaged (its table claims {count} entries it does not hold)")
    texts: dict[str, str] = {}
    for index in range(count):
        at = table + 2 + 12 * index
        _tag, kind, length = struct.unpack(order + "HHI", block[at:at + 8])
        if kind not in (1, 2, 7):  # bytes, ASCII text, undefined bytes: the kinds text is stored as
            continue
        if length <= 4:
            raw = block[at + 8:at + 8 + length]
        else:
            (offset,) = struct.unpack(order + "I", block[at + 8:at + 12])
            if offset + length > len(block):
                raise EmbeddedError("the WebP's EXIF block is damaged (a value lies outside it)")
            raw = block[offset:offset + length]
        key, separator, value = raw.rstrip(b"\x00").decode("utf-8", "replace").partition(":")
        if separator and key in KEYS and key not in texts:
            texts[key] = value
    return texts


def _parse(text: str | None, name: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        raise EmbeddedError(f"the embedded {name} is nested too deeply") from None
    except ValueError:
        raise EmbeddedError(f"the embedded {name} is not valid JSON") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EmbeddedError(f"the embedded {name} is not a JSON object")
    return value


def _name(kind: bytes) -> str:
    return kind.decode("latin-1", "replace")

