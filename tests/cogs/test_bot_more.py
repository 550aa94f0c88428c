"""More of the whole bot end to end: previews, guild sync, presets, aspects, limits, logs, the real process.

Fake Discord <-> real discord.py bot <-> real engine <-> fake ComfyUI, as in test_bot.py; the
process tests run `python bot.py` itself against the same fakes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests.bot_harness import bot_settings, custom_ids, image_size, result_of
from tests.fakes.discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def fields_of(message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


def edits_of(discord_fake: FakeDiscord, message_id: str) -> list[dict]:
    """Every accepted PATCH of that message as sent on the wire (JSON payload and files with their bytes)."""
    return [r for r in discord_fake.requests
            if r["method"] == "PATCH" and r["path"].endswith(f"/messages/{message_id}") and r["status"] == 200]


# 1. live preview ------------------------------------------------------------------------------------


async def test_running_job_shows_the_latest_preview_then_only_the_result(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url, workflow_set="default")
    await running.start(settings)
    comfy.node_delays = {"KSampler": 3.0}  # longer than one progress-edit interval (1.5 s)
    interaction = await discord_fake.slash("generate", {"prompt": "preview me", "width": 64, "height": 64, "steps": 10})
    message = await result_of(discord_fake, interaction, timeout=15)
    progress = interaction.original_message_id

    with_preview = [edit for edit in edits_of(discord_fake, progress)
                    if any(f["filename"] == "preview.jpg" for f in edit["files"])]
    assert with_preview, f"no progress edit carried preview.jpg; edits: {[e['json'] for e in edits_of(discord_fake, progress)]}"
    edit = with_preview[-1]
    (preview,) = [f for f in edit["files"] if f["filename"] == "preview.jpg"]
    assert preview["data"].startswith(JPEG_SIGNATURE)
    assert Image.open(io.BytesIO(preview["data"])).format == "JPEG"
    content = edit["json"]["content"]
    assert re.fullmatch(r"🎨 Drawing \(step \d+ of 10\), \d+ s so far(, about \d+ s left\.|, finishing…|\.)", content.splitlines()[0]), \
        content
    assert re.fullmatch(r"`[█░]+` \d+%", content.splitlines()[1]), content
    assert "KSampler" not in content

    # the result is a new message with the PNG that was saved, nothing else; the preview went with its message
    (attachment,) = message.attachments
    assert attachment["filename"].endswith(".png") and attachment["data"].startswith(PNG_SIGNATURE)
    assert [p.read_bytes() for p in settings.outputs_dir.glob("*.png")] == [attachment["data"]]
    assert message.content == "✅ <@5001>, your image is ready." and message.embeds
    assert await discord_fake.wait_for(lambda: discord_fake.messages[progress].deleted)
    assert not [v for v in discord_fake.violations if not v.startswith("[429")]


# 2. guild-scoped sync -------------------------------------------------------------------------------


async def test_commands_are_synced_to_the_configured_guild(comfy, discord_fake, running, tmp_path):
    guild = discord_fake.guild_id
    await running.start(bot_settings(tmp_path, comfy.url, discord_guild_ids=[int(guild)]))
    puts = [r["path"] for r in discord_fake.requests if r["method"] == "PUT" and r["path"].endswith("/commands")]
    assert puts == [f"/applications/{discord_fake.app_id}/guilds/{guild}/commands"]
    assert discord_fake.global_commands == []
    assert {"generate", "help"} <= {c["name"] for c in discord_fake.guild_commands[guild]}
    interaction = await discord_fake.slash("generate", {"prompt": "guild", "width": 64, "height": 64})
    assert interaction.payload["data"]["guild_id"] == guild  # the client ran the guild's command
    message = await result_of(discord_fake, interaction)
    assert image_size(message.attachments[0]) == (64, 64)


# 3. model presets -----------------------------------------------------------------------------------

PRESETS = {"sdxl": {"checkpoint": "sdxl.safetensors", "width": 1024, "height": 1024, "steps": 30,
                    "negative_prompt": "ugly"}}


async def test_model_preset_sets_checkpoint_size_steps_and_negative_prompt(comfy, discord_fake, running, tmp_path):
    bot = await running.start(bot_settings(tmp_path, comfy.url, workflow_set="default", model_presets=PRESETS))
    choices = await discord_fake.autocomplete("generate", {"prompt": "x", "model": "sd"}, "model")
    assert choices == [{"name": "sdxl", "value": "sdxl"}]
    assert await discord_fake.autocomplete("generate", {"prompt": "x", "model": "zz"}, "model") == []

    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "model": "sdxl"}),
                              timeout=20)
    (posted,) = comfy.prompts.values()
    graph = posted["prompt"]
    assert graph["4"]["inputs"]["ckpt_name"] == "sdxl.safetensors"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (1024, 1024)
    assert graph["3"]["inputs"]["steps"] == 30
    assert graph["7"]["inputs"]["text"] == "ugly" and graph["6"]["inputs"]["text"] == "x"
    assert image_size(message.attachments[0]) == (1024, 1024)
    fields = fields_of(message)
    assert fields["Model"] == "sdxl" and fields["Steps"] == "30" and fields["Size"] == "1024×1024"
    assert fields["Negative prompt"] == "ugly"

    unknown = await discord_fake.slash("generate", {"prompt": "x", "model": "dreamy"})
    await unknown.wait_acked(3)
    reply = discord_fake.messages[unknown.original_message_id]
    assert reply.ephemeral and unknown.response_type == 4
    assert reply.content == "There is no model called `dreamy`. Choose one of: `sdxl`."
    assert len(comfy.prompts) == 1 and await bot.store.get_job(2) is None  # job 1 was the sdxl one


# 4. aspect choices ----------------------------------------------------------------------------------


async def test_portrait_aspect_gives_a_two_by_three_image(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    generate = next(c for c in discord_fake.commands if c["name"] == "generate")
    aspect = next(o for o in generate["options"] if o["name"] == "aspect")
    assert {"name": "portrait (2:3)", "value": "portrait"} in aspect["choices"]

    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "tall", "aspect": "portrait"}))
    (posted,) = comfy.prompts.values()
    empty = posted["prompt"]["1"]["inputs"]
    width, height = empty["width"], empty["height"]
    assert image_size(message.attachments[0]) == (width, height)
    assert fields_of(message)["Size"] == f"{width}×{height}"
    assert width % 8 == 0 and height % 8 == 0 and height > width  # latent sizes are multiples of 8
    assert width * 3 == height * 2, f"'portrait (2:3)' gave {width}x{height}, a {width / height:.3f} ratio, not 2:3 (0.667)"


# 5. limits in the synced command --------------------------------------------------------------------


async def test_synced_command_carries_the_configured_limits(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, max_width=1024, max_height=768, max_steps=50, max_batch=2))
    generate = next(c for c in discord_fake.commands if c["name"] == "generate")
    options = {o["name"]: o for o in generate["options"]}
    limits = {name: (options[name].get("min_value"), options[name].get("max_value"))
              for name in ("width", "height", "steps", "batch")}
    assert limits == {"width": (64, 1024), "height": (64, 768), "steps": (1, 50), "batch": (1, 2)}
    assert options["width"]["description"] == "Width in pixels (64-1024)"
    assert options["batch"]["description"] == "How many images (1-2)"
    with pytest.raises(ValueError, match="outside"):  # Discord's client itself refuses the value
        await discord_fake.slash("generate", {"prompt": "x", "batch": 3})
    with pytest.raises(ValueError, match="outside"):
        await discord_fake.slash("generate", {"prompt": "x", "width": 1088})
    message = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "edge", "batch": 2, "width": 64, "height": 64, "steps": 50}))
    assert len(message.attachments) == 2


# 6. anyone may click ---------------------------------------------------------------------------------


async def test_a_button_works_for_another_user_and_mentions_the_clicker(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "share", "width": 64, "height": 64}))
    assert first.content == "✅ <@5001>, your image is ready."
    click = await discord_fake.click(first.id, "cf:up:1:0:2", user_id="6001", username="bob")
    upscaled = await result_of(discord_fake, click)
    assert upscaled.id != first.id and image_size(upscaled.attachments[0]) == (128, 128)
    assert upscaled.content == "✅ <@6001>, your upscaled image is ready." and upscaled.mentions == ["6001"]
    fields = fields_of(upscaled)
    assert fields["From"] == f"[the original image](https://discord.com/channels/{discord_fake.guild_id}/" \
                             f"{discord_fake.channel_id}/{first.id})"
    assert fields["Size"] == "128×128" and upscaled.embeds[0]["description"] == "share"
    assert discord_fake.messages[first.id].content == "✅ <@5001>, your image is ready."  # alice's is left alone
    assert custom_ids(discord_fake.messages[first.id]) == ["cf:up:1:0:2", "cf:up:1:0:4", "cf:vary:1:0:s", "cf:vary:1:0:S", "cf:anim:1:0", "cf:reroll:1", "cf:remix:1", "cf:zoom:1:0", "cf:zoom:1:0:15",
        "cf:up:1:0:8", "cf:fav:1", "cf:del:1", "cf:report:1", "cf:share:1"]


# 7. JSON logs -----------------------------------------------------------------------------------------


async def run_process(tmp_path: Path, args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, out.decode(), err.decode()


def base_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WORKFLOWS_DIR": str(ROOT / "workflows"),
            "WORKFLOW_SET": "selftest", "OUTPUTS_DIR": str(tmp_path / "outputs"), "DATA_DIR": str(tmp_path / "data"),
            "COMFYUI_TIMEOUT": "5", **env}


@pytest.mark.parametrize("as_json", [True, False])
async def test_log_lines_are_json_objects_only_when_asked(comfy, tmp_path, as_json):
    env = base_env(tmp_path, COMFYUI_URL=comfy.url, LOG_LEVEL="info", LOG_JSON="true" if as_json else "false")
    code, out, err = await run_process(tmp_path, [str(ROOT / "bot.py"), "check", "--smoke"], env)
    assert code == 0, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 3, err
    if as_json:
        records = [json.loads(line) for line in lines]
        assert all(isinstance(r, dict) and {"event", "level"} <= r.keys() for r in records), err
        assert "prompt_submitted" in {r["event"] for r in records} and "info" in {r["level"] for r in records}
    else:
        for line in lines:
            with pytest.raises(ValueError):
                json.loads(line)
        assert any("prompt_submitted" in line for line in lines)


# 8. the real process ---------------------------------------------------------------------------------

LAUNCHER = """\
import os, runpy, sys
import yarl
import discord.gateway, discord.http

discord.http.Route.BASE = os.environ["FAKE_DISCORD_API"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
sys.path.insert(0, os.environ["BOT_ROOT"])
sys.argv = [os.path.join(os.environ["BOT_ROOT"], "bot.py")]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_python_bot_py_serves_generate_and_stops_cleanly(comfy, discord_fake, tmp_path, stop_signal):
    launcher = tmp_path / "launch_bot.py"
    launcher.write_text(LAUNCHER)
    log_path = tmp_path / "bot.log"
    env = base_env(tmp_path, COMFYUI_URL=comfy.url, DISCORD_TOKEN="fake-token", LOG_LEVEL="info",
                   FAKE_DISCORD_API=discord_fake.api_url, FAKE_DISCORD_GATEWAY=discord_fake.gateway_url,
                   BOT_ROOT=str(ROOT))
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(launcher), cwd=tmp_path, env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT)
    try:
        await discord_fake.wait_ready(timeout=20)
        await discord_fake.wait_for(lambda: discord_fake.commands, timeout=10)
        interaction = await discord_fake.slash("generate", {"prompt": "from a process", "width": 96, "height": 64})
        message = await result_of(discord_fake, interaction)
        assert image_size(message.attachments[0]) == (96, 64)
        assert [p.read_bytes() for p in (tmp_path / "outputs").glob("*.png")] == [message.attachments[0]["data"]]
        async with asyncio.timeout(5):  # the bot records the delivery just after the edit: let it finish
            while "job_delivered" not in log_path.read_text():
                await asyncio.sleep(0.02)

        process.send_signal(stop_signal)
        async with asyncio.timeout(10):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = log_path.read_text()
    assert code == 0, f"exit status {code} after {stop_signal.name}; output:\n{output}"
    assert "bot_ready" in output and "Traceback" not in output


async def test_python_bot_py_without_a_token_says_so(tmp_path):
    code, out, err = await run_process(tmp_path, [str(ROOT / "bot.py")], base_env(tmp_path))
    assert (code, out, err) == (2, "", "config error: DISCORD_TOKEN: required to run the bot (see .env.example)\n")
    (tmp_path / ".env").write_text("DISCORD_TOKEN=\n")  # as .env.example ships it: blank is not set
    code, out, err = await run_process(tmp_path, [str(ROOT / "bot.py")], base_env(tmp_path))
    assert (code, err) == (2, "config error: DISCORD_TOKEN: required to run the bot (see .env.example)\n")


async def test_python_bot_py_when_discord_cannot_be_reached_says_so(tmp_path):
    launcher = tmp_path / "launch_bot.py"
    launcher.write_text(LAUNCHER)
    env = base_env(tmp_path, DISCORD_TOKEN="fake-token", COMFYUI_URL="http://127.0.0.1:9", BOT_ROOT=str(ROOT),
                   FAKE_DISCORD_API="http://127.0.0.1:9/api/v10", FAKE_DISCORD_GATEWAY="ws://127.0.0.1:9/gateway")
    code, out, err = await run_process(tmp_path, [str(launcher)], env)
    assert code == 1 and "Traceback" not in out + err
    assert err.splitlines()[-1].startswith("error: cannot reach Discord (ClientConnectorError: ")


# 9. ComfyUI goes away mid-job ------------------------------------------------------------------------


async def wait_running(comfy, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        while comfy.running_id() is None:
            await asyncio.sleep(0.01)
    return comfy.running_id()


def is_final(discord_fake, interaction) -> bool:
    """The job ended: its result or failure was posted (its nonce names the progress message)."""
    progress = interaction.original_message_id
    return any(str(m.nonce) in (f"{progress}.0", f"{progress}.99") for m in discord_fake.messages.values())


async def test_one_comfyui_restart_mid_job_costs_the_user_nothing(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    comfy.node_delay = 0.5
    interaction = await discord_fake.slash("generate", {"prompt": "survivor", "width": 64, "height": 64})
    await wait_running(comfy)
    await comfy.restart(downtime=0.5)  # the process restarts: the running prompt is forgotten
    comfy.node_delay = 0.0
    message = await result_of(discord_fake, interaction, timeout=15)
    assert message.content == "✅ <@5001>, your image is ready." and image_size(message.attachments[0]) == (64, 64)
    first, second = comfy.prompts.values()  # run once more, with the same values
    assert first["prompt"] == second["prompt"]


async def test_comfyui_restarting_mid_job_is_explained_and_the_bot_carries_on(comfy, discord_fake, running, tmp_path):
    bot = await running.start(bot_settings(tmp_path, comfy.url))
    comfy.node_delay = 1.0
    interaction = await discord_fake.slash("generate", {"prompt": "doomed", "width": 64, "height": 64})
    await interaction.wait_acked(3)
    restarts = 0
    while restarts < 3:  # ComfyUI restarts each time it runs this job
        await discord_fake.wait_for(lambda: is_final(discord_fake, interaction) or comfy.running_id() is not None,
                                    timeout=10)
        if is_final(discord_fake, interaction):
            break
        await comfy.restart(downtime=0.5)
        restarts += 1
    message = await result_of(discord_fake, interaction, timeout=10)
    assert restarts == 2 and len(comfy.prompts) == 2
    assert message.content == ("❌ <@5001>, your image could not be made: the server failed twice while running it. "
                               "Try again in a few minutes.")
    assert message.attachments == [] and message.embeds == []
    assert await bot.store.active_job_count(5001) == 0

    comfy.node_delay = 0.0
    again = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "again", "width": 64, "height": 64}))
    assert image_size(again.attachments[0]) == (64, 64)


class ClosedPort:
    """Holds a stopped ComfyUI's port: accepts each connection attempt, counts it, and hangs up at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.attempts = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ClosedPort:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.attempts += 1
            writer.close()

        self._server = await asyncio.start_server(hang_up, "127.0.0.1", self.port, reuse_address=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


async def test_comfyui_down_mid_job_is_explained_and_generate_works_once_it_is_back(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, server_grace=1.0))
    comfy.node_delay = 1.0
    interaction = await discord_fake.slash("generate", {"prompt": "stranded", "width": 64, "height": 64})
    await wait_running(comfy)
    await comfy.stop()  # ComfyUI is gone, and stays gone
    async with ClosedPort(comfy.port) as closed:
        message = await result_of(discord_fake, interaction, timeout=15)
        assert message.content == ("❌ <@5001>, your image could not be made: ComfyUI is not answering right now. "
                                   "Try again in a few minutes.")
        assert message.attachments == []
        # an outage of some seconds: the bot has tried to reconnect five times (its backoff has grown)
        await discord_fake.wait_for(lambda: closed.attempts >= 5, timeout=15)
    comfy.node_delay = 0.0
    await comfy.start()  # ComfyUI is back, on the same address, and answers
    async with aiohttp.ClientSession() as session, session.get(comfy.url + "/system_stats") as response:
        assert response.status == 200
    again = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "back", "width": 64, "height": 64}),
                            timeout=15)
    assert again.attachments and image_size(again.attachments[0]) == (64, 64), (
        f"ComfyUI answers again, but /generate said: {again.content!r}")
