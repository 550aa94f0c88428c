"""Metrics benchmark: what recording and scraping the Prometheus metrics cost.

Records 10,000 jobs (7 kinds, 3 final states, 4 servers, durations drawn like real ones: waits of
seconds to minutes, runs of seconds, animations of minutes) with their GPU time, acks, errors and
loop lag into a `Metrics`, then starts the web app on 127.0.0.1 in this event loop and prints
p50 / p95 / max of:
- recording one finished job (job_finished + gpu + server + queue);
- a scrape of GET /metrics over HTTP;
- render() alone.

    python bench/metrics.py [--jobs 10000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

import logs  # noqa: E402
from bench.engine_latency import percentile  # noqa: E402
from config import Settings  # noqa: E402
from metrics import Metrics  # noqa: E402
from store import Store  # noqa: E402
from web.app import WebServer  # noqa: E402

KINDS = {  # kind: (median run seconds, spread)
    "txt2img": (8.0, 0.5), "img2img": (7.0, 0.5), "inpaint": (9.0, 0.5), "outpaint": (12.0, 0.5),
    "upscale": (15.0, 0.6), "animate": (180.0, 0.5), "controlnet": (11.0, 0.5),
}
SERVERS = [f"ComfyUI server {n}" for n in range(1, 5)]
ERRORS = ["Unreachable", "ExecutionFailed", "OutOfMemory", "TimedOut", "PromptLost"]
PRICE = 1.2  # per GPU hour


def summary(name: str, seconds: list[float], unit: str = "ms") -> str:
    scale = 1000 if unit == "ms" else 1_000_000
    values = [value * scale for value in seconds]
    return (f"{name:<44} p50 {statistics.median(values):8.3f} {unit}   p95 {percentile(values, 0.95):8.3f} {unit}   "
            f"max {max(values):8.3f} {unit}   (n={len(values)})")


def record(metrics: Metrics, count: int, rng: random.Random) -> list[float]:
    """`count` finished jobs with what goes with them; the time each job's recording took."""
    took = []
    kinds = list(KINDS)
    for n in range(count):
        kind = rng.choice(kinds)
        median, spread = KINDS[kind]
        state = rng.choices(("done", "failed", "cancelled"), weights=(90, 6, 4))[0]
        waited = rng.lognormvariate(2.0, 1.2)  # ~7 s typical, minutes at busy times
        ran = rng.lognormvariate(0.0, spread) * median if state != "cancelled" or rng.random() < 0.5 else None
        server = rng.choice(SERVERS)
        began = time.perf_counter()
        metrics.job_finished(kind, state, waited=waited, ran=ran,
                             delivery=rng.lognormvariate(-0.7, 0.6) if state == "done" else None)
        if ran is not None:
            metrics.gpu(server, ran, ran / 3600 * PRICE)
        metrics.server(server, up=rng.random() > 0.01, load=rng.randrange(0, 4))
        metrics.queue(rng.randrange(0, 30), rng.randrange(0, 8))
        took.append(time.perf_counter() - began)
        metrics.acked(rng.lognormvariate(-2.5, 0.8))
        if state == "failed":
            metrics.error(rng.choice(ERRORS))
        if n % 10 == 0:
            metrics.loop_lag(rng.lognormvariate(-6.5, 1.0))
    metrics.discord(True)
    return took


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    began = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
        assert response.status == 200, response.status
    return time.perf_counter() - began, len(body)


async def main(jobs: int, scrapes: int) -> None:
    logs.configure("warning")
    rng = random.Random(20251128)
    metrics = Metrics()
    began = time.perf_counter()
    took = record(metrics, jobs, rng)
    print(f"recorded {jobs:,} jobs in {time.perf_counter() - began:.2f} s")
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as folder:
        tmp = Path(folder)
        settings = Settings(_env_file=None, outputs_dir=tmp / "outputs", data_dir=tmp / "data", web_secret="bench")
        store = Store(settings.data_dir / "bot.sqlite3")
        await store.open()
        server = WebServer(store, settings, port=0, metrics=metrics)
        await server.start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                await scrape(session, f"{server.url}/metrics")  # warm the connection
                results = [await scrape(session, f"{server.url}/metrics") for _ in range(scrapes)]
                fresh = []
                for n in range(scrapes):  # something changed since the last scrape, as in a busy bot
                    metrics.queue(n % 30, n % 8)
                    fresh.append(await scrape(session, f"{server.url}/metrics"))
        finally:
            await server.stop()
            await store.close()
    renders = []
    for _ in range(scrapes):
        began = time.perf_counter()
        body, _ = metrics.render()
        renders.append(time.perf_counter() - began)
    full = Metrics()  # every label at its bound: the most a hostile or very busy bot can make
    for n in range(60):
        full.job_finished(f"kind{n}", ("done", "failed", "cancelled")[n % 3], waited=n, ran=n, delivery=n / 10)
        full.server(f"ComfyUI server {n}", up=True, load=n)
        full.gpu(f"ComfyUI server {n}", n, n / 100)
        full.error(f"Error{n}")
    worst = []
    for _ in range(scrapes):
        began = time.perf_counter()
        full_body, _ = full.render()
        worst.append(time.perf_counter() - began)
    lines = body.count(b"\n")
    print(f"/metrics body: {results[-1][1]:,} bytes, {lines:,} lines")
    print(summary("record one finished job", took, unit="µs"))
    print(summary("GET /metrics (HTTP), nothing changed: reused", [seconds for seconds, _ in results]))
    print(summary("GET /metrics (HTTP), changed: rendered", [seconds for seconds, _ in fresh]))
    print(summary("Metrics.render()", renders))
    full_lines = full_body.count(b"\n")
    print(f"/metrics body at the label bounds: {len(full_body):,} bytes, {full_lines:,} lines")
    print(summary("Metrics.render() at the label bounds", worst))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.jobs, arguments.scrapes))
