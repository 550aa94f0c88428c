"""compose(): flags over options over saved defaults over the preset over the settings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings as settings_profile, strategies as st
from pydantic import ValidationError

from jobs import kinds
from jobs.compose import ASPECTS, compose, nsfw_reasons
from config import Settings
from jobs.flags import FlagError
from image_gen import RequestError
from jobs.styles import Style

PRESETS = {"anime": {"checkpoint": "anime.safetensors", "width": 768, "height": 768, "steps": 28, "cfg": 6,
                     "negative_prompt": "lowres"},
           "spicy": {"checkpoint": "s.safetensors", "nsfw": True}}
STYLES = {"ink": Style("ink", "ink drawing of {prompt}", "color"), "hot": Style("hot", "{prompt}, hot", nsfw=True)}


@pytest.fixture
def settings():
    return Settings(_env_file=None, model_presets=PRESETS, nsfw_loras=["nsfw/*"], checkpoint="base.safetensors")


def test_flags_win_over_options_which_win_over_saved_defaults_and_the_preset(settings):
    prefs = {"steps": 9, "model": "anime", "aspect": "wide", "style": "ink", "unknown": 1}
    request = compose(settings, "a cat --seed 5 --cfg 4", {"cfg": 8, "steps": 12}, prefs, STYLES)
    assert (request["seed"], request["cfg"], request["steps"]) == (5, 4, 12)
    assert request["checkpoint"] == "anime.safetensors" and request["model"] == "anime"
    assert (request["width"], request["height"]) == (1024, 576)  # wide, at the preset's area
    assert request["negative_prompt"] == "lowres" and request["style_prompt"] == "ink drawing of {prompt}"
    assert "unknown" not in request and request["prompt"] == "a cat"
    plain = compose(settings, "a cat", {}, {}, STYLES)
    assert (plain["width"], plain["height"], plain["steps"], plain["model"]) == (512, 512, None, "base.safetensors")


def test_size_is_only_set_when_asked_for_an_image_that_brings_its_own(settings):
    assert "width" not in compose(settings, "x", {}, {"aspect": "wide"}, STYLES, sized="asked")
    assert compose(settings, "x --ar 1:1", {}, {}, STYLES, sized="asked")["width"] == 512
    assert "width" not in compose(settings, "x --ar 1:1", {}, {}, STYLES, sized=False)


def test_negative_prompts_and_loras_join_and_are_bounded(settings):
    request = compose(settings, "x --no text --lora a.safetensors:0.5", {"negative_prompt": "blur", "lora": "b"}, {},
                      STYLES)
    assert request["negative_prompt"] == "blur, text" and request["loras"] == [["b", 1.0], ["a.safetensors", 0.5]]
    with pytest.raises(RequestError, match="at most 3 LoRAs"):
        compose(settings, "x --lora a --lora b --lora c", {"lora": "d"}, {}, STYLES)
    with pytest.raises(RequestError, match="strength must be between -2 and 2"):
        compose(settings, "x", {"lora": "d", "lora_strength": 3}, {}, STYLES)
    with pytest.raises(FlagError):
        compose(settings, "x --nope", {}, {}, STYLES)


def test_a_saved_default_that_is_gone_is_forgotten_but_an_asked_for_style_is_refused(settings):
    request = compose(settings, "x", {}, {"model": "removed", "style": "gone"}, STYLES)
    assert request["model"] == "base.safetensors" and "style" not in request
    with pytest.raises(RequestError, match="there is no style called 'gone'"):
        compose(settings, "x", {"style": "gone"}, {}, STYLES)


def test_what_is_marked_nsfw_is_named(settings):
    request = compose(settings, "x --spicy --style hot --lora nsfw/a.safetensors --lora fine", {}, {}, STYLES)
    assert nsfw_reasons(settings, request, STYLES) == ["the model spicy", "the style hot",
                                                      "the LoRA nsfw/a.safetensors"]
    assert nsfw_reasons(settings, compose(settings, "x --style ink", {}, {}, STYLES), STYLES) == []


def test_an_aspect_at_the_smallest_default_size_is_a_size_the_bot_accepts():
    settings = Settings(_env_file=None, default_width=64, default_height=64)
    request = compose(settings, "a kite --ar 3:2", {}, {}, STYLES)
    assert (request["width"], request["height"]) == (96, 64)  # was 72x48, then refused as "height ... (got 48)"
    kinds.TXT2IMG.prepare(settings, request)


@settings_profile(max_examples=300, deadline=None)
@given(data=st.data(), max_w=st.integers(64, 4096), max_h=st.integers(64, 4096))
def test_every_aspect_at_every_allowed_default_size_is_a_size_the_bot_accepts(data, max_w, max_h):
    """Whatever the operator's limits and defaults, and whatever aspect a person asks for (a saved
    aspect, the aspect option, or any --ar the flag accepts), the size the bot computes is one the job
    then accepts: the bot never blames a person for a size it chose."""
    default_w, default_h = data.draw(st.integers(64, max_w)), data.draw(st.integers(64, max_h))
    settings = Settings(_env_file=None, max_width=max_w, max_height=max_h, default_width=default_w,
                        default_height=default_h)
    w = data.draw(st.integers(1, 100))
    h = data.draw(st.integers(max(1, -(-w // 4)), min(100, 4 * w)))
    named = data.draw(st.sampled_from(sorted(ASPECTS)))
    for prompt, options in ((f"x --ar {w}:{h}", {}), ("x", {"aspect": named})):
        request = compose(settings, prompt, options, {}, STYLES)
        assert 64 <= request["width"] <= max_w and 64 <= request["height"] <= max_h, (prompt, options, request)
        kinds.TXT2IMG.prepare(settings, request)  # the job's own check: raises RequestError if refused


def test_a_default_size_over_the_limit_is_refused_at_start():
    with pytest.raises(ValidationError, match="DEFAULT_WIDTH \\(1024\\) is larger than MAX_WIDTH \\(512\\)"):
        Settings(_env_file=None, default_width=1024, max_width=512)
