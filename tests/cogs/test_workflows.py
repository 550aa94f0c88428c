"""/workflow and /generate workflow: through the fake Discord and the fake ComfyUI: adding a workflow in
each format, the private message of what the bot found and its menus, every refusal, list, show, share,
delete, rate and restore, and a result made with a person's workflow, with the usual buttons."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.bot_harness import bot_settings, custom_ids, result_of
from tests.conftest import MODELS
from tests.fakes.comfyui import FakeComfyUI

DATA = Path(__file__).resolve().parents[1] / "data" / "user_workflows"
BOB = {"user_id": "6001", "username": "bob"}
CAROL = {"user_id": "6002", "username": "carol"}
MODERATOR = {"user_id": "6003", "username": "mod", "permissions": str(1 << 13)}  # Manage Messages


@pytest.fixture
async def comfy():
    fake = FakeComfyUI(models={**{key: list(value) for key, value in MODELS.items()},
                               "loras": ["watercolor_v2.safetensors", "detail_tweaker.safetensors"]})
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


async def ready(discord_fake, running, tmp_path, comfy, **overrides):
    await running.start(bot_settings(tmp_path, comfy.url, **overrides))
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy(), timeout=5)
    return running.bot


async def answer(discord_fake, interaction):
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)


async def edited(discord_fake, message_id, interaction):
    """The message a click edited (its callback is an update of that message)."""
    await interaction.wait_acked(3)
    return discord_fake.messages[message_id]


async def add(discord_fake, filename, data, name="mine", **acting):
    options = {"file": (filename, data), "name": name, **acting.pop("options", {})}
    return await answer(discord_fake, await discord_fake.slash("workflow add", options, **acting))


def api(name="txt2img.json") -> bytes:
    return (DATA / "api" / name).read_bytes()


def button(message, action) -> str:
    return next(cid for cid in custom_ids(message) if cid.startswith(f"cf:wf:{action}:"))


async def save(discord_fake, message, **acting):
    return await edited(discord_fake, message.id, await discord_fake.click(message.id, button(message, "save"),
                                                                           **acting))


async def test_an_api_workflow_is_shown_then_saved_then_run_with_the_persons_values(comfy, discord_fake, running,
                                                                                      tmp_path):
    bot = await ready(discord_fake, running, tmp_path, comfy)
    draft = await add(discord_fake, "txt2img.json", api(), options={"tags": "Landscape, SD15"})
    assert draft.ephemeral
    lines = draft.content.splitlines()
    assert lines[0] == "**mine** (API format, 7 nodes) can run on ComfyUI."
    assert "• prompt: node 6 (CLIPTextEncode), input 'text' = 'beautiful scenery nature glass bottle landscape, , " \
           "purple galaxy bottle,'" in lines
    assert "• negative_prompt: node 7 (CLIPTextEncode), input 'text' = 'text, watermark'" in lines
    assert "• seed: node 3 (KSampler), input 'seed' = 156680208700286" in lines
    assert "• checkpoint: node 4 (CheckpointLoaderSimple), input 'ckpt_name' = 'v1-5-pruned-emaonly.safetensors'" \
        in lines
    assert await bot.store.workflows_for(0, 5001) == [] and await bot.store.workflows_for(2001, 5001) == []
    saved = await save(discord_fake, draft)
    assert saved.content == "Saved `mine` as version 1. Run it with `/generate workflow:mine`; share it with " \
                           "/workflow share."
    assert saved.components == []

    choices = await discord_fake.autocomplete("generate", {"prompt": "x", "workflow": "mi"}, "workflow")
    assert [(c["name"], c["value"]) for c in choices] == [("mine · v1", "#1")]
    result = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a red fox", "workflow": "#1", "seed": 42, "steps": 5, "width": 64, "height": 64}),
        timeout=20)
    graph = list(comfy.prompts.values())[-1]["prompt"]
    assert graph["6"]["inputs"]["text"] == "a red fox" and graph["7"]["inputs"]["text"] == "text, watermark"
    assert graph["3"]["inputs"]["seed"] == 42 and graph["3"]["inputs"]["steps"] == 5
    assert graph["3"]["inputs"]["cfg"] == 8 and graph["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (64, 64)
    assert result.content == "✅ <@5001>, your image is ready."
    assert result.embeds[0]["title"] == "mine v1"
    fields = {field["name"]: field["value"] for field in result.embeds[0]["fields"]}
    assert result.embeds[0]["description"] == "a red fox" and fields["Seed"] == "42" and fields["Steps"] == "5"
    ids = custom_ids(result)
    assert ids[:5] == ["cf:up:1:0:2", "cf:up:1:0:4", "cf:vary:1:0:s", "cf:vary:1:0:S", "cf:anim:1:0"]
    assert "cf:reroll:1" in ids and "cf:fav:1" in ids
    (job,) = [j for j in await bot.store.recent_jobs(10) if j.kind == "workflow"] if hasattr(bot.store, "recent_jobs") \
        else [await bot.store.get_job(1)]
    assert (job.kind, job.request["workflow_id"], job.request["workflow_version"]) == ("workflow", 1, 1)

    rerolled = await result_of(discord_fake, await discord_fake.click(result.id, "cf:reroll:1"), timeout=20)
    again = list(comfy.prompts.values())[-1]["prompt"]
    assert rerolled.embeds[0]["title"] == "mine v1" and again["6"]["inputs"]["text"] == "a red fox"
    assert again["3"]["inputs"]["seed"] != 42 and again["3"]["inputs"]["steps"] == 5
    upscaled = await result_of(discord_fake, await discord_fake.click(result.id, "cf:up:1:0:2"), timeout=20)
    assert upscaled.embeds[0]["title"] == "Upscaled 2x"


async def test_the_editors_format_and_images_comfyui_saved_are_read_and_a_menu_corrects_a_choice(
        comfy, discord_fake, running, tmp_path):
    bot = await ready(discord_fake, running, tmp_path, comfy)
    for filename, data, said in (("txt2img.json", (DATA / "ui" / "txt2img.json").read_bytes(),
                                  "the editor's format, converted"),
                                 ("txt2img.png", (DATA / "png" / "txt2img.png").read_bytes(), "a PNG's workflow"),
                                 ("txt2img.webp", (DATA / "png" / "txt2img.webp").read_bytes(), "a WebP's workflow")):
        draft = await add(discord_fake, filename, data, name=filename)
        assert draft.content.startswith(f"**{filename}** ({said}, 7 nodes) can run on ComfyUI."), draft.content
        assert any(line.startswith("• prompt: node 6 (CLIPTextEncode), input 'text'") for line in draft.content.splitlines())
        saved = await save(discord_fake, draft)
        assert saved.content.startswith(f"Saved `{filename}` as version 1.")
    stored = [(w.name, (await bot.store.version(w.id, 1)).source_format) for w in await bot.store.workflows_for(2001, 5001)]
    assert sorted(stored) == [("txt2img.json", "ui"), ("txt2img.png", "png"), ("txt2img.webp", "webp")]

    draft = await add(discord_fake, "txt2img.json", api(), name="swapped")
    menus = [cid for cid in custom_ids(draft) if cid.startswith("cf:wf:pick:")]
    assert [cid.rsplit(":", 1)[1] for cid in menus] == ["prompt", "negative_prompt"]
    menu = next(c for row in draft.components for c in row["components"] if c["custom_id"] == menus[0])
    assert [(o["value"], o.get("default", False)) for o in menu["options"]] == [("6.text", True), ("7.text", False)]
    picked = await edited(discord_fake, draft.id, await discord_fake.click(draft.id, menus[0], values=["7.text"]))
    lines = picked.content.splitlines()
    assert "• prompt: node 7 (CLIPTextEncode), input 'text' = 'text, watermark'" in lines
    assert any(line.startswith("• negative_prompt: node 6 (CLIPTextEncode), input 'text'") for line in lines)
    assert lines[-1] == "prompt now sets node 7 'text'. Correct another choice, or **Save**."
    await save(discord_fake, picked)
    await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a grey owl", "negative_prompt": "fog", "workflow": "swapped", "width": 64,
                     "height": 64}), timeout=20)
    graph = list(comfy.prompts.values())[-1]["prompt"]
    assert graph["7"]["inputs"]["text"] == "a grey owl" and graph["6"]["inputs"]["text"] == "fog"

    cancelled = await add(discord_fake, "txt2img.json", api(), name="never")
    gone = await edited(discord_fake, cancelled.id, await discord_fake.click(cancelled.id, button(cancelled, "cancel")))
    assert gone.content == "Cancelled; nothing was saved." and gone.components == []
    assert await bot.store.workflow_by_name(2001, 5001, "never") is None


def with_node(node_id: str, class_type: str, **changes) -> bytes:
    graph = json.loads(api())
    graph[node_id] = {"class_type": class_type, "inputs": {}}
    for place, value in changes.items():
        node, key = place.split(".")
        graph[node]["inputs"][key] = value
    return json.dumps(graph).encode()


async def test_every_refusal_is_one_clear_sentence(comfy, discord_fake, running, tmp_path):
    bot = await ready(discord_fake, running, tmp_path, comfy, workflow_deny_nodes=["VAEDecode"])
    refused = "That workflow cannot be added: "

    async def refusal(filename, data):
        return (await add(discord_fake, filename, data)).content

    assert await refusal("big.json", b" " * (2 * 1024 * 1024 + 1)) == \
        refused + "The file is 2,097,153 bytes; the most a workflow may be is 2,097,152 bytes."
    assert await refusal("txt2img.json", api()) == refused + (
        "Node 8 (VAEDecode) is a node class the operator does not allow (WORKFLOW_DENY_NODES has 'VAEDecode').")
    await running.stop()
    bot = await ready(discord_fake, running, tmp_path, comfy)
    assert (await refusal("face.json", with_node("10", "FaceDetailer"))).endswith(
        "lacks node class FaceDetailer for node 10 (from the custom node package ComfyUI-Impact-Pack "
        "(https://github.com/ltdrdata/ComfyUI-Impact-Pack)).")
    assert (await refusal("gone.json", with_node("10", "PreviewImage", **{"4.ckpt_name": "missing.safetensors"}))) \
        .endswith("lacks model file 'missing.safetensors' for node 4 (CheckpointLoaderSimple), input 'ckpt_name'.")
    assert await refusal("list.json", b"[1, 2]") == \
        refused + "The file is not a ComfyUI workflow: it holds a JSON list, not an object."
    assert (await refusal("notes.txt", b"hello")).startswith(refused + "The file is not JSON (")
    plain = discord_fake_png()
    assert await refusal("photo.png", plain) == refused + (
        "The image holds no ComfyUI workflow (ComfyUI's Save Image embeds one; an image edited or re-saved "
        "elsewhere loses it).")
    ui = json.loads((DATA / "ui" / "txt2img.json").read_text())
    ui["nodes"].append({"id": 12, "type": "FaceDetailer", "mode": 0, "widgets_values": []})
    assert await refusal("ui.json", json.dumps(ui).encode()) == refused + (
        "No server can run this workflow: none has the node class FaceDetailer for node 12 (from the custom node "
        "package ComfyUI-Impact-Pack (https://github.com/ltdrdata/ComfyUI-Impact-Pack)).")
    grouped = json.loads((DATA / "ui" / "txt2img.json").read_text())
    grouped.setdefault("extra", {})["groupNodes"] = {"Upscale": {"nodes": [], "links": []}}
    grouped["nodes"].append({"id": 12, "type": "workflow>Upscale", "mode": 0, "widgets_values": []})
    assert await refusal("group.json", json.dumps(grouped).encode()) == refused + (
        "Node 12 'workflow>Upscale' is a group node; group nodes cannot be converted; open the workflow in ComfyUI "
        "and use Save (API).")
    assert await bot.store.workflows_for(2001, 5001) == []
    assert comfy.prompts == {}


def discord_fake_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "PNG")
    return buffer.getvalue()


async def say(discord_fake, command, options, **acting) -> str:
    return (await answer(discord_fake, await discord_fake.slash(command, options, **acting))).content


async def test_list_show_share_delete_rate_and_restore_each_answer_the_right_people(comfy, discord_fake, running,
                                                                                 tmp_path):
    bot = await ready(discord_fake, running, tmp_path, comfy)
    await save(discord_fake, await add(discord_fake, "txt2img.json", api(), name="fox",
                                       options={"tags": "Animals, SD15"}))
    steps = json.loads(api())
    steps["3"]["inputs"]["steps"] = 9
    second = await save(discord_fake, await add(discord_fake, "fox.json", json.dumps(steps).encode(), name="fox"))
    assert second.content.startswith("Saved `fox` as version 2 (the earlier versions stay; /workflow restore brings "
                                     "one back).")
    await save(discord_fake, await add(discord_fake, "txt2img.json", api(), name="owl"))

    assert await say(discord_fake, "workflow list", {}) == "• `fox` v2 · yours · tags: animals, sd15\n• `owl` v1 · yours"
    assert await say(discord_fake, "workflow list", {}, **BOB) == \
        "There are no workflows here yet; add one with /workflow add."
    assert await say(discord_fake, "workflow show", {"name": "fox"}, **BOB) == \
        "There is no workflow called `fox` that you can see here; /workflow list shows them."
    assert await say(discord_fake, "workflow share", {"name": "#1"}, **BOB) == \
        "There is no workflow called `#1` that you can see here; /workflow list shows them."
    assert await say(discord_fake, "workflow share", {"name": "fox"}) == "`fox` is shared with this server."

    assert await say(discord_fake, "workflow list", {}, **BOB) == "• `fox` v2 · by <@5001> · shared · tags: animals, sd15"
    assert await say(discord_fake, "workflow list", {"tag": "ANIMALS"}, **BOB) == \
        "• `fox` v2 · by <@5001> · shared · tags: animals, sd15"
    assert await say(discord_fake, "workflow list", {"query": "owl"}, **BOB) == "No workflow here matches that."
    assert await say(discord_fake, "workflow list", {"query": "FO"}) == "• `fox` v2 · yours · shared · tags: animals, sd15"
    choices = await discord_fake.autocomplete("workflow show", {"name": "f"}, "name", **BOB)
    assert [(c["name"], c["value"]) for c in choices] == [("fox · v2 · shared", "#1")]
    assert await say(discord_fake, "workflow rate", {"name": "#1", "stars": 4}, **BOB) == \
        "You gave `fox` 4 stars; its average is now 4.0 from 1 rating."
    assert await say(discord_fake, "workflow rate", {"name": "fox", "stars": 5}, **CAROL) == \
        "You gave `fox` 5 stars; its average is now 4.5 from 2 ratings."
    assert await say(discord_fake, "workflow share", {"name": "fox", "shared": False}, **BOB) == \
        "Only its owner, or a moderator (Manage Messages), can share a workflow or stop sharing it."
    assert await say(discord_fake, "workflow delete", {"name": "fox"}, **BOB) == \
        "Only its owner, or a moderator (Manage Messages), can delete a workflow."
    assert await say(discord_fake, "workflow restore", {"name": "fox", "version": 1}, **BOB) == \
        "Only its owner can restore a version of a workflow."

    shown = (await say(discord_fake, "workflow show", {"name": "fox"})).splitlines()
    assert shown[:3] == ["`fox` v2 · yours · shared · ★ 4.5 (2) · tags: animals, sd15", "Runs on ComfyUI.",
                         "What the bot sets:"]
    assert "• steps: node 3 (KSampler), input 'steps' = 9" in shown
    versions = shown[shown.index("Versions:") + 1:]
    assert [line.split(",")[0] for line in versions] == ["• v2", "• v1"]
    assert await say(discord_fake, "workflow restore", {"name": "fox", "version": 9}) == \
        "`fox` has no version 9; /workflow show lists them."
    assert await say(discord_fake, "workflow restore", {"name": "fox", "version": 1}) == \
        "Restored version 1 of `fox` as version 3."
    shown = (await say(discord_fake, "workflow show", {"name": "fox"})).splitlines()
    assert "• steps: node 3 (KSampler), input 'steps' = 20" in shown
    assert shown[shown.index("Versions:") + 1].startswith("• v3, restored from v1, <t:")

    await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a fox", "workflow": "fox", "width": 64, "height": 64}, **BOB), timeout=20)
    job = await bot.store.get_job((await bot.store.get_generation(1)).job_id)
    assert (job.user_id, job.request["workflow_id"], job.request["workflow_version"]) == (6001, 1, 3)
    assert list(comfy.prompts.values())[-1]["prompt"]["3"]["inputs"]["steps"] == 20

    assert await say(discord_fake, "workflow share", {"name": "#1", "shared": False}, **MODERATOR) == \
        "`fox` is no longer shared; only its owner sees it."
    assert await say(discord_fake, "workflow list", {}, **BOB) == \
        "There are no workflows here yet; add one with /workflow add."
    assert await say(discord_fake, "workflow delete", {"name": "#2"}, **MODERATOR) == \
        "Deleted `owl`. Results made with it keep their buttons."
    assert await say(discord_fake, "workflow delete", {"name": "fox"}) == \
        "Deleted `fox`. Results made with it keep their buttons."
    assert await say(discord_fake, "workflow list", {}) == \
        "There are no workflows here yet; add one with /workflow add."


def lineart(graph: dict) -> dict:
    """The txt2img graph with a custom node (comfyui_controlnet_aux's LineArtPreprocessor) before its save."""
    graph["10"] = {"class_type": "LineArtPreprocessor", "inputs": {"image": ["8", 0], "coarse": "disable",
                                                                   "resolution": 512}}
    graph["9"]["inputs"]["images"] = ["10", 0]
    return graph


async def test_a_job_goes_only_to_a_server_that_has_its_custom_nodes_and_values_it_cannot_take_are_told(
        discord_fake, running, tmp_path):
    from tests.fakes.comfy_nodes import AUX_PREPROCESSORS

    plain = FakeComfyUI(models={key: list(value) for key, value in MODELS.items()})
    custom = FakeComfyUI(models={key: list(value) for key, value in MODELS.items()},
                         custom_nodes={"LineArtPreprocessor": copy.deepcopy(AUX_PREPROCESSORS["LineArtPreprocessor"])})
    await plain.start()
    await custom.start()
    try:
        await running.start(bot_settings(tmp_path, plain.url, comfyui_urls=[plain.url, custom.url]))
        pool = running.bot.scheduler.pool
        await discord_fake.wait_for(lambda: all(b.healthy for b in pool.backends), timeout=5)
        draft = await add(discord_fake, "lines.json", json.dumps(lineart(json.loads(api()))).encode(), name="lines")
        assert draft.content.splitlines()[:2] == [
            "**lines** (API format, 8 nodes) can run on ComfyUI server 2.",
            "ComfyUI server 1 cannot: it lacks node class LineArtPreprocessor for node 10 (from the custom node "
            "package comfyui_controlnet_aux (https://github.com/Fannovel16/comfyui_controlnet_aux))."]
        await save(discord_fake, draft)
        for _ in range(2):
            result = await result_of(discord_fake, await discord_fake.slash(
                "generate", {"prompt": "an owl in ink", "workflow": "lines", "width": 64, "height": 64}), timeout=20)
            assert result.content == "✅ <@5001>, your image is ready."
        assert len(plain.prompts) == 0 and len(custom.prompts) == 2
        graph = list(custom.prompts.values())[-1]["prompt"]
        assert graph["6"]["inputs"]["text"] == "an owl in ink" and graph["10"]["class_type"] == "LineArtPreprocessor"

        solo = json.loads(api())
        solo["3"]["inputs"]["negative"] = ["6", 0]  # one encoder for both: no negative prompt to set
        del solo["7"]
        await save(discord_fake, await add(discord_fake, "solo.json", json.dumps(solo).encode(), name="solo"))
        refused = await result_of(discord_fake, await discord_fake.slash(
            "generate", {"prompt": "an owl", "workflow": "solo", "negative_prompt": "blur", "cfg": 5.0}))
        assert refused.content == ("❌ Your image could not be made: the workflow `solo` has no place for a negative "
                                   "prompt; leave it out, or choose another workflow.")
        unknown = await result_of(discord_fake, await discord_fake.slash(
            "generate", {"prompt": "an owl", "workflow": "nothing"}))
        assert unknown.content == ("❌ Your image could not be made: there is no workflow called `nothing` that you "
                                   "can see here; /workflow list shows them.")
        assert len(custom.prompts) == 2
    finally:
        await running.stop()
        await plain.stop()
        await custom.stop()


async def test_a_program_runs_a_shared_workflow_through_the_api(comfy, discord_fake, running, tmp_path):
    import re

    import aiohttp

    from tests.web.test_api_bot import MANAGE_GUILD, free_port

    port = free_port()
    bot = await ready(discord_fake, running, tmp_path, comfy, web_port=port, web_base_url=f"http://127.0.0.1:{port}")
    await save(discord_fake, await add(discord_fake, "txt2img.json", api(), name="fox"))
    said = await say(discord_fake, "admin apikey create", {"name": "site"}, user_id="7001", username="carol",
                     permissions=MANAGE_GUILD)
    (key,) = re.findall(r"`(cfb_[^`]+)`", said)
    url = f"http://127.0.0.1:{port}/api/v1/generations"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(url, json={"kind": "workflow", "workflow": "fox", "prompt": "a fox"}) as response:
            assert response.status == 400  # not shared yet: the key sees only what its server shares
            assert (await response.json())["error"]["message"] == \
                "there is no workflow 'fox' shared in this key's server."
        await say(discord_fake, "workflow share", {"name": "fox"})
        body = {"kind": "workflow", "workflow": "fox", "prompt": "a fox over HTTP", "seed": 77, "width": 64,
                "height": 64}
        async with http.post(url, json=body) as response:
            assert response.status == 202, await response.text()
            job_id = (await response.json())["id"]
        await discord_fake.wait_for(lambda: comfy.prompts, timeout=10)
        graph = list(comfy.prompts.values())[-1]["prompt"]
        assert graph["6"]["inputs"]["text"] == "a fox over HTTP" and graph["3"]["inputs"]["seed"] == 77
        job = await bot.store.get_job(job_id)
        assert (job.kind, job.request["workflow_id"], job.request["workflow_version"]) == ("workflow", 1, 1)


async def test_a_draft_left_before_a_restart_says_it_is_gone(comfy, discord_fake, running, tmp_path):
    bot = await ready(discord_fake, running, tmp_path, comfy)
    draft = await add(discord_fake, "txt2img.json", api(), name="later")
    await running.stop()
    bot = await ready(discord_fake, running, tmp_path, comfy)
    gone = await save(discord_fake, draft)
    assert gone.content == ("This draft is gone (it is kept for 15 minutes, and not across a restart of the bot); "
                            "send /workflow add again.")
    assert gone.components == [] and await bot.store.workflow_by_name(2001, 5001, "later") is None
