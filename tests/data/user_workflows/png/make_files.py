"""Writes txt2img.png and txt2img.webp beside this file: small images carrying the txt2img workflow
(tests/data/user_workflows/ui/txt2img.json) and the API prompt it queues, embedded the way ComfyUI
0.3 does it: SaveImage adds PNG text chunks "prompt" and "workflow" (JSON, before the image data);
SaveAnimatedWEBP puts "prompt:<json>" in EXIF tag 0x0110 and "workflow:<json>" in 0x010F.

Run `.venv/bin/python tests/data/user_workflows/png/make_files.py` after changing that workflow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT))

from comfy.ui_format import to_api  # noqa: E402
from tests.fakes.comfy_nodes import load_object_info  # noqa: E402


def frames() -> list[Image.Image]:
    first = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    return [first, first.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]


def png(prompt: dict, workflow: dict) -> bytes:
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    info.add_text("workflow", json.dumps(workflow))
    path = HERE / "txt2img.png"
    frames()[0].save(path, pnginfo=info, compress_level=4)
    return path.read_bytes()


def webp(prompt: dict, workflow: dict) -> bytes:
    images = frames()
    exif = images[0].getexif()
    exif[0x0110] = "prompt:{}".format(json.dumps(prompt))
    exif[0x010F] = "workflow:{}".format(json.dumps(workflow))
    path = HERE / "txt2img.webp"
    images[0].save(path, save_all=True, duration=100, append_images=images[1:], exif=exif, lossless=False,
                   quality=80, method=4)
    return path.read_bytes()


if __name__ == "__main__":
    workflow = json.loads((ROOT / "tests/data/user_workflows/ui/txt2img.json").read_text())
    prompt = to_api(workflow, load_object_info())
    png(prompt, workflow)
    webp(prompt, workflow)
