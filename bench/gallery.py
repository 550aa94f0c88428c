"""Gallery benchmark: the web gallery and the prompt search on a store of 100,000 results.

Fills a fresh store in a temp folder (one person owns most results; the prompts are made from a
small word list), starts the web app on 127.0.0.1 in this event loop, warms the thumbnails of the
first page, then prints p50 / p95 / max of:
- a gallery page of 60 (an HTTP request for the page; its thumbnails are cached);
- a gallery search page (the same with ?q=...);
- a cached thumbnail (HTTP);
- store.find_generations with a text search, limit 9 (as /history does).

    python bench/gallery.py [--rows 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sqlite3
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
from ui.contact_sheet import contact_sheet  # noqa: E402
from store import Store  # noqa: E402
from store.gallery import Query  # noqa: E402
from web.app import WebServer  # noqa: E402
from web.gallery import PAGE_SIZE  # noqa: E402
from links import sign  # noqa: E402
from web.thumbs import Thumbnails  # noqa: E402

OWNER, GUILD = 111, 222
ADJECTIVES = ["ancient", "misty", "golden", "neon", "quiet", "stormy", "frozen", "sunlit", "hidden", "floating",
              "ruined", "tiny", "enormous", "glowing", "overgrown"]
SUBJECTS = ["castle", "fox", "lighthouse", "forest", "city street", "dragon", "harbour", "cathedral", "robot",
            "garden", "whale", "mountain village", "library", "train station", "samurai", "cat astronaut"]
SETTINGS = ["at dusk", "in the rain", "under the stars", "in autumn", "at sunrise", "in fog", "on a cliff",
            "by the sea", "in winter", "after a storm"]
STYLES = ["oil painting", "watercolor", "cinematic lighting", "35mm photo", "pixel art", "concept art",
          "isometric", "ukiyo-e", "charcoal sketch", "octane render"]
NEGATIVES = ["blurry", "lowres, watermark", "text, signature", "extra fingers, bad hands", ""]
SEARCHES = ["castle", "misty fox", "watercolor harbour", "drag", "sunrise cathedral", "neon city", "robot rain",
            "golden whale", "pixel", "frozen library winter"]


def prompt(rng: random.Random) -> str:
    return (f"{rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)} {rng.choice(SETTINGS)}, {rng.choice(STYLES)}, "
            f"highly detailed")


def rows(count: int, rng: random.Random) -> list[tuple]:
    """Generations rows, oldest first: 90% the owner's in one server, the rest other people's."""
    start = time.time() - 365 * 86400
    made = []
    for index in range(count):
        if rng.random() < 0.9:
            user_id, guild_id = OWNER, GUILD
        else:
            user_id, guild_id = rng.randrange(1000, 1050), rng.choice([GUILD, 333, 444, None])
        params = {"prompt": prompt(rng), "negative_prompt": rng.choice(NEGATIVES), "model": "sdxl",
                  "width": 1024, "height": 1024, "seed": rng.randrange(2**32), "steps": 25, "cfg": 7.0}
        files = [f"gen-{index:06d}.png"]
        made.append(("txt2img", user_id, guild_id, 7000, json.dumps(params, separators=(",", ":")),
                     json.dumps(files), "http://127.0.0.1:8188", 5.0, 9_000_000 + index,
                     json.dumps([f"https://cdn.discordapp.com/attachments/1/{index}/{files[0]}"]),
                     start + index * (365 * 86400 / count)))
    return made


def insert(db: sqlite3.Connection, values: list[tuple]) -> None:
    """Runs on the store's thread: one transaction, every row through the full-text trigger."""
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO generations (kind, user_id, guild_id, channel_id, params, files, server, duration, "
        "message_id, attachment_urls, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    db.execute("COMMIT")
    db.execute("ANALYZE")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_mandelbrot((512, 512), (-2, -1.25, 0.75, 1.25), 64).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def summary(name: str, seconds: list[float]) -> str:
    ms = [value * 1000 for value in seconds]
    return (f"{name:<44} p50 {statistics.median(ms):7.2f} ms   p95 {percentile(ms, 0.95):7.2f} ms   "
            f"max {max(ms):7.2f} ms   (n={len(ms)})")


async def timed_get(session: aiohttp.ClientSession, url: str, **params) -> float:
    began = time.perf_counter()
    async with session.get(url, params=params, allow_redirects=False) as response:
        await response.read()
        assert response.status == 200, (url, response.status)
    return time.perf_counter() - began


async def main(count: int, requests: int) -> None:
    logs.configure("warning")
    rng = random.Random(20251128)
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as folder:
        tmp = Path(folder)
        settings = Settings(_env_file=None, outputs_dir=tmp / "outputs", data_dir=tmp / "data", web_secret="bench")
        settings.outputs_dir.mkdir(parents=True)
        store = Store(settings.data_dir / "bot.sqlite3")
        await store.open()
        began = time.perf_counter()
        await store._run(insert, rows(count, rng))
        print(f"filled {count:,} generations in {time.perf_counter() - began:.1f} s")

        server = WebServer(store, settings, port=0)
        await server.start()
        token = sign("bench", OWNER, GUILD, time.time() + 3600)
        gallery = f"{server.url}/g/{token}"
        try:
            first, total = await store.find_generations(Query(OWNER, GUILD), limit=PAGE_SIZE)
            picture = png()
            for result in first:
                (settings.outputs_dir / result.files[0]).write_bytes(picture)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                began = time.perf_counter()
                for result in first:  # warm the thumbnail cache
                    await timed_get(session, f"{gallery}/r/{result.id}/thumb/0")
                print(f"made {len(first)} thumbnails in {time.perf_counter() - began:.1f} s; "
                      f"the owner has {total:,} results")
                pages = [await timed_get(session, gallery) for _ in range(requests)]
                searches = [await timed_get(session, gallery, q=SEARCHES[n % len(SEARCHES)]) for n in range(requests)]
                thumbs = [await timed_get(session, f"{gallery}/r/{first[n % len(first)].id}/thumb/0")
                          for n in range(requests)]
            finds = []
            for n in range(requests * 2):
                began = time.perf_counter()
                await store.find_generations(Query(OWNER, GUILD, text=SEARCHES[n % len(SEARCHES)]), limit=9)
                finds.append(time.perf_counter() - began)
            thumbnails = Thumbnails(settings.outputs_dir, settings.data_dir / "thumbs")
            sheets, pages_of_nine = [], []
            for n in range(requests // 4):  # /history: a search's page of nine and its contact sheet
                began = time.perf_counter()
                nine, _ = await store.find_generations(Query(OWNER, GUILD), offset=0, limit=9)
                tiles = [await thumbnails.get(result.files[0]) for result in first[:9]]
                middle = time.perf_counter()
                await contact_sheet(tiles)
                ended = time.perf_counter()
                pages_of_nine.append(ended - began)
                sheets.append(ended - middle)
        finally:
            await server.stop()
            await store.close()
    print(summary("gallery page of 60 (HTTP)", pages))
    print(summary("gallery search page (HTTP, ?q=)", searches))
    print(summary("thumbnail, cached (HTTP)", thumbs))
    print(summary("store.find_generations text search, limit 9", finds))
    print(summary("/history contact sheet of 9 (Pillow, in a thread)", sheets))
    print(summary("/history page: find 9 + thumbnails + contact sheet", pages_of_nine))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.requests))
