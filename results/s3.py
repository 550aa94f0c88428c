"""Results in an S3-compatible object store (MinIO, Cloudflare R2, AWS S3, Backblaze B2).

`S3Store` keeps results under `prefix/name` in one bucket, through aiobotocore (botocore's own
signing and retries over aiohttp, which the bot already uses). Uploads are streamed: a result that
fits in one part goes up in a single PUT, a larger one as a multipart upload, one part in memory
at a time, aborted on any failure or cancellation so no part is left behind. Downloads and
uploads are capped in bytes like the output folder's, and every call to the store is bounded by
`timeout`. Every failure is an `OutputError` whose str() is a sentence that names neither key
nor secret. results/keeper.py puts it behind the bot's results (`S3Results`).
"""

from __future__ import annotations  # the method `list` would shadow the builtin in annotations

import asyncio
import contextlib
import mimetypes
import re
from contextvars import ContextVar
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from results.folder import MIB, OutputError, OutputTooLarge, _mib, next_chunk

log = structlog.get_logger(__name__)

MIN_PART = 5 * MIB  # S3's smallest part but the last
MAX_PRESIGN = 7 * 24 * 3600  # SigV4's longest presigned URL
_MAX_NAME = 255
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_READ_CHUNK = 256 * 1024
_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})
_REFUSED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
                      "403"})
T = TypeVar("T")
# Why the last try of the current task's call failed, for a call cut short during its retries.
_LAST_TRY: ContextVar[str | None] = ContextVar("s3_last_try", default=None)


class StoreMissing(OutputError):
    """The object asked for is not in the store (deleted, or never saved)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    name: str  # without the prefix
    size: int
    modified: datetime


class S3Store:
    """One bucket and prefix of an S3-compatible store; `open()` before use, `close()` after."""

    def __init__(
        self, endpoint_url: str | None, bucket: str, prefix: str, region: str,
        access_key: str, secret_key: str, *, part_size: int = 8 * MIB, timeout: float = 30.0,
        stall_timeout: float = 60.0, attempts: int = 3, path_style: bool = True,
    ) -> None:
        """`timeout` bounds each call to the store, its retries included (`attempts` tries in all,
        botocore's standard backoff); `stall_timeout` each wait for the next chunk of a source.
        `endpoint_url` None means AWS S3 itself; `path_style` False lets it use bucket hosts."""
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes, not {part_size}")
        if timeout <= 0 or stall_timeout <= 0 or attempts < 1:
            raise ValueError("timeout and stall_timeout must be positive, attempts at least 1")
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a bucket name")
        self._where = _public_endpoint(endpoint_url, region)
        self._bucket, self._prefix = bucket, _clean_prefix(prefix)
        self._head = f"{self._prefix}/" if self._prefix else ""  # every key starts with it
        self._part_size, self._timeout, self._stall_timeout = part_size, timeout, stall_timeout
        config = AioConfig(
            region_name=region, signature_version="s3v4", connect_timeout=timeout,
            read_timeout=timeout, s3={"addressing_style": "path" if path_style else "auto"},
            retries={"total_max_attempts": attempts, "mode": "standard"},
            # botocore's default CRC32 checksums are refused by some S3-compatible stores.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client_args = {"endpoint_url": endpoint_url, "aws_access_key_id": access_key,
                             "aws_secret_access_key": secret_key, "config": config}
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    def __repr__(self) -> str:  # no keys, ever
        return f"S3Store({self._where}, bucket={self._bucket!r}, prefix={self._prefix!r})"

    async def open(self, *, check: bool = True) -> None:
        """Create the client and check that the bucket is there and the keys are accepted; without
        `check` nothing is sent (a client that only signs links for an endpoint browsers reach)."""
        if self._client is not None:
            return
        self._stack = contextlib.AsyncExitStack()
        try:
            self._client = await self._stack.enter_async_context(
                get_session().create_client("s3", **self._client_args))
            self._client.meta.events.register("needs-retry.s3", _note_try)
            if not check:
                return
            try:
                await self._call("open the bucket", self._client.head_bucket, Bucket=self._bucket)
            except StoreMissing:  # HEAD has no body, so no NoSuchBucket code: just 404
                raise OutputError(
                    f"The bucket {self._bucket} does not exist at {self._where}.") from None
        except BaseException:
            await self.close()
            raise
        log.info("s3_store_opened", endpoint=self._where, bucket=self._bucket, prefix=self._prefix)

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    await stack.aclose()
            except (TimeoutError, aiohttp.ClientError, BotoCoreError) as exc:
                log.warning("s3_close_failed", endpoint=self._where, error=type(exc).__name__)

    async def put_stream(
        self, name: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> int:
        """Store `chunks` as `name` and return its size in bytes.

        Up to `part_size` bytes go up in one PUT once the source ends; past that, each full part
        is uploaded as it fills. Once more than `max_bytes` arrived the upload fails with
        `OutputTooLarge` before asking for another chunk. On any failure, or if the caller is
        cancelled, an open multipart upload is aborted (shielded, bounded by `timeout`), and an
        object whose final request failed halfway is deleted, so nothing stays behind.
        """
        key = self._key(name)
        client = self._require()
        extra = {"ContentType": mimetypes.guess_type(name)[0] or "application/octet-stream"}
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        finishing, size, buffer = False, 0, bytearray()
        try:
            source = aiter(chunks)
            while (chunk := await next_chunk(source, self._stall_timeout)) is not None:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise _too_large(name, max_bytes, "; it was not saved")
                buffer += chunk
                while len(buffer) > self._part_size:  # more is coming, so not the last part
                    if upload_id is None:
                        upload_id = (await self._call(
                            "start an upload", client.create_multipart_upload,
                            Bucket=self._bucket, Key=key, **extra))["UploadId"]
                    part = bytes(buffer[: self._part_size])
                    del buffer[: self._part_size]
                    parts.append(await self._part(key, upload_id, len(parts) + 1, part))
            finishing = True
            if upload_id is None:
                await self._call("store the result", client.put_object,
                                 Bucket=self._bucket, Key=key, Body=bytes(buffer), **extra)
            else:
                if buffer:
                    parts.append(await self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
                await self._call("finish the upload", client.complete_multipart_upload,
                                 Bucket=self._bucket, Key=key, UploadId=upload_id,
                                 MultipartUpload={"Parts": parts})
        except BaseException:  # cancellation too; the clean-up goes on if cancelled again
            cleanup = asyncio.create_task(self._clean_up(name, key, upload_id, finishing))
            await asyncio.shield(cleanup)
            raise
        log.info("s3_saved", name=name, bytes=size, parts=len(parts) or 1)
        return size

    async def put_bytes(self, name: str, data: bytes, *, max_bytes: int | None = None) -> int:
        """Store `data` under the same contract as `put_stream`."""
        return await self.put_stream(name, _single(data), max_bytes=max_bytes)

    async def get_stream(self, name: str, *, max_bytes: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of `name` in chunks: `OutputTooLarge` past `max_bytes`, `StoreMissing` if gone.

        A size announced over the cap is refused before the body is read. Each chunk waits at
        most `timeout`. Close the iterator (contextlib.aclosing) if you stop before the end.
        """
        key = self._key(name)
        client = self._require()
        response = await self._call("read the result", client.get_object,
                                    Bucket=self._bucket, Key=key, name=name)
        body = response["Body"]
        try:
            announced = response.get("ContentLength")
            if max_bytes is not None and announced is not None and announced > max_bytes:
                raise _too_large(name, max_bytes)
            size = 0
            while chunk := await self._call("read the result", body.read, _READ_CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise _too_large(name, max_bytes)
                yield chunk
        finally:
            body.close()

    async def exists(self, name: str) -> bool:
        """Whether `name` is in the store (a HEAD request)."""
        try:
            await self._call("look for the result", self._require().head_object,
                             Bucket=self._bucket, Key=self._key(name), name=name)
        except StoreMissing:
            return False
        return True

    async def delete(self, name: str) -> None:
        """Delete `name`; deleting what is not there is not an error."""
        await self._call("delete the result", self._require().delete_object,
                         Bucket=self._bucket, Key=self._key(name))
        log.info("s3_deleted", name=name)

    async def presigned_url(self, name: str, seconds: int) -> str:
        """A URL that reads `name` without keys for `seconds` (1 s to 7 days)."""
        if not 1 <= seconds <= MAX_PRESIGN:
            raise ValueError(f"seconds must be between 1 and {MAX_PRESIGN}, not {seconds}")
        params = {"Bucket": self._bucket, "Key": self._key(name)}
        return await self._call("sign a link", self._require().generate_presigned_url,
                                "get_object", Params=params, ExpiresIn=seconds)

    async def list(self) -> list[StoredObject]:
        """Every object under the prefix, oldest first; each page waits at most `timeout`."""
        head = self._head
        found: list[StoredObject] = []
        async for page in self._pages("list the results", "list_objects_v2"):
            for entry in page.get("Contents", ()):
                name = entry["Key"][len(head):]
                if _valid_name(name):
                    found.append(StoredObject(name, entry["Size"], entry["LastModified"]))
                else:
                    log.warning("s3_foreign_key", bucket=self._bucket, prefix=self._prefix)
        found.sort(key=lambda item: (item.modified, item.name))
        return found

    async def abort_stale_uploads(self, older_than: float) -> int:
        """Abort the multipart uploads under the prefix begun over `older_than` seconds ago.

        An upload whose store went away mid-way cannot be aborted then; this sweeps them later
        (a bucket lifecycle rule AbortIncompleteMultipartUpload does the same store-side).
        Returns how many were aborted.
        """
        client = self._require()
        stale: list[tuple[str, str]] = []
        async for page in self._pages("list the uploads", "list_multipart_uploads"):
            for upload in page.get("Uploads", ()):
                age = (datetime.now(UTC) - upload["Initiated"]).total_seconds()
                if age >= older_than:
                    stale.append((upload["Key"], upload["UploadId"]))
        for key, upload_id in stale:
            with contextlib.suppress(StoreMissing):  # finished or aborted meanwhile
                await self._call("abort an old upload", client.abort_multipart_upload,
                                 Bucket=self._bucket, Key=key, UploadId=upload_id)
        if stale:
            log.info("s3_stale_uploads_aborted", count=len(stale), prefix=self._prefix)
        return len(stale)

    def _key(self, name: str) -> str:
        if not _valid_name(name):
            shown = repr(name[:60]) if isinstance(name, str) else type(name).__name__
            raise OutputError(
                f"The name {shown} cannot be used in the object store: it must be up to "
                f"{_MAX_NAME} letters, digits, '.', '_' or '-', in parts split by '/', none "
                "empty or starting with a dot."
            )
        return self._head + name

    async def _pages(self, what: str, operation: str) -> AsyncIterator[dict[str, Any]]:
        """The pages of a listing under the prefix, each waiting at most `timeout`."""
        paginator = self._require().get_paginator(operation)
        source = aiter(paginator.paginate(Bucket=self._bucket, Prefix=self._head))
        while (page := await self._call(what, anext, source, None)) is not None:
            yield page

    def _require(self) -> Any:
        if self._client is None:
            raise OutputError("The object store is not open.")
        return self._client

    async def _part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        answer = await self._call("upload a part", self._require().upload_part, Bucket=self._bucket,
                                  Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _clean_up(self, name: str, key: str, upload_id: str | None, finishing: bool) -> None:
        """After a failed upload: abort the multipart, delete a half-finished object; log only."""
        client = self._client
        if client is None:  # closed meanwhile: a stale upload is left to abort_stale_uploads
            return
        steps: list[tuple[str, Callable[..., Awaitable[Any]], str | None]] = []
        if upload_id is not None:
            steps.append(("abort the upload", client.abort_multipart_upload, upload_id))
        if finishing:  # the last request may have reached the store before it failed
            steps.append(("remove the partial result", client.delete_object, None))
        for what, call, upload in steps:
            extra = {"UploadId": upload} if upload else {}
            try:
                await self._call(what, call, Bucket=self._bucket, Key=key, **extra)
            except OutputError as exc:
                if not isinstance(exc, StoreMissing):
                    log.warning("s3_cleanup_failed", name=name, step=what, error=str(exc))

    async def _call(self, what: str, call: Callable[..., Awaitable[T]], *args: Any,
                    name: str = "", **params: Any) -> T:
        """`call` bounded by `timeout`; every failure becomes an OutputError in words."""
        deadline = asyncio.timeout(self._timeout)
        _LAST_TRY.set(None)
        try:
            async with deadline:
                return await call(*args, **params)
        except TimeoutError as exc:
            if not deadline.expired() and not isinstance(exc, BotoCoreError):
                raise
            last = _LAST_TRY.get()
            raise OutputError(
                f"The object store at {self._where} did not answer within "
                f"{self._timeout:g} seconds when asked to {what}"
                + (f" (last try: {last})." if last else ".")
            ) from None
        except ClientError as exc:
            raise self._refusal(what, exc, name) from exc
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise OutputError(f"The object store at {self._where} could not be reached to {what} "
                              f"({_network_reason(exc)}).") from exc

    def _refusal(self, what: str, exc: ClientError, name: str) -> OutputError:
        code = str(exc.response.get("Error", {}).get("Code") or "unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        log.warning("s3_error", endpoint=self._where, action=what, code=code, status=status)
        if code == "NoSuchUpload":
            return StoreMissing("The upload was aborted in the object store before it finished.")
        if code in _MISSING:
            return StoreMissing(f"The result {name or 'asked for'} is not in the object store.")
        if code == "NoSuchBucket":
            return OutputError(f"The bucket {self._bucket} does not exist at {self._where}.")
        if code in _REFUSED:
            return OutputError(f"The object store at {self._where} refused to {what}: check the "
                               f"access key, the secret and the bucket's permissions ({code}).")
        return OutputError(f"The object store at {self._where} failed to {what} ({code}, "
                           f"HTTP {status}).")


def _valid_name(name: object) -> bool:
    """Up to _MAX_NAME safe characters, in '/'-separated parts none empty or starting with '.'."""
    return isinstance(name, str) and 0 < len(name) <= _MAX_NAME and all(
        _SEGMENT.fullmatch(part) for part in name.split("/"))


def _clean_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if prefix and not _valid_name(prefix):
        raise ValueError(f"{prefix!r} is not a usable prefix")
    return prefix


def _public_endpoint(url: str | None, region: str) -> str:
    """The endpoint as it may be shown: scheme, host and port, never a user or password."""
    if url is None:
        return f"AWS S3 ({region})"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the endpoint must be an http:// or https:// URL")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _network_reason(exc: BaseException) -> str:
    text = type(exc).__name__
    if "Timeout" in text:
        return "the connection timed out" if "Connect" in text else "it stopped answering"
    if "Connect" in text or isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError)):
        return "the connection was refused or dropped"
    cut = "IncompleteRead" in text or "ResponseStreaming" in text
    return "the answer was cut short" if cut else "a network error"


def _note_try(response: Any = None, caught_exception: BaseException | None = None,
              **_: Any) -> None:
    """botocore's needs-retry hook, after every try: remember why it failed, if it did."""
    if caught_exception is not None:
        _LAST_TRY.set(_network_reason(caught_exception))
    elif response is not None and response[0].status_code >= 300:
        code = response[1].get("Error", {}).get("Code", "unknown")
        _LAST_TRY.set(f"{code}, HTTP {response[0].status_code}")


def _too_large(name: str, max_bytes: int, tail: str = "") -> OutputTooLarge:
    log.warning("s3_too_large", name=name, max_bytes=max_bytes)
    return OutputTooLarge(
        f"The result is larger than {_mib(max_bytes)}, the most the bot downloads{tail}."
    )


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data
