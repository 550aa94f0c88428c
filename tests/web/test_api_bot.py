"""The HTTP API through the running bot: a key made in Discord, a job over HTTP that goes through the
same queue and limits, its files, cancel, and the signed webhook when it ends."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import time

import aiohttp
from aiohttp import web
from PIL import Image

from web import webhooks
from tests.bot_harness import bot_settings

CAROL, MANAGE_GUILD = "7001", str(1 << 5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def admin(discord_fake, command: str, options: dict | None = None) -> str:
    interaction = await discord_fake.slash(f"admin {command}", options or {}, user_id=CAROL, username="carol",
                                           permissions=MANAGE_GUILD)
    await interaction.wait_acked(3)
    return discord_fake.messages[interaction.original_message_id].content


async def test_a_program_makes_images_through_the_api_and_hears_back_by_webhook(comfy, discord_fake, running,
                                                                                tmp_path):
    received: list[tuple[dict, bytes]] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=base,
                                         webhook_private_ok=True))
        said = await admin(discord_fake, "apikey create", {"name": "our website"})
        (key,) = re.findall(r"`(cfb_[^`]+)`", said)
        assert said.startswith("Key 1 for `our website`; copy it now")
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.put(f"{base}/api/v1/webhook", json={"url": hook_url}, headers=headers) as answer:
                secret = (await answer.json())["secret"]
            async with http.post(f"{base}/api/v1/generations", headers=headers,
                                 json={"kind": "txt2img", "prompt": "a harbour", "width": 64, "height": 64}) as made:
                assert made.status == 202
                job_id = (await made.json())["id"]
            for _ in range(100):  # bounded: the job runs on the fake ComfyUI
                async with http.get(f"{base}/api/v1/generations/{job_id}", headers=headers) as answer:
                    state = await answer.json()
                if state["state"] == "done":
                    break
                await asyncio.sleep(0.1)
            assert state["state"] == "done" and state["settings"]["prompt"] == "a harbour"
            (file_url,) = state["files"]
            async with http.get(file_url, headers=headers) as image:
                assert Image.open(io.BytesIO(await image.read())).size == (64, 64)
            small = base64.b64encode(io.BytesIO(_png()).getvalue()).decode()
            async with http.post(f"{base}/api/v1/generations", headers=headers,
                                 json={"kind": "upscale", "image": small, "factor": 2}) as made:
                assert made.status == 202
            async with http.post(f"{base}/api/v1/generations", headers={"Authorization": "Bearer cfb_wrong"},
                                 json={"kind": "txt2img", "prompt": "x"}) as refused:
                assert refused.status == 401
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.1)
        (hook_headers, body), *_ = received
        assert webhooks.verify(secret, hook_headers["X-Webhook-Timestamp"], body,
                               hook_headers["X-Webhook-Signature"], time.time())
        event = json.loads(body)
        assert event["event"] == "generation.done" and event["id"] == job_id and event["files"] == [file_url]
        assert all(m.channel_id != "0" for m in discord_fake.messages.values())  # nothing posted to Discord
        assert await admin(discord_fake, "apikey revoke", {"key_id": 1}) == "Key 1 no longer works."
        assert "(revoked)" in await admin(discord_fake, "apikey list")
    finally:
        await runner.cleanup()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()
