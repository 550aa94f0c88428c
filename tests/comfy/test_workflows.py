"""Workflow sets: loading, safe binding, and validation against a recorded /object_info."""

import json
from pathlib import Path

import pytest

from jobs.check import workflow_values
from config import Settings
from comfy.workflows import WorkflowError, load_set, validate

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def object_info():
    info = json.loads((DATA / "object_info.json").read_text())
    # what a server with these models would list
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = ["sd15.safetensors", "sdxl.safetensors"]
    return info


def write_set(folder: Path, toml: str, graphs: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflows.toml").write_text(toml)
    for name, graph in graphs.items():
        (folder / name).write_text(graph if isinstance(graph, str) else json.dumps(graph))
    return folder


TINY = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        "3": {"class_type": "StringConcatenate", "inputs": {"string_a": "", "string_b": "", "delimiter": ""}}}
TINY_TOML = '[t]\nfile = "t.json"\noutputs = ["2"]\n[t.params]\nprompt = "3.string_a"\nsize = ["1.width", "1.height"]\n'


@pytest.mark.parametrize("name", ["default", "selftest"])
def test_shipped_sets_load_with_every_job_kind(name):
    workflows = load_set(ROOT / "workflows" / name)
    controlnets = {"controlnet_canny", "controlnet_depth", "controlnet_openpose", "controlnet_lineart"}
    assert set(workflows) == {"txt2img", "img2img", "inpaint", "outpaint", "upscale", "animate", "video_upscale",
                              *(controlnets if name == "default" else {"controlnet_canny"}),
                              *({"interpolate", "text_to_video"} if name == "default" else ())}  # custom nodes
    for workflow in workflows.values():
        assert workflow.outputs and all(node in workflow.graph for node in workflow.outputs)


def test_bind_sets_every_target_and_returns_a_fresh_copy(tmp_path):
    workflow = load_set(write_set(tmp_path, TINY_TOML, {"t.json": TINY}))["t"]
    hostile = 'a "quoted" {braces} \\ back\nslash 🐱 ", "class_type": "Evil'
    graph = workflow.bind({"prompt": hostile, "size": 320})
    assert graph["3"]["inputs"]["string_a"] == hostile
    assert graph["1"]["inputs"]["width"] == 320 and graph["1"]["inputs"]["height"] == 320
    assert json.loads(json.dumps(graph))["3"]["inputs"]["string_a"] == hostile
    # the template is untouched and two binds share nothing
    assert workflow.graph["1"]["inputs"]["width"] == 64
    other = workflow.bind({"size": 128})
    other["1"]["inputs"]["color"] = 5
    assert graph["1"]["inputs"]["color"] == 0 and workflow.graph["1"]["inputs"]["color"] == 0


def test_bind_refuses_unknown_parameters_and_non_scalars(tmp_path):
    workflow = load_set(write_set(tmp_path, TINY_TOML, {"t.json": TINY}))["t"]
    with pytest.raises(WorkflowError, match="no binding for parameter.*steps"):
        workflow.bind({"steps": 3})
    with pytest.raises(WorkflowError, match="parameter prompt must be text or a number, not dict"):
        workflow.bind({"prompt": {"x": 1}})


def test_load_reports_every_problem_with_file_and_node(tmp_path):
    toml = ('[a]\nfile = "missing.json"\noutputs = ["1"]\n'
            '[b]\nfile = "ui.json"\noutputs = ["1"]\n'
            '[c]\nfile = "t.json"\noutputs = ["9"]\n[c.params]\nseed = "7.seed"\n')
    folder = write_set(tmp_path, toml, {"ui.json": {"nodes": [], "links": []}, "t.json": TINY})
    with pytest.raises(WorkflowError) as error:
        load_set(folder)
    text = str(error.value)
    assert f"{folder / 'missing.json'}: file not found" in text
    assert "ui.json: this is ComfyUI's UI format; export it with \"Save (API)\" instead" in text
    assert "parameter seed points at node 7, which t.json does not have" in text
    assert "output node 9 is not in t.json" in text


def test_missing_or_broken_bindings_file(tmp_path):
    with pytest.raises(WorkflowError, match="workflows.toml: missing"):
        load_set(tmp_path)
    (tmp_path / "workflows.toml").write_text("[t\n")
    with pytest.raises(WorkflowError, match="workflows.toml: not valid TOML"):
        load_set(tmp_path)


@pytest.mark.parametrize("name", ["default", "selftest"])
def test_shipped_sets_validate_against_a_server_with_the_models(object_info, name):
    info = json.loads(json.dumps(object_info))
    shipped = {"UpscaleModelLoader": ["RealESRGAN_x4plus.pth"], "ImageOnlyCheckpointLoader": ["svd_xt.safetensors"],
               "ControlNetLoader": ["control_v11p_sd15_canny.pth"]}
    for cls, key in [("UpscaleModelLoader", "model_name"), ("ImageOnlyCheckpointLoader", "ckpt_name"),
                     ("ControlNetLoader", "control_net_name")]:
        spec = info[cls]["input"]["required"][key]
        models = shipped[cls]
        if spec[0] == "COMBO":
            spec[1]["options"] = models
        else:
            spec[0] = models
    settings = Settings(checkpoint="sd15.safetensors")
    for workflow in load_set(ROOT / "workflows" / name).values():
        values = workflow_values(settings, workflow.name)
        if values is None:  # a ControlNet type CONTROLNET_MODELS does not offer: its custom nodes are not here
            assert workflow.name in ("controlnet_depth", "controlnet_openpose", "controlnet_lineart", "interpolate",
                                     "text_to_video")  # or a video workflow whose model setting is empty
            continue
        assert validate(workflow, info, {k: v for k, v in values.items() if k in workflow.params}) == []


def test_validation_names_file_node_input_and_allowed_values(object_info, tmp_path):
    workflow = load_set(ROOT / "workflows" / "default")["txt2img"]
    problems = [str(p) for p in validate(workflow, object_info, {"checkpoint": "nope.ckpt", "steps": 0, "cfg": 7.5})]
    file = f"{ROOT}/workflows/default/txt2img.json"
    assert problems == [
        f"{file}: node 3 (KSampler), input 'steps': 0 is below the minimum 1",
        f"{file}: node 4 (CheckpointLoaderSimple), input 'ckpt_name': "
        "'nope.ckpt' is not available (the server has: sd15.safetensors, sdxl.safetensors)",
    ]


def test_validation_finds_unknown_classes_inputs_links_and_types(object_info, tmp_path):
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": "wide", "height": 99999, "batch_size": 1, "colour": 0}},
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["8", 0], "upscale_method": "super-res", "scale_by": 2.0}},
        "3": {"class_type": "FancyCustomNode", "inputs": {}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": 5}},
    }
    toml = '[t]\nfile = "t.json"\noutputs = ["4"]\n'
    workflow = load_set(write_set(tmp_path, toml, {"t.json": graph}))["t"]
    got = {(p.node, p.input): p.message for p in validate(workflow, object_info, {})}
    assert got == {
        ("1", "color"): "required input is missing",
        ("1", "width"): "'wide' is not an integer",
        ("1", "height"): "99999 is above the maximum 16384",
        ("1", "colour"): "the server's EmptyImage has no such input",
        ("2", "image"): "links to node 8, which is not in the workflow",
        ("2", "upscale_method"): "'super-res' is not available (the server has: nearest-exact, bilinear, area, bicubic, lanczos)",
        ("3", ""): "this node class is not installed on the server (a custom node?)",
        ("4", "filename_prefix"): "5 is not text",
    }


def test_values_known_only_at_run_time_are_not_checked(object_info):
    workflow = load_set(ROOT / "workflows" / "selftest")["upscale"]
    # LoadImage's image is the user's upload: the template's placeholder is not on the server
    assert validate(workflow, object_info, {}) == []


def test_a_workflow_that_extends_another_swaps_whole_nodes_and_keeps_its_bindings(object_info, tmp_path):
    toml = TINY_TOML + '[red]\nextends = "t"\nnodes."1" = { class_type = "EmptyImage", inputs = { width = 8, ' \
                       'height = 8, batch_size = 1, color = 16711680 } }\n'
    workflows = load_set(write_set(tmp_path, toml, {"t.json": TINY}))
    red = workflows["red"]
    assert red.graph["1"]["inputs"]["color"] == 16711680 and workflows["t"].graph["1"]["inputs"]["color"] == 0
    assert red.params == workflows["t"].params and red.outputs == ("2",)
    assert red.bind({"prompt": "hi"})["3"]["inputs"]["string_a"] == "hi"
    missing = '[aux]\nextends = "t"\nnodes."1" = { class_type = "FancyPreprocessor", inputs = { image = ["9", 0] } }\n'
    (problem,) = validate(load_set(write_set(tmp_path / "aux", TINY_TOML + missing, {"t.json": TINY}))["aux"],
                          object_info, {})
    assert str(problem).endswith("t.json as [aux]: node 1 (FancyPreprocessor): this node class is not installed on "
                                 "the server (a custom node?)")


@pytest.mark.parametrize("extra, message", [
    ('[x]\nextends = "nope"\n', "extends 'nope', which is not a workflow of this set"),
    ('[x]\nextends = "t"\nfile = "t.json"\n', "takes only extends and nodes, not file"),
    ('[x]\nextends = "t"\nnodes = 3\n', "nodes must be a table"),
    ('[x]\nextends = "t"\nnodes."1" = { class_type = 5 }\n', "node 1 needs a class_type and an inputs object"),
])
def test_a_broken_extension_is_named(tmp_path, extra, message):
    with pytest.raises(WorkflowError, match=message):
        load_set(write_set(tmp_path, TINY_TOML + extra, {"t.json": TINY}))


def test_several_images_where_the_graph_loads_one_are_loaded_and_batched():
    upscale = load_set(ROOT / "workflows" / "default")["upscale"]
    graph = upscale.bind({"image": ["a.png", "b.png", "c.png"], "scale": 0.5})
    loads = {node: body["inputs"]["image"] for node, body in graph.items() if body["class_type"] == "LoadImage"}
    assert sorted(loads.values()) == ["a.png", "b.png", "c.png"] and loads["1"] == "a.png"
    batches = [body["inputs"] for body in graph.values() if body["class_type"] == "ImageBatch"]
    assert len(batches) == 2 and batches[0]["image1"] == ["1", 0]
    last = next(node for node, body in graph.items() if body["class_type"] == "ImageBatch"
                and body["inputs"]["image1"] != ["1", 0])
    assert graph["3"]["inputs"]["image"] == [last, 0]  # the upscaler takes the whole batch
    assert upscale.bind({"image": ["a.png"]})["1"]["inputs"]["image"] == "a.png"
    assert upscale.graph["3"]["inputs"]["image"] == ["1", 0]  # the template is untouched
