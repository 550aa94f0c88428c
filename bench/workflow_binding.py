"""How long the bot takes to read a user's workflow: find what it can bind, and vet it against two servers.

A generated 200-node API-format graph: four pipelines, each a checkpoint, a chain of five LoRAs,
prompts built from several text encoders through conditioning combiners, a base sampler, a latent
upscale and a hires sampler, then a long tail of image nodes (scale, blur, invert, batch) before
saving. The first server has every class and model; the second lacks one class and some LoRAs, so
vetting does the per-server work in full. Each run parses the JSON bytes as they would arrive,
finds the bindings and vets; prints p50/p95 of each step and of the whole, over a few hundred runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from comfy.discover import find_bindings  # noqa: E402
from comfy.vetting import vet  # noqa: E402
from tests.fakes.comfy_nodes import load_object_info  # noqa: E402

PIPELINES, LORAS, TAIL = 4, 5, 33
EXTRA = {  # core classes the recorded, trimmed /object_info does not carry
    "ConditioningCombine": {"input": {"required": {"conditioning_1": ["CONDITIONING"], "conditioning_2": ["CONDITIONING"]}},
                            "output": ["CONDITIONING"], "python_module": "nodes"},
    "LatentUpscale": {"input": {"required": {"samples": ["LATENT"], "upscale_method": [["nearest-exact", "bilinear"]],
                                             "width": ["INT"], "height": ["INT"], "crop": [["disabled", "center"]]}},
                      "output": ["LATENT"], "python_module": "nodes"},
}


def graph() -> dict:
    nodes: dict[str, dict] = {}

    def add(class_type: str, title: str, **inputs) -> list:
        node = str(len(nodes) + 1)
        nodes[node] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
        return [node, 0]

    for p in range(PIPELINES):
        ckpt = add("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name=f"model_{p}.safetensors")
        model, clip = ckpt, [ckpt[0], 1]
        for index in range(LORAS):
            lora = add("LoraLoader", "Load LoRA", lora_name=f"lora_{p}_{index}.safetensors", strength_model=0.7,
                       strength_clip=0.7, model=model, clip=clip)
            model, clip = lora, [lora[0], 1]
        positive = add("CLIPTextEncode", "Prompt", text=f"pipeline {p}, a lighthouse at dusk", clip=clip)
        for part in range(3):
            extra = add("CLIPTextEncode", "Prompt part", text=f"detail {part}", clip=clip)
            positive = add("ConditioningCombine", "Combine", conditioning_1=positive, conditioning_2=extra)
        negative = add("CLIPTextEncode", "Negative", text="blurry", clip=clip)
        latent = add("EmptyLatentImage", "Empty Latent Image", width=512, height=512, batch_size=1)
        base = add("KSampler", "Base", seed=p, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal", denoise=1.0,
                   model=model, positive=positive, negative=negative, latent_image=latent)
        bigger = add("LatentUpscale", "Upscale latent", samples=base, upscale_method="bilinear", width=1024,
                     height=1024, crop="disabled")
        hires = add("KSampler", "Hires", seed=p, steps=12, cfg=7.0, sampler_name="euler", scheduler="normal",
                    denoise=0.5, model=model, positive=positive, negative=negative, latent_image=bigger)
        image = add("VAEDecode", "VAE Decode", samples=hires, vae=[ckpt[0], 2])
        for step in range(TAIL - 6):
            kind = step % 3
            image = (add("ImageScaleBy", "Scale", image=image, upscale_method="lanczos", scale_by=1.0) if kind == 0 else
                     add("ImageBlur", "Blur", image=image, blur_radius=1, sigma=0.5) if kind == 1 else
                     add("ImageInvert", "Invert", image=image))
        add("SaveImage", "Save Image", images=image, filename_prefix=f"bench/p{p}")
    while len(nodes) < 200:
        add("PrimitiveString", "Note", value="unused")
    return nodes


def servers() -> list[dict]:
    full = load_object_info()
    full.update(copy.deepcopy(EXTRA))
    full["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = [f"model_{p}.safetensors" for p in range(PIPELINES)]
    full["LoraLoader"]["input"]["required"]["lora_name"][0] = [
        f"lora_{p}_{i}.safetensors" for p in range(PIPELINES) for i in range(LORAS)]
    partial = copy.deepcopy(full)
    del partial["LatentUpscale"]
    partial["LoraLoader"]["input"]["required"]["lora_name"][0] = partial["LoraLoader"]["input"]["required"]["lora_name"][0][:7]
    return [full, partial]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    runs = parser.parse_args().runs
    body = json.dumps(graph(), indent=2).encode()
    infos = servers()
    times: dict[str, list[float]] = {"parse": [], "find_bindings": [], "vet": [], "total": []}
    for _ in range(runs + 10):
        start = time.perf_counter()
        parsed = json.loads(body)
        parsed_at = time.perf_counter()
        bindings = find_bindings(parsed, infos[0])
        bound_at = time.perf_counter()
        verdict = vet(parsed, infos)
        end = time.perf_counter()
        for name, value in (("parse", parsed_at - start), ("find_bindings", bound_at - parsed_at),
                            ("vet", end - bound_at), ("total", end - start)):
            times[name].append(value)
    assert verdict.runnable == ("server 1",), verdict.refusals
    print(f"workflow: {len(parsed)} nodes, {len(body)} bytes, {len(bindings.samplers)} samplers, "
          f"{len(bindings.loras)} LoRAs, {len(bindings.bindings)} bindings; runnable on {', '.join(verdict.runnable)}")
    for name, values in times.items():
        ordered = sorted(values[10:])  # the first runs warm the caches
        p50, p95 = statistics.median(ordered), ordered[int(0.95 * len(ordered)) - 1]
        print(f"{name}: p50 {p50 * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms ({len(ordered)} runs)")


if __name__ == "__main__":
    main()
