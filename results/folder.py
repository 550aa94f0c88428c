"""The bot's output folder, capped at a number of files; also where results are kept when no
object store is set (the keeper methods at the end; results/keeper.py has the other home).

ComfyUI results are streamed into a folder that must not grow without bound, yet a result may
only be deleted once it has been delivered to Discord. A file waiting for delivery is *pinned*;
making room deletes the oldest unpinned files. A download can be capped in bytes. Whether a file
can be posted (checked, fitted to an upload limit) is media.py's business.
"""

import asyncio
import contextlib
import itertools
import os
import re
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger(__name__)

MIB = 1 << 20
_PARTIAL_DIR = ".partial"

_SAFE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm"})
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 80
_KEPT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")  # a name this folder made, as stored
# Network chunks are often a few KiB; gathering them saves a thread hop per chunk.
_WRITE_BLOCK = MIB

class OutputError(Exception):
    """Base of this module's errors; str() is a sentence that can be shown to a user."""


class OutputFull(OutputError):
    """Every file in the folder still waits to be delivered, and no room came up in time."""


class OutputTooLarge(OutputError):
    """A download passed its byte cap; it was stopped there rather than read to the end."""



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
        log.info("output_folder_opened", root=str(self._root), files=len(names), limit=self._limit,
                 stale_partials_removed=stale)

    async def save_stream(
        self, name_hint: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None,
        exact: bool = False,
    ) -> Path:
        """Write `chunks` to a new pinned file and return its path.

        With `exact`, `name_hint` is the file's final name, as made by an earlier save (a result
        fetched back from the object store); otherwise a new name is made from it.

        The slot is reserved before the first byte arrives, so the cap also counts saves in
        progress. The bytes go to a temp file that gets its final name only once complete and
        synced; if anything fails or the caller is cancelled, the temp file is deleted and the
        slot freed. A source silent for `stall_timeout` seconds fails the save, so it cannot
        hold a slot forever. Once more than `max_bytes` arrived the save fails with
        `OutputTooLarge` before asking for another chunk: a body with no Content-Length, or one
        that never ends, is not read further.
        """
        if exact and (not _KEPT_NAME.fullmatch(name_hint) or name_hint in self._files):
            raise OutputError(f"The result {name_hint[:80]!r} cannot be saved under that name.")
        await self._reserve()
        final = self._root / (name_hint if exact else self._unique_name(name_hint))
        temp = _TempFile(self._partial / f"{final.name}.part", final)
        size = 0
        try:
            source = aiter(chunks)
            block = bytearray()
            while (chunk := await next_chunk(source, self._stall_timeout)) is not None:
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

    async def forget(self, path: Path) -> None:
        """A deleted result's file: removed now, unless a job still holds it as its input, in which case
        the cap takes it once that job lets go (it is no longer pinned by its result)."""
        if self._files.get(path.name, 0) > 0:
            return
        await self.discard(path)

    def pin(self, path: Path) -> None:
        """One more user needs the file (a job that takes it as input; an undelivered result after a
        restart): it is not deleted until each of them has released it."""
        if path.name not in self._files:
            raise OutputError(f"The result {path.name} is no longer in the output folder.")
        self._files[path.name] += 1

    def files(self) -> list[Path]:
        """The final files, oldest first."""
        return [self._root / name for name in self._files]

    # Where results are kept (results/keeper.py): here, the folder itself; S3Results overrides these.
    async def keep(self, path: Path) -> None:
        """A result saved and checked is kept where it is: nothing to do."""

    async def local(self, name: str, *, hold: bool = False) -> Path:
        """The result's path here (whether it is still there is the caller's check, as before)."""
        return self._root / name

    async def link(self, name: str, seconds: int = 600) -> str | None:
        """None: the web app streams the file from the folder."""
        return None

    async def exists(self, name: str) -> bool:
        return await asyncio.to_thread((self._root / name).is_file)

    async def remove(self, name: str) -> None:
        """A deleted result, as `forget` does it."""
        await self.forget(self._root / name)

    async def prune(self, pending: object) -> int:
        """The count cap prunes on every save: nothing else to do."""
        return 0

    async def close(self) -> None:
        """Nothing to close."""

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


def _mib(size: int) -> str:
    """A size as people read it: 12.3 MiB, 640.0 KiB or 900 bytes."""
    if size >= MIB:
        return f"{size / MIB:.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


async def next_chunk(source: AsyncIterator[bytes], stall_timeout: float) -> bytes | None:
    """The next chunk of a download, or None at its end; OutputError in words when none comes within
    `stall_timeout` seconds."""
    deadline = asyncio.timeout(stall_timeout)
    try:
        async with deadline:
            return await anext(source, None)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise OutputError(f"The result stopped arriving for more than {stall_timeout:g} seconds.") from None
