"""A bot process that only holds the dispatcher's lease, for tests that kill or freeze it:
`python -m tests.cluster.lease_holder <dsn> <name>` prints "held" once it holds the lease, then waits
(at most a minute) for its end."""

from __future__ import annotations

import asyncio
import sys

from cluster.lease import PgLease


async def main(dsn: str, name: str) -> None:
    lease = PgLease(dsn, name)
    await asyncio.wait_for(lease.acquire(), 30)
    print("held", flush=True)
    try:
        await asyncio.wait_for(lease.lost(), 60)
    except asyncio.TimeoutError:
        pass
    await lease.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
