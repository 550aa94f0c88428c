"""Credits benchmark: a job's reserve and settle (store/credits.py) under 50 concurrent jobs, on SQLite and on
PostgreSQL (a throwaway server, tests/postgres.py). Each job reserves its price when it "queues" and settles
when it "ends" (every fifth refunded), 50 at a time, spread over 10 people in one server, for 1000 jobs.
Prints, per engine: reserve and settle latency p50/p95 and jobs per second, and checks every balance.

    python bench/credits.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine_latency import percentile  # noqa: E402
from store import PostgresStore, Store  # noqa: E402
from tests.postgres import PostgresServer, PostgresUnavailable, create_database  # noqa: E402

JOBS, IN_FLIGHT, PEOPLE, GUILD, PRICE, GRANT = 1000, 50, 10, 1, 2, 1000


async def run(store: Store | PostgresStore, label: str) -> None:
    for person in range(PEOPLE):
        await store.add_credits(GUILD, person, "grant", GRANT, "bench")
    reserves: list[float] = []
    settles: list[float] = []
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def job(job_id: int) -> None:
        async with gate:
            began = time.perf_counter()
            reserved = await store.reserve(GUILD, job_id % PEOPLE, job_id, PRICE, "bench job")
            reserves.append(time.perf_counter() - began)
            assert reserved.entry is not None
            began = time.perf_counter()
            await store.settle(job_id, job_id % 5 != 0, "bench end")
            settles.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(job(n) for n in range(1, JOBS + 1))), 300)
    elapsed = time.perf_counter() - began
    for person in range(PEOPLE):
        spent = sum(PRICE for n in range(1, JOBS + 1) if n % PEOPLE == person and n % 5 != 0)
        assert await store.balance(GUILD, person) == GRANT - spent
    print(f"{label}: reserve p50 {percentile(reserves, 0.5) * 1000:.2f} ms, p95 {percentile(reserves, 0.95) * 1000:.2f} "
          f"ms; settle p50 {percentile(settles, 0.5) * 1000:.2f} ms, p95 {percentile(settles, 0.95) * 1000:.2f} ms; "
          f"{JOBS / elapsed:.0f} jobs/s ({JOBS} jobs, {IN_FLIGHT} at a time); balances checked")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.sqlite3")
        await store.open()
        try:
            await run(store, "SQLite")
        finally:
            await store.close()
    try:
        with PostgresServer() as server:
            pg = PostgresStore(await create_database(server.dsn()), pool_size=10)
            await pg.open()
            try:
                await run(pg, "PostgreSQL")
            finally:
                await pg.close()
    except PostgresUnavailable as error:
        print(f"PostgreSQL: skipped ({error})")


if __name__ == "__main__":
    asyncio.run(main())
