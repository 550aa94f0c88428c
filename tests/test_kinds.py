"""Each job kind is one declaration that the rest of the bot reads."""

from __future__ import annotations

from pathlib import Path

import pytest

import kinds
from config import Settings
from image_gen import RequestError
from workflows import load_set

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("workflow_set", ["default", "selftest"])
def test_every_kind_has_its_workflow_in_the_shipped_sets(workflow_set):
    assert set(kinds.KINDS) <= set(load_set(ROOT / "workflows" / workflow_set))


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
        ("upscale", "vary", "animate", "reroll", "zoom"), ("animate",), ())
    assert [kind.title({"factor": 4}, 2) for kind in (txt2img, upscale, animate)] == [
        "2 images", "Upscaled 4x", "Animation"]
    assert not txt2img.image_input and upscale.image_input and animate.image_input
