"""What masking secrets costs each log line: the Redactor over a typical event (nine short fields)
and over one with a signed gallery link in a long request line, many times; prints the figures."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import logs  # noqa: E402

ROUNDS, PER_ROUND = 20, 1000

EVENTS = {
    "a typical event (9 short fields)": {
        "event": "prompt_finished", "error": None, "outcome": "success", "prompt_id": "cf88e8aa8b-8-a7b34e08",
        "server": "ComfyUI", "url": "http://127.0.0.1:46473", "timestamp": "2026-12-06T12:22:45.839211Z",
        "level": "info", "logger": "comfy.client"},
    "a 9 KB request line with a link token": {
        "event": "Error handling request", "exception": "LineTooLong: b'GET /g/" + "a" * 71 + "?page=" + "x" * 9000},
}


def main() -> None:
    redactor = logs.Redactor(["a-configured-secret-value"])
    for name, event in EVENTS.items():
        rounds = []
        for _ in range(ROUNDS):
            began = time.perf_counter()
            for _ in range(PER_ROUND):
                redactor.clean(event)
            rounds.append((time.perf_counter() - began) / PER_ROUND * 1e6)
        print(f"mask {name}: median {statistics.median(rounds):.1f} µs, max {max(rounds):.1f} µs "
              f"({ROUNDS} rounds of {PER_ROUND})")


if __name__ == "__main__":
    main()
