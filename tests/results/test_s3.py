"""Tests for results/s3.py: the bot's real S3 client over HTTP against moto on 127.0.0.1.

A separate boto3 client (the witness) checks what is really in the bucket: objects, and multipart
uploads left open.
"""

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from results.folder import MIB, OutputError, OutputTooLarge
from results.s3 import S3Store, StoredObject, StoreMissing
from tests.results.s3_server import ACCESS_KEY, SECRET_KEY, FaultyProxy

TIMEOUT = 5.0


def make_store(endpoint, url: str | None = None, prefix: str | None = None, **options) -> S3Store:
    return S3Store(
        url or endpoint.url, endpoint.bucket, prefix or f"t-{uuid.uuid4().hex[:12]}",
        endpoint.region, endpoint.access_key, endpoint.secret_key,
        **{"timeout": TIMEOUT, **options},
    )


@pytest.fixture
async def store(s3_server):
    opened = make_store(s3_server)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def witness(s3_server):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=s3_server.url, region_name=s3_server.region,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1}),
    )


def stored(witness, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """(object keys, keys of open multipart uploads) under `prefix/`, as the store holds them."""
    objects = witness.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
    uploads = witness.list_multipart_uploads(Bucket=bucket, Prefix=f"{prefix}/")
    return [o["Key"] for o in objects], [u["Key"] for u in uploads.get("Uploads", [])]


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[start : start + size]


async def read_all(store: S3Store, name: str, **options) -> bytes:
    return b"".join([chunk async for chunk in store.get_stream(name, **options)])


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- round trips ---------------------------------------------------------------------------


async def test_small_file_round_trips_in_one_put(store, witness, s3_server):
    data = os.urandom(100_000)
    assert await store.put_stream("small.png", chunked(data, 4096)) == len(data)
    assert await read_all(store, "small.png") == data
    [listed] = await store.list()
    assert (listed.name, listed.size) == ("small.png", len(data))
    head = witness.head_object(Bucket=s3_server.bucket, Key=f"{store._prefix}/small.png")
    assert head["ContentType"] == "image/png"
    assert "-" not in head["ETag"]  # a multipart object's ETag ends in -<parts>


@pytest.mark.parametrize(("size", "parts"), [(0, 0), (8 * MIB, 0), (8 * MIB + 1, 2),
                                             (20 * MIB, 3)])
async def test_large_files_go_up_in_parts_and_round_trip(store, witness, s3_server, size,
                                                         parts):
    data = os.urandom(size)
    assert await store.put_stream("video.mp4", chunked(data, 700_000)) == size
    assert digest(await read_all(store, "video.mp4")) == digest(data)
    etag = witness.head_object(Bucket=s3_server.bucket, Key=f"{store._prefix}/video.mp4")["ETag"]
    assert etag.strip('"').endswith(f"-{parts}") if parts else "-" not in etag
    assert stored(witness, s3_server.bucket, store._prefix)[1] == []


async def test_list_is_oldest_first_and_delete_removes(store):
    for name in ("a.png", "sub/b.webp", "c.gif"):
        await store.put_bytes(name, name.encode())
    listed = await store.list()
    assert all(isinstance(item, StoredObject) for item in listed)
    assert sorted(item.name for item in listed) == ["a.png", "c.gif", "sub/b.webp"]
    assert [item.modified for item in listed] == sorted(item.modified for item in listed)
    await store.delete("sub/b.webp")
    await store.delete("never-there.png")  # not an error
    assert sorted(item.name for item in await store.list()) == ["a.png", "c.gif"]


# --- caps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [3 * MIB, 20 * MIB])
async def test_upload_past_max_bytes_is_refused_and_leaves_nothing(store, witness, s3_server,
                                                                  size):
    pulled = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(size // MIB):
            pulled += 1
            yield os.urandom(MIB)

    cap = size - MIB - 1
    with pytest.raises(OutputTooLarge) as caught:
        await store.put_stream("big.mp4", source(), max_bytes=cap)
    assert "larger than" in str(caught.value) and "MiB" in str(caught.value)
    assert pulled == size // MIB - 1  # stopped at the chunk that passed the cap
    assert await store.list() == []
    assert stored(witness, s3_server.bucket, store._prefix) == ([], [])


async def test_download_past_max_bytes_is_refused(store):
    await store.put_bytes("big.png", os.urandom(2 * MIB))
    with pytest.raises(OutputTooLarge, match="larger than 1.0 MiB"):
        await read_all(store, "big.png", max_bytes=MIB)
    assert len(await read_all(store, "big.png", max_bytes=2 * MIB)) == 2 * MIB


async def test_missing_object_is_said_in_words(store):
    with pytest.raises(StoreMissing, match=r"^The result gone.png is not in the object store\.$"):
        await read_all(store, "gone.png")


# --- presigned links -----------------------------------------------------------------------


async def test_presigned_url_returns_the_bytes_then_expires(store):
    """The test server checks a link's signature and expiry as S3 does (moto alone checks neither)."""
    data = os.urandom(MIB)
    await store.put_bytes("image.png", data)
    link = await store.presigned_url("image.png", 60)
    short = await store.presigned_url("image.png", 1)
    assert ACCESS_KEY in link and SECRET_KEY not in link
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(link) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"] == "image/png"
            assert await answer.read() == data
        async with http.get(link.replace("image.png", "other.png")) as answer:
            assert answer.status == 403  # a signature covers its own key only
            assert b"SignatureDoesNotMatch" in await answer.read()
        await asyncio.sleep(2)
        async with http.get(short) as answer:
            assert answer.status == 403
            assert b"Request has expired" in await answer.read()
    with pytest.raises(ValueError):
        await store.presigned_url("image.png", 0)


# --- failures of the store -----------------------------------------------------------------


async def test_store_failing_an_upload_part_ends_in_words_and_leaves_nothing(s3_server, witness):
    proxy = FaultyProxy(s3_server.url, fail_part=2)
    await proxy.start()
    store = make_store(s3_server, url=proxy.url)
    try:
        await store.open()
        with pytest.raises(OutputError) as caught:
            await store.put_stream("video.mp4", chunked(os.urandom(20 * MIB), MIB))
    finally:
        await store.close()
        await proxy.stop()
    message = str(caught.value)
    assert not isinstance(caught.value, OutputTooLarge)
    assert message == (f"The object store at {proxy.url} failed to upload a part "
                       "(InternalError, HTTP 500).")
    assert proxy.failed == 3  # botocore's standard retries, bounded
    assert stored(witness, s3_server.bucket, store._prefix) == ([], [])


async def test_store_going_away_mid_upload_fails_in_bounded_time(s3_server, witness):
    """The store (a proxy in front of moto) stops after the first part: the upload fails in words
    within its bounds, and the upload it could not abort then is swept once the store is back."""
    proxy = FaultyProxy(s3_server.url)
    await proxy.start()
    store = make_store(s3_server, url=proxy.url, timeout=10.0)  # room for 3 tries and backoff
    await store.open()

    async def source() -> AsyncIterator[bytes]:
        for index in range(20):
            if index == 10:  # part 1 (8 MiB) went up before chunk 9 was asked for
                await proxy.stop()
            yield os.urandom(MIB)

    started = time.monotonic()
    try:
        with pytest.raises(OutputError, match=r"could not be reached to upload a part \(the "
                                              r"connection was refused or dropped\)\.$"):
            await store.put_stream("video.mp4", source())
    finally:
        await store.close()
        await proxy.stop()
    assert time.monotonic() - started < 15
    assert stored(witness, s3_server.bucket, store._prefix) == ([], [f"{store._prefix}/video.mp4"])
    back = make_store(s3_server, prefix=store._prefix)
    await back.open()
    try:
        # moto dates every upload 2010-11-10, so only the sweep itself is checked, not the age.
        assert await back.abort_stale_uploads(0) == 1
    finally:
        await back.close()
    assert stored(witness, s3_server.bucket, store._prefix) == ([], [])


async def test_retries_cut_short_by_the_timeout_say_why_the_last_try_failed(s3_server):
    proxy = FaultyProxy(s3_server.url)
    await proxy.start()
    store = make_store(s3_server, url=proxy.url, timeout=0.5, attempts=10)
    try:
        await store.open()
        await proxy.stop()
        started = time.monotonic()
        with pytest.raises(OutputError) as caught:
            await store.put_bytes("late.png", b"x")
        assert time.monotonic() - started < 2  # the call and its clean-up, each within 0.5 s
    finally:
        await store.close()
    assert str(caught.value) == (
        f"The object store at {proxy.url} did not answer within 0.5 seconds when asked to store "
        "the result (last try: the connection was refused or dropped).")


async def test_cancelled_upload_is_aborted(store, witness, s3_server):
    part_done = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        for index in range(20):
            if index == 10:
                part_done.set()
                await asyncio.sleep(30)
            yield os.urandom(MIB)

    task = asyncio.create_task(store.put_stream("video.mp4", source()))
    await asyncio.wait_for(part_done.wait(), 10)
    assert stored(witness, s3_server.bucket, store._prefix)[1] == [f"{store._prefix}/video.mp4"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stored(witness, s3_server.bucket, store._prefix) == ([], [])


async def test_stalled_source_fails_the_upload_and_leaves_nothing(s3_server, witness):
    store = make_store(s3_server, stall_timeout=0.3)
    await store.open()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(9):  # part 1 goes up once the ninth MiB arrives
            yield os.urandom(MIB)
        await asyncio.sleep(5)
        yield b"late"

    try:
        with pytest.raises(OutputError, match=r"^The result stopped arriving for more than 0.3 "):
            await asyncio.wait_for(store.put_stream("video.mp4", source()), 10)
    finally:
        await store.close()
    assert stored(witness, s3_server.bucket, store._prefix) == ([], [])


async def test_silent_store_is_bounded_by_the_timeout():
    done = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def never_answer(reader, writer):
        writers.append(writer)
        await reader.read(1 << 16)
        await asyncio.wait_for(done.wait(), 30)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    store = S3Store(url, "results", "p", "us-east-1", ACCESS_KEY, SECRET_KEY, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(OutputError, match=r"did not answer within 0.5 seconds when asked "
                                              r"to open the bucket\.$"):
            await store.open()
    finally:
        done.set()
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.wait_for(server.wait_closed(), 5)
    assert time.monotonic() - started < 3


async def test_errors_name_neither_key_nor_secret(s3_server, unused_tcp_port):
    missing = make_store(s3_server)
    missing._bucket = "no-such-bucket"
    with pytest.raises(OutputError, match="^The bucket no-such-bucket does not exist at http://"):
        await missing.open()
    nowhere = make_store(s3_server, url=f"http://127.0.0.1:{unused_tcp_port}", attempts=1)
    with pytest.raises(OutputError, match="could not be reached to open the bucket") as caught:
        await nowhere.open()
    for text in (str(caught.value), repr(nowhere)):
        assert ACCESS_KEY not in text and SECRET_KEY not in text


# --- names ---------------------------------------------------------------------------------

BAD_NAMES = ["../x.png", "/x.png", "a/../b.png", "a//b.png", ".hidden", "a/./b", "x" * 256, "",
             "a\\b.png", "a/", "%2e%2e/x", "a b.png", "..", "ok.png\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_names_that_could_escape_the_prefix_are_refused(store, witness, s3_server, name):
    def keys() -> list[str]:  # the whole bucket: other tests' objects too, which must stay as they are
        return sorted(item["Key"] for item in witness.list_objects_v2(Bucket=s3_server.bucket).get("Contents", []))

    before = keys()
    for attempt in (store.put_bytes(name, b"x"), read_all(store, name), store.delete(name),
                    store.presigned_url(name, 60)):
        with pytest.raises(OutputError, match="cannot be used in the object store"):
            await attempt
    assert keys() == before


def test_settings_are_checked():
    with pytest.raises(ValueError):
        S3Store("http://127.0.0.1:1", "results", "p", "us-east-1", "a", "b", part_size=MIB)
    with pytest.raises(ValueError):
        S3Store("ftp://127.0.0.1:1", "results", "p", "us-east-1", "a", "b")
    with pytest.raises(ValueError):
        S3Store("http://127.0.0.1:1", "results", "../up", "us-east-1", "a", "b")
