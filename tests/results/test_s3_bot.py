"""The whole bot with OUTPUT_STORE: fake Discord <-> real bot <-> fake ComfyUI, and its real S3 client
over HTTP to moto's S3 on 127.0.0.1 (directly, or through a proxy that fails a part)."""

from __future__ import annotations

import os
import re
import socket
import uuid

import aiohttp
from aiohttp import web

from results.folder import MIB
from store import make_store
from tests.bot_harness import animate, bot_settings, result_of
from tests.results.s3_server import FaultyProxy
from tests.results.test_keeper import bucket, keys, open_uploads, read


def s3_settings(tmp_path, comfy_url, s3, url=None, **more):
    prefix = f"t-{uuid.uuid4().hex[:10]}"  # test_s3 expects every key under "t-"
    settings = bot_settings(tmp_path, comfy_url, output_store=f"s3://{s3.bucket}/{prefix}",
                            s3_endpoint_url=url or s3.url, s3_region=s3.region, s3_access_key_id=s3.access_key,
                            s3_secret_access_key=s3.secret_key, **more)
    return settings, prefix


def posted(discord_fake) -> list:
    return [m for m in discord_fake.messages.values() if m.attachments]


async def test_a_generated_image_is_in_the_bucket_and_posted_once(comfy, discord_fake, running, tmp_path, s3_server):
    settings, prefix = s3_settings(tmp_path, comfy.url, s3_server)
    await running.start(settings)
    interaction = await discord_fake.slash("generate", {"prompt": "fox", "width": 64, "height": 64})
    message = await result_of(discord_fake, interaction, timeout=30)
    (attachment,) = message.attachments
    (name,) = keys(s3_server, prefix)
    assert read(s3_server, prefix, name) == attachment["data"]
    assert (settings.outputs_dir / name).read_bytes() == attachment["data"]
    assert posted(discord_fake) == [message]


async def test_a_store_failing_mid_upload_is_retried_and_the_video_posted_once(
        comfy, discord_fake, running, tmp_path, s3_server):
    discord_fake.attachment_size_limit = 25 * MIB  # a boosted server: a 9 MiB video can be posted
    proxy = FaultyProxy(s3_server.url, fail_part=2, fail_times=3)  # the first upload's every try at part 2
    await proxy.start()
    try:
        settings, prefix = s3_settings(tmp_path, comfy.url, s3_server, url=proxy.url)
        await running.start(settings)
        first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "cat", "width": 64,
                                                                                   "height": 64}), timeout=30)
        video = b"\x00\x00\x00\x20ftypisom" + os.urandom(9 * MIB)  # past the 8 MiB part: two parts

        async def big_video(request: web.Request) -> web.Response:
            return web.Response(body=video, content_type="video/mp4")

        comfy.override("/view", big_video, count=1)
        message = await result_of(discord_fake, await animate(discord_fake, first.id, "cf:anim:1:0"), timeout=60)
        (attachment,) = message.attachments
        assert attachment["filename"] == "animation.mp4" and attachment["data"] == video
        assert proxy.failed == 3
        (name,) = [key for key in keys(s3_server, prefix) if key.endswith(".mp4")]
        assert read(s3_server, prefix, name) == video
        head = bucket(s3_server).head_object(Bucket=s3_server.bucket, Key=f"{prefix}/{name}")
        assert head["ETag"].strip('"').endswith("-2")
        assert open_uploads(s3_server, prefix) == []  # the failed upload was aborted
        assert [m.id for m in posted(discord_fake)] == [first.id, message.id]
    finally:
        await running.stop()
        await proxy.stop()


async def test_a_delivery_on_a_machine_without_the_file_fetches_it_from_the_bucket(
        comfy, discord_fake, running, tmp_path, s3_server):
    discord_fake.nonce_window = 0  # the post after the restart is a new message
    settings, prefix = s3_settings(tmp_path, comfy.url, s3_server)
    await running.start(settings)
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "owl", "width": 64,
                                                                               "height": 64}), timeout=30)
    await running.stop()
    store = make_store(settings)  # as if the process had died after recording the job as delivering
    await store.open()
    try:
        (job,) = await store.jobs_in(["done", "delivering"])
        await store.update_job(job.id, state="delivering")
        await store.set_generation_message(job.generation_id, None, [])
    finally:
        await store.close()
    (name,) = keys(s3_server, prefix)
    (settings.outputs_dir / name).unlink()  # another machine's folder: it never had the file

    await running.start(settings)
    again = await discord_fake.wait_for_message(lambda m: m.attachments and m.id != first.id, timeout=30)
    assert again.attachments[0]["data"] == first.attachments[0]["data"] == read(s3_server, prefix, name)
    assert (settings.outputs_dir / name).read_bytes() == read(s3_server, prefix, name)
    assert len(posted(discord_fake)) == 2


async def test_the_gallery_link_redirects_to_the_bucket_and_the_bytes_match(
        comfy, discord_fake, running, tmp_path, s3_server):
    with socket.socket() as probe:  # a free port for the web app
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings, prefix = s3_settings(tmp_path, comfy.url, s3_server, web_port=port,
                                   web_base_url=f"http://127.0.0.1:{port}")
    await running.start(settings)
    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "elk", "width": 64,
                                                                                 "height": 64}), timeout=30)
    asked = await discord_fake.slash("gallery")
    await asked.wait_acked(3)
    answer = await discord_fake.wait_for_message(lambda m: m.id == asked.original_message_id and not m.loading)
    (page,) = re.findall(r"http://127\.0\.0\.1:\d+/g/\S+", answer.content)
    (name,) = keys(s3_server, prefix)
    (settings.outputs_dir / name).unlink()  # served from the bucket, not from here
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{page}/r/1/file/0", allow_redirects=False) as answer:
            assert answer.status == 302
            location = answer.headers["Location"]
            assert location.startswith(f"{s3_server.url}/{s3_server.bucket}/{prefix}/{name}?")
            assert s3_server.url in answer.headers["Content-Security-Policy"]
        async with session.get(location) as answer:
            assert answer.status == 200 and await answer.read() == message.attachments[0]["data"]
        async with session.get(f"{page}/r/1/thumb/0") as answer:  # made from a copy fetched back
            assert answer.status == 200 and answer.headers["Content-Type"] == "image/webp"
        async with session.get(f"{page}/r/1") as answer:
            assert answer.status == 200 and "no longer kept" not in await answer.text()
