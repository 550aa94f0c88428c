"""`python bot.py check` contacts each RunPod endpoint (its /health) and says whether its id and key work."""

from __future__ import annotations

import json

from tests.fakes.runpod import FakeRunPod
from tests.jobs.test_check import run_bot

MODEL = "v1-5-pruned-emaonly.safetensors"


def endpoints(fake: FakeRunPod, **overrides) -> str:
    return json.dumps([{"endpoint_id": fake.endpoint_id, "api_key": fake.api_key, "base_url": fake.base_url,
                        "models": [MODEL], **overrides}])


async def check(comfy, tmp_path, value: str) -> tuple[int, list[str]]:
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="selftest",
                                 RUNPOD_ENDPOINTS=value, LOG_LEVEL="error")
    assert "Traceback" not in output
    return code, output.splitlines()


async def test_a_working_endpoint_is_ok_with_its_workers(comfy, runpod, tmp_path):
    runpod.workers = 2
    code, lines = await check(comfy, tmp_path, endpoints(runpod))
    assert code == 0, "\n".join(lines)
    start = lines.index(f"RunPod endpoint {runpod.endpoint_id} at {runpod.base_url}")
    assert lines[start + 1] == "  answers: ok, workers: 2 ready, 2 idle, 0 running"
    assert lines[start + 2] == "  models: every model file the settings name for its kinds is listed for it"
    assert lines[start + 3] == ("  taken on trust: its node classes and model files cannot be verified from here (RunPod "
                                "has no /object_info); run a job through it once to be sure.")
    assert any(entry["path"].endswith("/health") for entry in runpod.requests)
    assert lines[-1] == "All checks passed."


async def test_the_kinds_whose_model_files_are_not_listed_are_named(comfy, runpod, tmp_path):
    code, output = await run_bot(tmp_path, "check", COMFYUI_URL=comfy.url, WORKFLOW_SET="default",
                                 RUNPOD_ENDPOINTS=endpoints(runpod), LOG_LEVEL="error")
    lines = output.splitlines()
    start = lines.index(f"RunPod endpoint {runpod.endpoint_id} at {runpod.base_url}")
    assert lines[start + 2] == ("  models: these kinds never go to it, as RUNPOD_ENDPOINTS lists no model file they need: "
                                "upscale (RealESRGAN_x4plus.pth), animate (svd_xt.safetensors), "
                                "controlnet (control_v11p_sd15_canny.pth), video_upscale (RealESRGAN_x4plus.pth)")


async def test_a_refused_key_fails_the_check(comfy, runpod, tmp_path):
    code, lines = await check(comfy, tmp_path, endpoints(runpod, api_key="rpa_WRONGKEY"))
    assert code == 1
    start = lines.index(f"RunPod endpoint {runpod.endpoint_id} at {runpod.base_url}")
    assert lines[start + 1] == "  the API key was refused (401): check its api_key in RUNPOD_ENDPOINTS"
    assert not any("rpa_WRONGKEY" in line for line in lines)
    assert lines[-1] == "Some checks failed (see above)."


async def test_an_unknown_endpoint_id_fails_the_check(comfy, runpod, tmp_path):
    code, lines = await check(comfy, tmp_path, endpoints(runpod, endpoint_id="nosuch1"))
    assert code == 1
    start = lines.index(f"RunPod endpoint nosuch1 at {runpod.base_url}")
    assert lines[start + 1] == "  no endpoint with id 'nosuch1' (404): check its endpoint_id in RUNPOD_ENDPOINTS"
    assert lines[-1] == "Some checks failed (see above)."


async def test_an_unreachable_endpoint_fails_the_check(comfy, tmp_path):
    value = json.dumps([{"endpoint_id": "abc123", "api_key": "rpa_SECRETKEY", "base_url": "http://127.0.0.1:9/v2"}])
    code, lines = await check(comfy, tmp_path, value)
    assert code == 1
    start = lines.index("RunPod endpoint abc123 at http://127.0.0.1:9/v2")
    assert lines[start + 1] == "  unreachable: RunPod endpoint abc123 is unreachable (ClientConnectorError)."
    assert not any("rpa_SECRETKEY" in line for line in lines)
