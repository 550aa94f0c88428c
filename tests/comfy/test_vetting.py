"""Vetting a user's workflow before it is saved: every kind of refusal, in the sentence the owner sees."""

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from comfy.vetting import MAX_BYTES, MAX_NODES, MAX_TEXT, provider, vet
from config import DEFAULT_DENY_NODES, Settings
from tests.comfy.test_discover import KSAMPLER_ADVANCED
from tests.fakes.comfy_nodes import load_object_info

API = Path(__file__).resolve().parents[1] / "data" / "user_workflows" / "api"


def server(checkpoints=(), loras=(), upscalers=(), extra=None, without=()):
    """A server's /object_info: the recorded one with these model files, classes added and removed."""
    info = load_object_info()
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(checkpoints)
    info["LoraLoader"]["input"]["required"]["lora_name"][0] = list(loras)
    info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] = list(upscalers)
    info.update(copy.deepcopy(extra or {}))
    for name in without:
        del info[name]
    return info


SD15 = "v1-5-pruned-emaonly.safetensors"


def load(name: str) -> dict:
    return json.loads((API / name).read_text())


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def test_every_shipped_user_workflow_passes_on_a_server_with_its_models():
    full = server(checkpoints=[SD15, "sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors"],
                  loras=["watercolor_v2.safetensors", "detail_tweaker.safetensors"], upscalers=["RealESRGAN_x4plus.pth"],
                  extra={"KSamplerAdvanced": KSAMPLER_ADVANCED})
    for path in sorted(API.glob("*.json")):
        verdict = vet(path.read_bytes(), [full])
        assert verdict.refusals == () and verdict.runnable == ("server 1",), path.name
        assert json.loads(json.dumps(verdict.to_json()))["runnable"] == ["server 1"]


def test_a_server_with_the_class_and_one_without():
    verdict = vet(load("sdxl_refiner.json"), [
        server(checkpoints=["sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors"]),
        server(checkpoints=["sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors"],
               extra={"KSamplerAdvanced": KSAMPLER_ADVANCED})], names=["gpu1", "gpu2"])
    assert verdict.ok and verdict.runnable == ("gpu2",)
    assert verdict.lacks == {"gpu1": ["node class KSamplerAdvanced for nodes 10, 11 (a node of ComfyUI itself, "
                                      "module nodes: a newer ComfyUI has it)"], "gpu2": []}


def test_missing_models_are_named_per_server_and_a_workflow_no_server_can_run_is_refused():
    verdict = vet(load("lora_stack.json"), [server(checkpoints=[SD15], loras=["watercolor_v2.safetensors"]),
                                            server(loras=["watercolor_v2.safetensors", "detail_tweaker.safetensors"])])
    assert verdict.refusals == (
        "No server can run this workflow. "
        "Server 1 lacks model file 'detail_tweaker.safetensors' for node 11 (LoraLoader), input 'lora_name'. "
        "Server 2 lacks model file 'v1-5-pruned-emaonly.safetensors' for node 4 (CheckpointLoaderSimple), "
        "input 'ckpt_name'.",)
    assert verdict.runnable == ()


def test_a_missing_custom_class_is_named_with_its_package():
    graph = load("txt2img.json")
    graph["20"] = node("DepthAnythingV2Preprocessor", image=["8", 0], ckpt_name="depth_anything_v2_vitl.pth", resolution=512)
    graph["21"] = node("FaceDetailer", image=["8", 0])
    graph["22"] = node("MadeUpNode", image=["8", 0])
    depth = {"DepthAnythingV2Preprocessor": {"input": {"required": {"image": ["IMAGE"]}}, "output": ["IMAGE"],
                                             "python_module": "custom_nodes.comfyui_controlnet_aux"}}
    verdict = vet(graph, [server(checkpoints=[SD15]), server(checkpoints=[SD15], extra=depth)])
    assert verdict.lacks["server 1"] == [
        "node class DepthAnythingV2Preprocessor for node 20 (from the custom node package comfyui_controlnet_aux "
        "(https://github.com/Fannovel16/comfyui_controlnet_aux))",
        "node class FaceDetailer for node 21 (from the custom node package ComfyUI-Impact-Pack "
        "(https://github.com/ltdrdata/ComfyUI-Impact-Pack))",
        "node class MadeUpNode for node 22 (a custom node whose package is not known)"]
    assert verdict.lacks["server 2"] == verdict.lacks["server 1"][1:]
    assert not verdict.ok and verdict.refusals[0].startswith("No server can run this workflow. Server 1 lacks node class")


def test_the_package_a_server_reports_wins_over_the_map():
    elsewhere = {"FaceDetailer": {"python_module": "custom_nodes.comfyui-impact-pack@8.8.1"}}
    assert provider("FaceDetailer", [elsewhere]) == "from the custom node package comfyui-impact-pack " \
                                                     "(https://github.com/ltdrdata/ComfyUI-Impact-Pack)"
    assert provider("Thing", [{"Thing": {"python_module": "custom_nodes.thing_pack"}}]) == \
        "from the custom node package thing_pack"


@pytest.mark.parametrize("class_type, pattern", [
    ("Image Save", "Image Save"), ("Run Python Code", "*python*"), ("ShellCommand", "*shell*"),
    ("Load Image From URL", "*url*"), ("VHS_LoadVideoPath", "VHS_Load*Path"), ("CheckpointSave", "CheckpointSave"),
    ("Evaluate Integers", "*eval*"), ("SaveText|pysssss", "SaveText|pysssss")])
def test_the_default_deny_list(class_type, pattern):
    graph = {"1": node(class_type), "2": node("PreviewAny", source=["1", 0])}
    verdict = vet(graph, [server()])
    assert verdict.refusals[0] == (f"Node 1 ({class_type}) is a node class the operator does not allow "
                                   f"(WORKFLOW_DENY_NODES has {pattern!r}).")


def test_deny_by_module_the_servers_report():
    graph = {"1": node("OpenAIDalle3", prompt="a cat"), "2": node("PreviewImage", images=["1", 0])}
    paid = {"OpenAIDalle3": {"input": {"required": {"prompt": ["STRING", {"multiline": True}]}}, "output": ["IMAGE"],
                             "python_module": "comfy_api_nodes.nodes_openai"}}
    verdict = vet(graph, [server(extra=paid)])
    assert verdict.refusals == ("Node 1 (OpenAIDalle3) is a node class the operator does not allow "
                                "(WORKFLOW_DENY_NODES has 'module:comfy_api_nodes*').",)


def test_the_operator_sets_the_deny_list(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKFLOW_DENY_NODES", '["ImageInvert", "ImageBl?r"]')
    settings = Settings()
    assert settings.workflow_deny_nodes == ["ImageInvert", "ImageBl?r"]
    graph = {"1": node("LoadImage", image="a.png"), "2": node("ImageInvert", image=["1", 0]),
             "3": node("ImageBlur", image=["2", 0], blur_radius=1, sigma=1.0), "4": node("SaveImage", images=["3", 0],
                                                                                       filename_prefix="x")}
    assert vet(graph, [server()], settings).refusals == (
        "Node 2 (ImageInvert) is a node class the operator does not allow (WORKFLOW_DENY_NODES has 'ImageInvert').",
        "Node 3 (ImageBlur) is a node class the operator does not allow (WORKFLOW_DENY_NODES has 'ImageBl?r').")
    assert vet({"1": node("Image Save")}, [server()], SimpleNamespace(workflow_deny_nodes=[])).lacks["server 1"] == [
        "node class Image Save for node 1 (from the custom node package was-node-suite-comfyui "
        "(https://github.com/WASasquatch/was-node-suite-comfyui))"]
    monkeypatch.delenv("WORKFLOW_DENY_NODES")
    assert Settings(workflow_deny_nodes=[]).workflow_deny_nodes == [] and \
        tuple(Settings().workflow_deny_nodes) == DEFAULT_DENY_NODES


@pytest.mark.parametrize("inputs, sentence", [
    ({"image": "/etc/passwd"}, "Node 1 (LoadImage), input 'image', is a path outside ComfyUI's folders ('/etc/passwd'); "
                               "use a name ComfyUI lists."),
    ({"image": "../../secrets.png"}, "Node 1 (LoadImage), input 'image', is a path outside ComfyUI's folders "
                                     "('../../secrets.png'); use a name ComfyUI lists."),
    ({"image": "C:\\Windows\\win.ini"}, "Node 1 (LoadImage), input 'image', is a path outside ComfyUI's folders "
                                        "('C:\\\\Windows\\\\win.ini'); use a name ComfyUI lists."),
    ({"image": "https://evil.example/x.png"}, "Node 1 (LoadImage), input 'image', is an address outside ComfyUI "
                                              "('https://evil.example/x.png'); workflows may not reach the network."),
    ({"image": "\\\\share\\x.png"}, "Node 1 (LoadImage), input 'image', is an address outside ComfyUI "
                                    "('\\\\\\\\share\\\\x.png'); workflows may not reach the network."),
])
def test_values_that_reach_outside_comfyui(inputs, sentence):
    graph = {"1": node("LoadImage", **inputs), "2": node("PreviewImage", images=["1", 0])}
    assert vet(graph, [server()]).refusals == (sentence,)


@pytest.mark.parametrize("prefix", ["../../../tmp/x", "/tmp/x", "bot/../../x", "~/x"])
def test_output_nodes_may_not_write_outside_the_output_folder(prefix):
    graph = load("upscale.json")
    graph["5"]["inputs"]["filename_prefix"] = prefix
    assert vet(graph, [server(upscalers=["RealESRGAN_x4plus.pth"])]).refusals == (
        f"Node 5 (SaveImage), input 'filename_prefix', would write outside ComfyUI's output folder ({prefix!r}).",)


def test_a_prompt_may_mention_addresses_and_paths():
    graph = load("txt2img.json")
    graph["6"]["inputs"]["text"] = "poster of https://example.org and /usr/bin, ../up"
    graph["10"] = node("StringConcatenate", string_a="http://a.example", string_b="", delimiter="")
    graph["11"] = node("PreviewAny", source=["10", 0])
    assert vet(graph, [server(checkpoints=[SD15])]).ok


def test_links_to_missing_nodes_missing_outputs_and_loops():
    graph = load("txt2img.json")
    graph["8"]["inputs"]["vae"] = ["4", 7]
    graph["9"]["inputs"]["images"] = ["99", 0]
    refusals = vet(graph, [server(checkpoints=[SD15])]).refusals
    assert refusals == ("Node 8 (VAEDecode), input 'vae', takes output 7 of node 4 (CheckpointLoaderSimple), which has 3 outputs.",
                        "Node 9 (SaveImage), input 'images', links to node 99, which is not in the workflow.")
    loop = load("txt2img.json")
    loop["4"] = node("LoraLoader", model=["10", 0], clip=["10", 1], lora_name="a.safetensors", strength_model=1,
                     strength_clip=1)
    loop["10"] = node("LoraLoader", model=["4", 0], clip=["4", 1], lora_name="b.safetensors", strength_model=1,
                      strength_clip=1)
    assert vet(loop, [server(loras=["a.safetensors", "b.safetensors"])]).refusals == (
        "Node 8 (VAEDecode), input 'vae', takes output 2 of node 4 (LoraLoader), which has 2 outputs.",
        "Node 4 (LoraLoader), input 'model', is part of a loop of links (4 <- 10 <- 4); "
        "ComfyUI cannot run a workflow that feeds itself.",)
    itself = {"1": node("ImageInvert", image=["1", 0]), "2": node("PreviewImage", images=["1", 0])}
    assert vet(itself, [server()]).refusals == ("Node 1 (ImageInvert), input 'image', is part of a loop of links "
                                                "(1 <- 1); ComfyUI cannot run a workflow that feeds itself.",)


def test_hostile_sizes():
    big = json.dumps({"1": node("PrimitiveString", value="x" * MAX_BYTES)})
    assert vet(big, [server()]).refusals == (f"The workflow is {len(big)} bytes; the most it may be is {MAX_BYTES} bytes.",)
    many = {str(i): node("EmptyImage", width=8, height=8, batch_size=1, color=0) for i in range(MAX_NODES + 1)}
    assert vet(many, [server()]).refusals == (f"The workflow has {MAX_NODES + 1} nodes; the most it may have is {MAX_NODES}.",)
    assert vet("[" * 100_000, [server()]).refusals == (
        "The workflow is nested too deeply (values may hold lists or objects 4 deep).",)
    long_text = {"1": node("PrimitiveString", value="y" * (MAX_TEXT + 1)), "2": node("PreviewAny", source=["1", 0])}
    assert vet(long_text, [server()]).refusals == (
        f"Node 1 (PrimitiveString), input 'value', has {MAX_TEXT + 1} characters; the most is {MAX_TEXT}.",)
    deep = {"1": node("PrimitiveString", value=[[[[["z"]]]]]), "2": node("PreviewAny", source=["1", 0])}
    assert vet(deep, [server()]).refusals == (
        "Node 1 (PrimitiveString), input 'value', holds lists or objects more than 4 deep.",)
    wide = {"1": node("PrimitiveString", value=list(range(5000))), "2": node("PreviewAny", source=["1", 0])}
    assert vet(wide, [server()]).refusals == ("Node 1 (PrimitiveString), input 'value', holds 5000 items; the most is 1000.",)
    nan = '{"1": {"class_type": "PrimitiveFloat", "inputs": {"value": NaN}}, "2": {"class_type": "PreviewAny", ' \
          '"inputs": {"source": ["1", 0]}}}'
    assert vet(nan, [server()]).refusals == ("Node 1 (PrimitiveFloat), input 'value', is not a finite number.",)


@pytest.mark.parametrize("workflow, sentence", [
    ("{not json", "The workflow is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))."),
    ({"nodes": [], "links": []}, "This is ComfyUI's UI format; the bot needs the API format (\"Export (API)\" in ComfyUI)."),
    ([1, 2], "The workflow must be an API-format graph: an object of nodes, each with a class_type and inputs."),
    ({"1": {"inputs": {}}}, "Node 1 needs a class_type (text) and an inputs object."),
])
def test_malformed_workflows(workflow, sentence):
    assert vet(workflow, [server()]).refusals == (sentence,)


def test_no_server_known():
    assert vet(load("upscale.json"), []).refusals == (
        "No server is known yet, so nothing can tell whether this workflow can run.",)


def test_many_problems_are_capped():
    graph = {str(i): node("LoadImage", image=f"/abs/{i}.png") for i in range(30)}
    graph["99"] = node("PreviewImage", images=["0", 0])
    refusals = vet(graph, [server()]).refusals
    assert len(refusals) == 21 and refusals[-1] == "... and 10 more problems like these."
