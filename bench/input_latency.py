"""Input benchmark: /edit with a 10 MiB, 4096x4096 photo as the attachment.

The whole bot runs in this process, on one event loop with the fake Discord and the fake ComfyUI
(127.0.0.1), so a stall anywhere in the loop shows. ComfyUI is paused: what is measured is the
bot taking the image in. Prints:
- interaction -> acknowledgement, p50/p95/max over the commands (the download comes after it);
- interaction -> the job queued (download, checks, EXIF, resize to MAX_WIDTH x MAX_HEIGHT, store);
- the event loop's lag (how late a 5 ms timer fires) while all of that runs: p50, p99, max.

    python bench/input_latency.py [--commands 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

import logs  # noqa: E402
from bot import ComfyBot  # noqa: E402
from config import Settings  # noqa: E402
from tests.fakes.comfyui import FakeComfyUI  # noqa: E402
from tests.fakes.discord import FakeDiscord  # noqa: E402

MIB = 1024 * 1024


class Patched:
    """Points discord.py at the fake, as pytest's monkeypatch does in the tests."""

    def __init__(self) -> None:
        self.undo: list = []

    def setattr(self, target, name, value) -> None:
        self.undo.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def restore(self) -> None:
        for target, name, value in reversed(self.undo):
            setattr(target, name, value)


def photo() -> bytes:
    """A 4096x4096 JPEG of about 10 MiB (noise does not compress), as a phone would send."""
    rows = [Image.frombytes("RGB", (4096, 256), os.urandom(4096 * 256 * 3)) for _ in range(16)]
    image = Image.new("RGB", (4096, 4096))
    for index, row in enumerate(rows):
        image.paste(row, (0, index * 256))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


async def lag_sampler(lags: list[float], interval: float = 0.005) -> None:
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(interval)
        lags.append(time.perf_counter() - asked - interval)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return f"p50 {statistics.median(ordered) * 1000:.2f} ms, p95 {p(0.95) * 1000:.2f} ms, max {ordered[-1] * 1000:.2f} ms"


async def main(commands: int) -> None:
    logs.configure("error")
    data = photo()
    comfy = FakeComfyUI(models={"checkpoints": ["v1-5-pruned-emaonly.safetensors"]})
    await comfy.start()
    comfy.pause()
    discord_fake = FakeDiscord(ack_deadline=3.0)
    await discord_fake.start()
    patched = Patched()
    discord_fake.install(patched)
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(_env_file=None, discord_token="fake-token", comfyui_url=comfy.url, workflow_set="selftest",
                            workflows_dir=ROOT / "workflows", outputs_dir=Path(scratch) / "outputs",
                            data_dir=Path(scratch) / "data", cdn_hosts=["127.0.0.1"], commands_per_minute=600,
                            jobs_per_user=100, download_limit=64 * MIB, output_limit=1000)
        bot = ComfyBot(settings, guild_ready_timeout=0.05)
        running = asyncio.create_task(bot.start("fake-token"))
        await discord_fake.wait_ready()
        lags: list[float] = []
        sampler = asyncio.create_task(lag_sampler(lags))
        acks, queued = [], []
        try:
            for index in range(commands):
                interaction = await discord_fake.slash("edit", {"image": (f"photo{index}.jpg", data), "prompt": "x"})
                await interaction.wait_acked(5)
                acks.append(interaction.ack_latency)
                await discord_fake.wait_for(lambda: len(bot.scheduler.status(5001).mine) > index, 60)
                queued.append(time.monotonic() - interaction.created_monotonic)
        finally:
            sampler.cancel()
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(running, 10)
            comfy.resume()
            await discord_fake.stop()
            await comfy.stop()
            patched.restore()
    print(f"/edit with a {len(data) / MIB:.1f} MiB 4096x4096 JPEG ({commands} commands, one at a time):")
    print(f"interaction -> acknowledgement: {summary(acks)}")
    print(f"interaction -> job queued (download, checks, resize to {settings.max_width}x{settings.max_height}): "
          f"{summary(queued)}")
    ordered = sorted(lags)
    print(f"event loop lag while it runs ({len(lags)} samples of a 5 ms timer): "
          f"p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {ordered[int(0.99 * len(ordered))] * 1000:.2f} ms, "
          f"max {ordered[-1] * 1000:.2f} ms")

    composing()


def composing(rounds: int = 2000) -> None:
    """The prompt's flags and the request composed from them, as every /generate does before it queues:
    a 1,500-character prompt with eight flags, and 10,000 characters of dashes (the worst case)."""
    from jobs.compose import compose
    from jobs.styles import SHIPPED, load

    settings = Settings(_env_file=None, model_presets={"anime": {"checkpoint": "a.safetensors"}})
    styles = load(SHIPPED)
    prompt = "a quiet harbour at dawn, " * 56 + "--ar 16:9 --seed 42 --steps 30 --cfg 6 --no text, boats " \
        "--style watercolor --anime --lora ink.safetensors:0.7"
    for label, text in (("1,500 characters, 8 flags", prompt), ("10,000 dashes", "-" * 10_000 + " x")):
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            compose(settings, text, {}, {}, styles)
            times.append(time.perf_counter() - began)
        print(f"compose a request from a prompt ({label}, {rounds} times): {summary(times)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=12)
    asyncio.run(main(parser.parse_args().commands))
