"""What the bot finds it can set in a user's API-format workflow: the bindings, exactly, and that they
bind through the same code as the operator's workflows.toml."""

import json
import tomllib
from pathlib import Path

import pytest

from comfy.discover import Bindings, find_bindings
from comfy.workflows import load_set
from tests.fakes.comfy_nodes import load_object_info

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "tests" / "data" / "user_workflows" / "api"

# KSamplerAdvanced as ComfyUI declares it (the recorded copy under tests/data is trimmed to what the
# fake runs); a server with it is what the SDXL refiner workflow needs
KSAMPLER_ADVANCED = {
    "input": {"required": {
        "model": ["MODEL"], "add_noise": [["enable", "disable"]],
        "noise_seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615}],
        "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
        "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}],
        "sampler_name": [["euler", "dpmpp_2m"]], "scheduler": [["normal", "karras"]],
        "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"],
        "start_at_step": ["INT", {"default": 0, "min": 0, "max": 10000}],
        "end_at_step": ["INT", {"default": 10000, "min": 0, "max": 10000}],
        "return_with_leftover_noise": [["disable", "enable"]]}},
    "output": ["LATENT"], "output_name": ["LATENT"], "name": "KSamplerAdvanced", "python_module": "nodes",
    "output_node": False}


@pytest.fixture(scope="module")
def info():
    info = load_object_info()
    info["KSamplerAdvanced"] = KSAMPLER_ADVANCED
    return info


def load(name: str) -> dict:
    return json.loads((API / name).read_text())


def table(bindings: Bindings) -> list[tuple]:
    return [(b.name, b.node, b.input, b.value, b.primary, b.bound) for b in bindings.bindings]


TXT2IMG = [
    ("prompt", "6", "text", "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,", True, True),
    ("negative_prompt", "7", "text", "text, watermark", True, True),
    ("seed", "3", "seed", 156680208700286, True, True),
    ("steps", "3", "steps", 20, True, True),
    ("cfg", "3", "cfg", 8, True, True),
    ("sampler", "3", "sampler_name", "euler", True, True),
    ("scheduler", "3", "scheduler", "normal", True, True),
    ("denoise", "3", "denoise", 1, True, True),
    ("width", "5", "width", 512, True, True),
    ("height", "5", "height", 512, True, True),
    ("batch", "5", "batch_size", 1, True, True),
    ("checkpoint", "4", "ckpt_name", "v1-5-pruned-emaonly.safetensors", True, True),
]


def test_txt2img(info):
    found = find_bindings(load("txt2img.json"), info)
    assert table(found) == TXT2IMG
    assert found.samplers == ("3",) and found.outputs == ("9",) and found.loras == ()
    assert found.lora_attach == ("4.0", "4.1")


def test_sdxl_refiner_names_the_base_primary_and_binds_prompt_seed_and_split_steps_on_both(info):
    found = find_bindings(load("sdxl_refiner.json"), info)
    text = "evening sunset scenery blue sky nature, glass bottle with a galaxy in it"
    assert table(found) == [
        ("prompt", "6", "text", text, True, True),
        ("negative_prompt", "7", "text", "text, watermark", True, True),
        ("seed", "10", "noise_seed", 721897303308196, True, True),
        ("steps", "10", "steps", 25, True, True),
        ("cfg", "10", "cfg", 8, True, True),
        ("sampler", "10", "sampler_name", "euler", True, True),
        ("scheduler", "10", "scheduler", "normal", True, True),
        ("width", "5", "width", 1024, True, True),
        ("height", "5", "height", 1024, True, True),
        ("batch", "5", "batch_size", 1, True, True),
        ("prompt", "15", "text", text, False, True),
        ("negative_prompt", "16", "text", "text, watermark", False, True),
        ("seed", "11", "noise_seed", 0, False, True),
        ("steps", "11", "steps", 25, False, True),
        ("cfg", "11", "cfg", 8, False, False),
        ("sampler", "11", "sampler_name", "euler", False, False),
        ("scheduler", "11", "scheduler", "normal", False, False),
        ("checkpoint", "4", "ckpt_name", "sd_xl_base_1.0.safetensors", True, True),
        ("checkpoint", "12", "ckpt_name", "sd_xl_refiner_1.0.safetensors", False, False),
    ]
    assert found.samplers == ("10", "11") and found.outputs == ("19",)
    assert found.params() == {
        "prompt": ["6.text", "15.text"], "negative_prompt": ["7.text", "16.text"],
        "seed": ["10.noise_seed", "11.noise_seed"], "steps": ["10.steps", "11.steps"], "cfg": ["10.cfg"],
        "sampler": ["10.sampler_name"], "scheduler": ["10.scheduler"], "width": ["5.width"],
        "height": ["5.height"], "batch": ["5.batch_size"], "checkpoint": ["4.ckpt_name"]}
    assert "cfg (secondary): node 11 (KSamplerAdvanced), input 'cfg' = 8" in found.lines()
    assert "seed (secondary, set with the primary): node 11 (KSamplerAdvanced), input 'noise_seed' = 0" in found.lines()


def test_lora_stack(info):
    found = find_bindings(load("lora_stack.json"), info)
    assert table(found) == [
        ("prompt", "6", "text", "a watercolor fox in the snow, detailed fur", True, True),
        ("negative_prompt", "7", "text", "blurry, lowres", True, True),
        ("seed", "3", "seed", 851616030078638, True, True),
        ("steps", "3", "steps", 28, True, True),
        ("cfg", "3", "cfg", 6.5, True, True),
        ("sampler", "3", "sampler_name", "dpmpp_2m", True, True),
        ("scheduler", "3", "scheduler", "karras", True, True),
        ("denoise", "3", "denoise", 1, True, True),
        ("width", "5", "width", 512, True, True),
        ("height", "5", "height", 768, True, True),
        ("batch", "5", "batch_size", 2, True, True),
        ("checkpoint", "4", "ckpt_name", "v1-5-pruned-emaonly.safetensors", True, True),
    ]
    assert [(lora.node, lora.name, lora.strength_model, lora.strength_clip) for lora in found.loras] == [
        ("10", "watercolor_v2.safetensors", 0.8, 0.8), ("11", "detail_tweaker.safetensors", 0.5, 1)]
    assert found.lora_attach == ("11.0", "11.1")  # a job's LoRAs go after the workflow's own
    assert "LoRA: node 10 (LoraLoader) 'watercolor_v2.safetensors', model 0.8, clip 0.8" in found.lines()


def test_upscale(info):
    found = find_bindings(load("upscale.json"), info)
    assert table(found) == [("image", "1", "image", "photo.png", True, True),
                            ("upscale_model", "2", "model_name", "RealESRGAN_x4plus.pth", True, True)]
    assert found.samplers == () and found.outputs == ("5",) and found.lora_attach is None


@pytest.mark.parametrize("name", ["txt2img.json", "sdxl_refiner.json", "lora_stack.json", "upscale.json"])
def test_bindings_survive_json_and_build_a_workflow_that_binds(info, name, tmp_path):
    graph = load(name)
    found = find_bindings(graph, info)
    stored = json.loads(json.dumps(found.to_json()))
    assert Bindings.from_json(stored) == found
    # the same table a workflows.toml entry gives, loaded by the operator's own loader
    spec = found.spec(name)
    (tmp_path / name).write_text(json.dumps(graph))
    lines = [f"[user]\nfile = {json.dumps(name)}\noutputs = {json.dumps(spec['outputs'])}\n[user.params]"]
    lines += [f"{key} = {json.dumps(places)}" for key, places in spec["params"].items()]
    (tmp_path / "workflows.toml").write_text("\n".join(lines) + "\n")
    loaded = load_set(tmp_path)["user"]
    assert dict(loaded.params) == dict(found.workflow("user", tmp_path / name, graph).params)


def test_a_user_workflow_binds_values_and_loras_through_the_shared_code(info):
    graph = load("lora_stack.json")
    workflow = find_bindings(graph, info).workflow("mine", API / "lora_stack.json", graph)
    bound = workflow.bind({"prompt": 'a "fox" 🦊', "seed": 7, "width": 768, "loras": [["ink.safetensors", 0.6]]})
    assert bound["6"]["inputs"]["text"] == 'a "fox" 🦊' and bound["3"]["inputs"]["seed"] == 7
    assert bound["5"]["inputs"]["width"] == 768
    added = bound["12"]
    assert added["inputs"] == {"model": ["11", 0], "clip": ["11", 1], "lora_name": "ink.safetensors",
                               "strength_model": 0.6, "strength_clip": 0.6}
    assert bound["3"]["inputs"]["model"] == ["12", 0] and bound["6"]["inputs"]["clip"] == ["12", 1]
    assert graph["3"]["inputs"]["seed"] == 851616030078638  # the stored graph is untouched


def test_the_shipped_txt2img_is_found_as_its_workflows_toml_binds_it(info):
    toml = tomllib.loads((ROOT / "workflows" / "default" / "workflows.toml").read_text())["txt2img"]
    found = find_bindings(json.loads((ROOT / "workflows" / "default" / "txt2img.json").read_text()), info)
    params = found.params()
    assert {key: [place] for key, place in toml["params"].items()} == {key: params[key] for key in toml["params"]}
    assert found.spec("txt2img.json")["lora"] == toml["lora"] and found.outputs == tuple(toml["outputs"])


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def test_custom_sampler_settings_come_from_its_helper_nodes_and_primitives():
    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name="flux.safetensors"),
        "2": node("CLIPTextEncode", text="a lighthouse", clip=["1", 1]),
        "3": node("CLIPTextEncode", text="", clip=["1", 1]),
        "4": node("CFGGuider", model=["1", 0], positive=["2", 0], negative=["3", 0], cfg=3.5),
        "5": node("RandomNoise", noise_seed=["9", 0]),
        "6": node("KSamplerSelect", sampler_name="euler"),
        "7": node("BasicScheduler", model=["1", 0], scheduler="simple", steps=12, denoise=1.0),
        "8": node("EmptySD3LatentImage", width=1024, height=768, batch_size=1),
        "9": node("PrimitiveInt", value=42),
        "10": node("SamplerCustomAdvanced", noise=["5", 0], guider=["4", 0], sampler=["6", 0], sigmas=["7", 0],
                   latent_image=["8", 0]),
    }
    found = find_bindings(graph, {})
    assert [(b.name, b.node, b.input, b.value) for b in found.bindings] == [
        ("prompt", "2", "text", "a lighthouse"), ("negative_prompt", "3", "text", ""),
        ("seed", "9", "value", 42), ("steps", "7", "steps", 12), ("cfg", "4", "cfg", 3.5),
        ("sampler", "6", "sampler_name", "euler"), ("scheduler", "7", "scheduler", "simple"),
        ("denoise", "7", "denoise", 1.0), ("width", "8", "width", 1024), ("height", "8", "height", 768),
        ("batch", "8", "batch_size", 1), ("checkpoint", "1", "ckpt_name", "flux.safetensors")]


def test_prompts_are_followed_through_controlnet_and_combiners_keeping_sides_apart():
    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name="sdxl.safetensors"),
        "2": node("CLIPTextEncodeSDXL", text_g="castle", text_l="castle, detailed", clip=["1", 1], width=1024,
                  height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024),
        "3": node("CLIPTextEncode", text="moat", clip=["1", 1]),
        "4": node("ConditioningCombine", conditioning_1=["2", 0], conditioning_2=["3", 0]),
        "5": node("CLIPTextEncode", text="ugly", clip=["1", 1]),
        "6": node("ControlNetApplyAdvanced", positive=["4", 0], negative=["5", 0], control_net=["7", 0],
                  image=["8", 0], strength=0.8, start_percent=0, end_percent=1),
        "7": node("ControlNetLoader", control_net_name="canny.safetensors"),
        "8": node("LoadImage", image="edges.png"),
        "9": node("VAEEncode", pixels=["8", 0], vae=["1", 2]),
        # the applier's outputs crossed on purpose: output 1 is the negative side
        "10": node("KSampler", model=["1", 0], positive=["6", 0], negative=["6", 1], latent_image=["9", 0],
                   seed=1, steps=20, cfg=7, sampler_name="euler", scheduler="normal", denoise=0.6),
    }
    found = find_bindings(graph, {})
    assert [(b.name, b.node, b.input) for b in found.bindings if "prompt" in b.name] == [
        ("prompt", "2", "text_g"), ("prompt", "2", "text_l"), ("prompt", "3", "text"), ("negative_prompt", "5", "text")]
    names = {b.name: (b.node, b.input) for b in found.bindings}
    assert "width" not in names  # an encoded image sets the size, not the graph
    assert names["image"] == ("8", "image") and names["controlnet"] == ("7", "control_net_name")
    assert names["denoise"] == ("10", "denoise")


def test_a_hires_pass_is_secondary_and_the_first_sampler_is_primary():
    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name="a.safetensors"),
        "2": node("CLIPTextEncode", text="fox", clip=["1", 1]),
        "3": node("CLIPTextEncode", text="", clip=["1", 1]),
        "4": node("EmptyLatentImage", width=512, height=512, batch_size=1),
        # the hires pass has the lower id, so only the rule (fed by the latent source) makes 20 primary
        "5": node("KSampler", model=["1", 0], positive=["2", 0], negative=["3", 0], latent_image=["6", 0],
                  seed=3, steps=12, cfg=7, sampler_name="euler", scheduler="normal", denoise=0.5),
        "6": node("LatentUpscale", samples=["20", 0], upscale_method="nearest-exact", width=1024, height=1024, crop="disabled"),
        "20": node("KSampler", model=["1", 0], positive=["2", 0], negative=["3", 0], latent_image=["4", 0],
                   seed=3, steps=25, cfg=7, sampler_name="euler", scheduler="normal", denoise=1.0),
    }
    found = find_bindings(graph, {})
    assert found.samplers == ("20", "5")
    steps = [(b.node, b.primary, b.bound) for b in found.bindings if b.name == "steps"]
    assert steps == [("20", True, True), ("5", False, False)]  # 12 is not the same schedule as 25
    assert [(b.node, b.bound) for b in found.bindings if b.name == "seed"] == [("20", True), ("5", True)]


def test_a_graph_without_links_to_follow_finds_only_what_stands_alone():
    graph = {"1": node("LoadImage", image="a.png"), "2": node("LoadImage", image="b.png"),
             "3": node("LoadImageMask", image="m.png", channel="alpha"),
             "4": node("ImageInvert", image=["1", 0]), "5": node("PreviewImage", images=["4", 0])}
    found = find_bindings(graph, {})
    assert [(b.name, b.node) for b in found.bindings] == [("image", "1"), ("image_2", "2"), ("mask", "3")]
    assert found.outputs == ("5",) and found.samplers == ()


def test_random_graphs_with_loops_and_dangling_links_never_break_discovery():
    import random

    from comfy.vetting import vet
    rng = random.Random(20)
    classes = ["KSampler", "KSamplerAdvanced", "CLIPTextEncode", "LoraLoader", "CheckpointLoaderSimple", "EmptyLatentImage",
               "ConditioningCombine", "ControlNetApplyAdvanced", "VAEEncode", "LatentUpscale", "PrimitiveInt", "LoadImage"]
    keys = ["model", "clip", "positive", "negative", "latent_image", "samples", "conditioning_1", "seed", "text",
            "guider", "noise", "sigmas", "ckpt_name", "lora_name", "value", "image", "width"]
    for _ in range(300):
        size = rng.randint(1, 12)
        graph = {str(n): node(rng.choice(classes), **{
            key: ([str(rng.randint(0, size + 1)), rng.randint(0, 2)] if rng.random() < 0.6 else rng.choice([1, "a.png", 2.5]))
            for key in rng.sample(keys, rng.randint(0, 8))}) for n in range(1, size + 1)}
        found = find_bindings(graph, {})
        assert Bindings.from_json(json.loads(json.dumps(found.to_json()))) == found
        assert isinstance(vet(graph, [load_object_info()]).refusals, tuple)
    with pytest.raises(ValueError, match="vet it"):
        find_bindings({"1": {"inputs": {}}}, {})
