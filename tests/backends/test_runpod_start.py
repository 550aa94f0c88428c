"""Starting the bot with a RunPod endpoint: its workflows are not "validated" against the empty node list
it does not have; what can be checked is, and what is taken on trust is logged once."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from tests.backends.test_runpod_bot import settings_for


async def started_logs(running, settings) -> list[dict]:
    with capture_logs() as logs:
        await running.start(settings)
        await asyncio.wait_for(asyncio.shield(running.bot._validation), 10)  # the start-up validation ran
    return logs


async def test_no_false_workflow_problems_for_a_runpod_endpoint(comfy, runpod, discord_fake, running, tmp_path):
    logs = await started_logs(running, settings_for(tmp_path, comfy.url, runpod))
    assert [entry for entry in logs if entry["event"] == "workflow_problem"] == []
    (trust,) = [entry for entry in logs if entry["event"] == "runpod_taken_on_trust"]
    assert trust["log_level"] == "info" and trust["server"] == "RunPod"
    assert trust["taken_on_trust"] == ("its node classes and model files cannot be verified from here (RunPod has no "
                                       "/object_info); run a job through it once to be sure.")
    assert trust["never_sent"] == {}  # the selftest set names no model file in the settings


async def test_the_kinds_a_runpod_endpoint_never_gets_are_logged_once(comfy, runpod, discord_fake, running, tmp_path):
    comfy.models["checkpoints"].append("svd_xt.safetensors")
    logs = await started_logs(running, settings_for(tmp_path, comfy.url, runpod, workflow_set="default"))
    assert [entry for entry in logs if entry["event"] == "workflow_problem" and "RunPod" in entry["server"]] == []
    (trust,) = [entry for entry in logs if entry["event"] == "runpod_taken_on_trust"]
    assert trust["never_sent"] == {"upscale": "RealESRGAN_x4plus.pth", "animate": "svd_xt.safetensors",
                                   "controlnet": "control_v11p_sd15_canny.pth", "video_upscale": "RealESRGAN_x4plus.pth"}
