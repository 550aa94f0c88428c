"""The bot's version, one value wherever it shows: `python bot.py --version`, /status's footer as
Discord shows it, `comfybot_build_info` on the running bot's GET /metrics, the Docker image's label
default, and the CHANGELOG's newest release section (the release workflow's notes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.bot_harness import bot_settings
from tests.web.test_metrics_bot import free_port, get
from version import VERSION

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_a_semantic_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", VERSION)


def test_bot_py_version_prints_it_without_any_setting(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "DISCORD_TOKEN"}
    done = subprocess.run([sys.executable, str(ROOT / "bot.py"), "--version"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"bot.py {VERSION}\n", "")


def test_the_image_label_defaults_to_it():
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile.split(" AS runtime", 1)[1]
    assert re.search(rf"^ARG VERSION={re.escape(VERSION)}$", runtime, re.MULTILINE), "ARG VERSION=<version.py's>"
    assert 'org.opencontainers.image.version="${VERSION}"' in runtime


def test_the_changelog_has_its_section_first():
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    releases = [heading for heading in headings if heading != "Unreleased"]
    assert releases and releases[0] == VERSION, f"CHANGELOG.md's newest release is {releases[:1]}, not {VERSION}"
    assert len(releases) == len(set(releases))


async def test_status_and_metrics_of_the_running_bot_show_it(comfy, discord_fake, running, tmp_path):
    port = free_port()
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port))
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy() and running.bot.is_ready(), timeout=5)
    interaction = await discord_fake.slash("status")
    await interaction.wait_acked(3)
    status = await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading and m.embeds, timeout=5)
    assert status.embeds[0]["footer"]["text"] == f"Bot version {VERSION}"
    code, text = await get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    assert f'comfybot_build_info{{version="{VERSION}"}} 1.0' in text.splitlines()
    started = next(line for line in text.splitlines() if line.startswith("comfybot_start_time_seconds "))
    assert float(started.split()[1]) > 1_700_000_000
