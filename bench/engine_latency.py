"""Engine benchmark: from ComfyUI's end of a prompt to the result file on disk.

Runs jobs through the real client, runner and output folder against the fake
ComfyUI on 127.0.0.1, whose SaveImage returns a 1 MiB PNG. Prints:
- latency, end of prompt (the fake sends `executing null`) -> file renamed into
  the output folder: p50, p95, max over the sequential jobs;
- sustained jobs per second with several jobs in flight.

    python bench/engine_latency.py [--jobs 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
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
from comfy.client import ComfyClient  # noqa: E402
from config import Settings  # noqa: E402
from image_gen import ImageRequest, text_to_image  # noqa: E402
from results.folder import OutputFolder  # noqa: E402
from backends.runner import Engine  # noqa: E402
from tests.fakes.comfyui import FakeComfyUI  # noqa: E402
from comfy.workflows import load_set  # noqa: E402


def png_of_about(size: int) -> bytes:
    """A noise PNG of about `size` bytes (noise does not compress)."""
    side = int((size / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def one_job(engine: Engine, fake: FakeComfyUI, index: int) -> float:
    result = await text_to_image(engine, ImageRequest(f"bench {index}", width=64, height=64, seed=index))
    on_disk = time.perf_counter()
    for path in result.files:
        engine.outputs.release(path)
    return on_disk - fake.end_sent[result.prompt_id]


async def main(jobs: int, concurrency: int) -> None:
    logs.configure("warning")
    fake = FakeComfyUI()
    fake.output_bytes = png_of_about(1024 * 1024)
    await fake.start()
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(_env_file=None, comfyui_url=fake.url, workflow_set="selftest",
                            workflows_dir=ROOT / "workflows", outputs_dir=Path(scratch), output_limit=50)
        async with ComfyClient(fake.url) as client:
            await client.wait_connected(5)
            outputs = OutputFolder(settings.outputs_dir, settings.output_limit)
            await outputs.open()
            engine = Engine(client, load_set(settings.workflow_dir()), outputs, settings)
            for index in range(5):  # warm-up
                await one_job(engine, fake, 10**6 + index)
            latencies = [await one_job(engine, fake, index) for index in range(jobs)]
            began = time.perf_counter()
            gate = asyncio.Semaphore(concurrency)

            async def limited(index: int) -> float:
                async with gate:
                    return await one_job(engine, fake, jobs + index)

            await asyncio.gather(*(limited(index) for index in range(jobs)))
            elapsed = time.perf_counter() - began
    await fake.stop()
    ms = [value * 1000 for value in latencies]
    size = len(fake.output_bytes) / 1024 / 1024
    print(f"end of prompt -> file on disk ({jobs} jobs, {size:.2f} MiB PNG, one in flight): "
          f"p50 {statistics.median(ms):.2f} ms, p95 {percentile(ms, 0.95):.2f} ms, max {max(ms):.2f} ms")
    print(f"sustained: {jobs} jobs in {elapsed:.2f} s with {concurrency} in flight = {jobs / elapsed:.1f} jobs/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.jobs, arguments.concurrency))
