"""Where results are kept (results/keeper.py): S3Results against moto's S3 over HTTP on 127.0.0.1,
with the bot's real client; what is observed is what is in the bucket and in the folder."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import boto3
import pytest
from botocore.config import Config

from config import Settings
from results.folder import MIB, OutputError, OutputFolder
from results.keeper import Retention, S3Results, make_results, retention
from results.s3 import MIN_PART, S3Store, StoredObject, StoreMissing
from tests.results.s3_server import FaultyProxy


def bucket(s3):
    config = Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1})
    return boto3.client("s3", endpoint_url=s3.url, region_name=s3.region, config=config,
                        aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)


def make_store(s3, prefix: str, url: str | None = None, **options) -> S3Store:
    return S3Store(url or s3.url, s3.bucket, prefix, s3.region, s3.access_key, s3.secret_key,
                   part_size=MIN_PART, timeout=10.0, **options)


async def opened(tmp_path, s3, *, url: str | None = None, limit: int = 10, rule: Retention | None = None,
                 **options) -> tuple[S3Results, str]:
    prefix = f"t-{uuid.uuid4().hex[:10]}"  # test_s3 expects every key under "t-"
    results = S3Results(tmp_path / "outputs", limit, make_store(s3, prefix, url, **options),
                        rule or Retention(count=100), max_bytes=64 * MIB)
    await results.open()
    return results, prefix


def read(s3, prefix: str, name: str) -> bytes:
    return bucket(s3).get_object(Bucket=s3.bucket, Key=f"{prefix}/{name}")["Body"].read()


def keys(s3, prefix: str) -> list[str]:
    listed = bucket(s3).list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/")
    return sorted(item["Key"].removeprefix(f"{prefix}/") for item in listed.get("Contents", ()))


def open_uploads(s3, prefix: str) -> list[str]:
    return [u["Key"] for u in bucket(s3).list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads", ())]


async def test_a_kept_result_is_in_the_bucket_and_comes_back_when_the_copy_here_is_gone(tmp_path, s3_server):
    results, prefix = await opened(tmp_path, s3_server)
    try:
        data = os.urandom(300_000)
        path = await results.save_bytes("fox.png", data)
        await results.keep(path)
        assert read(s3_server, prefix, path.name) == data
        results.release(path)
        path.unlink()  # this machine's copy gone (a full disk cleaned up, another machine)
        fetched = await results.local(path.name, hold=True)
        assert fetched == path and fetched.read_bytes() == data
        assert [p.name for p in results.files()] == [path.name]
        assert await results.local(path.name) == path  # there now: not fetched again
    finally:
        await results.close()


async def test_a_result_the_bucket_does_not_have_is_said_missing(tmp_path, s3_server):
    results, _ = await opened(tmp_path, s3_server)
    try:
        with pytest.raises(StoreMissing):
            await results.local("20240101-000000-000001-never.png")
        assert results.files() == [] and not list((tmp_path / "outputs" / ".partial").iterdir())
    finally:
        await results.close()


async def test_a_large_video_goes_up_in_parts(tmp_path, s3_server):
    results, prefix = await opened(tmp_path, s3_server)
    try:
        data = os.urandom(2 * MIN_PART + 1000)
        path = await results.save_bytes("clip.mp4", data)
        await results.keep(path)
        head = bucket(s3_server).head_object(Bucket=s3_server.bucket, Key=f"{prefix}/{path.name}")
        assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag names its part count
        assert read(s3_server, prefix, path.name) == data
    finally:
        await results.close()


async def test_a_part_the_store_fails_is_sent_again_and_nothing_half_done_stays(tmp_path, s3_server):
    proxy = FaultyProxy(s3_server.url, fail_part=2, fail_times=3)  # every try of the first upload's part 2
    await proxy.start()
    results, prefix = await opened(tmp_path, s3_server, url=proxy.url, attempts=3)
    try:
        data = os.urandom(MIN_PART + 5000)
        path = await results.save_bytes("clip.mp4", data)
        await results.keep(path)
        assert proxy.failed == 3
        assert read(s3_server, prefix, path.name) == data
        assert open_uploads(s3_server, prefix) == [] and keys(s3_server, prefix) == [path.name]
    finally:
        await results.close()
        await proxy.stop()


async def test_a_store_that_keeps_failing_fails_the_keep_in_words_and_leaves_nothing(tmp_path, s3_server):
    proxy = FaultyProxy(s3_server.url, fail_part=2)
    await proxy.start()
    results, prefix = await opened(tmp_path, s3_server, url=proxy.url, attempts=1)
    try:
        path = await results.save_bytes("clip.mp4", os.urandom(MIN_PART + 5000))
        with pytest.raises(OutputError) as caught:
            await results.keep(path)
        assert str(caught.value).startswith("The result could not be kept: The object store at http://127.0.0.1:")
        assert s3_server.secret_key not in str(caught.value)
        assert proxy.failed == 3 and open_uploads(s3_server, prefix) == [] and keys(s3_server, prefix) == []
    finally:
        await results.close()
        await proxy.stop()


async def test_a_link_opens_the_result_and_expires(tmp_path, s3_server):
    results, _ = await opened(tmp_path, s3_server)
    try:
        data = os.urandom(50_000)
        path = await results.save_bytes("fox.png", data)
        await results.keep(path)
        url = await results.link(path.name, 1)
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as answer:
                assert answer.status == 200 and await answer.read() == data
            await asyncio.sleep(2.2)  # past the link's second
            async with session.get(url) as answer:
                assert answer.status == 403 and b"Request has expired" in await answer.read()
        with pytest.raises(StoreMissing):
            await results.link("20240101-000000-000001-never.png")
    finally:
        await results.close()


async def save_kept(results: S3Results, sizes: list[int]) -> list[str]:
    names = []
    for size in sizes:
        path = await results.save_bytes("r.png", os.urandom(size))
        await results.keep(path)
        results.release(path)
        names.append(path.name)
    return names


async def test_retention_by_count_removes_the_oldest_but_never_a_pending_one(tmp_path, s3_server):
    results, prefix = await opened(tmp_path, s3_server, rule=Retention(count=2, fresh=0))
    try:
        names = await save_kept(results, [1000] * 4)
        assert await results.prune([names[0]]) == 2  # the oldest is pending (and counts): the next two go
        assert keys(s3_server, prefix) == sorted([names[0], names[3]])
        assert sorted(p.name for p in results.files()) == sorted([names[0], names[3]])
        names += await save_kept(results, [1000])
        assert await results.prune([]) == 1 and keys(s3_server, prefix) == sorted(names[3:])
    finally:
        await results.close()


async def test_retention_by_bytes_and_by_age(tmp_path, s3_server):
    results, prefix = await opened(tmp_path, s3_server, rule=Retention(max_bytes=2500, fresh=0))
    try:
        names = await save_kept(results, [1000, 1000, 1000])
        assert await results.prune([]) == 1 and keys(s3_server, prefix) == sorted(names[1:])
    finally:
        await results.close()
    results, prefix = await opened(tmp_path / "b", s3_server, rule=Retention(max_age=1.5, fresh=0))
    try:
        old = await save_kept(results, [100, 100])
        await asyncio.sleep(2.5)
        new = await save_kept(results, [100])
        assert await results.prune([old[1]]) == 1
        assert keys(s3_server, prefix) == sorted([old[1], *new])
    finally:
        await results.close()


def test_the_rule_never_takes_a_fresh_or_pending_result_and_counts_them():
    now = datetime(2024, 5, 1, tzinfo=UTC)
    objects = [StoredObject(f"n{i}", 10, now - timedelta(hours=10 - i)) for i in range(5)]
    rule = Retention(count=2, fresh=7.5 * 3600)  # n3 (7 h old) and n4 (6 h) are fresh
    assert [o.name for o in rule.victims(objects, {"n1"}, now.timestamp())] == ["n0", "n2"]
    assert Retention(max_age=7.5 * 3600, fresh=0).victims(objects, set(), now.timestamp())[-1].name == "n2"
    assert Retention(max_bytes=30, fresh=0).victims(list(reversed(objects)), set(), now.timestamp()) == objects[:2]


def test_the_settings_choose_the_home_and_the_rule(tmp_path):
    base = {"_env_file": None, "outputs_dir": tmp_path / "o", "data_dir": tmp_path / "d", "output_limit": 7}
    assert type(make_results(Settings(**base))) is OutputFolder
    stored = make_results(Settings(**base, output_store="s3://my-bucket/bot/results",
                                   s3_endpoint_url="http://127.0.0.1:9", s3_access_key_id="k",
                                   s3_secret_access_key="s"))
    assert isinstance(stored, S3Results) and "bucket='my-bucket', prefix='bot/results'" in repr(stored.store)
    assert retention(Settings(**base)) == Retention(count=7)
    assert retention(Settings(**base, output_keep_days=2, output_keep_gb=1.5)) == Retention(
        max_bytes=1_500_000_000, max_age=2 * 86400)
