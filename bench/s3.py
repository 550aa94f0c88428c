"""Object-store benchmark: results/s3.py against moto's S3 on 127.0.0.1.

Starts moto (tests/results/s3_server.py) in a child process, so the server has its own
interpreter lock, then for 1 MiB and 20 MiB prints p50 / p95 / max of:
- an upload through S3Store.put_stream (256 KiB chunks: one PUT for 1 MiB, multipart for 20 MiB);
- a download of a presigned URL with aiohttp;
- a download through S3Store.get_stream.
moto is a Python mock, so these figures bound the client's overhead, not a real store's speed.

    python bench/s3.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import structlog  # noqa: E402

from bench.engine_latency import percentile  # noqa: E402
from results.folder import MIB  # noqa: E402
from results.s3 import S3Store  # noqa: E402
from tests.results.s3_server import ACCESS_KEY, BUCKET, REGION, SECRET_KEY  # noqa: E402

SERVER = (
    "import sys; from tests.results.s3_server import MotoServer, make_bucket\n"
    "server = MotoServer(); make_bucket(server.url); print(server.url, flush=True)\n"
    "sys.stdin.readline(); server.stop()\n"
)
START_WAIT = 30.0
CHUNK = 256 * 1024


def start_server() -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )
    assert child.stdout is not None
    os.set_blocking(child.stdout.fileno(), False)
    deadline = time.monotonic() + START_WAIT
    line = ""
    while not line.endswith("\n"):
        if time.monotonic() > deadline or child.poll() is not None:
            child.kill()
            raise SystemExit(f"the S3 server did not start within {START_WAIT:g} s")
        line += child.stdout.readline()
        time.sleep(0.02)
    return child, line.strip()


def stop_server(child: subprocess.Popen[str]) -> None:
    try:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(15)
    except (subprocess.TimeoutExpired, OSError):
        child.kill()
        child.wait(5)


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def measure(store: S3Store, http: aiohttp.ClientSession, size: int, runs: int) -> None:
    data = os.urandom(size)
    upload, presigned, streamed = [], [], []
    for run in range(runs):
        name = f"bench/{size}-{run}.mp4"
        started = time.perf_counter()
        await store.put_stream(name, chunked(data))
        upload.append(time.perf_counter() - started)
        url = await store.presigned_url(name, 60)
        started = time.perf_counter()
        async with http.get(url) as answer:
            body = await answer.read()
        presigned.append(time.perf_counter() - started)
        assert answer.status == 200 and len(body) == size, answer.status
        started = time.perf_counter()
        got = 0
        async for chunk in store.get_stream(name, max_bytes=size):
            got += len(chunk)
        streamed.append(time.perf_counter() - started)
        assert got == size
        await store.delete(name)
    mib = size / MIB
    for label, times in (("upload", upload), ("presigned GET", presigned),
                         ("get_stream", streamed)):
        p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
        print(f"{mib:5.0f} MiB {label:14} p50 {p50 * 1000:8.1f} ms  p95 {p95 * 1000:8.1f} ms  max "
              f"{max(times) * 1000:8.1f} ms  ({mib / p50:6.1f} MiB/s at p50)")


async def main(runs: int) -> None:
    child, url = start_server()
    try:
        store = S3Store(url, BUCKET, "bench", REGION, ACCESS_KEY, SECRET_KEY, timeout=30.0)
        await store.open()
        timeout = aiohttp.ClientTimeout(total=60)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                print(f"S3 server (moto, child process) at {url}; {runs} runs each")
                for size in (MIB, 20 * MIB):
                    await asyncio.wait_for(measure(store, http, size, runs), 600)
        finally:
            await store.close()
    finally:
        stop_server(child)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, choices=range(1, 51), metavar="1..50")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(parser.parse_args().runs))
