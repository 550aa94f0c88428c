"""Creative control through the fake Discord and the fake ComfyUI: LoRAs, styles, flags, samplers,
/models, /settings, Remix and age-restricted routing."""

from __future__ import annotations

import copy

import pytest

from tests.bot_harness import bot_settings, image_size, result_of
from tests.conftest import MODELS
from tests.fakes.comfyui import FakeComfyUI

ALICE = "5001"
LORAS = ["ink.safetensors", "film-grain.safetensors", "nsfw/body.safetensors"]
MANAGE_GUILD = str(1 << 5)


@pytest.fixture
async def comfy():
    fake = FakeComfyUI(models={**MODELS, "loras": list(LORAS)})
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


def settings_for(tmp_path, url, **overrides):
    presets = {"anime": {"checkpoint": "sdxl.safetensors", "description": "Bright anime look", "tags": ["anime"],
                         "preview": "https://example.invalid/anime.png", "steps": 20, "sampler": "euler_ancestral"},
               "spicy": {"checkpoint": "sdxl.safetensors", "nsfw": True}}
    return bot_settings(tmp_path, url, workflow_set="default", checkpoint="v1-5-pruned-emaonly.safetensors",
                        model_presets=presets, nsfw_loras=["nsfw/*"], **overrides)


async def ready(discord_fake, running, settings):
    await running.start(settings)
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)


def last_graph(comfy) -> dict:
    return list(comfy.prompts.values())[-1]["prompt"]


def fields(message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


async def answer(discord_fake, interaction) -> str:
    await interaction.wait_acked(3)
    return discord_fake.messages[interaction.original_message_id].content


# LoRAs, samplers and flags ----------------------------------------------------------------


async def test_loras_from_the_option_and_flags_are_chained_into_the_graph(comfy, discord_fake, running, tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    assert await discord_fake.autocomplete("generate", {"prompt": "x", "lora": "s"}, "lora") == [
        {"name": "ink.safetensors", "value": "ink.safetensors"},
        {"name": "film-grain.safetensors", "value": "film-grain.safetensors"}]  # the nsfw one is not offered here
    samplers = await discord_fake.autocomplete("generate", {"prompt": "x", "sampler": "dpmpp_2m"}, "sampler")
    assert samplers[0] == {"name": "dpmpp_2m", "value": "dpmpp_2m"} and len(samplers) <= 25
    interaction = await discord_fake.slash("generate", {
        "prompt": "a harbour --lora film-grain.safetensors:0.6 --seed 9 --steps 12 --no boats",
        "lora": "ink.safetensors", "lora_strength": 1.5, "sampler": "dpmpp_2m", "scheduler": "karras",
        "negative_prompt": "blurry"})
    result = await result_of(discord_fake, interaction, timeout=20)
    graph = last_graph(comfy)
    loras = {node: body for node, body in graph.items() if body["class_type"] == "LoraLoader"}
    (first, second) = sorted(loras, key=int)
    assert loras[first]["inputs"]["lora_name"] == "ink.safetensors" and loras[first]["inputs"]["model"] == ["4", 0]
    assert loras[first]["inputs"]["strength_model"] == 1.5 == loras[first]["inputs"]["strength_clip"]
    assert loras[second]["inputs"]["lora_name"] == "film-grain.safetensors"
    assert loras[second]["inputs"]["model"] == [first, 0] and loras[second]["inputs"]["clip"] == [first, 1]
    sampler = graph["3"]["inputs"]
    assert sampler["model"] == [second, 0] and graph["6"]["inputs"]["clip"] == [second, 1]
    assert (sampler["seed"], sampler["steps"], sampler["sampler_name"], sampler["scheduler"]) == (
        9, 12, "dpmpp_2m", "karras")
    assert graph["6"]["inputs"]["text"] == "a harbour" and graph["7"]["inputs"]["text"] == "blurry, boats"
    shown = fields(result)
    assert shown["LoRAs"] == "ink 1.5, film-grain 0.6" and shown["Sampler"] == "dpmpp_2m"
    assert result.embeds[0]["description"] == "a harbour"


async def test_the_lora_list_is_read_again_when_a_server_comes_back(comfy, discord_fake, running, tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    typed = {"prompt": "x", "lora": "new"}
    assert await discord_fake.autocomplete("generate", typed, "lora") == []
    comfy.models["loras"].append("new-look.safetensors")  # installed while ComfyUI restarts
    await comfy.restart(downtime=0.3)
    await discord_fake.wait_for(lambda: not running.bot.scheduler.pool.any_healthy(), timeout=5)
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=10)
    assert await discord_fake.autocomplete("generate", typed, "lora") == [
        {"name": "new-look.safetensors", "value": "new-look.safetensors"}]


async def test_a_lora_no_server_has_is_refused_and_routing_picks_the_server_that_has_it(discord_fake, running,
                                                                                       tmp_path):
    bare = FakeComfyUI(models=copy.deepcopy(MODELS))
    full = FakeComfyUI(models={**MODELS, "loras": ["ink.safetensors"]})
    for fake in (bare, full):
        await fake.start()
    try:
        settings = settings_for(tmp_path, bare.url, comfyui_urls=[bare.url, full.url])
        await running.start(settings)
        await discord_fake.wait_for(lambda: all(b.healthy for b in running.bot.scheduler.pool.backends), timeout=5)
        for _ in range(3):
            await result_of(discord_fake, await discord_fake.slash("generate", {
                "prompt": "a cat", "lora": "ink.safetensors", "width": 64, "height": 64}), timeout=20)
        assert len(full.prompts) == 3 and bare.prompts == {}
        refused = await result_of(discord_fake, await discord_fake.slash("generate", {
            "prompt": "a cat --lora gone.safetensors"}), timeout=10)
        assert refused.content.startswith("❌ Your image could not be made:") and "gone.safetensors" in refused.content
        assert len(full.prompts) == 3
    finally:
        for fake in (bare, full):
            await fake.stop()


@pytest.mark.parametrize("prompt, said", [
    ("a cat --sead 4", "`--sead` is not a flag I know. Flags you can use: `--ar`, `--seed`, `--steps`, `--cfg`, "
                       "`--no`, `--style`, `--model`, `--lora`, and a model's own flag: `--anime`, `--spicy`."),
    ("a cat --seed many", "--seed needs a whole number from 0 to 9007199254740991, like --seed 42."),
    ("a cat --lora a --lora b --lora c --lora d", "at most 3 LoRAs can be used at once; remove a --lora."),
])
async def test_a_bad_flag_is_refused_privately_and_nothing_runs(comfy, discord_fake, running, tmp_path, prompt, said):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    refused = await discord_fake.slash("generate", {"prompt": prompt})
    await refused.wait_acked(3)
    reply = discord_fake.messages[refused.original_message_id]
    assert reply.ephemeral and reply.content == f"I didn't queue that: {said}"
    assert comfy.prompts == {}


@pytest.mark.parametrize("prompt, said", [
    ("--seed 4", "the prompt is empty once its flags are taken out; say what to draw."),
    ("a cat --steps 5000", "steps must be between 1 and 100 (got 5000)."),
])
async def test_a_bad_flag_is_a_sentence_and_nothing_runs(comfy, discord_fake, running, tmp_path, prompt, said):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    refused = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": prompt}), timeout=10)
    assert refused.content.lower() == f"❌ your image could not be made: {said}".lower()
    assert comfy.prompts == {}


async def test_flags_choose_shape_model_and_style(comfy, discord_fake, running, tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    result = await result_of(discord_fake, await discord_fake.slash("generate", {
        "prompt": "a tram --ar 16:9 --anime --style watercolor --cfg 5"}), timeout=20)
    graph = last_graph(comfy)
    assert graph["4"]["inputs"]["ckpt_name"] == "sdxl.safetensors" and graph["3"]["inputs"]["steps"] == 20
    assert graph["3"]["inputs"]["cfg"] == 5 and graph["3"]["inputs"]["sampler_name"] == "euler_ancestral"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (640, 360)
    assert "a tram" in graph["6"]["inputs"]["text"] and graph["6"]["inputs"]["text"] != "a tram"  # the template
    assert image_size(result.attachments[0]) == (640, 360)
    assert fields(result)["Style"] == "watercolor" and fields(result)["Model"] == "anime"


# styles ------------------------------------------------------------------------------------


async def test_styles_are_saved_listed_used_and_deleted_with_the_right_permissions(comfy, discord_fake, running,
                                                                                  tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    said = await answer(discord_fake, await discord_fake.slash("style save", {
        "name": "Ink", "template": "ink drawing of {prompt}, bold lines", "negative": "color"}))
    assert said == "Saved your style `ink`. Use it with `style:ink` or `--style ink`."
    assert await answer(discord_fake, await discord_fake.slash("style save", {
        "name": "shared", "template": "{prompt}, poster", "server": True})) == \
        "Only members who may manage this server can save its styles."
    assert await answer(discord_fake, await discord_fake.slash("style save", {
        "name": "shared", "template": "{prompt}, poster", "server": True}, permissions=MANAGE_GUILD)) == \
        "Saved the server's style `shared`. Use it with `style:shared` or `--style shared`."
    assert await answer(discord_fake, await discord_fake.slash("style save", {"name": "bad", "template": "no slot"})) \
        == "The template must contain {prompt} once, where your prompt goes."
    assert await answer(discord_fake, await discord_fake.slash("style save", {"name": "a b", "template": "{prompt}"})) \
        == "A style name is 1 to 32 characters (a to z, 0 to 9, - and _), starting with a letter or digit."
    listed = await answer(discord_fake, await discord_fake.slash("style list"))
    assert "**Yours**: `ink`" in listed and "**This server's**: `shared`" in listed and "`cinematic`" in listed
    bob = await answer(discord_fake, await discord_fake.slash("style list", user_id="6001", username="bob"))
    assert "**Yours**: none" in bob and "`shared`" in bob  # Alice's own style is hers alone
    assert {"name": "ink", "value": "ink"} in await discord_fake.autocomplete(
        "generate", {"prompt": "x", "style": "in"}, "style")

    result = await result_of(discord_fake, await discord_fake.slash("generate", {
        "prompt": "a heron", "style": "ink", "negative_prompt": "blur"}), timeout=20)
    graph = last_graph(comfy)
    assert graph["6"]["inputs"]["text"] == "ink drawing of a heron, bold lines"
    assert graph["7"]["inputs"]["text"] == "blur, color"
    assert result.embeds[0]["description"] == "a heron" and fields(result)["Style"] == "ink"
    reroll = await result_of(discord_fake, await discord_fake.click(result.id, "cf:reroll:1"), timeout=20)
    assert reroll.attachments and last_graph(comfy)["6"]["inputs"]["text"] == "ink drawing of a heron, bold lines"

    assert await answer(discord_fake, await discord_fake.slash("style delete", {"name": "ink"})) == "Deleted `ink`."
    assert await answer(discord_fake, await discord_fake.slash("style delete", {"name": "shared", "server": True})) \
        == "Only members who may manage this server can delete its styles."
    gone = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "style": "ink"}))
    assert gone.content == ("❌ Your image could not be made: there is no style called 'ink'; /style list shows the "
                            "ones you can use.")


# /models, /settings and Remix ------------------------------------------------------------


async def test_models_shows_the_presets_and_a_pick_becomes_the_default(comfy, discord_fake, running, tmp_path):
    settings = settings_for(tmp_path, comfy.url)
    await ready(discord_fake, running, settings)
    shown = await discord_fake.slash("models")
    await shown.wait_acked(3)
    message = discord_fake.messages[shown.original_message_id]
    assert message.ephemeral and [embed["title"] for embed in message.embeds] == ["anime"]  # spicy: not here
    assert message.embeds[0]["thumbnail"]["url"] == "https://example.invalid/anime.png"
    assert message.embeds[0]["description"] == "Bright anime look"
    await running.stop()
    await running.start(settings)  # the menu needs nothing in memory
    picked = await discord_fake.click(message.id, "cf:pickmodel", values=["anime"])
    assert await answer(discord_fake, picked) == "`anime` is now your default model."
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a robot"}), timeout=20)
    assert last_graph(comfy)["4"]["inputs"]["ckpt_name"] == "sdxl.safetensors"


async def test_settings_are_the_defaults_every_command_starts_from(comfy, discord_fake, running, tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    said = await answer(discord_fake, await discord_fake.slash("settings", {"aspect": "wide", "steps": 9,
                                                                            "style": "cinematic"}))
    assert said == "Saved; these are your defaults:\n• aspect: `wide`\n• steps: `9`\n• style: `cinematic`"
    assert await answer(discord_fake, await discord_fake.slash("settings", {"steps": 500})) == \
        "Steps can be at most 100 here."
    assert await answer(discord_fake, await discord_fake.slash("settings", {"sampler": "warp-drive"})) == \
        "There is no sampler called `warp-drive`; Discord suggests them as you type."
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a bridge"}), timeout=20)
    graph = last_graph(comfy)
    assert graph["3"]["inputs"]["steps"] == 9 and (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) \
        == (640, 360)
    assert graph["6"]["inputs"]["text"].startswith("cinematic film still of a bridge")
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a bridge", "steps": 14}), timeout=20)
    assert last_graph(comfy)["3"]["inputs"]["steps"] == 14  # an option wins over a default
    assert await answer(discord_fake, await discord_fake.slash("settings", {"clear": True})) == \
        "Forgotten: you have no saved defaults now, so each job uses the bot's own settings."


async def test_remix_opens_the_result_in_a_form_and_sends_the_changes_even_after_a_restart(comfy, discord_fake,
                                                                                          running, tmp_path):
    settings = settings_for(tmp_path, comfy.url)
    await ready(discord_fake, running, settings)
    first = await result_of(discord_fake, await discord_fake.slash("generate", {
        "prompt": "a lighthouse", "negative_prompt": "fog", "seed": 77, "width": 64, "height": 64, "steps": 6}),
        timeout=20)
    opened = await discord_fake.click(first.id, "cf:remix:1")
    await opened.wait_acked(3)
    form = {row["components"][0]["custom_id"]: row["components"][0].get("value") for row in opened.modal["components"]}
    assert form == {"prompt": "a lighthouse", "negative_prompt": "fog", "seed": "77", "size": "64x64",
                    "steps_cfg": "6 7"}  # the cfg it was made with, the default
    await running.stop()
    await running.start(settings)
    sent = await discord_fake.submit_modal(opened, {"prompt": "a lighthouse in a storm", "seed": "", "size": "96 x 64",
                                                    "steps_cfg": "8 5.5"})
    remixed = await result_of(discord_fake, sent, timeout=20)
    graph = last_graph(comfy)
    assert graph["6"]["inputs"]["text"] == "a lighthouse in a storm" and graph["7"]["inputs"]["text"] == "fog"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (96, 64)
    assert (graph["3"]["inputs"]["steps"], graph["3"]["inputs"]["cfg"]) == (8, 5.5) and graph["3"]["inputs"]["seed"] != 77
    assert fields(remixed)["From"].startswith("[the original image](")
    bad = await discord_fake.click(first.id, "cf:remix:1")
    await bad.wait_acked(3)
    refused = await discord_fake.submit_modal(bad, {"size": "huge"})
    assert await answer(discord_fake, refused) == "That remix cannot be made: the size must be written like 512x768."


async def test_remix_shows_the_steps_and_cfg_that_made_the_image_when_they_were_the_defaults(
        comfy, discord_fake, running, tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url, default_steps=9, default_cfg=4.5))
    first = await result_of(discord_fake, await discord_fake.slash("generate", {
        "prompt": "a mill", "width": 64, "height": 64}), timeout=20)
    opened = await discord_fake.click(first.id, "cf:remix:1")
    await opened.wait_acked(3)
    form = {row["components"][0]["custom_id"]: row["components"][0].get("value") for row in opened.modal["components"]}
    assert form["steps_cfg"] == "9 4.5" and form["seed"] == str(last_graph(comfy)["3"]["inputs"]["seed"])


# age-restricted routing ------------------------------------------------------------------


def add_nsfw_channel(discord_fake) -> str:
    channel = dict(discord_fake.channels[discord_fake.channel_id], id="3999", name="after-dark", nsfw=True)
    discord_fake.channels["3999"] = channel
    return "3999"


async def test_nsfw_items_are_refused_outside_age_restricted_channels_and_welcome_inside(comfy, discord_fake, running,
                                                                                        tmp_path):
    nsfw = add_nsfw_channel(discord_fake)
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url, sfw_negative="nsfw, nude"))
    assert await discord_fake.autocomplete("generate", {"prompt": "x", "model": ""}, "model") == [
        {"name": "anime", "value": "anime"}, {"name": "auto", "value": "auto"}]  # auto: the bot picks
    for prompt in ("a statue --spicy", "a statue --lora nsfw/body.safetensors"):
        refused = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": prompt}), timeout=10)
        assert refused.content.endswith(f"can only be used in an age-restricted channel, such as <#{nsfw}>.")
    assert comfy.prompts == {}
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a statue"}), timeout=20)
    assert last_graph(comfy)["7"]["inputs"]["text"] == "nsfw, nude"  # the operator's SFW negative, here

    discord_fake.channel_id = nsfw
    names = await discord_fake.autocomplete("generate", {"prompt": "x", "model": ""}, "model")
    assert {"name": "spicy", "value": "spicy"} in names
    inside = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a statue --spicy"}),
                             timeout=20)
    assert inside.channel_id == nsfw and last_graph(comfy)["7"]["inputs"]["text"] == ""


async def test_with_an_nsfw_channel_set_such_jobs_run_and_are_posted_there(comfy, discord_fake, running, tmp_path):
    nsfw = add_nsfw_channel(discord_fake)
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url, nsfw_channel_id=int(nsfw)))
    interaction = await discord_fake.slash("generate", {"prompt": "a statue --spicy", "width": 64, "height": 64})
    posted = await discord_fake.wait_for_message(lambda m: m.channel_id == nsfw and m.attachments, timeout=20)
    assert posted.content == f"✅ <@{ALICE}>, your image is ready."
    here = await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and "age-restricted" in m.content, timeout=10)
    assert here.content.startswith(f"✅ <@{ALICE}>, your image is ready in <#{nsfw}>, an age-restricted channel: ")
    assert here.content.endswith(f"/{nsfw}/{posted.id}") and not here.attachments
