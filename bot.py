"""Entry point: `python bot.py` runs the Discord bot, `python bot.py check [--smoke]` checks ComfyUI."""

from __future__ import annotations

import argparse
import asyncio
import sys

import logs
from config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot.py", description="A Discord bot that makes images and videos with ComfyUI.")
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("check", help="check the settings, the ComfyUI server and the workflows")
    check.add_argument("--smoke", action="store_true", help="also run text to image, upscale and animate once")
    args = parser.parse_args(argv)
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_json)
    if args.command == "check":
        from check import run_check

        return asyncio.run(run_check(settings, smoke=args.smoke))
    if settings.discord_token is None:
        print("config error: DISCORD_TOKEN: required to run the bot (see .env.example)", file=sys.stderr)
        return 2
    print("The Discord side of the bot is not built yet; `python bot.py check --smoke` exercises ComfyUI.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
