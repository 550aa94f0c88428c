"""Gallery thumbnails: WEBP, longest side 320 px, made once per result file and kept on disk.

Pillow runs in a worker thread, never on the event loop. A file is rendered by one request at a time
(an asyncio lock per name, dropped when nobody waits on it, so the locks never outnumber the requests
in flight) and by at most `renders` at once. Videos, files that are gone, and images that are damaged
or too large to open safely (over `Image.MAX_IMAGE_PIXELS`, as elsewhere in the bot) get None.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import structlog
from PIL import Image, ImageOps

from results.folder import OutputError

log = structlog.get_logger(__name__)

SIZE = 320
VIDEO_SUFFIXES = frozenset({".mp4", ".webm"})
_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


class Thumbnails:
    """Thumbnails of the files in `outputs_dir`, cached in `cache_dir` under the file's name."""

    def __init__(self, outputs_dir: Path, cache_dir: Path, *, renders: int = 2, results: Any = None) -> None:
        """With `results` (S3Results), a file this machine has no copy of is fetched from the bucket
        to be rendered, and a thumbnail is kept though its file is not here."""
        self._outputs = outputs_dir
        self._results = results
        self._cache = cache_dir
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._renders = asyncio.Semaphore(renders)

    def cached(self, name: str) -> Path:
        return self._cache / f"{name}.webp"

    async def get(self, name: str) -> Path | None:
        """The thumbnail of the result file `name` (a bare file name), made if needed; None if there is none."""
        if not _plain(name) or Path(name).suffix.lower() in VIDEO_SUFFIXES:
            return None
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                return await self._get(name)
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)

    async def _get(self, name: str) -> Path | None:
        source, target = self._outputs / name, self.cached(name)
        if self._results is not None and not await asyncio.to_thread(source.is_file):
            if await asyncio.to_thread(target.is_file):
                return target
            try:
                await self._results.local(name)
            except OutputError as exc:
                log.info("thumbnail_source_gone", file=name, error=str(exc))
                return None
        state = await asyncio.to_thread(_state, source, target)
        if state != "render":
            return target if state == "cached" else None
        async with self._renders:
            made = await asyncio.to_thread(_render, source, target)
        if made:
            log.info("thumbnail_made", file=name)
        return target if made else None


def _plain(name: str) -> bool:
    """A bare file name as the output folder makes them: no folder, not hidden."""
    return bool(name) and name == Path(name).name and not name.startswith(".") and "\\" not in name and "\0" not in name


def _state(source: Path, target: Path) -> str:
    """"cached", "render" or "gone"; a thumbnail whose file was pruned is deleted with it."""
    if not source.is_file():
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
        return "gone"
    return "cached" if target.is_file() else "render"


def _render(source: Path, target: Path) -> bool:
    """Write the thumbnail of `source` to `target` atomically; False when the image cannot be used."""
    try:
        with Image.open(source, formats=_IMAGE_FORMATS) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                log.warning("thumbnail_refused", file=source.name, reason="too many pixels")
                return False
            image.seek(0)
            image.draft("RGB", (SIZE, SIZE))  # JPEG: decode at a reduced scale
            small = ImageOps.exif_transpose(image)
            small.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
            small = small.convert("RGBA" if _has_alpha(small) else "RGB")
    except FileNotFoundError:
        return False
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        log.warning("thumbnail_refused", file=source.name, reason="too many pixels")
        return False
    except Exception as exc:  # Pillow's decoders raise many types on bad data
        log.warning("thumbnail_failed", file=source.name, error=type(exc).__name__)
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
    except OSError as exc:
        log.warning("thumbnail_not_saved", file=source.name, error=exc.strerror or str(exc))
        return False
    try:
        with os.fdopen(handle, "wb") as file:
            small.save(file, "WEBP", quality=80, method=4)
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if not isinstance(exc, OSError):
            raise
        log.warning("thumbnail_not_saved", file=source.name, error=exc.strerror or str(exc))
        return False
    return True


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
