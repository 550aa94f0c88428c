"""Whatever goes into a reply (a 10k-character prompt, model name, server label or reason), Discord accepts it."""

from __future__ import annotations

import discord
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfy_types import PromptRejected
from scheduler import ServerStatus, Status
from store import Generation, Job
from views import (Progression, cancelled_text, failure_text, fit_embed, help_embed, queued_text, result_embed,
                   running_text, status_embed)

HUGE = 10_000
# short texts, and huge ones built by repeating a piece (hypothesis draws long texts slowly)
texts = st.text(max_size=40) | st.builds(lambda piece, times: piece * times,
                                         st.text(min_size=1, max_size=4), st.integers(1, 12_000))
kinds = st.sampled_from(["txt2img", "upscale", "animate"]) | texts.filter(bool)
LIMITS = {"min_side": 64, "max_width": 2048, "max_height": 2048, "max_steps": 80, "max_batch": 4,
          "jobs_per_user": 2, "commands_per_minute": 10}


def assert_within_discord_limits(embed: discord.Embed) -> None:
    assert len(embed.title or "") <= 256
    assert len(embed.description or "") <= 4096
    assert len(embed.fields) <= 25
    for field in embed.fields:
        assert 0 < len(field.name) <= 256 and 0 < len(field.value) <= 1024
    assert len(embed.footer.text or "") <= 2048
    assert len(embed.author.name or "") <= 256
    assert len(embed) <= 6000


def generation(kind: str = "txt2img", server: str = "gpu-1", **params) -> Generation:
    params = {"prompt": "a cat", "seed": 7, "width": 512, "height": 512, "steps": 20, "cfg": 7.0, **params}
    return Generation(id=12, job_id=3, kind=kind, user_id=42, guild_id=None, channel_id=1, params=params,
                      files=["a.png"], server=server, duration=3.25)


def test_a_huge_request_gives_a_result_embed_within_the_limits():
    embed = result_embed(generation(prompt="p" * HUGE, negative_prompt="n" * HUGE, model="m" * HUGE,
                                    server="s" * HUGE), "<@42>")
    assert_within_discord_limits(embed)
    assert embed.description.startswith("ppp") and embed.description.endswith("…")
    model = next(field.value for field in embed.fields if field.name == "Model")
    assert model.startswith("mmm") and model.endswith("…") and len(model) <= 200
    assert embed.footer.text.startswith("generation 12 · for 42 · sss") and embed.footer.text.endswith("…")
    assert len(embed.footer.text) < 200


def test_a_normal_result_is_shown_whole():
    embed = result_embed(generation(model="sdxl"), "<@42>")
    assert embed.description == "a cat"
    assert [(field.name, field.value) for field in embed.fields] == [
        ("Seed", "7"), ("Size", "512×512"), ("Steps", "20"), ("CFG", "7.0"), ("Model", "sdxl"), ("Time", "3.2 s")]
    assert embed.footer.text == "generation 12 · for 42 · gpu-1"


@settings(deadline=None, max_examples=60)
@given(kinds, texts, texts, texts, texts, texts)
def test_any_result_embed_is_within_the_limits(kind, prompt, negative, model, server, factor):
    embed = result_embed(generation(kind, server, prompt=prompt, negative_prompt=negative, model=model,
                                    factor=factor, frames=3, fps=8), "<@42>")
    assert_within_discord_limits(embed)


@settings(deadline=None, max_examples=60)
@given(kinds, texts)
def test_any_failure_text_fits_a_message_with_a_mention(kind, reason):
    text = failure_text(kind, reason)
    assert len(f"<@{2**64}> {text}") <= 2000
    assert text.startswith("❌ ")


def test_a_long_reason_is_clipped_and_a_rejection_is_summed_up():
    assert failure_text("txt2img", "r" * HUGE).startswith("❌ Image failed: rrr")
    rejection = PromptRejected.from_reply({"node_errors": {str(node): {"class_type": "EmptyImage", "errors": [
        {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
         "extra_info": {"input_name": "width"}}]} for node in range(200)}})
    text = failure_text("txt2img", str(rejection))
    assert text.startswith("❌ Image failed: ComfyUI rejected the workflow:\n- node 0 (EmptyImage), input 'width'")
    assert text.endswith("… and 197 more problems")


@settings(deadline=None, max_examples=60)
@given(kinds, texts, st.integers(0, 10**6) | st.none(), st.integers(0, 10**9))
def test_any_progress_text_fits_a_message(kind, node, position, user_id):
    progress = Progression(started=None, value=3, maximum=20, node=node)
    for text in (queued_text(kind, position), running_text(kind, progress), cancelled_text(kind, user_id)):
        assert 0 < len(text) <= 2000


def test_a_long_node_name_is_clipped_in_the_progress():
    text = running_text("txt2img", Progression(node="N" * HUGE))
    assert "node: NNN" in text and text.endswith("…") and len(text) < 200


servers = st.builds(ServerStatus, texts.filter(bool), st.booleans(), st.integers(0, 99), st.integers(1, 99),
                    st.none() | texts)
jobs = st.builds(lambda kind, state: Job(id=5, kind=kind, user_id=1, channel_id=1, guild_id=None, request={},
                                         state=state), kinds, texts)


@settings(deadline=None, max_examples=60)
@given(st.lists(servers, max_size=40), st.lists(st.tuples(jobs, st.none() | st.integers(0, 999)), max_size=15))
def test_any_status_embed_is_within_the_limits(server_list, mine):
    embed = status_embed(Status(server_list, 3, 1, mine))
    assert_within_discord_limits(embed)
    assert [field.name for field in embed.fields][-2:] == ["Queue", "Your jobs"]


def test_status_clips_a_long_server_name_and_model_and_counts_the_servers_left_out():
    many = [ServerStatus("S" * HUGE, True, 1, 2, "M" * HUGE) for _ in range(30)]
    embed = status_embed(Status(many, 0, 0, []))
    assert_within_discord_limits(embed)
    first = embed.fields[0]
    assert first.name.startswith("SSS") and first.name.endswith("…") and len(first.name) <= 80
    assert first.value.startswith("🟢 up, 1/2 of our jobs, last model: MMM") and first.value.endswith("…")
    assert "and 15 more servers" in [field.value for field in embed.fields]


@pytest.mark.parametrize("presets", [[], ["sdxl", "flux"], ["p" * HUGE], [f"preset-{i}" for i in range(500)]])
def test_help_lists_the_models_within_the_limits(presets):
    embed = help_embed(LIMITS, presets)
    assert_within_discord_limits(embed)
    models = next(line for line in embed.fields[0].value.splitlines() if line.startswith("• `model`"))
    assert len(models) < 450
    if len(presets) == 500:
        assert models.endswith("preset-7, … and 492 more models")
    elif presets == ["sdxl", "flux"]:
        assert models == "• `model`: sdxl, flux"


def test_fit_embed_trims_the_description_first_then_the_last_fields():
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    for index in range(30):
        embed.add_field(name=f"f{index}", value="v" * 2000)
    embed.set_footer(text="f" * 3000)
    embed.set_author(name="a" * 300)
    fit_embed(embed)
    assert_within_discord_limits(embed)
    assert len(embed.description) == 200 and embed.fields[0].value == "v" * 1023 + "…"
