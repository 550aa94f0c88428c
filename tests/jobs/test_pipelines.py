"""Pipelines as data (jobs/pipelines.py) and their planning (jobs/stages.plan): the three ways to write one
(the operator's TOML, a line of text, a result's chain), every refusal as a sentence, conditions that skip
steps, and the request each later step gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from jobs.pipelines import (MAX_STEPS, PipelineError, Step, check, from_chain, load, next_request, parse_steps,
                            values_of)
from jobs.stages import plan
from store import Job

POSTER = """
[Poster]
description = "big and detailed"
[[Poster.steps]]
action = "generate"
width = 768
height = 768
[[Poster.steps]]
kind = "upscale"
factor = 2
when = "width < 1024"
[[Poster.steps]]
action = "detail"
strength = 0.3
prompt = "more detail"
[[Poster.steps]]
action = "animate"
frames = 16
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_operators_file_declares_pipelines_with_conditions(tmp_path):
    (poster,) = load(write(tmp_path, POSTER)).values()
    assert poster.name == "poster" and poster.description == "big and detailed"
    assert [step.to_json() for step in poster.steps] == [
        {"action": "generate", "width": 768, "height": 768}, {"action": "upscale", "factor": 2, "when": "width < 1024"},
        {"action": "img2img", "strength": 0.3, "prompt": "more detail"}, {"action": "animate", "frames": 16}]
    assert poster.summary() == ("generate 768×768 → upscale 2x when width < 1024 → img2img 0.3 'more detail' → "
                                "animate 16 frames")
    assert load(tmp_path / "none.toml") == {}
    shipped = load(Path(__file__).resolve().parents[2] / "pipelines.toml")
    assert sorted(shipped) == ["living-picture", "poster"]


@pytest.mark.parametrize(("text", "refusal"), [
    ("[p]\nsteps = 3", "[p] needs a steps list"),
    ("[p]\n[[p.steps]]\naction = 'upscale'", "[p]: A pipeline starts with generate, not upscale."),
    ("[p]\n[[p.steps]]\nwidth = 3", "[p]: step 1 has no action"),
    ("[p]\n[[p.steps]]\naction = 'generate'\nwidth = 'big'", "[p]: step 1: width must be a whole number, not 'big'."),
    ("[p]\n[[p.steps]]\naction = 'generate'\nwidth = 1.5", "[p]: step 1: width must be a whole number, not 1.5."),
    ("[p]\n[[p.steps]]\naction = 'generate'\nseed = 1", "[p]: step 1: generate takes width, height, steps, cfg, "
                                                          "batch, not 'seed'."),
    ("[p]\n[[p.steps]]\naction = 'generate'\nwhen = 'width > 1'", "[p]: The first step runs always"),
    ("[p]\n[[p.steps]]\naction = 'generate'\n[[p.steps]]\naction = 'generate'", "[p]: Step 2 (generate) must be the "
                                                                                "first step."),
    ("[p]\n[[p.steps]]\naction = 'generate'\n[[p.steps]]\naction = 'upscale'\nwhen = 'open(1)'",
     "[p]: Step 2 (upscale): The condition 'open(1)' uses calls"),
    ("[p]\n[[p.steps]]\naction = 'generate'\n[[p.steps]]\naction = 'upscale'\nwhen = 'colour > 1'",
     "[p]: Step 2 (upscale): The condition 'colour > 1'"),
    ("[\"bad name!\"]\n[[\"bad name!\".steps]]\naction = 'generate'", "A pipeline name is 1 to 32 characters"),
    ("[p]\nsteps = [" + ", ".join(["{action = 'generate'}"] + ["{action = 'img2img'}"] * MAX_STEPS) + "]",
     f"[p]: A pipeline has 1 to {MAX_STEPS} steps (this one has {MAX_STEPS + 1})."),
    ("[p\nsteps", "cannot be read"),
])
def test_a_file_that_cannot_be_used_is_refused_naming_the_pipeline(tmp_path, text, refusal):
    with pytest.raises(PipelineError) as raised:
        load(write(tmp_path, text))
    assert refusal in str(raised.value)


def test_a_line_of_text_reads_sizes_factors_strengths_prompts_counts_and_conditions():
    steps = parse_steps("generate 768x512 30 steps → upscale 4x when width < 1024 and batch == 1; "
                        "detail 0.25 'sharp -> crisp; clean' -> zoom 1.5x -> animate 24 frames 12 fps motion=90")
    assert [step.to_json() for step in steps] == [
        {"action": "generate", "width": 768, "height": 512, "steps": 30},
        {"action": "upscale", "factor": 4, "when": "width < 1024 and batch == 1"},
        {"action": "img2img", "strength": 0.25, "prompt": "sharp -> crisp; clean"},
        {"action": "zoom", "zoom": 1.5},
        {"action": "animate", "frames": 24, "fps": 12, "motion": 90}]
    assert check("x", steps).steps == tuple(steps)


@pytest.mark.parametrize(("text", "refusal"), [
    ("", "Write the steps"),
    ("generate -> upscale 3x", "Step 2: factor is one of 2, 4, 8, not 3."),
    ("generate -> zoom 3x", "Step 2: zoom is one of 1.5, 2, not 3."),
    ("generate -> img2img 7", "Step 2 (img2img): the bot cannot read '7'"),
    ("generate -> img2img strength=2", "Step 2: strength must be between 0.05 and 1, not 2."),
    ("generate -> img2img \"open", "Step 2 has a quote that is not closed"),
    ("generate -> -> upscale", None),  # an empty step between arrows is dropped
    ("generate -> animate -> zoom", "Step 3 (zoom) takes an image, but the step before it makes a video."),
    ("generate -> animate when width > 9 -> upscale", "Step 2 (animate) makes a video only when its condition holds"),
    ("generate -> interpolate", "Step 2 (interpolate) takes a video, but the step before it makes an image."),
    ("generate -> animate -> upscale 8x", "Step 3 (upscale): a video is upscaled 2x or 4x."),
    ("x" * 1001, "at most 1000 characters"),
])
def test_every_line_that_cannot_be_used_gets_a_sentence(text, refusal):
    if refusal is None:
        assert [step.action for step in check("x", parse_steps(text)).steps] == ["generate", "upscale"]
        return
    with pytest.raises(PipelineError) as raised:
        check("x", parse_steps(text))
    assert refusal in str(raised.value)


def test_a_results_chain_becomes_its_steps_without_the_prompt():
    chain = [("txt2img", {"prompt": "a fox", "width": 512, "height": 768, "steps": 20, "seed": 4}),
             ("img2img", {"prompt": "a fox, detailed", "strength": 0.4, "input": "a.png"}),
             ("upscale", {"factor": 4, "input": "b.png", "width": 512}),
             ("animate", {"frames": 14, "fps": 8, "seed": 9})]
    assert [step.to_json() for step in from_chain(chain)] == [
        {"action": "generate", "width": 512, "height": 768, "steps": 20}, {"action": "img2img", "strength": 0.4},
        {"action": "upscale", "factor": 4}, {"action": "animate", "frames": 14, "fps": 8}]
    with pytest.raises(PipelineError, match="cannot be a pipeline step"):
        from_chain([("controlnet", {})])


def test_each_later_step_takes_the_result_before_it_and_keeps_the_persons_choices():
    made = {"prompt": "a fox", "negative_prompt": "blur", "model": "anime", "checkpoint": "anime.safetensors",
            "style": "ink", "seed": 5, "upload_limit": 10_000_000, "pipeline": {"name": "p"}}
    shown = {"width": 768, "height": 512, "seed": 5}
    assert next_request(Step("img2img", {"strength": 0.3, "prompt": "{prompt}, oil paint"}), made, "txt2img", shown,
                        "r.png") == ("img2img", {
        "prompt": "a fox, oil paint", "negative_prompt": "blur", "model": "anime", "checkpoint": "anime.safetensors",
        "style": "ink", "width": 768, "height": 512, "input": "r.png", "upload_limit": 10_000_000, "strength": 0.3})
    assert next_request(Step("img2img", {}), made, "txt2img", shown, "r.png")[1]["strength"] == 0.3
    assert next_request(Step("upscale", {"factor": 4}), made, "img2img", shown, "r.png")[1]["factor"] == 4
    assert next_request(Step("upscale", {}), made, "animate", {**shown, "frames": 14, "fps": 8}, "v.mp4") == (
        "video_upscale", {"prompt": "a fox", "negative_prompt": "blur", "model": "anime", "style": "ink",
                          "checkpoint": "anime.safetensors", "width": 768, "height": 512, "input": "v.mp4",
                          "upload_limit": 10_000_000, "frames": 14, "fps": 8, "factor": 2})
    assert next_request(Step("interpolate", {}), made, "animate", {"fps": 6}, "v.mp4")[1]["fps"] == 6
    kind, request = next_request(Step("animate", {"frames": 8}), made, "upscale", shown, "u.png")
    assert kind == "animate" and request["frames"] == 8 and "seed" not in request and "pipeline" not in request
    with pytest.raises(PipelineError, match="the interpolate step takes a video, but the step before it made an image"):
        next_request(Step("interpolate", {}), made, "txt2img", shown, "r.png")


def step_job(steps: list[dict], step: int, stages: list | None = None) -> Job:
    return Job(id=7, kind="txt2img", user_id=1, channel_id=2, guild_id=3,
               request={"prompt": "x", "pipeline": {"name": "p", "steps": steps, "step": step, "stages": stages or []}})


def test_planning_skips_the_steps_whose_condition_does_not_hold_for_the_result():
    steps = [{"action": "generate"}, {"action": "upscale", "factor": 2, "when": "width < 1024"},
             {"action": "img2img", "when": "batch == 1"}, {"action": "animate"}]
    small = plan(step_job(steps, 0), "txt2img", {"width": 512, "height": 512}, 1, 3.14159, 0.0021)
    assert small == {"name": "p", "of": 4, "next_step": 1, "stages": [
        {"step": 1, "label": "generate", "kind": "txt2img", "gpu": 3.14, "cost": 0.0021, "job_id": 7}]}
    big_batch = plan(step_job(steps, 0), "txt2img", {"width": 2048, "height": 512}, 4, 1.0, 0.0)
    assert big_batch["next_step"] == 3
    assert [stage.get("skipped") for stage in big_batch["stages"]] == [
        None, "width < 1024 is not true", "batch == 1 is not true"]
    last = plan(step_job(steps, 3, stages=small["stages"]), "animate", {"frames": 14}, 1, 2.0, 0.0)
    assert last["next_step"] is None and [stage["step"] for stage in last["stages"]] == [1, 4]
    assert plan(Job(id=1, kind="txt2img", user_id=1, channel_id=2, guild_id=3, request={}), "txt2img", {}, 1, 0, 0) \
        is None
    # a value the result does not have cannot be compared: the step is skipped, saying why
    lacking = plan(step_job([{"action": "generate"}, {"action": "animate", "when": "frames > 10"}], 0), "txt2img",
                   {}, 1, 0, 0)
    assert lacking["next_step"] is None
    assert lacking["stages"][1]["skipped"] == "frames > 10 cannot be checked for this result"


def test_a_condition_sees_the_results_values_kind_media_and_step():
    assert values_of("animate", {"width": 64, "frames": 14, "prompt": "x"}, 1, 3) == {
        "width": 64, "height": None, "batch": 1, "frames": 14, "fps": None, "seed": None, "steps": None,
        "cfg": None, "strength": None, "factor": None, "zoom": None, "kind": "animate", "media": "video", "step": 3}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_line_of_text_is_read_or_refused_in_words(text):
    try:
        steps = parse_steps(text)
        check("x", steps)
    except PipelineError as error:
        assert str(error).strip() and "Traceback" not in str(error)
