"""`python bot.py check [--smoke]` as an operator runs it, against the fake ComfyUI."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


async def run_bot(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WORKFLOWS_DIR": str(ROOT / "workflows"),
                   "OUTPUTS_DIR": str(tmp_path / "outputs"), "COMFYUI_TIMEOUT": "5", **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bot.py"), *args, cwd=tmp_path, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode, output.decode()


async def test_smoke_runs_every_kind_once_on_the_selftest_set(comfy, tmp_path):
    code, output = await run_bot(tmp_path, "check", "--smoke", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest",
                                 DISCORD_TOKEN="secret-token-value", LOG_LEVEL="warning")
    assert code == 0, output
    assert "secret-token-value" not in output and "DISCORD_TOKEN          (set, hidden)" in output
    assert "answers: ComfyUI 0.3.64, devices: cpu" in output
    assert "queue: 0 running, 0 waiting" in output
    for name in ("txt2img", "upscale", "animate"):
        assert f"  {name:<10} ok" in output
    from jobs import kinds

    lines = {line.split(":")[0].strip(): line for line in output.splitlines() if ": ok in" in line}
    assert list(lines) == [name for name in kinds.KINDS if name not in ("interpolate", "text_to_video")]  # inpaint too
    assert "  interpolate: skipped, INTERPOLATE_MODEL is not set" in output  # custom-node video kinds are off
    assert "  text_to_video: skipped, ANIMATEDIFF_MODEL is not set" in output
    assert Image.open(Path(lines["controlnet"].rsplit(": ", 1)[1])).size == (256, 256)
    assert Image.open(Path(lines["inpaint"].rsplit(": ", 1)[1])).size == (256, 256)
    zoomed = Path(lines["outpaint"].rsplit(": ", 1)[1])
    assert Image.open(zoomed).size == (512, 512)
    image = Path(lines["txt2img"].rsplit(": ", 1)[1])
    upscaled = Path(lines["upscale"].rsplit(": ", 1)[1])
    video = Path(lines["animate"].rsplit(": ", 1)[1])
    assert Image.open(image).size == (256, 256) and Image.open(upscaled).size == (512, 512)
    assert video.suffix == ".mp4" and video.stat().st_size > 0
    assert Path(lines["video_upscale"].rsplit(": ", 1)[1]).suffix == ".mp4"  # the animation, upscaled
    assert output.rstrip().endswith("All checks passed.")


async def test_check_names_a_missing_model_and_fails(comfy, tmp_path):
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="default",
                                 CHECKPOINT="dream.safetensors")
    assert code == 1
    assert ("workflows/default/txt2img.json: node 4 (CheckpointLoaderSimple), input 'ckpt_name': 'dream.safetensors' "
            "is not available (the server has: v1-5-pruned-emaonly.safetensors, sdxl.safetensors)") in output
    assert "  upscale    ok" in output
    assert output.rstrip().endswith("Some checks failed (see above).")


async def test_check_says_when_comfyui_does_not_answer(tmp_path):
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL="http://127.0.0.1:9", COMFYUI_TIMEOUT="1")
    assert code == 1
    assert "does not answer: ComfyUI at http://127.0.0.1:9 is unreachable" in output
    assert "Traceback" not in output


async def test_check_covers_every_server_of_the_pool(comfy, tmp_path):
    code, output = await run_bot(tmp_path, "check", WORKFLOW_SET="selftest", COMFYUI_TIMEOUT="1", LOG_LEVEL="error",
                                 COMFYUI_URLS=f'["{comfy.url}", "http://127.0.0.1:9"]')
    assert code == 1
    lines = output.splitlines()
    first, second = lines.index(f"ComfyUI at {comfy.url}"), lines.index("ComfyUI at http://127.0.0.1:9")
    assert "  txt2img    ok" in lines[first:second] and "  answers: ComfyUI 0.3.64, devices: cpu" in lines[first:second]
    assert lines[second + 1] == "  does not answer: ComfyUI at http://127.0.0.1:9 is unreachable (ClientConnectorError)."


async def test_check_masks_the_password_in_the_url(comfy, tmp_path):
    url = comfy.url.replace("http://", "http://user:s3cret-pw@")
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=url, WORKFLOW_SET="selftest", LOG_LEVEL="debug")
    assert code == 0, output
    masked = comfy.url.replace("http://", "http://user:***@")
    assert "s3cret-pw" not in output
    assert f"COMFYUI_URL            {masked}" in output
    assert f"ComfyUI at {masked}" in output.splitlines()


async def test_check_says_a_server_with_a_malformed_node_list_cannot_be_used(comfy, tmp_path):
    from tests.fakes import hostile

    comfy.override("/object_info", hostile.answer({"KSampler": ["not", "a", "node"]}))
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest", LOG_LEVEL="warning")
    assert code == 1, output
    assert ("  cannot be used: ComfyUI's node list (/object_info) is malformed: the entry for 'KSampler' is list, "
            "so this server cannot be used.") in output
    assert "Some checks failed (see above)." in output


async def test_check_shows_odd_system_stats_without_failing(comfy, tmp_path):
    from tests.fakes import hostile

    comfy.override("/system_stats", hostile.answer({"system": "x", "devices": [{"name": "<b>gpu</b> " + "x" * 500}, 3]}))
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest", LOG_LEVEL="warning")
    assert code == 0, output
    (line,) = [line for line in output.splitlines() if line.startswith("  answers: ")]
    assert line.startswith("  answers: ComfyUI (version unknown), devices: gpu xxx") and len(line) < 150


async def test_check_says_whether_the_server_sends_previews(comfy, tmp_path):
    from tests.fakes import hostile

    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest", LOG_LEVEL="warning")
    assert code == 0 and "  previews: off; start ComfyUI with --preview-method auto to show them while a job runs" in output
    stats = {**comfy.system_stats, "system": {**comfy.system_stats["system"],
                                              "argv": ["main.py", "--listen", "--preview-method", "taesd"]}}
    comfy.override("/system_stats", hostile.answer(stats))
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest", LOG_LEVEL="warning")
    assert code == 0 and "  previews: on (taesd)" in output


async def test_check_names_missing_controlnet_custom_nodes_and_model_files(comfy, tmp_path):
    models = '{"canny": "control_v11p_sd15_canny.pth", "depth": "control_v11f1p_sd15_depth.pth"}'
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="default",
                                 CHECKPOINT="v1-5-pruned-emaonly.safetensors", CONTROLNET_MODELS=models)
    assert code == 1, output
    assert ("controlnet_canny.json: node 12 (ControlNetLoader), input 'control_net_name': "
            "'control_v11p_sd15_canny.pth' is not available: the server has none installed") in output
    assert ("controlnet_canny.json as [controlnet_depth]: node 11 (DepthAnythingV2Preprocessor): this node class is "
            "not installed on the server (a custom node?)") in output
    assert "  controlnet_openpose not offered: CONTROLNET_MODELS names no model file for 'openpose'" in output
    code, output = await run_bot(tmp_path, "check", "--smoke", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest",
                                 CONTROLNET_MODELS="{}")
    assert code == 0, output
    assert "  controlnet: skipped, ControlNet is not offered (see CONTROLNET_MODELS)" in output
    assert "controlnet_canny not offered" in output


async def test_check_validates_presets_styles_and_where_loras_attach(comfy, tmp_path):
    presets = ('{"anime": {"checkpoint": "sdxl.safetensors", "sampler": "euler"}, '
               '"ghost": {"checkpoint": "ghost.safetensors", "sampler": "warp"}}')
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="default",
                                 CHECKPOINT="v1-5-pruned-emaonly.safetensors", MODEL_PRESETS=presets)
    assert "Styles: 20 in " in output
    assert "  anime      ok" in output and "  ghost      2 problem(s)" in output
    assert "node 4 (CheckpointLoaderSimple), input 'ckpt_name': 'ghost.safetensors' is not available" in output
    assert "node 3 (KSampler), input 'sampler_name': 'warp' is not available" in output
    assert "Where LoRAs attach\n  txt2img    at 4.0 and 4.1: ok" in output
    broken = tmp_path / "styles.toml"
    broken.write_text('[odd]\nprompt = "no slot"\n')
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest",
                                 STYLES_FILE=str(broken))
    assert code == 1 and f"Styles: {broken}: [odd]: prompt must contain {{prompt}} once" in output


def test_a_lora_attachment_that_is_not_model_and_clip_is_named():
    import dataclasses
    import json

    from jobs.check import lora_problem
    from comfy.workflows import Target, load_set

    info = json.loads((ROOT / "tests" / "data" / "object_info.json").read_text())
    txt2img = load_set(ROOT / "workflows" / "default")["txt2img"]
    assert lora_problem(txt2img, info) is None
    wrong = dataclasses.replace(txt2img, lora=(Target("4", "0"), Target("4", "2")))
    assert lora_problem(wrong, info) == "output 2 of node 4 (CheckpointLoaderSimple) is VAE, not CLIP"
    beyond = dataclasses.replace(txt2img, lora=(Target("4", "7"), Target("4", "1")))
    assert lora_problem(beyond, info) == "output 7 of node 4 (CheckpointLoaderSimple) is missing, not MODEL"
