"""The latency moderation adds to a job, against the fake OpenAI-compatible endpoint answering in 50 ms.

For 200 jobs, one at a time, the real checks of jobs/moderation.py with the real aiohttp provider and a
SQLite store: the prompt check before a job queues, and the result check before it is posted, for one
512x512 PNG and for a batch of four (one request per image, sent together). The endpoint's own 50 ms is
part of each figure; what is above it is the bot's (encoding the image, JSON, HTTP, the store). Also the
cost with MODERATION_URL unset (the hook only looks for a hold in the store). Prints p50 and p95 in ms.
"""

from __future__ import annotations

import asyncio
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

import logs  # noqa: E402
from config import Settings  # noqa: E402
from jobs.moderation import Moderation  # noqa: E402
from jobs.moderation_providers import OpenAIModeration  # noqa: E402
from store import Generation, Job, Store  # noqa: E402
from tests.fakes.moderation import FakeModeration  # noqa: E402

JOBS = 200
ANSWER = 0.050  # seconds the endpoint takes to answer


class Quiet:
    """A logger that drops the per-job lines (the figures are what matters here)."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def png(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.effect_noise((512, 512), 40).convert("RGB")
    image.putpixel((rng.randrange(512), rng.randrange(512)), (255, 0, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return (f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {ordered[int(0.95 * len(ordered))] * 1000:.1f} ms "
            f"({len(ordered)} jobs)")


async def main() -> None:
    logs.configure("error")
    endpoint = FakeModeration(key="sk-bench", delay=ANSWER)
    await endpoint.start()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = Settings(_env_file=None, outputs_dir=root / "outputs", data_dir=root / "data",
                            moderation_url=endpoint.base_url, moderation_api_key="sk-bench")
        settings.outputs_dir.mkdir()
        files = []
        for index in range(4):
            path = settings.outputs_dir / f"result-{index}.png"
            path.write_bytes(png(index))
            files.append(path)
        store = Store(root / "bot.sqlite3")
        await store.open()
        provider = OpenAIModeration(settings.moderation_url, "sk-bench", settings.moderation_model,
                                    settings.moderation_timeout)
        checking, off = Moderation(store, settings, None, provider), Moderation(store, settings, None, None)
        figures: dict[str, list[float]] = {"prompt": [], "one image": [], "four images": [], "off": []}
        try:
            await checking.prompt_refusal(1, 1, ["warm-up"], None, {})
            for number in range(1, JOBS + 1):
                job = Job(id=number, kind="txt2img", user_id=1, channel_id=2, guild_id=1,
                          request={"prompt": f"a lighthouse at dusk, number {number}"})
                began = time.perf_counter()
                await checking.prompt_refusal(1, 1, [job.request["prompt"]], 2, job.request)
                figures["prompt"].append(time.perf_counter() - began)
                for label, shown in (("one image", files[:1]), ("four images", files)):
                    generation = Generation(id=number, job_id=number, kind="txt2img", user_id=1, guild_id=1,
                                            channel_id=2, params={}, files=[path.name for path in shown],
                                            server="bench", duration=1.0)
                    began = time.perf_counter()
                    assert not await checking.holds(job, generation, shown, Quiet())
                    figures[label].append(time.perf_counter() - began)
                began = time.perf_counter()
                await off.holds(job, generation, files, Quiet())
                figures["off"].append(time.perf_counter() - began)
        finally:
            await provider.close()
            await store.close()
            await endpoint.stop()
    print(f"moderation per job, endpoint answering in {ANSWER * 1000:.0f} ms, {len(endpoint.requests)} requests:")
    print(f"prompt check before queueing: {summary(figures['prompt'])}")
    print(f"result check, one 512x512 PNG: {summary(figures['one image'])}")
    print(f"result check, four 512x512 PNGs (sent together): {summary(figures['four images'])}")
    print(f"one image, prompt + result (added per job): "
          f"{summary([a + b for a, b in zip(figures['prompt'], figures['one image'])])}")
    print(f"MODERATION_URL unset (the hook's look for a hold): {summary(figures['off'])}")


if __name__ == "__main__":
    asyncio.run(main())
