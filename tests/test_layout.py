"""The house plan holds: imports run one way (Discord and web on top, then jobs, then backends, then
the ComfyUI client, the store and results, then the shared utilities, then config), nothing below
the Discord side imports discord, no module imports another in a circle, and no module of the bot
or its benchmarks passes 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# the tier of each area: a module may import its own package, and anything of a lower tier (logging
# set-up masks signed links, so it sits just above the other shared utilities)
TIERS = {"bot": 7, "cogs": 6, "web": 6, "ui": 5, "jobs": 4, "image_gen": 4, "video_gen": 4, "backends": 3, "cluster": 3,
         "comfy": 2, "store": 2, "results": 2, "logs": 1.5, "tasks": 1, "safe_text": 1, "metrics": 1, "links": 1,
         "config": 0, "config_models": -1, "version": 0,
         "examples": 8}  # examples/: programs that use the HTTP API from outside; they import nothing of the bot
JOBS_TIER = {"jobs", "image_gen", "video_gen"}  # the card's image_gen and video_gen belong with jobs
DISCORD_SIDE = {"bot", "cogs", "ui"}
LONGEST = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in (".venv", "tests", "bench", ".git") or "__pycache__" in relative.parts:
            continue
        name = ".".join(relative.with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known} | {name.split(".")[0] for name in names
                                                         if name.split(".")[0] == "discord"}


def area(module: str) -> str:
    return module.split(".")[0]


def test_every_area_of_the_plan_is_known():
    unknown = {area(name) for name in modules()} - set(TIERS)
    assert not unknown, f"modules outside the plan's areas: {sorted(unknown)} (add them to TIERS and the README)"


def test_imports_run_one_way():
    known = modules()
    wrong = []
    for name, path in known.items():
        for target in imports(path, known) - {"discord"}:
            same = area(target) == area(name) or {area(target), area(name)} <= JOBS_TIER
            if target != name and not same and TIERS[area(target)] >= TIERS[area(name)]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_nothing_below_the_discord_side_imports_discord():
    known = modules()
    wrong = [name for name, path in known.items() if area(name) not in DISCORD_SIDE and "discord" in imports(path, known)]
    assert not wrong, wrong


def test_no_module_imports_another_in_a_circle():
    known = modules()
    graph = {name: imports(path, known) - {"discord", name} for name, path in known.items()}
    graph = {name: {t for t in targets if t in graph and not name.startswith(f"{t}.")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]) if target in trail else target)
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_no_module_passes_400_lines():
    paths = [*modules().values(), *(ROOT / "bench").glob("*.py")]
    long = {str(path.relative_to(ROOT)): n for path in paths if (n := len(path.read_text().splitlines())) > LONGEST}
    assert not long, long
