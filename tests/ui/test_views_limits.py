"""Whatever goes into a reply (a 10k-character prompt, model name, server label or reason), Discord accepts it."""

from __future__ import annotations

import discord
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import wording
from comfy.types import NodeStarted, Progress
from ui.progress import Progression
from jobs.queue_view import ServerStatus, Status
from store import Generation, Job
from cogs.help import TOPICS, HelpContext, help_page
from cogs.generate import status_embed
from ui.views import fit_embed, result_embed

HUGE = 10_000
# short texts, and huge ones built by repeating a piece (hypothesis draws long texts slowly)
texts = st.text(max_size=40) | st.builds(lambda piece, times: piece * times,
                                         st.text(min_size=1, max_size=4), st.integers(1, 12_000))
kinds = st.sampled_from(["txt2img", "upscale", "animate"]) | texts.filter(bool)
ASPECTS = ["square (1:1)", "wide (16:9)"]
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
                                    server="s" * HUGE))
    assert_within_discord_limits(embed)
    assert embed.description.startswith("ppp") and embed.description.endswith("…")
    model = next(field.value for field in embed.fields if field.name == "Model")
    assert model.startswith("mmm") and model.endswith("…") and len(model) <= 1024
    assert not embed.footer.text and "sss" not in str(embed.to_dict())  # the server is nobody's business


def test_a_normal_result_is_shown_whole():
    embed = result_embed(generation(model="sdxl.safetensors", ran=10.4, waited=12.2))
    assert embed.description == "a cat"
    assert [(field.name, field.value) for field in embed.fields] == [
        ("Model", "sdxl"), ("Size", "512×512"), ("Seed", "7"), ("Steps", "20"), ("CFG", "7.0"),
        ("Time", "waited 12 s, ran 10 s")]
    assert not embed.footer.text


@settings(deadline=None, max_examples=60)
@given(kinds, texts, texts, texts, texts, texts)
def test_any_result_embed_is_within_the_limits(kind, prompt, negative, model, server, factor):
    embed = result_embed(generation(kind, server, prompt=prompt, negative_prompt=negative, model=model,
                                    factor=factor, frames=3, fps=8))
    assert_within_discord_limits(embed)


@settings(deadline=None, max_examples=60)
@given(kinds, texts, st.integers(0, 2**64))
def test_any_failure_text_fits_a_message(kind, reason, user_id):
    text = wording.failed(kind, reason, user_id)
    assert len(text) <= 2000 and text.startswith(f"❌ <@{user_id}>, your ")


def test_a_long_reason_is_clipped():
    text = wording.failed("txt2img", "r" * HUGE, 42)
    assert text.startswith("❌ <@42>, your image could not be made: rrr") and text.endswith("…") and len(text) <= 1900


@settings(deadline=None, max_examples=60)
@given(kinds, texts, st.integers(0, 10**6) | st.none(), st.integers(0, 10**9), st.none() | st.floats(0, 10**6))
def test_any_progress_text_fits_a_message(kind, node, position, user_id, countdown):
    progress = Progression(kind=kind)
    progress.apply(NodeStarted("3", node))
    progress.apply(Progress(3, 20, "3"))
    for text in (wording.waiting(kind, position, countdown), progress.text(), wording.cancelled(user_id),
                 wording.starting(kind)):
        assert 0 < len(text) <= 2000


def test_a_node_nobody_mapped_is_working_not_its_class_name():
    progress = Progression(kind="txt2img")
    progress.apply(NodeStarted("7", "N" * HUGE))
    assert progress.text().startswith("🎨 Working, 0 s so far.") and "NNN" not in progress.text()


servers = st.builds(ServerStatus, texts.filter(bool), st.booleans(), st.integers(0, 99), st.integers(1, 99),
                    st.none() | texts)
jobs = st.builds(lambda kind, state, prompt: Job(id=5, kind=kind, user_id=1, channel_id=1, guild_id=None,
                                                 request={"prompt": prompt}, state=state), kinds, texts, texts)


@settings(deadline=None, max_examples=60)
@given(st.lists(servers, max_size=40),
       st.lists(st.tuples(jobs, st.none() | st.integers(0, 999), st.none() | st.floats(0, 10**5)), max_size=15))
def test_any_status_embed_is_within_the_limits(server_list, mine):
    embed = status_embed(Status(server_list, 3, 1, mine))
    assert_within_discord_limits(embed)
    assert [field.name for field in embed.fields] == ["Servers", "Queue", "Your jobs"]


def test_status_names_no_server_and_counts_the_servers_left_out():
    many = [ServerStatus("S" * HUGE, True, 1, 2, "M" * HUGE) for _ in range(30)]
    embed = status_embed(Status(many, 0, 0, []))
    assert_within_discord_limits(embed)
    servers = embed.fields[0].value.splitlines()
    assert servers[0] == "🟢 30 of 30 ComfyUI servers are up."
    assert servers[1] == "• Server 1: up, 1 job of ours." and servers[-1] == "… and 15 more servers."
    assert "SSS" not in str(embed.to_dict()) and "MMM" not in str(embed.to_dict())


@pytest.mark.parametrize("presets", [[], ["sdxl", "flux"], ["p" * HUGE], [f"preset-{i}" for i in range(500)]])
def test_help_lists_the_models_within_the_limits(presets):
    context = HelpContext(64, 2048, 2048, 100, 4, 3, 6, presets, ASPECTS, presets, ["canny"])
    for topic in TOPICS:
        assert_within_discord_limits(help_page(topic, context))
    embed = help_page("make", context)
    models = next(line for line in embed.description.splitlines() if line.startswith("• `batch`"))
    assert len(models) < 500
    if len(presets) == 500:
        assert models.endswith("`preset-7`, … and 492 more models.")
    elif presets == ["sdxl", "flux"]:
        assert models == "• `batch`: 1 to 4 images at once. `model`: `sdxl`, `flux`."


def test_fit_embed_trims_the_description_first_then_the_last_fields():
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    for index in range(30):
        embed.add_field(name=f"f{index}", value="v" * 2000)
    embed.set_footer(text="f" * 3000)
    embed.set_author(name="a" * 300)
    fit_embed(embed)
    assert_within_discord_limits(embed)
    assert len(embed.description) == 200 and embed.fields[0].value == "v" * 1023 + "…"
