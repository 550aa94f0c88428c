"""UI-format (editor "Save") workflows become the API graph the editor would queue, node for node;
anything that cannot be converted is refused with a sentence naming the node and the reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from comfy.ui_format import ConversionError, detect_format, parse_json, to_api, widget_slots
from tests.fakes.comfy_nodes import load_object_info

DATA = Path(__file__).resolve().parents[1] / "data" / "user_workflows"
SAVE_API = "open the workflow in ComfyUI and use Save (API)"


def ui(name: str) -> dict:
    return json.loads((DATA / "ui" / f"{name}.json").read_text())


def api(name: str) -> dict:
    return json.loads((DATA / "api" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def info() -> dict:
    """The recorded /object_info, plus KSamplerAdvanced (from the full recording) for the SDXL graph."""
    found = load_object_info()
    found.update(json.loads((DATA / "ui" / "object_info_extra.json").read_text()))
    return found


def refusal(workflow: object, info: dict) -> str:
    with pytest.raises(ConversionError) as caught:
        to_api(workflow, info)
    return str(caught.value)


def node(workflow: dict, node_id: int) -> dict:
    return next(entry for entry in workflow["nodes"] if entry["id"] == node_id)


TXT2IMG = {
    "3": {"class_type": "KSampler", "_meta": {"title": "KSampler"},
          "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                     "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                     "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "_meta": {"title": "Load Checkpoint"},
          "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "_meta": {"title": "Empty Latent Image"},
          "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "_meta": {"title": "CLIP Text Encode (Prompt)"},
          "inputs": {"text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
                     "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "_meta": {"title": "CLIP Text Encode (Prompt)"},
          "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "_meta": {"title": "VAE Decode"}, "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "_meta": {"title": "Save Image"},
          "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}

UPSCALE = {
    "1": {"class_type": "LoadImage", "_meta": {"title": "Load Image"}, "inputs": {"image": "photo.png"}},
    "2": {"class_type": "UpscaleModelLoader", "_meta": {"title": "Load Upscale Model"},
          "inputs": {"model_name": "RealESRGAN_x4plus.pth"}},
    "3": {"class_type": "ImageUpscaleWithModel", "_meta": {"title": "Upscale Image (using Model)"},
          "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
    "4": {"class_type": "ImageScaleBy", "_meta": {"title": "Upscale Image By"},
          "inputs": {"upscale_method": "lanczos", "scale_by": 0.5, "image": ["3", 0]}},
    "5": {"class_type": "SaveImage", "_meta": {"title": "Save Image"},
          "inputs": {"filename_prefix": "upscaled", "images": ["4", 0]}},
}


# --- the committed exports ---------------------------------------------------------------------------

def test_text_to_image_converts_node_for_node(info):
    assert to_api(ui("txt2img"), info) == TXT2IMG


def test_upscale_in_the_newer_schema_converts_with_the_upload_widget_skipped(info):
    workflow = ui("upscale")
    assert workflow["version"] == 1 and isinstance(workflow["links"][0], dict)
    assert node(workflow, 1)["widgets_values"] == ["photo.png", "image"]
    assert to_api(workflow, info) == UPSCALE


@pytest.mark.parametrize("name", ["txt2img", "sdxl_refiner", "lora_stack", "upscale"])
def test_each_ui_export_equals_its_api_export(info, name):
    assert to_api(ui(name), info) == api(name)


def test_the_refiner_graph_names_both_samplers_values_after_their_seed_controls(info):
    graph = to_api(ui("sdxl_refiner"), info)
    assert graph["10"] == {
        "class_type": "KSamplerAdvanced", "_meta": {"title": "KSampler (Advanced) - BASE"},
        "inputs": {"add_noise": "enable", "noise_seed": 721897303308196, "steps": 25, "cfg": 8,
                   "sampler_name": "euler", "scheduler": "normal", "start_at_step": 0, "end_at_step": 20,
                   "return_with_leftover_noise": "enable", "model": ["4", 0], "positive": ["6", 0],
                   "negative": ["7", 0], "latent_image": ["5", 0]}}
    assert graph["11"]["inputs"]["latent_image"] == ["10", 0] and graph["11"]["inputs"]["model"] == ["12", 0]
    assert graph["17"]["inputs"] == {"samples": ["11", 0], "vae": ["12", 2]}


def test_the_lora_stack_chains_two_loaders(info):
    graph = to_api(ui("lora_stack"), info)
    assert graph["10"]["inputs"] == {"lora_name": "watercolor_v2.safetensors", "strength_model": 0.8,
                                     "strength_clip": 0.8, "model": ["4", 0], "clip": ["4", 1]}
    assert graph["11"]["inputs"] == {"lora_name": "detail_tweaker.safetensors", "strength_model": 0.5,
                                     "strength_clip": 1, "model": ["10", 0], "clip": ["10", 1]}
    assert graph["3"]["inputs"]["model"] == ["11", 0] and graph["6"]["inputs"]["clip"] == ["11", 1]


def test_a_muted_node_is_left_out(info):
    workflow = ui("muted")
    assert node(workflow, 10)["mode"] == 2
    assert to_api(workflow, info) == TXT2IMG


def test_inputs_fed_by_a_muted_node_are_removed_as_the_editor_does(info):
    workflow = ui("lora_stack")
    node(workflow, 11)["mode"] = 2
    graph = to_api(workflow, info)
    assert "11" not in graph
    assert graph["3"]["inputs"] == {"seed": 851616030078638, "steps": 28, "cfg": 6.5, "sampler_name": "dpmpp_2m",
                                    "scheduler": "karras", "denoise": 1, "positive": ["6", 0], "negative": ["7", 0],
                                    "latent_image": ["5", 0]}
    assert graph["6"]["inputs"] == {"text": "a watercolor fox in the snow, detailed fur"}


def test_a_bypassed_node_passes_its_inputs_through_by_type(info):
    workflow = ui("bypassed")
    assert node(workflow, 10)["mode"] == 4 and node(workflow, 10)["type"] == "LoraLoader"
    assert to_api(workflow, info) == TXT2IMG


def test_a_bypassed_node_with_no_input_of_the_type_leaves_the_input_unset(info):
    workflow = ui("txt2img")
    node(workflow, 8)["mode"] = 4  # VAEDecode takes LATENT and VAE; SaveImage wants an IMAGE
    expected = copy.deepcopy(TXT2IMG)
    del expected["8"], expected["9"]["inputs"]["images"]
    assert to_api(workflow, info) == expected


def test_a_widget_fed_through_a_bypassed_node_of_other_types_is_dropped_as_the_editor_does(info):
    workflow = ui("reroute_primitive")
    seed_link = node(workflow, 3)["inputs"][-1]["link"]
    workflow["nodes"].append({"id": 20, "type": "VAEDecode", "mode": 4, "inputs": [
        {"name": "samples", "type": "LATENT", "link": None}, {"name": "vae", "type": "VAE", "link": None}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [seed_link]}]})
    next(link for link in workflow["links"] if link[0] == seed_link)[1] = 20
    graph = to_api(workflow, info)
    assert "seed" not in graph["3"]["inputs"] and graph["3"]["inputs"]["steps"] == 20


def test_a_widget_fed_by_an_unfed_reroute_keeps_its_own_value(info):
    workflow = ui("reroute_primitive")
    node(workflow, 14)["type"] = "Reroute"  # the primitive becomes a reroute with nothing feeding it
    node(workflow, 14)["inputs"] = [{"name": "", "type": "*", "link": None}]
    assert to_api(workflow, info)["3"]["inputs"]["seed"] == 156680208700286


def test_bypassed_chains_are_walked_through(info):
    workflow = ui("lora_stack")
    node(workflow, 10)["mode"] = node(workflow, 11)["mode"] = 4
    graph = to_api(workflow, info)
    assert graph["3"]["inputs"]["model"] == ["4", 0] and graph["7"]["inputs"]["clip"] == ["4", 1]
    assert "10" not in graph and "11" not in graph


def test_reroutes_are_followed_and_a_primitive_sets_the_widget_it_feeds(info):
    workflow = ui("reroute_primitive")
    assert {entry["type"] for entry in workflow["nodes"]} >= {"Reroute", "PrimitiveNode"}
    expected = copy.deepcopy(TXT2IMG)
    expected["3"]["inputs"]["seed"] = 42
    assert to_api(workflow, info) == expected


def test_an_older_export_without_values_for_linked_widgets_converts_the_same(info):
    workflow = ui("reroute_primitive")
    node(workflow, 3)["widgets_values"] = [20, 8, "euler", "normal", 1]  # no seed, no control value
    graph = to_api(workflow, info)
    assert graph["3"]["inputs"]["seed"] == 42 and graph["3"]["inputs"]["steps"] == 20
    assert graph["3"]["inputs"]["denoise"] == 1


def test_widgets_saved_by_name_are_read_by_name(info):
    workflow = ui("txt2img")
    node(workflow, 5)["widgets_values"] = {"width": 640, "height": 384, "batch_size": 2, "stray": 1}
    assert to_api(workflow, info)["5"]["inputs"] == {"width": 640, "height": 384, "batch_size": 2}


def test_notes_are_ignored(info):
    workflow = ui("txt2img")
    workflow["nodes"].append({"id": 30, "type": "Note", "mode": 0, "widgets_values": ["remember the seed"]})
    assert to_api(workflow, info) == TXT2IMG


def test_the_widget_slots_follow_the_class_inputs(info):
    assert widget_slots(info["KSampler"]) == [("seed", 1), ("steps", 0), ("cfg", 0), ("sampler_name", 0),
                                              ("scheduler", 0), ("denoise", 0)]
    assert widget_slots(info["LoadImage"]) == [("image", 0), ("upload", 0)]
    assert widget_slots(info["VAEDecode"]) == []


# --- formats -----------------------------------------------------------------------------------------

def test_detect_format_tells_the_two_formats_apart():
    assert detect_format(ui("txt2img")) == "ui"
    assert detect_format(api("txt2img")) == "api"


@pytest.mark.parametrize(("data", "sentence"), [
    ([1, 2], "the file is not a ComfyUI workflow: it holds a JSON list, not an object"),
    ("hello", "the file is not a ComfyUI workflow: it holds a JSON string, not an object"),
    (None, "the file is not a ComfyUI workflow: it holds a JSON null, not an object"),
    ({"nodes": {"1": {}}}, "the file is not a ComfyUI workflow: its \"nodes\" is not a list"),
    ({"name": "my workflow", "steps": 20}, "the file is not a ComfyUI workflow: it has neither a \"nodes\" list "
     "(the editor's Save) nor nodes with a \"class_type\" (Save (API))"),
    ({1: {"class_type": "KSampler"}}, "the workflow has a key that is not a string (1), so it is not JSON"),
])
def test_anything_else_is_refused_saying_what_it_is(data, sentence):
    with pytest.raises(ConversionError) as caught:
        detect_format(data)
    assert str(caught.value) == sentence


def test_an_api_graph_is_not_converted_again(info):
    assert refusal(api("txt2img"), info) == "the workflow is already in the API format"


def test_parse_json_refuses_deep_nesting_garbage_and_size():
    with pytest.raises(ConversionError, match="^the file is nested too deeply to be a workflow$"):
        parse_json("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ConversionError, match=r"^the file is not JSON \(it is not UTF-8 text\)$"):
        parse_json(b"\x89PNG not json")
    with pytest.raises(ConversionError, match=r"^the file is not JSON \(Expecting value: line 1 column 1 \(char 0\)\)$"):
        parse_json(b"name: my workflow")
    with pytest.raises(ConversionError, match="^the file is 101 bytes; a workflow may be at most 100$"):
        parse_json(b" " * 101, limit=100)
    assert parse_json((DATA / "ui" / "txt2img.json").read_bytes()) == ui("txt2img")


# --- refusals ----------------------------------------------------------------------------------------

def test_an_unknown_node_type_is_named(info):
    workflow = ui("txt2img")
    workflow["nodes"].append({"id": 12, "type": "MyCustomNode", "mode": 0, "widgets_values": [1]})
    assert refusal(workflow, info) == "node 12 'MyCustomNode' is not installed on any server, so its inputs cannot be named"
    workflow["nodes"][-1]["title"] = "Sharpen"
    assert refusal(workflow, info) == ("node 12 'MyCustomNode' titled 'Sharpen' is not installed on any server, "
                                       "so its inputs cannot be named")


def test_an_unknown_type_that_is_muted_or_bypassed_does_not_matter(info):
    workflow = ui("txt2img")
    workflow["nodes"].append({"id": 12, "type": "MyCustomNode", "mode": 2})
    workflow["nodes"].append({"id": 13, "type": "OtherCustomNode", "mode": 4})
    assert to_api(workflow, info) == TXT2IMG


def test_a_group_node_is_refused(info):
    workflow = ui("txt2img")
    workflow["extra"]["groupNodes"] = {"Upscale": {"nodes": [], "links": []}}
    workflow["nodes"].append({"id": 12, "type": "workflow>Upscale", "mode": 0, "widgets_values": []})
    assert refusal(workflow, info) == ("node 12 'workflow>Upscale' is a group node; group nodes cannot be "
                                       f"converted; {SAVE_API}")


def test_a_subgraph_is_refused(info):
    workflow = ui("upscale")
    uuid = "2f0a1c3e-5b7d-4e9f-8a1b-3c5d7e9f1a2b"
    workflow["definitions"] = {"subgraphs": [{"id": uuid, "name": "Sharpen", "nodes": [], "links": []}]}
    workflow["nodes"].append({"id": 6, "type": uuid, "mode": 0, "title": "Sharpen"})
    assert refusal(workflow, info) == (f"node 6 '{uuid}' titled 'Sharpen' is a subgraph; subgraphs cannot be "
                                       f"converted; {SAVE_API}")


def test_a_widget_count_that_does_not_fit_the_class_is_refused(info):
    workflow = ui("txt2img")
    node(workflow, 3)["widgets_values"] = [1, 20, 8, "euler", "normal"]
    assert refusal(workflow, info) == (
        "node 3 'KSampler' has 5 widget values but KSampler on this server takes 7 (seed, control_after_generate, "
        "steps, cfg, sampler_name, scheduler, denoise); the node may come from another version of ComfyUI")


def test_a_link_to_a_missing_node_is_refused(info):
    workflow = ui("txt2img")
    vae_link = node(workflow, 8)["inputs"][1]["link"]
    next(link for link in workflow["links"] if link[0] == vae_link)[1] = 99
    assert refusal(workflow, info) == "node 8 'VAEDecode' input 'vae' is linked to node 99, which is not in the workflow"


def test_an_input_naming_a_link_the_workflow_lacks_is_refused(info):
    workflow = ui("txt2img")
    node(workflow, 9)["inputs"][0]["link"] = 500
    assert refusal(workflow, info) == "node 9 'SaveImage' input 'images' refers to link 500, which the workflow does not have"
    node(workflow, 9)["inputs"][0]["link"] = node(workflow, 8)["inputs"][0]["link"]
    assert refusal(workflow, info) == ("node 9 'SaveImage' input 'images' refers to link 7, which ends at node 8: "
                                       "the links table does not match the nodes")


def test_a_cycle_is_refused_naming_the_loop(info):
    workflow = ui("lora_stack")
    first = node(workflow, 10)["inputs"][0]["link"]  # LoRA 10's model now comes from LoRA 11
    link = next(link for link in workflow["links"] if link[0] == first)
    link[1], link[2] = 11, 0
    assert refusal(workflow, info) == ("the workflow's links form a loop (node 11 'LoraLoader' <- node 10 'LoraLoader' "
                                       "<- node 11 'LoraLoader'); ComfyUI cannot run a graph that feeds itself")


def test_reroutes_in_a_loop_are_refused(info):
    workflow = ui("reroute_primitive")
    reroute = node(workflow, 12)["inputs"][0]["link"]
    link = next(link for link in workflow["links"] if link[0] == reroute)
    link[1] = 13  # the first reroute is now fed by the second, which is fed by the first
    assert refusal(workflow, info) == ("node 8 'VAEDecode' input 'vae' is fed by reroutes or bypassed nodes "
                                       "that loop back on themselves")


def test_a_primitive_without_a_value_is_refused(info):
    workflow = ui("reroute_primitive")
    node(workflow, 14)["widgets_values"] = []
    assert refusal(workflow, info) == "node 14 'PrimitiveNode' titled 'seed' has no value to give node 3 'KSampler' input 'seed'"


def test_a_workflow_where_nothing_runs_is_refused(info):
    workflow = ui("txt2img")
    for entry in workflow["nodes"]:
        entry["mode"] = 2
    assert refusal(workflow, info) == "the workflow has no node that would run: every node is muted, bypassed or a note"


@pytest.mark.parametrize(("change", "sentence"), [
    (lambda w: w["nodes"].append(w["nodes"][0]), "two nodes have the id 3"),
    (lambda w: w["nodes"].append({"type": "SaveImage"}), "entry 7 of the workflow's nodes has no id"),
    (lambda w: w["nodes"].append({"id": True, "type": "SaveImage"}), "entry 7 of the workflow's nodes has no id"),
    (lambda w: w["nodes"].append({"id": 40}), "node 40 has no type"),
    (lambda w: w["nodes"].append("KSampler"), "entry 7 of the workflow's nodes is not a node (an object)"),
    (lambda w: w["nodes"].append({"id": 40, "type": "SaveImage", "inputs": [{"link": 1}]}),
     "node 40 'SaveImage' has inputs that are not named slots"),
    (lambda w: node(w, 9)["inputs"][0].update(link=[8, 0]),
     "node 9 'SaveImage' input 'images' has a link id that is not a number"),
    (lambda w: w["links"].append([1, 2]), "entry 9 of the workflow's links is not a link"),
    (lambda w: w["links"].append(["x", 3, 0, 4, 0, "MODEL"]),
     "entry 9 of the workflow's links is not a link (ids must be numbers)"),
    (lambda w: w.update(links={"1": [1, 4, 0, 3, 0]}), "the workflow's links are not a list"),
    (lambda w: node(w, 6).update(widgets_values="text"),
     "node 6 'CLIPTextEncode' has widgets_values that is neither a list nor an object"),
])
def test_malformed_parts_are_named(info, change, sentence):
    workflow = ui("txt2img")
    change(workflow)
    assert refusal(workflow, info) == sentence


def test_hostile_sizes_are_refused_before_any_work(info):
    workflow = ui("txt2img")
    workflow["nodes"] = [{"id": index, "type": "SaveImage"} for index in range(2001)]
    assert refusal(workflow, info) == "the workflow has 2,001 nodes; at most 2,000 are converted"
    workflow = ui("txt2img")
    workflow["links"] = [[index, 4, 0, 3, 0, "MODEL"] for index in range(10_001)]
    assert refusal(workflow, info) == "the workflow has 10,001 links; at most 10,000 are converted"


def test_hostile_values_are_refused(info):
    workflow = ui("txt2img")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    node(workflow, 6)["widgets_values"] = [deep]
    assert refusal(workflow, info) == "node 6 'CLIPTextEncode' widget 'text' is nested more than 32 levels deep"
    node(workflow, 6)["widgets_values"] = [{"ok": {2: "x"}}]
    assert refusal(workflow, info) == ("node 6 'CLIPTextEncode' widget 'text' has a key that is not a string (2), "
                                       "so it is not JSON")
    workflow = ui("txt2img")
    node(workflow, 6)[7] = "seven"
    assert refusal(workflow, info) == "entry 3 of the workflow's nodes has a key that is not a string (7), so it is not JSON"


def test_the_input_workflow_is_not_changed(info):
    workflow = ui("reroute_primitive")
    before = copy.deepcopy(workflow)
    graph = to_api(workflow, info)
    graph["6"]["inputs"]["text"] = "changed"
    assert workflow == before
