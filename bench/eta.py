"""How far the bot's time estimates (eta.py) are from the real times.

A synthetic history of 3,000 text-to-image jobs over 4 servers of different speeds, 2 models, 3 sizes,
10 to 50 steps and batches of 1 to 4, each taking its true time with 10 % noise and a second of
overhead. Jobs arrive in order; each is estimated before it is learned, as the bot does. Prints the
median and 90th-percentile error, for the server a job runs on and for "any server" (what a waiting
job is told), after the first 200 jobs.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.eta import Estimates  # noqa: E402

SERVERS = {"gpu1": 0.05, "gpu2": 0.08, "gpu3": 0.12, "gpu4": 0.2}  # seconds per step at 512 x 512 on sd15
MODELS = {"sd15": 1.0, "sdxl": 2.5}
SIZES = [(512, 512), (768, 768), (1024, 1024)]


def main(jobs: int = 3000, warmup: int = 200) -> None:
    rng = random.Random(20261128)
    estimates = Estimates(default_steps=25)
    on_server, anywhere = [], []
    for index in range(jobs):
        server = rng.choice(list(SERVERS))
        model = rng.choice(list(MODELS))
        width, height = rng.choice(SIZES)
        request = {"steps": rng.randint(10, 50), "batch": rng.randint(1, 4), "width": width, "height": height,
                   "checkpoint": model}
        true = (SERVERS[server] * MODELS[model] * (width * height / 512 ** 2) * request["steps"] * request["batch"]
                * rng.lognormvariate(0, 0.1) + 1.0)
        guess, general = estimates.job("txt2img", request, server), estimates.job("txt2img", request)
        if index >= warmup and guess is not None and general is not None:
            on_server.append(abs(guess - true) / true)
            anywhere.append(abs(general - true) / true)
        estimates.learn(server, "txt2img", request, true)

    def line(name: str, errors: list[float]) -> str:
        ordered = sorted(errors)
        return (f"{name}: median error {statistics.median(ordered):.1%}, p90 {ordered[int(0.9 * len(ordered))]:.1%} "
                f"({len(ordered)} jobs)")

    print(line("estimate on the job's own server", on_server))
    print(line("estimate on any server (what a waiting job is told)", anywhere))


if __name__ == "__main__":
    main()
