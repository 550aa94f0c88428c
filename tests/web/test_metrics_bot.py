"""The running bot's /metrics, /healthz and /readyz after a scripted session, and readiness in each state."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from tests.bot_harness import bot_settings, result_of


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(url) as reply:
        return reply.status, (await reply.text()).strip()


async def test_metrics_and_health_follow_a_session(comfy, discord_fake, running, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port, server_prices={comfy.url: 36.0}))
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy() and running.bot.is_ready(), timeout=5)
    assert await get(f"{base}/readyz") == (200, "ready")
    comfy.node_delay = 0.1
    for prompt in ("one", "two"):
        await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": prompt, "width": 64,
                                                                           "height": 64}), timeout=20)
    awaited = ('comfybot_jobs_total{kind="txt2img",state="done"} 2.0', "comfybot_discord_connected 1.0")
    for _ in range(50):  # the second job is counted just after its result is posted; the gateway each second
        status, text = await get(f"{base}/metrics")
        if all(line in text for line in awaited):
            break
        await asyncio.sleep(0.1)
    lines = set(text.splitlines())
    assert status == 200
    assert 'comfybot_jobs_total{kind="txt2img",state="done"} 2.0' in lines
    assert "comfybot_ack_seconds_count 2.0" in lines
    assert 'comfybot_job_run_seconds_count{kind="txt2img"} 2.0' in lines
    assert 'comfybot_server_up{server="ComfyUI"} 1.0' in lines and "comfybot_discord_connected 1.0" in lines
    gpu = next(line for line in lines if line.startswith('comfybot_gpu_seconds_total{server="ComfyUI"}'))
    cost = next(line for line in lines if line.startswith('comfybot_cost_total{server="ComfyUI"}'))
    assert float(gpu.split()[-1]) > 0.1 and abs(float(cost.split()[-1]) - float(gpu.split()[-1]) / 100) < 1e-6
    assert "fake-token" not in text and comfy.url not in text
    status, health = await get(f"{base}/healthz")
    assert status == 200 and health.startswith("ok")
    await comfy.stop()
    await discord_fake.wait_for(lambda: not running.bot.scheduler.pool.any_healthy(), timeout=10)
    assert await get(f"{base}/readyz") == (503, "not ready: no ComfyUI server is usable")
