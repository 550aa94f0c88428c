"""Where results are kept: the capped output folder (`LocalResults`), or an S3-compatible bucket with
the folder as this machine's working copy (`S3Results`). One interface, two implementations.

Both are the output folder the rest of the bot already uses (saves, pins, the count cap); the keeper
methods are on `OutputFolder` itself (folder.py, the local home, so any folder works where results
are kept) and `S3Results` overrides them:
`keep(path)` once a result is saved and checked (S3: streamed up, so any process can post it before
its job is recorded as delivering), `local(name)` a path to post or thumbnail (S3: fetched back from
the bucket, bounded, when this machine has no copy), `link(name)` a short-lived presigned URL for
browsers and API clients (local: None, the web app streams the file), `exists`, `remove(name)`,
`prune(pending)` for retention (S3: by count, bytes or age; never a name in `pending`), `close`.

Links rather than streaming through the web app: the bytes of a large video then go from the bucket
to the browser, not through the bot's process, and the web app still checks the gallery link or API
key before it hands out a URL that works for LINK_SECONDS only.

Several processes on several machines may share one bucket: each keeps what it made, fetches what
another made, and prunes by the same rule; deleting what another already deleted is not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from config import Settings
from results.folder import MIB, OutputError, OutputFolder, OutputTooLarge
from results.s3 import S3Store, StoredObject, StoreMissing

log = structlog.get_logger(__name__)

LINK_SECONDS = 10 * 60  # a presigned link is asked for when a page or client needs it, so it can be short
STALE_UPLOAD = 3600.0  # multipart uploads older than this were left by a process that died
KEEP_TRIES = 3  # uploads of one result; each is already retried part by part by the client
KEEP_PAUSE = 1.0  # seconds before the second upload, twice that before the third
FRESH = 600.0  # objects this young are never pruned: another process may be about to record them
PRUNE_EVERY = 600.0
_READ = MIB


@dataclass(frozen=True)
class Retention:
    """Which kept results may go: past `count` results, past `max_bytes`, or older than `max_age`
    seconds, the oldest first; never a pending one, nor one younger than `fresh` seconds.
    Pending and fresh results still count toward the totals."""

    count: int | None = None
    max_bytes: int | None = None
    max_age: float | None = None
    fresh: float = FRESH

    def victims(self, objects: list[StoredObject], pending: set[str], now: float) -> list[StoredObject]:
        """The objects to remove, oldest first; `objects` may come in any order."""
        ordered = sorted(objects, key=lambda item: (item.modified, item.name))
        left, size = len(ordered), sum(item.size for item in ordered)
        chosen: list[StoredObject] = []
        for item in ordered:
            age = now - item.modified.timestamp()
            if item.name in pending or age < self.fresh:
                continue
            if ((self.count is not None and left > self.count)
                    or (self.max_bytes is not None and size > self.max_bytes)
                    or (self.max_age is not None and age > self.max_age)):
                chosen.append(item)
                left, size = left - 1, size - item.size
        return chosen


LocalResults = OutputFolder  # the capped folder: its keeper methods keep results where they are saved


class S3Results(OutputFolder):
    """Results in a bucket; the folder holds this machine's copies (inputs, results on their way, and
    results fetched back to post or thumbnail), under the same count cap, which never removes a
    file still to be delivered. A copy evicted by the cap is fetched again when needed."""

    def __init__(self, root: Path, limit: int, store: S3Store, retention: Retention, *,
                 signer: S3Store | None = None, max_bytes: int | None = None, **options: float) -> None:
        """`signer` signs links for the endpoint browsers reach (S3_PUBLIC_URL; default `store`);
        `max_bytes` bounds every fetch from the bucket (DOWNLOAD_LIMIT)."""
        super().__init__(root, limit, **options)
        self.store = store
        self._signer = signer
        self.retention = retention
        self._max_bytes = max_bytes
        self._fetching: dict[str, tuple[asyncio.Lock, int]] = {}
        self._pruning = asyncio.Lock()

    async def open(self) -> None:
        """Open the folder and the bucket, and abort the multipart uploads a dead process left."""
        await super().open()
        await self.store.open()
        if self._signer is not None:
            await self._signer.open(check=False)
        await self.store.abort_stale_uploads(STALE_UPLOAD)

    async def close(self) -> None:
        await self.store.close()
        if self._signer is not None:
            await self._signer.close()

    async def keep(self, path: Path) -> None:
        """Stream the saved result up to the bucket, up to KEEP_TRIES times (the file is here, so a
        failed upload costs no GPU time); OutputError in words when every try failed. A failed try
        leaves no object and no part behind (S3Store.put_stream)."""
        for attempt in range(1, KEEP_TRIES + 1):
            try:
                async with contextlib.aclosing(_read(path)) as chunks:
                    await self.store.put_stream(path.name, chunks)
                return
            except OutputTooLarge:
                raise
            except OutputError as exc:
                log.warning("result_not_kept", file=path.name, attempt=attempt, error=str(exc))
                if attempt == KEEP_TRIES:
                    raise OutputError(f"The result could not be kept: {exc}") from exc
            await asyncio.sleep(KEEP_PAUSE * attempt)

    async def local(self, name: str, *, hold: bool = False) -> Path:
        """The result's path in the folder, fetched from the bucket (under DOWNLOAD_LIMIT) when this
        machine has no copy; `StoreMissing` when the bucket has none either. With `hold` (a delivery)
        the file has at least one pin afterwards, so the cap cannot take it before the caller releases
        it; a fetched copy otherwise has none and goes when its slot is needed."""
        lock, users = self._fetching.get(name, (asyncio.Lock(), 0))
        self._fetching[name] = (lock, users + 1)  # one fetch of a name at a time; the lock goes with its last user
        try:
            async with lock:
                return await self._local(name, hold)
        finally:
            lock, users = self._fetching[name]
            if users == 1:
                del self._fetching[name]
            else:
                self._fetching[name] = (lock, users - 1)

    async def _local(self, name: str, hold: bool) -> Path:
        path = self._root / name
        if name in self._files and await asyncio.to_thread(path.is_file):
            if hold and not self._files[name]:
                self._files[name] = 1
            return path
        if name in self._files:  # removed behind the folder's back: fetch it again
            await self.discard(path)
        async with contextlib.aclosing(self.store.get_stream(name, max_bytes=self._max_bytes)) as chunks:
            path = await self.save_stream(name, chunks, max_bytes=self._max_bytes, exact=True)
        if not hold:
            self.release(path)
        log.info("result_fetched", file=name, held=hold)
        return path

    async def link(self, name: str, seconds: int = LINK_SECONDS) -> str | None:
        """A URL that reads the result straight from the bucket for `seconds`; `StoreMissing` if it
        is not there (so the caller can say so rather than hand out a dead link)."""
        if not await self.store.exists(name):
            raise StoreMissing(f"The result {name} is not in the object store.")
        return await (self._signer or self.store).presigned_url(name, seconds)

    async def exists(self, name: str) -> bool:
        return await self.store.exists(name)

    async def remove(self, name: str) -> None:
        """A deleted result: out of the bucket now, and its copy here as `forget` does it."""
        await self.store.delete(name)
        await super().remove(name)

    async def prune(self, pending: Iterable[str]) -> int:
        """Remove the results the retention rule lets go, and their copies here; never one in
        `pending` (undelivered results and the inputs of active jobs, over every process) nor one
        pinned here. Returns how many were removed; one at a time, so a concurrent prune is skipped."""
        if self._pruning.locked():
            return 0
        async with self._pruning:
            kept = set(pending) | {name for name, pins in self._files.items() if pins}
            victims = self.retention.victims(await self.store.list(), kept, time.time())
            for item in victims:
                await self.store.delete(item.name)
                await self.forget(self._root / item.name)
            if victims:
                log.info("results_pruned", count=len(victims), bytes=sum(item.size for item in victims))
            return len(victims)


def make_results(settings: Settings) -> LocalResults:
    """The bot's results as the settings say: OUTPUT_STORE's bucket, or the capped folder."""
    if settings.output_store is None:
        return LocalResults(settings.outputs_dir, settings.output_limit)
    where = urlsplit(settings.output_store)
    bucket, prefix = where.hostname or "", where.path.strip("/")
    keys = [secret.get_secret_value() if secret is not None else None
            for secret in (settings.s3_access_key_id, settings.s3_secret_access_key)]

    def client(endpoint: str | None) -> S3Store:
        return S3Store(endpoint, bucket, prefix, settings.s3_region, *keys)  # type: ignore[arg-type]

    signer = client(settings.s3_public_url) if settings.s3_public_url else None
    return S3Results(settings.outputs_dir, settings.output_limit, client(settings.s3_endpoint_url),
                     retention(settings), signer=signer, max_bytes=settings.download_limit)


def retention(settings: Settings) -> Retention:
    """OUTPUT_KEEP_DAYS and OUTPUT_KEEP_GB when either is set; otherwise the newest OUTPUT_LIMIT
    results, as the folder kept them."""
    days, gigabytes = settings.output_keep_days, settings.output_keep_gb
    if days is None and gigabytes is None:
        return Retention(count=settings.output_limit)
    return Retention(max_bytes=None if gigabytes is None else int(gigabytes * 1e9),
                     max_age=None if days is None else days * 86400)


async def retention_loop(results: LocalResults, pending: Callable[[], Awaitable[Iterable[str]]],
                         every: float = PRUNE_EVERY) -> None:
    """Prune now and then every `every` seconds until cancelled; a failure is logged and tried
    again next time (the store may be down for a while)."""
    while True:
        try:
            await results.prune(await pending())
        except OutputError as exc:
            log.warning("results_not_pruned", error=str(exc))
        await asyncio.sleep(every)


async def _read(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes in chunks, each read in a thread."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, _READ):
            yield chunk
    finally:
        await asyncio.to_thread(file.close)
