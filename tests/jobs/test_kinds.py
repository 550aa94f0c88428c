"""Each job kind is one declaration that the rest of the bot reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import kinds
from jobs.check import OPTIONAL_MODELS
from config import Settings
from image_gen import RequestError
from comfy.workflows import load_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workflow_set", ["default", "selftest"])
def test_every_kind_has_its_workflow_in_the_shipped_sets(workflow_set):
    settings = Settings(_env_file=None)
    default_requests = {name: {"control_type": "canny"} for name in kinds.KINDS}
    needed = {kind.workflow_for(default_requests[name]) for name, kind in kinds.KINDS.items()} - set(OPTIONAL_MODELS)
    assert needed <= set(load_set(ROOT / "workflows" / workflow_set))
    assert {f"controlnet_{name}" for name in settings.controlnet_models} <= set(load_set(ROOT / "workflows" / workflow_set))


def test_an_unknown_kind_is_a_sentence_not_a_crash():
    with pytest.raises(RequestError, match="does not know the job kind 'sketch'"):
        kinds.get("sketch")
    assert kinds.noun("sketch") == "job"


def test_preparing_a_request_checks_it_and_resolves_the_seed_once():
    settings = Settings(_env_file=None)
    prepared = kinds.get("txt2img").prepare(settings, {"prompt": "a cat", "seed": None})
    assert isinstance(prepared["seed"], int)
    with pytest.raises(RequestError, match="width must be between 64 and 2048"):
        kinds.get("txt2img").prepare(settings, {"prompt": "a cat", "width": 5000})
    assert kinds.get("upscale").prepare(settings, {"input": "a.png", "factor": 2}) == {"input": "a.png", "factor": 2}


def test_what_a_kind_needs_and_offers():
    settings = Settings(_env_file=None, checkpoint="base.safetensors")
    txt2img, upscale, animate = (kinds.get(name) for name in ("txt2img", "upscale", "animate"))
    assert txt2img.models(settings, {"checkpoint": "sdxl.safetensors"}) == {"checkpoint": "sdxl.safetensors"}
    assert txt2img.models(settings, {}) == {"checkpoint": "base.safetensors"}
    assert (txt2img.buttons, upscale.buttons, animate.buttons) == (
        ("upscale", "vary", "animate", "reroll", "remix", "zoom"), ("animate",),
        ("video_upscale", "interpolate", "animate_form"))
    assert [kind.title({"factor": 4}, 2) for kind in (txt2img, upscale, animate)] == [
        "2 images", "Upscaled 4x: 2 images", "Animation"]
    assert upscale.title({"factor": 8}, 1) == "Upscaled 8x"
    assert not txt2img.image_input and upscale.image_input and animate.image_input


def test_the_files_a_request_pins_are_its_input_mask_and_every_image_of_an_upscale_all():
    assert kinds.files({"input": "a.png", "mask": "m.png", "prompt": "x"}) == ["a.png", "m.png"]
    assert kinds.files({"input": "a.png", "inputs": ["a.png", "b.png", "c.png"]}) == ["a.png", "b.png", "c.png"]
    assert kinds.files({"input": None, "mask": None, "inputs": [3, None]}) == []


def test_an_8x_upscale_is_refused_where_it_could_not_be_posted():
    settings = Settings(_env_file=None)
    upscale = kinds.get("upscale")
    small = {"input": "a.png", "factor": 8, "width": 512, "height": 512, "upload_limit": 10 * 1024 * 1024}
    assert upscale.prepare(settings, dict(small)) == small
    with pytest.raises(RequestError, match="upscaled 8x, this image would be too large to post here"):
        upscale.prepare(settings, {**small, "width": 1024, "height": 1024})
    with pytest.raises(RequestError, match="upscaled 8x"):  # a size nobody knows is not assumed to fit
        upscale.prepare(settings, {"input": "a.png", "factor": 8})
    with pytest.raises(RequestError, match="upscale factor must be one of 2x, 4x, 8x"):
        upscale.prepare(settings, {"input": "a.png", "factor": 3})


def test_a_controlnet_request_is_checked_and_names_its_workflow_and_model():
    settings = Settings(_env_file=None, controlnet_models={"canny": "canny.pth", "depth": "depth.pth"})
    controlnet = kinds.get("controlnet")
    request = controlnet.prepare(settings, {"prompt": "a castle", "control_type": "depth", "input": "c.png",
                                            "width": 512, "height": 384, "control_strength": 1.2})
    assert isinstance(request["seed"], int) and controlnet.workflow_for(request) == "controlnet_depth"
    assert controlnet.models(settings, request) == {"checkpoint": settings.checkpoint, "control_net": "depth.pth"}
    assert controlnet.workflow_for({}) == "controlnet_canny"
    cases = [({"control_type": "pose"}, "there is no ControlNet type 'pose' here (this bot offers: 'canny', 'depth')"),
             ({"control_strength": 2.5}, "control strength must be between 0 and 2"),
             ({"control_start": 0.5, "control_end": 0.4}, "the control must start before it ends"),
             ({"prompt": " "}, "prompt must not be empty")]
    for change, message in cases:
        with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
            controlnet.prepare(settings, {"prompt": "a castle", "input": "c.png", **change})
