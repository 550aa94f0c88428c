"""A job cancelled through the API says so in a sentence for the API's readers, in its JSON and in
its webhook: who cancelled it (the key, by name), never Discord markup or an internal id."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
from aiohttp import web

from tests.bot_harness import bot_settings
from tests.web.test_api_bot import admin, free_port


async def test_an_api_cancel_reads_cancelled_by_the_api_key_in_the_json_and_the_webhook(comfy, discord_fake,
                                                                                       running, tmp_path):
    received: list[dict] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(text="ok")

    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    comfy.pause()  # the job waits on ComfyUI's queue: there is something to cancel
    try:
        await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=base,
                                         webhook_private_ok=True))
        (key,) = re.findall(r"`(cfb_[^`]+)`", await admin(discord_fake, "apikey create", {"name": "ci-bot"}))
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.put(f"{base}/api/v1/webhook", json={"url": hook_url}, headers=headers) as answer:
                assert answer.status == 200
            async with http.post(f"{base}/api/v1/generations", headers=headers,
                                 json={"kind": "txt2img", "prompt": "never mind", "width": 64, "height": 64}) as made:
                job_id = (await made.json())["id"]
            async with http.post(f"{base}/api/v1/generations/{job_id}/cancel", headers=headers) as cancelled:
                body = await cancelled.json()
            assert body["state"] == "cancelled" and body["error"] == "cancelled by the API key 'ci-bot'"
            for _ in range(100):  # bounded: the webhook is sent at once
                if received:
                    break
                await asyncio.sleep(0.05)
        assert received and received[0]["state"] == "cancelled"
        assert received[0]["error"] == "cancelled by the API key 'ci-bot'"
    finally:
        comfy.resume()
        await runner.cleanup()
