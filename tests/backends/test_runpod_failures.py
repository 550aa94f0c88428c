"""What a person sees when a job fails on a RunPod worker: said as a RunPod worker's failure, with the worker's
reason in words where it is safe, bounded and without Discord markup or mentions."""

from __future__ import annotations

from tests.bot_harness import result_of
from tests.backends.test_runpod_bot import DEAD, settings_for

FAILED = "❌ <@5001>, your image could not be made: "


async def shown(discord_fake, prompt: str = "a lighthouse") -> str:
    interaction = await discord_fake.slash("generate", {"prompt": prompt, "width": 64, "height": 64})
    return (await result_of(discord_fake, interaction, timeout=20)).content


async def test_each_kind_of_worker_failure_is_said_in_words(runpod, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, DEAD, runpod, jobs_per_user=10))
    runpod.fail_next("validation", text="dream.safetensors")  # ComfyUI's value_not_in_list on ckpt_name
    assert await shown(discord_fake) == FAILED + (
        "the RunPod worker lacks the model `dream.safetensors` (ckpt_name). Choose another model, or ask the "
        "operator to add it to the endpoint.")
    runpod.known_classes = {"EmptyImage", "SaveImage", "StringConcatenate", "PreviewAny"}
    assert await shown(discord_fake) == FAILED + (
        "the RunPod worker lacks the node type `ImageAddNoise` (a custom node its image does not have). Trying "
        "again will not help; ask the operator.")
    runpod.known_classes = None
    runpod.failed_details = True
    runpod.fail_next("execution", text="CUDA out of memory. Tried to allocate 2.00 GiB")
    assert await shown(discord_fake) == FAILED + (
        "the RunPod worker ran out of GPU memory. Try a smaller size or fewer images.")
    runpod.fail_next("execution", text="Expected tensor of shape [1, 4]")
    assert await shown(discord_fake) == FAILED + (
        "the RunPod worker hit an error in node 3 (KSampler): `Expected tensor of shape [1, 4]`. Try again; if it "
        "happens again, ask the operator.")
    runpod.fail_next("unreachable")
    assert await shown(discord_fake) == FAILED + (
        "the RunPod worker's ComfyUI did not start. Try again in a few minutes; if it keeps happening, ask the "
        "operator.")
    runpod.fail_next("error", text="Job execution timed out")
    assert await shown(discord_fake) == FAILED + (
        "RunPod stopped the job at the endpoint's time limit. Try a smaller size or fewer steps.")


async def test_a_workflow_the_worker_refuses_is_named(runpod, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, DEAD, runpod))
    runpod.fail_next("error", text='Prompt has no outputs. Raw response: {"error": {"type": "prompt_no_outputs"}}')
    assert await shown(discord_fake) == FAILED + (
        "the RunPod worker refused the workflow: `Prompt has no outputs`. Trying again will not help; ask the operator.")


async def test_a_raw_worker_error_is_bounded_and_inert(runpod, discord_fake, running, tmp_path):
    await running.start(settings_for(tmp_path, DEAD, runpod))
    runpod.fail_next("exception", text="**boom** <@5002> @everyone `x` ||spoiler|| " + "word " * 2000)
    content = await shown(discord_fake)
    assert content.startswith(FAILED + "the RunPod worker failed: `RuntimeError: ")
    assert content.endswith("…`. Try again; if it happens again, ask the operator.")
    assert len(content) < 400 and "<@5002>" not in content and "@everyone" not in content
    assert content.count("`") == 2 and "Traceback" not in content
