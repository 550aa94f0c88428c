"""/history's contact sheet: up to nine results as one image of numbered thumbnails, 3 x 3.

Rendered with Pillow in a thread (never on the event loop). A result whose file is gone, is a video
or cannot be read gets a labelled grey tile instead, so one bad file never spoils the sheet.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from results.media import BadResult, open_upright

TILE, GAP, COLUMNS = 256, 8, 3
BACKGROUND, PLACEHOLDER, BADGE = (32, 34, 37), (70, 72, 76), (0, 0, 0, 170)


async def contact_sheet(files: list[Path | None]) -> bytes:
    """A WEBP of up to nine tiles, numbered 1-9 in reading order; `None` is a result with no image."""
    return await asyncio.to_thread(_render, files[:COLUMNS * COLUMNS])


def _render(files: list[Path | None]) -> bytes:
    rows = max(1, -(-len(files) // COLUMNS))
    columns = min(COLUMNS, max(1, len(files)))
    sheet = Image.new("RGB", (columns * TILE + (columns + 1) * GAP, rows * TILE + (rows + 1) * GAP), BACKGROUND)
    font = ImageFont.load_default(size=40)
    for number, path in enumerate(files, start=1):
        x = GAP + (number - 1) % COLUMNS * (TILE + GAP)
        y = GAP + (number - 1) // COLUMNS * (TILE + GAP)
        sheet.paste(_tile(path), (x, y))
        badge = Image.new("RGBA", (56, 56), BADGE)
        ImageDraw.Draw(badge).text((28, 28), str(number), fill="white", font=font, anchor="mm")
        sheet.paste(badge, (x + 6, y + 6), badge)
    buffer = io.BytesIO()
    sheet.save(buffer, "WEBP", quality=80, method=4)
    return buffer.getvalue()


def _tile(path: Path | None) -> Image.Image:
    """The image fitted into a square tile (letterboxed), or a grey one with a word on it."""
    word = "gone"
    if path is not None and path.suffix.lower() in (".mp4", ".webm"):
        word = "video"
    elif path is not None and path.is_file():
        try:
            image = open_upright(path, "RGB")
            return ImageOps.pad(image, (TILE, TILE), color=BACKGROUND)
        except BadResult:
            word = "unreadable"
    tile = Image.new("RGB", (TILE, TILE), PLACEHOLDER)
    ImageDraw.Draw(tile).text((TILE // 2, TILE // 2), word, fill=(200, 200, 200),
                              font=ImageFont.load_default(size=28), anchor="mm")
    return tile
