"""Share pages benchmark: the public page of a shared result (web/shares.py) on a store of many shares.

Fills a fresh SQLite store in a temp folder with `--shares` results, each shared (a tenth of them
revoked), starts the web app on 127.0.0.1 in this event loop, then prints p50 / p95 / max of:
- a share page (HTTP: signature, share, result, the image's header read in a thread, the template);
- its image (HTTP, 512×512 PNG from the output folder);
- a revoked link's 404 page, and a forged link's 404 (refused before the database is asked);
- store.share_result for a result already shared (the link given again).

    python bench/shares.py [--shares 5000] [--requests 300]
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
from PIL import Image  # noqa: E402

import logs  # noqa: E402
from bench.engine_latency import percentile  # noqa: E402
from config import Settings  # noqa: E402
from links import share_token  # noqa: E402
from store import Generation, Store  # noqa: E402
from web.app import WebServer  # noqa: E402

OWNER, GUILD, SECRET = 111, 222, "bench-share-secret"


def summary(name: str, seconds: list[float]) -> str:
    ms = [value * 1000 for value in seconds]
    return (f"{name:<52} p50 {statistics.median(ms):7.2f} ms   p95 {percentile(ms, 0.95):7.2f} ms   "
            f"max {max(ms):7.2f} ms   (n={len(ms)})")


async def timed(session: aiohttp.ClientSession, url: str, status: int) -> float:
    began = time.perf_counter()
    async with session.get(url, allow_redirects=False) as response:
        await response.read()
    if response.status != status:
        raise SystemExit(f"{url} answered {response.status}, not {status}")
    return time.perf_counter() - began


async def main(count: int, requests: int) -> None:
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(_env_file=None, outputs_dir=Path(folder) / "outputs", data_dir=Path(folder) / "data",
                            web_secret=SECRET, web_base_url="https://bot.example.org")
        settings.outputs_dir.mkdir(parents=True)
        Image.new("RGB", (512, 512), (90, 140, 200)).save(settings.outputs_dir / "result.png")
        store = Store(settings.data_dir / "bot.sqlite3")
        await store.open()
        began = time.perf_counter()
        live, revoked, results = [], [], []
        for index in range(count):
            made = await store.add_generation(Generation(
                id=None, job_id=None, kind="txt2img", user_id=OWNER, guild_id=GUILD, channel_id=1,
                params={"prompt": f"a shared lighthouse number {index}", "width": 512, "height": 512},
                files=["result.png"], server="s", duration=1.0))
            share = await store.share_result(made.id, GUILD, OWNER, index % 2 == 0)
            results.append(made)
            if index % 10 == 9:
                await store.revoke_share(share.token, OWNER)
                revoked.append(share.token)
            else:
                live.append(share.token)
        print(f"filled {count:,} shared results in {time.perf_counter() - began:.1f} s")
        server = WebServer(store, settings, port=0)
        await server.start()
        rng = random.Random(7)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                def url(share_id: str) -> str:
                    return f"{server.url}/s/{share_token(SECRET, share_id)}"

                await timed(session, url(live[0]), 200)  # warm up
                pages = [await timed(session, url(rng.choice(live)), 200) for _ in range(requests)]
                images = [await timed(session, url(rng.choice(live)) + "/file/0", 200) for _ in range(requests)]
                gone = [await timed(session, url(rng.choice(revoked)), 404) for _ in range(requests)]
                forged = [await timed(session, f"{server.url}/s/{rng.choice(live)}{'A' * 20}", 404)
                          for _ in range(requests)]
            again = []
            for _ in range(requests):
                made = rng.choice(results)
                began = time.perf_counter()
                await store.share_result(made.id, GUILD, OWNER, made.id % 2 == 1)
                again.append(time.perf_counter() - began)
        finally:
            await server.stop()
            await store.close()
    print(summary("share page (HTTP)", pages))
    print(summary("share page's image, 512x512 PNG (HTTP)", images))
    print(summary("revoked link: 404 page (HTTP)", gone))
    print(summary("forged link: 404 page (HTTP, no database)", forged))
    print(summary("store.share_result, already shared", again))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.shares, arguments.requests))
