"""Run the real bot (`bot.main()`, the code path of `python bot.py`) against a fake Discord on 127.0.0.1.

discord.py has no setting for where Discord is, so this points two class attributes at the fake
before the bot starts (DISCORD-WIRE.md, pitfall 16):
- `discord.http.Route.BASE`                        -> http://127.0.0.1:<port>/api/v10
- `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` -> ws://127.0.0.1:<port>/gateway

Everything else comes from the environment, as for `python bot.py`: DISCORD_TOKEN, COMFYUI_URL,
WORKFLOW_SET, WORKFLOWS_DIR, OUTPUTS_DIR, DATA_DIR, COMMANDS_PER_MINUTE, JOBS_PER_USER, LOG_LEVEL...

    FAKE_DISCORD_PORT=<port> DISCORD_TOKEN=fake COMFYUI_URL=http://127.0.0.1:<port> python bench/launch_bot.py

Optional, for finding leaks and hot spots (both off unless set):
- BENCH_DIAG_FILE=<path>: SIGUSR1 makes the process write the count of live objects per type (after a
  full collection) to that file as JSON;
- BENCH_PROFILE=<path>: run the bot under cProfile and write the stats there when it stops.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def point_discord_at(port: int) -> None:
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway")


def install_diagnostics(path: str) -> None:
    """On SIGUSR1: write {type name: live object count} to `path` (written to a temp name, then renamed),
    plus "@python_blocks" (blocks held by Python's allocator), "@sqlite_bytes" (SQLite's own heap) and
    "@threads", and "#<Class>.<attribute>": the length of each collection the bot and its parts hold."""
    import ctypes
    import gc
    import json
    import signal
    import threading
    from collections import Counter, deque

    def sqlite_bytes() -> int:
        try:
            import _sqlite3

            used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
            used.restype = ctypes.c_int64
            return int(used())
        except (OSError, AttributeError):
            return -1

    def containers() -> dict[str, int]:
        """Sizes of the collections held by the bot and its parts (read only), e.g. "Scheduler._shown"."""
        import bot as bot_module

        sizes: dict[str, int] = {}
        for client in (obj for obj in gc.get_objects() if isinstance(obj, bot_module.ComfyBot)):
            state = getattr(client, "_connection", None)
            parts = [client, getattr(client, "scheduler", None), getattr(client, "delivery", None),
                     getattr(client, "limiter", None), getattr(client, "outputs", None), state,
                     getattr(state, "_view_store", None)]
            scheduler = getattr(client, "scheduler", None)
            parts.append(getattr(scheduler, "pool", None))
            for part in (part for part in parts if part is not None):
                for name, value in vars(part).items():
                    if isinstance(value, (dict, set, list, tuple, deque, frozenset)):
                        sizes[f"{type(part).__name__}.{name}"] = len(value)
        return sizes

    def dump(signum, frame) -> None:
        gc.collect()
        counts = Counter(type(obj).__qualname__ for obj in gc.get_objects())
        counts.update({"@python_blocks": sys.getallocatedblocks(), "@sqlite_bytes": sqlite_bytes(),
                       "@threads": threading.active_count()})
        counts.update({f"#{name}": size for name, size in containers().items()})
        temp = path + ".tmp"
        with open(temp, "w") as out:
            json.dump(dict(counts), out)
        os.replace(temp, path)

    signal.signal(signal.SIGUSR1, dump)


def main() -> int:
    port = os.environ.get("FAKE_DISCORD_PORT", "")
    if not port.isdigit():
        print("launch_bot: set FAKE_DISCORD_PORT to the fake Discord's port", file=sys.stderr)
        return 2
    point_discord_at(int(port))
    if os.environ.get("BENCH_DIAG_FILE"):
        install_diagnostics(os.environ["BENCH_DIAG_FILE"])
    import bot

    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
        try:
            return profile.runcall(bot.main, [])
        finally:
            profile.dump_stats(os.environ["BENCH_PROFILE"])
    return bot.main([])


if __name__ == "__main__":
    sys.exit(main())
