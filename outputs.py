"""The bot's output folder, capped at a number of files, and fitting files to an upload limit.

ComfyUI results are streamed into a folder that must not grow without bound, yet a result may
only be deleted once it has been delivered to Discord. A file waiting for delivery is *pinned*;
making room deletes the oldest unpinned files. A download can be capped in bytes, and `verify`
refuses a result that is not the image or video its name says before it is posted. A result
larger than a channel accepts can be re-encoded by `fit_to_limit` if it is a still image.
"""

import asyncio
import contextlib
import itertools
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import structlog
from PIL import Image

log = structlog.get_logger(__name__)

MIB = 1 << 20
_PARTIAL_DIR = ".partial"

_SAFE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm"})
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 80
# Network chunks are often a few KiB; gathering them saves a thread hop per chunk.
_WRITE_BLOCK = MIB

_QUALITIES = (90, 80, 70, 55, 40)
_SCALE = 0.75
_SCALE_STEPS = 4
_REENCODABLE = frozenset({"PNG", "WEBP", "JPEG"})
_VIDEO_SUFFIXES = frozenset({".mp4", ".webm"})

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
# Only the formats Discord shows inline are tried: Pillow then never runs its other decoders
# (EPS hands the file to Ghostscript) on a file a server named `.png`.
_POSTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# (offset, magic) of each video container: a video is not decoded, only its header is checked.
_VIDEO_MAGIC = {".mp4": (4, b"ftyp"), ".webm": (0, b"\x1a\x45\xdf\xa3")}
_HEAD = 1024


class OutputError(Exception):
    """Base of this module's errors; str() is a sentence that can be shown to a user."""


class OutputFull(OutputError):
    """Every file in the folder still waits to be delivered, and no room came up in time."""


class TooLarge(OutputError):
    """A file cannot be brought under an upload limit."""


class OutputTooLarge(OutputError):
    """A download passed its byte cap; it was stopped there rather than read to the end."""


class BadResult(OutputError):
    """A result is not the image or video its name says (often a proxy's error page), so it is
    not posted: Discord would show a broken attachment."""


class _TempFile:
    """A save's temp file; its methods run in worker threads.

    Cancelling a coroutine does not stop the thread it waits on, so `discard` may be called
    while a `write` or `commit` still runs or is queued. The lock serialises them, and after
    `discard` any later step fails instead of creating the file again.
    """

    def __init__(self, path: Path, final: Path) -> None:
        self._path = path
        self._final = final
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._committed = False
        self._discarded = False

    def write(self, data: bytearray) -> None:
        with self._lock:
            self._open().write(data)

    def commit(self, tail: bytearray) -> None:
        """Write the last bytes, make the file durable, then give it its final name."""
        with self._lock:
            file = self._open()
            file.write(tail)
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self._path, self._final)
            self._committed = True

    def discard(self) -> None:
        """Delete what this save put on disk; failures are only logged, `open` cleans up later."""
        with self._lock:
            self._discarded = True
            if self._file is not None:
                # Flushing the rest of an abandoned file can fail (disk full); it goes anyway.
                with contextlib.suppress(OSError):
                    self._file.close()
            try:
                self._path.unlink(missing_ok=True)
                if self._committed:
                    self._final.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("output_discard_failed", file=self._final.name, error=_reason(exc))

    def _open(self) -> BinaryIO:
        if self._discarded:
            raise OutputError("The save was abandoned.")
        if self._file is None:
            self._file = self._path.open("xb")
        return self._file


class OutputFolder:
    """A folder of at most `limit` results in which an undelivered result is never deleted.

    The state lives on the event loop: `_files` maps each final file name to how many users
    still need it (its pins; 0 means it may go), oldest first, and `_reserved` counts saves in progress. Only `_reserve` raises the
    count `len(_files) + _reserved`, and only under `_lock` after making room, so concurrent
    saves cannot overshoot the cap. Whatever may free a slot (a release, a failed save) sets
    `_room` to wake the saves waiting for one.

    Only the name of a path passed to `release` or `pin` is looked at, so a path rebuilt from a
    stored file name works as well as the one `save_*` returned.
    """

    def __init__(
        self,
        root: Path,
        limit: int,
        *,
        full_wait: float = 30.0,
        stall_timeout: float = 60.0,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._root = root
        self._partial = root / _PARTIAL_DIR
        self._limit = limit
        self._full_wait = full_wait
        self._stall_timeout = stall_timeout
        self._files: dict[str, int] = {}
        self._reserved = 0
        self._lock = asyncio.Lock()
        self._room = asyncio.Event()
        self._sequence = itertools.count()

    async def open(self) -> None:
        """Create the folder, delete partial files a crash left, and adopt the existing results.

        Adopted results start unpinned and count toward the cap. Nothing is pruned here, so the
        caller can pin the results still waiting for delivery before a save makes room.
        """
        try:
            names, stale = await asyncio.to_thread(self._scan)
        except OSError as exc:
            raise OutputError(
                f"The output folder {self._root} cannot be used ({_reason(exc)})."
            ) from exc
        self._files = dict.fromkeys(names, 0)
        log.info(
            "output_folder_opened",
            root=str(self._root),
            files=len(names),
            limit=self._limit,
            stale_partials_removed=stale,
        )

    async def save_stream(
        self, name_hint: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> Path:
        """Write `chunks` to a new pinned file and return its path.

        The slot is reserved before the first byte arrives, so the cap also counts saves in
        progress. The bytes go to a temp file that gets its final name only once complete and
        synced; if anything fails or the caller is cancelled, the temp file is deleted and the
        slot freed. A source silent for `stall_timeout` seconds fails the save, so it cannot
        hold a slot forever. Once more than `max_bytes` arrived the save fails with
        `OutputTooLarge` before asking for another chunk: a body with no Content-Length, or one
        that never ends, is not read further.
        """
        await self._reserve()
        final = self._root / self._unique_name(name_hint)
        temp = _TempFile(self._partial / f"{final.name}.part", final)
        size = 0
        try:
            source = aiter(chunks)
            block = bytearray()
            while (chunk := await self._next_chunk(source)) is not None:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    log.warning("output_too_large", file=final.name, max_bytes=max_bytes)
                    raise OutputTooLarge(
                        f"The result is larger than {_mib(max_bytes)}, the most the bot "
                        "downloads; it was not saved."
                    )
                block += chunk
                if len(block) >= _WRITE_BLOCK:
                    await _store(temp.write, block)
                    block = bytearray()
            await _store(temp.commit, block)
        except BaseException:
            await self._abandon(temp)
            raise
        self._reserved -= 1
        self._files[final.name] = 1
        log.info("output_saved", file=final.name, bytes=size)
        return final

    async def save_bytes(
        self, name_hint: str, data: bytes, *, max_bytes: int | None = None
    ) -> Path:
        """Save `data` under the same contract as `save_stream`."""
        return await self.save_stream(name_hint, _single(data), max_bytes=max_bytes)

    def release(self, path: Path) -> None:
        """One user of the file is done (delivered, or its job ended). With no pin left, the file
        stays until its slot is needed. Unknown paths and extra releases: no-op."""
        if self._files.get(path.name):
            self._files[path.name] -= 1
            if not self._files[path.name]:
                self._wake()

    async def discard(self, path: Path) -> None:
        """Delete a file just saved that turned out to be unusable (see `verify`): nobody will ever
        want it, so it does not wait for the cap. The caller held its only pin."""
        if self._files.pop(path.name, None) is not None:
            self._wake()
        try:
            await asyncio.to_thread((self._root / path.name).unlink, missing_ok=True)
        except OSError as exc:
            log.warning("output_discard_failed", file=path.name, error=_reason(exc))

    def pin(self, path: Path) -> None:
        """One more user needs the file (a job that takes it as input; an undelivered result after a
        restart): it is not deleted until each of them has released it."""
        if path.name not in self._files:
            raise OutputError(f"The result {path.name} is no longer in the output folder.")
        self._files[path.name] += 1

    def files(self) -> list[Path]:
        """The final files, oldest first."""
        return [self._root / name for name in self._files]

    def _scan(self) -> tuple[list[str], int]:
        """Runs in a thread: prepare the folder; return result names by age and the stale count."""
        self._partial.mkdir(parents=True, exist_ok=True)
        stale = 0
        with os.scandir(self._partial) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    stale += 1
        found: list[tuple[int, str]] = []
        with os.scandir(self._root) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
        return [name for _, name in sorted(found)], stale

    async def _reserve(self) -> None:
        """Take a slot, pruning released files; if all are pinned, wait up to `full_wait`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._full_wait
        while True:
            async with self._lock:
                if await self._make_room():
                    self._reserved += 1
                    return
                room = self._room
            try:
                await asyncio.wait_for(room.wait(), deadline - loop.time())
            except TimeoutError:
                log.warning("output_folder_full", limit=self._limit, waited=self._full_wait)
                raise OutputFull(
                    f"The output folder already holds {self._limit} results waiting to be "
                    "delivered; please try again in a moment."
                ) from None

    async def _make_room(self) -> bool:
        """Delete the oldest unpinned files until one more fits; False if only pinned ones are left.

        A file leaves `_files` before it is deleted: a cancelled wait does not stop the thread,
        so the deletion happens either way.
        """
        while len(self._files) + self._reserved >= self._limit:
            victim = next((name for name, pinned in self._files.items() if not pinned), None)
            if victim is None:
                return False
            del self._files[victim]
            try:
                await asyncio.to_thread((self._root / victim).unlink, missing_ok=True)
            except OSError as exc:
                self._files = {victim: 0, **self._files}
                raise OutputError(
                    f"An old result could not be deleted to make room ({_reason(exc)})."
                ) from exc
            log.info("output_pruned", file=victim)
        return True

    async def _next_chunk(self, source: AsyncIterator[bytes]) -> bytes | None:
        """The next chunk, or None at the end."""
        deadline = asyncio.timeout(self._stall_timeout)
        try:
            async with deadline:
                return await anext(source, None)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise OutputError(
                f"The result stopped arriving for more than {self._stall_timeout:g} seconds."
            ) from None

    async def _abandon(self, temp: _TempFile) -> None:
        """Delete a failed save's files, then free its slot, even if cancelled again meanwhile.

        The slot is freed only after the deletion, so the cap holds on disk too.
        """
        cleanup = asyncio.create_task(asyncio.to_thread(temp.discard))
        cleanup.add_done_callback(lambda _: self._free_slot())
        await asyncio.shield(cleanup)

    def _free_slot(self) -> None:
        self._reserved -= 1
        self._wake()

    def _wake(self) -> None:
        """Wake every save waiting for room; each checks again under the lock."""
        self._room.set()
        self._room = asyncio.Event()

    def _unique_name(self, hint: str) -> str:
        """A safe name that sorts by creation time and is new even among an earlier run's files."""
        tail = _safe_tail(hint)
        while True:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            name = f"{stamp}-{next(self._sequence):06d}-{tail}"
            if name not in self._files:
                return name


async def _store(step: Callable[[bytearray], None], data: bytearray) -> None:
    """Run one file step of a save in a thread; an OS error becomes a sentence for the user."""
    try:
        await asyncio.to_thread(step, data)
    except OSError as exc:
        raise OutputError(f"The result could not be saved ({_reason(exc)}).") from exc


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _safe_tail(hint: str) -> str:
    """`stem.ext` from a server-supplied name: its basename, safe characters, a known extension."""
    base = _UNSAFE_CHARS.sub("_", hint.replace("\\", "/").rpartition("/")[2]).lstrip(".")
    stem, dot, extension = base.rpartition(".")
    if not dot:
        stem, extension = base, ""
    suffix = f".{extension.lower()}"
    if suffix not in _SAFE_SUFFIXES:
        suffix = ".bin"
    return f"{stem[:_MAX_STEM] or 'output'}{suffix}"


async def verify(path: Path) -> None:
    """Raise `BadResult` unless `path` is an image that decodes or a video with its container's
    header; only the file name goes into the message, never its content.

    A proxy in front of ComfyUI answers errors with a web page, which would be saved under the
    result's name; a cut download leaves a truncated image. Either would reach Discord as a
    broken attachment. Decoding runs in a thread, as it can take a while for a large image.
    """
    try:
        await asyncio.to_thread(_verify, path)
    except BadResult as exc:
        log.warning("output_bad_result", file=path.name, reason=str(exc))
        raise


def _verify(path: Path) -> None:
    """Runs in a thread: the checks of `verify`, cheapest first."""
    name, suffix = path.name, path.suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        kind = "an image"
    elif suffix in _VIDEO_MAGIC:
        kind = "a video"
    else:
        raise BadResult(f"The result {name} is not an image or video the bot can post.")
    try:
        with path.open("rb") as file:
            head = file.read(_HEAD)
    except OSError as exc:
        raise OutputError(f"The result {name} could not be read ({_reason(exc)}).") from exc
    if not head:
        raise BadResult(f"The result {name} is empty, not {kind}.")
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 byte order mark, then blanks
    if text.startswith(b"<"):
        raise BadResult(
            f"The result {name} is a web page, not {kind}: probably an error page from the "
            "server or a proxy in front of it."
        )
    if text.startswith(b"{"):
        raise BadResult(
            f"The result {name} is JSON text, not {kind}: probably an error from the server."
        )
    if suffix in _VIDEO_MAGIC:
        offset, magic = _VIDEO_MAGIC[suffix]
        if head[offset : offset + len(magic)] != magic:
            raise BadResult(
                f"The video {name} is damaged or not in the {suffix[1:].upper()} format its "
                "name says."
            )
        return
    _decode(path)


def _decode(path: Path) -> None:
    """Check the image with Pillow's limits as they are set: a PNG by its chunks' checksums and end
    marker (a result is usually a PNG of megabytes: inflating it would cost ~4 ms a MiB), any other
    format by decoding it (the first frame of an animation).

    An image over `Image.MAX_IMAGE_PIXELS` is refused without being decoded, whether or not the
    process turns Pillow's DecompressionBombWarning into an error.
    """
    too_many = BadResult(f"The image {path.name} has too many pixels to be opened safely.")
    try:
        with Image.open(path, formats=_POSTED_FORMATS) as image:
            limit = Image.MAX_IMAGE_PIXELS
            bomb = limit is not None and image.width * image.height > limit
            if bomb:
                pass
            elif image.format == "PNG":
                image.verify()  # every chunk's CRC and the end marker: catches a cut file without inflating it
            else:
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_many from exc
    # Pillow's decoders raise many types on bad data: OSError, SyntaxError, ValueError,
    # EOFError, struct.error...; their messages may quote the file's bytes, so none is shown.
    except Exception as exc:
        raise BadResult(
            f"The image {path.name} is damaged, cut short or not an image at all."
        ) from exc
    if bomb:
        raise too_many


async def fit_to_limit(path: Path, limit: int) -> Path:
    """Return `path` if it has at most `limit` bytes, else a re-encoded copy that does.

    Only still PNG, WebP and JPEG images are re-encoded; the first candidate of `_encodings`
    that fits wins. The copy is written next to the original as `<stem>.fit-<limit><ext>`:
    fitting the same file for the same limit again replaces it rather than piling up copies.
    The copy is not tracked by `OutputFolder`, so the caller deletes it once uploaded.
    """
    size = (await asyncio.to_thread(path.stat)).st_size
    if size <= limit:
        return path
    try:
        fitted, step, fitted_size = await asyncio.to_thread(_fit, path, size, limit)
    except TooLarge as exc:
        log.info("output_fit_failed", file=path.name, size=size, limit=limit, reason=str(exc))
        raise
    log.info(
        "output_fitted",
        file=path.name,
        size=size,
        limit=limit,
        step=step,
        fitted=fitted.name,
        fitted_size=fitted_size,
    )
    return fitted


def _fit(path: Path, size: int, limit: int) -> tuple[Path, str, int]:
    """Runs in a thread: the fitted copy, the step that produced it, and its size."""
    image = _load_still(path, size, limit)
    for step, suffix, data in _encodings(image):
        if len(data) <= limit:
            return _write_beside(path, f".fit-{limit}{suffix}", data), step, len(data)
    raise TooLarge(
        f"The image is {_mib(size)} and could not be shrunk enough; "
        f"this channel accepts files up to {_mib(limit)}."
    )


def _load_still(path: Path, size: int, limit: int) -> Image.Image:
    """Decode a still PNG, WebP or JPEG; anything else is not re-encoded, so it is TooLarge."""
    try:
        with Image.open(path) as image:
            animated = getattr(image, "n_frames", 1) > 1
            if image.format in _REENCODABLE and not animated:
                image.load()
                return image
            kind = "animation" if animated else "image"
    except (OSError, Image.DecompressionBombError):
        kind = "video" if path.suffix.lower() in _VIDEO_SUFFIXES else "file"
    raise TooLarge(f"The {kind} is {_mib(size)}; this channel accepts files up to {_mib(limit)}.")


def _encodings(image: Image.Image) -> Iterator[tuple[str, str, bytes]]:
    """Candidates, best first: lossless PNG, WebP at falling quality, then the same smaller.

    Each yields (step, suffix, bytes) and is encoded only when asked for.
    """
    if image.format != "JPEG":  # a JPEG is lossy already; as a PNG it only grows
        yield "png-optimize", ".png", _encode(image, "PNG", optimize=True, compress_level=9)
    lossy = image.convert("RGBA" if image.has_transparency_data else "RGB")
    for step in range(_SCALE_STEPS + 1):
        scale = _SCALE**step
        dimensions = (max(1, round(lossy.width * scale)), max(1, round(lossy.height * scale)))
        scaled = lossy.resize(dimensions, Image.Resampling.LANCZOS) if step else lossy
        for quality in _QUALITIES:
            yield f"webp-q{quality}-x{scale:.2f}", ".webp", _encode(scaled, "WEBP", quality=quality)


def _encode(image: Image.Image, image_format: str, **options: int | bool) -> bytes:
    buffer = BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _write_beside(original: Path, suffix: str, data: bytes) -> Path:
    """Write `data` as `<stem><suffix>` next to `original`, through a hidden temp file."""
    target = original.with_name(original.stem + suffix)
    descriptor, temp = tempfile.mkstemp(
        dir=original.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
    return target


def _mib(size: int) -> str:
    """A size as people read it: 12.3 MiB, 640.0 KiB or 900 bytes."""
    if size >= MIB:
        return f"{size / MIB:.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
