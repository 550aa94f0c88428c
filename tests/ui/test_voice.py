"""The bot's voice, unit by unit: wording, stages and the progress bar, and the edit that is not sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from jobs import wording
from comfy.types import (BadResponse, ExecutionFailed, Interrupted, NodeStarted, Progress, PromptLost, PromptRejected,
                         Started, SubmitUnconfirmed, TimedOut, Unreachable)
from results.media import BadResult
from ui.progress import Progression, stage
from ui.views import LiveMessage

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("count, text", [(0, "0 jobs"), (1, "1 job"), (2, "2 jobs"), (11, "11 jobs")])
def test_plurals(count, text):
    assert wording.plural(count, "job") == text


@pytest.mark.parametrize("position, text", [
    (0, "⏳ Waiting for your image: yours is next."),
    (1, "⏳ Waiting for your image: 1 job is ahead of yours."),
    (4, "⏳ Waiting for your image: 4 jobs are ahead of yours."),
    (10, "⏳ Waiting for your image: more than 10 jobs are ahead of yours."),
    (500, "⏳ Waiting for your image: more than 10 jobs are ahead of yours."),
])
def test_waiting_says_how_many_are_ahead(position, text):
    assert wording.waiting("txt2img", position) == text


def test_waiting_while_no_server_answers_counts_down():
    assert wording.waiting("upscale", 0, 25.0) == \
        "⏳ Waiting for your upscale: ComfyUI is not answering; trying again, giving up in 25 s."


@pytest.mark.parametrize("error, text", [
    (ExecutionFailed("3", "KSampler", "torch.OutOfMemoryError", "CUDA out of memory"),
     "the server ran out of GPU memory. Try a smaller size or fewer images."),
    (ExecutionFailed("3", "KSampler", "RuntimeError", "/srv/models/x.safetensors is broken"),
     "the server hit an error while making it. Try again; if it happens again, the operator can see the details "
     "in the bot's log."),
    (PromptRejected.from_reply({"node_errors": {"4": {"class_type": "CheckpointLoaderSimple", "errors": [
        {"type": "value_not_in_list", "message": "Value not in list", "details": "",
         "extra_info": {"input_name": "ckpt_name", "input_config": [["a.safetensors"]], "received_value": "b"}}]}}}),
     "a model it needs is not installed on the server. Choose another model, or ask the operator."),
    (TimedOut("It did not finish within 30 minutes and was stopped."),
     "it did not finish within 30 minutes and was stopped. Try a smaller size or fewer steps."),
    (Interrupted("The job was interrupted at node 5 (KSampler)."), "it was stopped on the server before it finished. Try again."),
    (PromptLost("x"), "the server restarted or lost it. Try again."),
    (Unreachable("ComfyUI at http://10.0.0.1:8188 is unreachable"), "ComfyUI is not answering. Try again in a few minutes."),
    (SubmitUnconfirmed("x"), "ComfyUI did not confirm that it took the job, so the bot stopped rather than risk "
                             "running it twice. Try again."),
    (BadResponse("ComfyUI answered 500 to POST /prompt: KeyError"),
     "ComfyUI answered in a way the bot does not understand. Try again later; the operator can see the details in "
     "the bot's log."),
    (BadResult("The image 2026-selftest_00001_.png is damaged."),
     "the server sent a broken file instead of the result. Try again; the operator can see the details in the bot's log."),
    (RuntimeError("a bug"), "something went wrong on the bot's side. The operator can see the details in the bot's log."),
], ids=["oom", "node-error", "missing-model", "timeout", "interrupted", "lost", "unreachable", "unconfirmed",
        "bad-response", "bad-file", "bug"])
def test_a_failure_says_what_went_wrong_and_what_to_do_without_internals(error, text):
    said = wording.failure(error)
    assert said == text
    for internal in ("KSampler", "Checkpoint", "safetensors", "node", "http", "/srv", ".png"):
        assert internal not in said


def test_a_failure_message_notifies_its_owner_in_one_sentence():
    text = wording.failed("animate", wording.failure(PromptLost("x")), 5001)
    assert text == "❌ <@5001>, your animation could not be made: the server restarted or lost it. Try again."


@pytest.mark.parametrize("kind, expected", [
    ("txt2img", ["Loading the model", "Reading the prompt", "Preparing", "Drawing", "Decoding", "Saving"]),
    ("upscale", ["Reading the image", "Loading the model", "Upscaling", "Saving"]),
])
def test_the_default_workflows_read_as_stages(kind, expected):
    graph = json.loads((ROOT / "workflows" / "default" / f"{kind}.json").read_text())
    stages = {stage(node["class_type"], kind) for node in graph.values()}
    assert stages == set(expected)


def test_every_node_of_the_shipped_workflows_has_a_stage():
    for path in (ROOT / "workflows").glob("*/*.json"):
        for node in json.loads(path.read_text()).values():
            assert stage(node["class_type"], "txt2img") != "Working", (path.name, node["class_type"])


def test_sampling_reads_as_the_job_kind():
    assert [stage("KSampler", kind) for kind in ("txt2img", "upscale", "animate")] == [
        "Drawing", "Upscaling", "Animating"]
    assert stage("SomeCustomNode", "txt2img") == "Working"


def test_the_bar_moves_only_forward_and_a_one_step_bar_is_not_shown():
    progress = Progression(kind="txt2img")
    progress.apply(Started())
    progress.apply(NodeStarted("4", "CheckpointLoaderSimple"))
    progress.apply(Progress(0, 1, "4"))
    assert progress.text() == "🎨 Loading the model, 0 s so far."  # a one-step bar says nothing
    progress.apply(NodeStarted("3", "KSampler"))
    progress.apply(Progress(12, 25, "3"))
    assert progress.text() == "🎨 Drawing (step 12 of 25), 0 s so far.\n`██████░░░░░░` 48%"
    progress.apply(Progress(25, 25, "3"))
    progress.apply(NodeStarted("8", "VAEDecode"))
    assert progress.text() == "🎨 Decoding, 0 s so far.\n`████████████` 100%"  # it stays full, not gone
    progress.apply(NodeStarted("10", "KSampler"))
    progress.apply(Progress(2, 10, "10"))  # a second pass: the step moves, the bar does not go back
    assert progress.text() == "🎨 Drawing (step 2 of 10), 0 s so far.\n`████████████` 100%"


async def test_an_edit_that_would_show_the_same_is_not_sent():
    sent: list[dict] = []

    async def edit(**content):
        sent.append(content)

    live = LiveMessage(edit, interval=0.01)
    for _ in range(3):
        live.update(key="same", content="same")
        await asyncio.sleep(0.05)
    live.update(key="other", content="other")
    await asyncio.sleep(0.05)
    live.update(key="other", content="other")
    await asyncio.sleep(0.05)
    assert [content["content"] for content in sent] == ["same", "other"]
