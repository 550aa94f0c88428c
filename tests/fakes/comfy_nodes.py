"""Node layer of the fake ComfyUI: /object_info schema, prompt validation and node simulations.

Everything here mirrors ComfyUI 0.3.64 as recorded in the transcripts (see tests/fakes/comfyui.py).
The server part (HTTP, websocket, queue, executor) lives in ``comfyui.py``; it hands each node a
context object (``NodeContext`` there) that provides progress reporting, file storage and delays.

IMAGE values are ``Images`` (a list of RGB PIL images), MASK values lists of "L" images, LATENT values
dicts; model objects are small dicts. Node functions never mutate their inputs (outputs are cached and
shared between nodes, exactly like ComfyUI's tensors).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import posixpath
import random
import re
import struct
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# The directories of the recorded server (also in system_stats.json); they only appear in messages.
DIRS = {"input": "/srv/data/input", "output": "/srv/data/output", "temp": "/srv/data/temp"}

SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".apng", ".jfif")
# Node work on more pixels than this runs in a thread so the event loop stays responsive.
THREAD_PIXELS = 256 * 256 * 4


@cache
def _load_json(name: str) -> Any:
    return json.loads((DATA_DIR / name).read_text())


def load_object_info() -> dict[str, Any]:
    """A private deep copy of the trimmed, recorded /object_info."""
    return copy.deepcopy(_load_json("object_info.json"))


def load_system_stats() -> dict[str, Any]:
    return copy.deepcopy(_load_json("system_stats.json"))


@cache
def load_sample(name: str) -> bytes:
    return (DATA_DIR / "samples" / name).read_bytes()


# --------------------------------------------------------------------------------------------------
# errors raised while executing nodes
# --------------------------------------------------------------------------------------------------

# The first frames of every recorded execution_error traceback (ComfyUI's executor).
TB_EXECUTOR = [
    '  File "/srv/ComfyUI/execution.py", line 496, in execute\n    output_data, output_ui, has_subgraph, '
    "has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, "
    "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
    '  File "/srv/ComfyUI/execution.py", line 315, in get_output_data\n    return_values = await '
    "_async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, allow_interrupt=True, "
    "execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
    '  File "/srv/ComfyUI/execution.py", line 289, in _async_map_node_over_list\n'
    "    await process_inputs(input_dict, i)\n",
    '  File "/srv/ComfyUI/execution.py", line 277, in process_inputs\n'
    "    result = f(**inputs)\n             ^^^^^^^^^^^\n",
]
TB_LOADIMAGE = TB_EXECUTOR + [
    '  File "/srv/ComfyUI/nodes.py", line 1647, in load_image\n    img = node_helpers.pillow(Image.open, image_path)\n'
    "          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    '  File "/srv/ComfyUI/node_helpers.py", line 31, in pillow\n    x = fn(arg)\n        ^^^^^^^\n',
    '  File "/srv/venv/lib/python3.11/site-packages/PIL/Image.py", line 3730, in open\n'
    "    raise UnidentifiedImageError(msg)\n",
]
TB_SAVEVIDEO = TB_EXECUTOR + [
    '  File "/srv/ComfyUI/comfy_api/internal/__init__.py", line 149, in wrapped_func\n'
    "    return method(locked_class, **inputs)\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    '  File "/srv/ComfyUI/comfy_api/latest/_io.py", line 1270, in EXECUTE_NORMALIZED\n'
    "    to_return = cls.execute(*args, **kwargs)\n                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    '  File "/srv/ComfyUI/comfy_extras/nodes_video.py", line 109, in execute\n    video.save_to(\n',
    '  File "/srv/ComfyUI/comfy_api/latest/_input_impl/video_types.py", line 292, in save_to\n'
    "    packet = video_stream.encode(frame)\n             ^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    '  File "av/error.py", line 354, in av.error.err_check\n'
    "    raise cls(code, message, filename, log)\n    ^^^^^^^^^^^\n",
]
H264_ERROR = "[Errno 542398533] Generic error in an external library: 'avcodec_open2(\"libx264\", {})'"


class NodeError(Exception):
    """An intentional, ComfyUI-like failure of a node (becomes ``execution_error``)."""

    def __init__(self, exception_type: str, message: str, traceback: list[str] | None = None):
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.traceback = traceback if traceback is not None else list(TB_EXECUTOR)


class Interrupted(Exception):
    """ComfyUI's InterruptProcessingException."""


def full_type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    if module in (None, "builtins"):
        return cls.__qualname__
    if module == "PIL.Image" and cls is UnidentifiedImageError:
        module = "PIL"
    return f"{module}.{cls.__qualname__}"


def format_value(x: Any) -> Any:
    """ComfyUI's format_value for execution_error.current_inputs."""
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


# --------------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------------


class Images(list):
    """An IMAGE batch: a list of RGB PIL images."""

    def __str__(self) -> str:
        size = f"{self[0].width}x{self[0].height}" if self else "empty"
        return f"<fake IMAGE tensor: batch of {len(self)}, {size}>"

    __repr__ = __str__


@dataclass
class FakeVideo:
    images: Images
    fps: float
    audio: Any = None
    _id: int = field(default_factory=lambda: random.getrandbits(40))

    def __str__(self) -> str:
        return f"<comfy_api.latest._input_impl.video_types.VideoFromComponents object at 0x{self._id:x}>"

    __repr__ = __str__


def npix(images: list[Image.Image]) -> int:
    return sum(im.width * im.height for im in images)


RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _resize(im: Image.Image, w: int, h: int, method: str = "bilinear", crop: str = "disabled") -> Image.Image:
    w, h = max(1, int(w)), max(1, int(h))
    if crop == "center":
        old_aspect = im.width / im.height
        new_aspect = w / h
        if old_aspect > new_aspect:
            cw = round(im.height * new_aspect)
            x = (im.width - cw) // 2
            im = im.crop((x, 0, x + cw, im.height))
        elif old_aspect < new_aspect:
            ch = round(im.width / new_aspect)
            y = (im.height - ch) // 2
            im = im.crop((0, y, im.width, y + ch))
    if (im.width, im.height) == (w, h):
        return im
    return im.resize((w, h), RESAMPLE.get(method, Image.Resampling.BILINEAR))


def encode_png(im: Image.Image, texts: dict[str, str] | None = None, compress_level: int = 4) -> bytes:
    info = None
    if texts:
        info = PngInfo()
        for k, v in texts.items():
            info.add_text(k, v)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def encode_preview(kind: str, im: Image.Image, max_size: int | None) -> bytes:
    """A preview image as ComfyUI's send_image encodes it (JPEG quality 95, PNG compress_level 1)."""
    if max_size is not None and (im.width > max_size or im.height > max_size):
        im = im.copy()
        im.thumbnail((max_size, max_size))
    buf = io.BytesIO()
    if kind == "JPEG":
        im.convert("RGB").save(buf, format="JPEG", quality=95)
    else:
        im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------------


def norm_subfolder(sub: str) -> str:
    sub = posixpath.normpath(sub) if sub else ""
    return "" if sub == "." else sub


def inside(base: str, path: str) -> bool:
    """os.path.commonpath((base, abspath(path))) == base, for POSIX paths."""
    path = posixpath.normpath(path)
    return path == base or path.startswith(base + "/")


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """folder_paths.annotated_filepath: 'x.png [output]' -> ('x.png', 'output')."""
    for t in ("output", "input", "temp"):
        if name.endswith(f" [{t}]"):
            return name[: -len(t) - 3], t
    return name, None


def split_annotated(name: str, default_type: str = "input") -> tuple[str, str, str]:
    """An annotated image name as LoadImage uses it -> (type, subfolder, filename)."""
    name, t = annotated_filepath(name)
    t = t or default_type
    return t, norm_subfolder(posixpath.dirname(name)), posixpath.basename(name)


def compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for k, v in (
        ("%width%", width),
        ("%height%", height),
        ("%year%", now.tm_year),
        ("%month%", f"{now.tm_mon:02}"),
        ("%day%", f"{now.tm_mday:02}"),
        ("%hour%", f"{now.tm_hour:02}"),
        ("%minute%", f"{now.tm_min:02}"),
        ("%second%", f"{now.tm_sec:02}"),
    ):
        prefix = prefix.replace(k, str(v))
    return prefix


def split_prefix(filename_prefix: str, type_: str, width: int = 0, height: int = 0) -> tuple[str, str]:
    """folder_paths.get_save_image_path without the counter -> (subfolder, filename)."""
    if "%" in filename_prefix:
        filename_prefix = compute_vars(filename_prefix, width, height)
    normed = posixpath.normpath(filename_prefix)
    subfolder = posixpath.dirname(normed)
    filename = posixpath.basename(normed)
    base = DIRS[type_]
    full = posixpath.join(base, subfolder)
    if not inside(base, full):
        raise NodeError(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {posixpath.normpath(full)}\n         output_dir: {base}"
            f"\n         commonpath: {posixpath.commonpath((base, posixpath.normpath(full)))}",
        )
    return norm_subfolder(subfolder), filename


def counter_of(prefix: str, filename: str) -> int:
    """ComfyUI's map_filename: the counter of ``filename`` if it belongs to ``prefix``, else 0."""
    n = len(prefix)
    if filename[: n + 1] != prefix + "_":
        return 0
    try:
        return int(filename[n + 1 :].split("_")[0])
    except ValueError:
        return 0


# --------------------------------------------------------------------------------------------------
# validation (mirrors execution.validate_prompt / validate_inputs of ComfyUI 0.3.64)
# --------------------------------------------------------------------------------------------------


def is_link(obj: Any) -> bool:
    return (
        isinstance(obj, list)
        and len(obj) == 2
        and isinstance(obj[0], str)
        and isinstance(obj[1], (int, float))
        and not isinstance(obj[1], bool)
    )


def get_input_info(class_info: dict, name: str) -> tuple[Any, str | None, dict | None]:
    inputs = class_info.get("input", {})
    for category in ("required", "optional", "hidden"):
        if name in inputs.get(category, {}):
            info = inputs[category][name]
            if not isinstance(info, (list, tuple)):  # hidden entries: "PROMPT"
                return info, category, {}
            extra = info[1] if len(info) > 1 else {}
            return info[0], category, extra
    return None, None, None


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    if not received_type != input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in wanted:
        return True
    return len(received & wanted) > 0


class Validator:
    def __init__(self, object_info: dict[str, Any], file_exists: Callable[[str, str, str], bool]):
        self.object_info = object_info
        self.file_exists = file_exists

    # the VALIDATE_INPUTS functions of the simulated nodes: class -> (argument names, function)
    def _validate_function(self, class_type: str) -> tuple[list[str], Callable[..., Any]] | None:
        if class_type == "LoadImage":
            def load_image_validate(image: Any = _MISSING) -> Any:
                if image is _MISSING:
                    raise TypeError("LoadImage.VALIDATE_INPUTS() missing 1 required positional argument: "
                                    "'image'")
                if not isinstance(image, str):
                    raise AttributeError(f"'{type(image).__name__}' object has no attribute 'endswith'")
                if not self.file_exists(*split_annotated(image)):
                    return f"Invalid image file: {image}"
                return True

            return ["image"], load_image_validate
        return None

    def validate_prompt(self, prompt: Any, partial: Any = None) -> tuple[bool, dict | None, list[str], dict]:
        """Returns (ok, error, outputs, node_errors). Raises only where ComfyUI raises (-> HTTP 500)."""
        outputs: list[str] = []
        for x in prompt:
            if "class_type" not in prompt[x]:
                message = "Cannot execute because a node is missing the class_type property."
                return False, _err("invalid_prompt", message, f"Node ID '#{x}'"), [], {}
            class_type = prompt[x]["class_type"]
            class_ = self.object_info.get(class_type, None)
            if class_ is None:
                return False, _err("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                   f"Node ID '#{x}'"), [], {}
            if class_.get("output_node") is True:
                if partial is None or x in partial:
                    outputs.append(x)
        if not outputs:
            return False, _err("prompt_no_outputs", "Prompt has no outputs", ""), [], {}

        good_outputs: list[str] = []
        errors: list[tuple[str, list]] = []
        node_errors: dict[str, dict] = {}
        validated: dict[str, tuple] = {}
        for o in outputs:
            try:
                valid, reasons, _ = self.validate_inputs(prompt, o, validated, set())
            except Exception as ex:  # noqa: BLE001 - mirrors ComfyUI
                valid = False
                reasons = [{
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {"exception_type": full_type_name(ex), "traceback": _tb(ex)},
                }]
                validated[o] = (False, reasons, o)
            if valid is True:
                good_outputs.append(o)
            else:
                errors.append((o, reasons))
                for node_id, result in validated.items():
                    if result[0] is not True and len(result[1]) > 0:
                        if node_id not in node_errors:
                            node_errors[node_id] = {
                                "errors": result[1],
                                "dependent_outputs": [],
                                "class_type": prompt[node_id]["class_type"],
                            }
                        node_errors[node_id]["dependent_outputs"].append(o)
        if not good_outputs:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in errors for e in errs)
            error = _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
            return False, error, [], node_errors
        return True, None, good_outputs, node_errors

    def validate_inputs(self, prompt: dict, item: str, validated: dict, visiting: set) -> tuple:
        if item in validated:
            return validated[item]
        if item in visiting:
            raise RecursionError("maximum recursion depth exceeded")
        visiting.add(item)
        inputs = prompt[item]["inputs"]
        class_type = prompt[item]["class_type"]
        class_info = self.object_info[class_type]
        declared = class_info.get("input", {})
        valid_inputs = list(declared.get("required", {})) + [
            k for k in declared.get("optional", {}) if k not in declared.get("required", {})
        ]
        vf = self._validate_function(class_type)
        vf_inputs = vf[0] if vf else []
        errors: list[dict] = []
        valid = True
        for x in valid_inputs:
            input_type, category, extra = get_input_info(class_info, x)
            assert extra is not None
            if x not in inputs:
                if category == "required":
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": f"{x}", "extra_info": {"input_name": x}})
                continue
            val = inputs[x]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({"type": "bad_linked_input",
                                   "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                   "details": f"{x}",
                                   "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                received_type = self.object_info[o_class_type]["output"][val[1]]
                if not validate_node_input(received_type, input_type):
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                        "extra_info": {"input_name": x, "input_config": info, "received_type": received_type,
                                       "linked_node": val},
                    })
                    continue
                try:
                    r = self.validate_inputs(prompt, o_id, validated, visiting)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:  # noqa: BLE001 - mirrors ComfyUI
                    valid = False
                    validated[o_id] = (False, [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": x, "input_config": info, "exception_message": str(ex),
                                       "exception_type": full_type_name(ex), "traceback": _tb(ex),
                                       "linked_node": val},
                    }], o_id)
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    if input_type == "INT":
                        val = int(val)
                        inputs[x] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[x] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[x] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[x] = val
                except Exception as ex:  # noqa: BLE001 - mirrors ComfyUI
                    errors.append({
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val,
                                       "exception_message": str(ex)},
                    })
                    continue
                if x not in vf_inputs:
                    if "min" in extra and val < extra["min"]:
                        errors.append({"type": "value_smaller_than_min",
                                       "message": "Value {} smaller than min of {}".format(val, extra["min"]),
                                       "details": f"{x}",
                                       "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                        continue
                    if "max" in extra and val > extra["max"]:
                        errors.append({"type": "value_bigger_than_max",
                                       "message": "Value {} bigger than max of {}".format(val, extra["max"]),
                                       "details": f"{x}",
                                       "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                        continue
                    if isinstance(input_type, list) or input_type == "COMBO":
                        options = extra.get("options", []) if input_type == "COMBO" else input_type
                        if val not in options:
                            input_config: Any = info
                            if len(options) > 20:
                                list_info = f"(list of length {len(options)})"
                                input_config = None
                            else:
                                list_info = str(options)
                            errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                           "details": f"{x}: '{val}' not in {list_info}",
                                           "extra_info": {"input_name": x, "input_config": input_config,
                                                          "received_value": val}})
                            continue
        if vf is not None:
            names, fn = vf
            filtered = {x: inputs[x] for x in names if x in inputs and not isinstance(inputs[x], list)}
            ret = fn(**filtered)
            for x in filtered:
                if ret is not True:
                    details = f"{x}" + (f" - {ret}" if ret is not False else "")
                    errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                   "details": details, "extra_info": {"input_name": x}})
        visiting.discard(item)
        result = (False, errors, item) if errors or valid is not True else (True, [], item)
        validated[item] = result
        return result


_MISSING = object()


def _err(type_: str, message: str, details: str) -> dict:
    return {"type": type_, "message": message, "details": details, "extra_info": {}}


def _tb(ex: BaseException) -> list[str]:
    return traceback.format_tb(ex.__traceback__)


# --------------------------------------------------------------------------------------------------
# node simulations
# --------------------------------------------------------------------------------------------------

NodeFn = Callable[..., Awaitable[tuple[tuple, dict | None]]]


@dataclass
class NodeSpec:
    fn: NodeFn
    # progress nodes spread their delay over their steps themselves; others sleep it after running
    progress: bool = False
    # IS_CHANGED: ctx-less function of the node's literal inputs -> value (part of the cache key)
    is_changed: Callable[..., Any] | None = None


NODES: dict[str, NodeSpec] = {}


def node(name: str, *, progress: bool = False) -> Callable[[NodeFn], NodeFn]:
    def register(fn: NodeFn) -> NodeFn:
        NODES[name] = NodeSpec(fn, progress=progress)
        return fn

    return register


def _rgb(color: int) -> tuple[int, int, int]:
    return (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF


@node("EmptyImage")
async def empty_image(ctx, width, height, batch_size=1, color=0):
    im = Image.new("RGB", (width, height), _rgb(color))
    return (Images([im] * batch_size),), None


@node("LoadImage")
async def load_image(ctx, image):
    type_, sub, name = split_annotated(image)
    data = ctx.read_file(type_, sub, name)
    path = posixpath.join(DIRS[type_], sub, name)
    if data is None:
        raise NodeError("FileNotFoundError", f"[Errno 2] No such file or directory: '{path}'")

    def decode() -> tuple:
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except UnidentifiedImageError:
            message = f"cannot identify image file '{path}'"
            raise NodeError("PIL.UnidentifiedImageError", message, TB_LOADIMAGE) from None
        except (OSError, ValueError, SyntaxError) as ex:  # truncated or otherwise broken image data
            raise NodeError(full_type_name(ex), str(ex), TB_LOADIMAGE) from None
        frames, masks = Images(), []
        n = getattr(img, "n_frames", 1)
        for i in range(n):
            if n > 1:
                img.seek(i)
            frame = ImageOps.exif_transpose(img) if i == 0 else img
            if frames and frame.size != frames[0].size:
                continue
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            if "A" in frame.getbands():
                masks.append(ImageOps.invert(frame.getchannel("A")))
            elif frame.mode == "P" and "transparency" in frame.info:
                masks.append(ImageOps.invert(frame.convert("RGBA").getchannel("A")))
            else:
                masks.append(Image.new("L", (64, 64), 0))
            frames.append(frame.convert("RGB"))
        return frames, masks

    frames, masks = await ctx.compute(decode, pixels=len(data) * 4)
    return (frames, masks), None


@node("LoadImageMask")
async def load_image_mask(ctx, image, channel):
    type_, sub, name = split_annotated(image)
    data = ctx.read_file(type_, sub, name)
    if data is None:
        raise NodeError("FileNotFoundError", f"[Errno 2] No such file or directory: '{name}'")

    def decode() -> list:
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        band = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}[channel]
        rgba = img.convert("RGBA")
        mask = rgba.getchannel(band)
        return [ImageOps.invert(mask) if band == "A" else mask]

    return (await ctx.compute(decode, pixels=len(data) * 4),), None


@node("ImageCompositeMasked")
async def image_composite_masked(ctx, destination, source, x, y, resize_source, mask=None):
    out = Images()
    for index, frame in enumerate(destination):
        top = source[min(index, len(source) - 1)]
        if resize_source:
            top = top.resize(frame.size)
        layer = mask[min(index, len(mask) - 1)].resize(top.size) if mask else Image.new("L", top.size, 255)
        composed = frame.copy()
        composed.paste(top, (x, y), layer)
        out.append(composed)
    return (out,), None


@node("ImageScaleBy")
async def image_scale_by(ctx, image, upscale_method, scale_by):
    def run() -> Images:
        return Images(_resize(im, round(im.width * scale_by), round(im.height * scale_by), upscale_method)
                      for im in image)

    return (await ctx.compute(run, pixels=npix(image) * max(1.0, scale_by) ** 2),), None


@node("ImageScale")
async def image_scale(ctx, image, upscale_method, width, height, crop):
    def run() -> Images:
        out = Images()
        for im in image:
            w, h = width, height
            if w == 0 and h == 0:
                out.append(im)
                continue
            if w == 0:
                w = max(1, round(im.width * h / im.height))
            elif h == 0:
                h = max(1, round(im.height * w / im.width))
            out.append(_resize(im, w, h, upscale_method, crop))
        return out

    return (await ctx.compute(run, pixels=npix(image) + width * height * len(image)),), None


@node("ImageInvert")
async def image_invert(ctx, image):
    return (await ctx.compute(lambda: Images(ImageOps.invert(im) for im in image), pixels=npix(image)),), None


@node("ImageBlur")
async def image_blur(ctx, image, blur_radius, sigma):
    if blur_radius == 0:
        return (image,), None
    flt = ImageFilter.GaussianBlur(radius=min(float(sigma), float(blur_radius)))
    return (await ctx.compute(lambda: Images(im.filter(flt) for im in image), pixels=npix(image)),), None


@node("RepeatImageBatch")
async def repeat_image_batch(ctx, image, amount):
    return (Images(list(image) * amount),), None


@node("ImageBatch")
async def image_batch(ctx, image1, image2):
    size = image1[0].size if image1 else None

    def run() -> Images:
        second = [im if im.size == size else _resize(im, size[0], size[1], "bilinear", "center") for im in image2]
        return Images(list(image1) + second)

    return (await ctx.compute(run, pixels=npix(image2)),), None


@node("ImageAddNoise")
async def image_add_noise(ctx, image, seed, strength):
    def run() -> Images:
        rng = random.Random(seed)
        out = Images()
        for im in image:
            noise = Image.frombytes("RGB", im.size, rng.randbytes(im.width * im.height * 3))
            out.append(Image.blend(im, noise, max(0.0, min(1.0, strength)) * 0.5))
        return out

    return (await ctx.compute(run, pixels=npix(image)),), None


def _png_texts(ctx) -> dict[str, str]:
    texts = {"prompt": ctx.png_prompt_json()}
    extra = ctx.extra_pnginfo
    if isinstance(extra, dict):
        for k, v in extra.items():
            texts[str(k)] = json.dumps(v)
    return texts


async def _save_images(ctx, images, filename_prefix, type_, compress_level, raw: bytes | None):
    w, h = (images[0].width, images[0].height) if images else (0, 0)
    sub, name = split_prefix(filename_prefix, type_, w, h)
    counter = ctx.next_counter(type_, sub, name)
    texts = _png_texts(ctx)
    results = []
    for batch_number, im in enumerate(images):
        file = f"{name.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        data = raw if raw is not None else await ctx.compute(encode_png, im, texts, compress_level, pixels=npix([im]))
        ctx.save_file(type_, sub, file, data)
        results.append({"filename": file, "subfolder": sub, "type": type_})
        counter += 1
    return (), {"images": results}


@node("SaveImage")
async def save_image(ctx, images, filename_prefix="ComfyUI"):
    return await _save_images(ctx, images, filename_prefix, "output", 4, ctx.output_bytes)


@node("PreviewImage")
async def preview_image(ctx, images):
    suffix = ctx.node_object.setdefault(
        "prefix_append", "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    )
    return await _save_images(ctx, images, "ComfyUI" + suffix, "temp", 1, None)


@node("SaveImageWebsocket", progress=True)
async def save_image_websocket(ctx, images):
    total = len(images)
    for step, im in enumerate(images):
        await ctx.sleep(ctx.delay / max(1, total))
        await ctx.progress(step, total, ("PNG", im, None))
    return (), None


@node("GetImageSize")
async def get_image_size(ctx, image):
    width, height, batch = image[0].width, image[0].height, len(image)
    ctx.send_text(f"width: {width}, height: {height}\n batch size: {batch}")
    return (width, height, batch), None


@node("StringConcatenate")
async def string_concatenate(ctx, string_a, string_b, delimiter=""):
    return (delimiter.join([string_a, string_b]),), None


@node("PreviewAny")
async def preview_any(ctx, source=None):
    value = "None"
    if isinstance(source, str):
        value = source
    elif isinstance(source, (int, float, bool)):
        value = str(source)
    elif source is not None:
        try:
            value = json.dumps(source)
        except Exception:  # noqa: BLE001
            value = str(source)
    return (), {"text": [value]}


for _name in ("PrimitiveInt", "PrimitiveFloat", "PrimitiveString"):

    async def _primitive(ctx, value):
        return (value,), None

    NODES[_name] = NodeSpec(_primitive)


@node("CreateVideo")
async def create_video(ctx, images, fps, audio=None):
    return (FakeVideo(images, fps, audio),), None


def _video_result(sub: str, file: str) -> dict:
    return {"images": [{"filename": file, "subfolder": sub, "type": "output"}], "animated": [True]}


# The fake's MP4: the recorded sample, then a top-level "free" box (which players skip) holding the frames,
# zlib-packed, padded to about what H.264 would spend on them, so LoadVideo gives back the frames saved and a
# larger or longer video is a larger file.
FRAMES_MAGIC = b"fake-comfy-frames"
MP4_BYTES_PER_PIXEL = 0.1  # per pixel of every frame


def encode_mp4(images: list[Image.Image], fps: float) -> bytes:
    w, h = (images[0].width, images[0].height) if images else (0, 0)
    packed = zlib.compress(b"".join(im.convert("RGB").tobytes() for im in images), 1)
    header = json.dumps({"fps": fps, "width": w, "height": h, "frames": len(images), "packed": len(packed)})
    payload = FRAMES_MAGIC + header.encode() + b"\n" + packed
    payload += bytes(max(0, int(npix(images) * MP4_BYTES_PER_PIXEL) - len(payload)))
    return load_sample("video_00001_.mp4") + struct.pack(">I", 8 + len(payload)) + b"free" + payload


def decode_mp4(data: bytes) -> tuple[Images, float] | None:
    """The frames and frame rate a fake MP4 holds; None for any other file."""
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I", data[at:at + 4])[0], data[at + 4:at + 8]
        if size < 8:
            return None
        body = data[at + 8:at + size]
        if kind == b"free" and body.startswith(FRAMES_MAGIC):
            header, _, rest = body[len(FRAMES_MAGIC):].partition(b"\n")
            meta = json.loads(header)
            raw, frame = zlib.decompress(rest[:meta["packed"]]), meta["width"] * meta["height"] * 3
            return Images(Image.frombytes("RGB", (meta["width"], meta["height"]), raw[i:i + frame])
                          for i in range(0, len(raw), frame)), float(meta["fps"])
        at += size
    return None


@node("SaveVideo")
async def save_video(ctx, video, filename_prefix, format="auto", codec="auto"):
    w, h = (video.images[0].width, video.images[0].height) if video.images else (0, 0)
    sub, name = split_prefix(filename_prefix, "output", w, h)
    counter = ctx.next_counter("output", sub, name)
    if codec in ("auto", "h264") and format in ("auto", "mp4") and (w % 2 or h % 2):
        raise NodeError("av.error.ExternalError", H264_ERROR, TB_SAVEVIDEO)
    file = f"{name}_{counter:05}_.mp4"
    ctx.save_file("output", sub, file, await ctx.compute(encode_mp4, video.images, video.fps,
                                                         pixels=npix(video.images)))
    return (), _video_result(sub, file)


@node("LoadVideo")
async def load_video(ctx, file):
    """A video of the input folder: the frames a fake MP4 holds; eight grey frames of any other video."""
    t, sub, name = split_annotated(file)
    data = ctx.read_file(t, sub, name)
    if data is None:
        raise NodeError("FileNotFoundError", f"[Errno 2] No such file or directory: '{DIRS[t]}/{name}'")
    decoded = await ctx.compute(decode_mp4, data, pixels=len(data))
    images, fps = decoded if decoded is not None else (Images(Image.new("RGB", (64, 64), (128, 128, 128))
                                                              for _ in range(8)), 8.0)
    return (FakeVideo(images, fps),), None


@node("GetVideoComponents")
async def get_video_components(ctx, video):
    return (video.images, None, float(video.fps)), None


@node("SaveWEBM")
async def save_webm(ctx, images, filename_prefix, codec, fps, crf):
    w, h = (images[0].width, images[0].height) if images else (0, 0)
    sub, name = split_prefix(filename_prefix, "output", w, h)
    file = f"{name}_{ctx.next_counter('output', sub, name):05}_.webm"
    ctx.save_file("output", sub, file, load_sample("webm_00001_.webm"))
    return (), _video_result(sub, file)


@node("SaveAnimatedWEBP")
async def save_animated_webp(ctx, images, filename_prefix, fps, lossless, quality, method):
    sub, name = split_prefix(filename_prefix, "output", images[0].width, images[0].height)
    file = f"{name}_{ctx.next_counter('output', sub, name):05}_.webp"
    prompt_json = ctx.png_prompt_json()

    def run() -> bytes:
        exif = images[0].getexif()
        exif[0x0110] = f"prompt:{prompt_json}"
        buf = io.BytesIO()
        images[0].save(buf, format="WEBP", save_all=True, append_images=images[1:], duration=int(1000.0 / fps),
                       exif=exif, lossless=lossless, quality=quality,
                       method={"default": 4, "fastest": 0, "slowest": 6}.get(method, 4))
        return buf.getvalue()

    ctx.save_file("output", sub, file, await ctx.compute(run, pixels=npix(images) * 4))
    return (), {"images": [{"filename": file, "subfolder": sub, "type": "output"}], "animated": [len(images) != 1]}


@node("SaveAnimatedPNG")
async def save_animated_png(ctx, images, filename_prefix, fps, compress_level):
    sub, name = split_prefix(filename_prefix, "output", images[0].width, images[0].height)
    file = f"{name}_{ctx.next_counter('output', sub, name):05}_.png"
    prompt_json = ctx.png_prompt_json()

    def run() -> bytes:
        info = PngInfo()
        info.add(b"comf", b"prompt\0" + prompt_json.encode("latin-1", "replace"), after_idat=True)
        buf = io.BytesIO()
        images[0].save(buf, format="PNG", pnginfo=info, compress_level=compress_level, save_all=True,
                       duration=int(1000.0 / fps), append_images=images[1:])
        return buf.getvalue()

    ctx.save_file("output", sub, file, await ctx.compute(run, pixels=npix(images) * 2))
    return (), {"images": [{"filename": file, "subfolder": sub, "type": "output"}], "animated": [True]}


# ---- model nodes (need the fake's ``models`` knob for validation) -------------------------------


@node("CheckpointLoaderSimple")
async def checkpoint_loader(ctx, ckpt_name):
    return ({"type": "MODEL", "name": ckpt_name}, {"type": "CLIP", "name": ckpt_name},
            {"type": "VAE", "name": ckpt_name}), None


@node("ImageOnlyCheckpointLoader")
async def image_only_checkpoint_loader(ctx, ckpt_name):
    return ({"type": "MODEL", "name": ckpt_name}, {"type": "CLIP_VISION", "name": ckpt_name},
            {"type": "VAE", "name": ckpt_name}), None


@node("LoraLoader")
async def lora_loader(ctx, model, clip, lora_name, strength_model, strength_clip):
    def applied(part: dict, strength: float) -> dict:
        return {**part, "loras": [*part.get("loras", []), (lora_name, strength)]}

    return (applied(model, strength_model), applied(clip, strength_clip)), None


@node("CLIPTextEncode")
async def clip_text_encode(ctx, text, clip):
    return ([{"text": text, "clip": clip["name"]}],), None


@node("EmptyLatentImage")
async def empty_latent_image(ctx, width, height, batch_size=1):
    return ({"width": width, "height": height, "batch": batch_size, "seed": None},), None


@node("VideoLinearCFGGuidance")
async def video_linear_cfg_guidance(ctx, model, min_cfg):
    return ({**model, "min_cfg": min_cfg},), None


@node("SVD_img2vid_Conditioning")
async def svd_img2vid_conditioning(ctx, clip_vision, init_image, vae, width, height, video_frames,
                                   motion_bucket_id, fps, augmentation_level):
    cond = [{"svd": True, "motion_bucket_id": motion_bucket_id, "fps": fps}]
    return (cond, cond, {"width": width, "height": height, "batch": video_frames, "seed": None}), None


@node("KSampler", progress=True)
async def ksampler(ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                   denoise=1.0):
    lw, lh = max(1, latent_image["width"] // 8), max(1, latent_image["height"] // 8)
    for step in range(1, steps + 1):
        await ctx.sleep(ctx.delay / steps)
        preview = None
        if ctx.sampler_previews:
            shade = int(255 * step / steps)
            preview = ("JPEG", Image.new("RGB", (lw, lh), (shade, (seed + step) % 256, 255 - shade)), 512)
        await ctx.progress(step, steps, preview)
    return ({**latent_image, "seed": seed, "steps": steps, "cfg": cfg, "sampler": sampler_name},), None


@node("ImagePadForOutpaint")
async def image_pad_for_outpaint(ctx, image, left, top, right, bottom, feathering=40):
    out = Images()
    for frame in image:  # the new border is grey, as ComfyUI pads with 0.5
        padded = Image.new("RGB", (frame.width + left + right, frame.height + top + bottom), (128, 128, 128))
        padded.paste(frame, (left, top))
        out.append(padded)
    first = out[0]
    return (out, {"mask": (first.width, first.height), "inner": (left, top, left + image[0].width,
                                                                  top + image[0].height)}), None


@node("VAEEncodeForInpaint")
async def vae_encode_for_inpaint(ctx, pixels, vae, mask, grow_mask_by=6):
    first = pixels[0]
    return ({"width": first.width, "height": first.height, "batch": len(pixels), "seed": None},), None


@node("SetLatentNoiseMask")
async def set_latent_noise_mask(ctx, samples, mask):
    return ({**samples, "noise_mask": True},), None


@node("VAEEncode")
async def vae_encode(ctx, pixels, vae):
    first = pixels[0]
    return ({"width": first.width, "height": first.height, "batch": len(pixels), "seed": None},), None


@node("VAEDecode")
async def vae_decode(ctx, samples, vae):
    w, h = max(8, samples["width"] // 8 * 8), max(8, samples["height"] // 8 * 8)
    out = Images()
    for i in range(samples["batch"]):
        rng = random.Random(f"{samples.get('seed')}:{i}:{w}x{h}")
        out.append(Image.new("RGB", (w, h), (rng.randrange(256), rng.randrange(256), rng.randrange(256))))
    return (out,), None


def upscale_factor(model_name: str) -> int:
    m = re.search(r"(?:^|[^0-9a-z])(\d+)x", model_name, re.I) or re.search(r"x(\d+)", model_name, re.I)
    return max(1, int(m.group(1))) if m else 4


@node("UpscaleModelLoader")
async def upscale_model_loader(ctx, model_name):
    return ({"type": "UPSCALE_MODEL", "name": model_name, "scale": upscale_factor(model_name)},), None


@node("ImageUpscaleWithModel", progress=True)
async def image_upscale_with_model(ctx, upscale_model, image):
    scale = upscale_model["scale"]
    out = Images()
    for i, im in enumerate(image):
        await ctx.sleep(ctx.delay / max(1, len(image)))
        out.append(await ctx.compute(_resize, im, im.width * scale, im.height * scale, "bicubic",
                                     pixels=npix([im]) * scale * scale))
        await ctx.progress(i + 1, len(image), None)
    return (out,), None


# ---- ControlNet (comfy_extras/nodes_canny.py, nodes.py) -----------------------------------------


def edge_map(im: Image.Image, threshold: float) -> Image.Image:
    """White edges on black, same size: grayscale, FIND_EDGES, everything at or above ``threshold``
    (0..1) becomes an edge. Stands in for Canny's gradient + hysteresis."""
    cut = max(1, round(float(threshold) * 255))
    edges = im.convert("L").filter(ImageFilter.FIND_EDGES)
    return edges.point(lambda v: 255 if v >= cut else 0).convert("RGB")


@node("Canny")
async def canny(ctx, image, low_threshold, high_threshold):
    def run() -> Images:
        return Images(edge_map(im, low_threshold) for im in image)

    return (await ctx.compute(run, pixels=npix(image) * 2),), None


@node("ControlNetLoader")
async def controlnet_loader(ctx, control_net_name):
    return ({"type": "CONTROL_NET", "name": control_net_name},), None


def _with_control(conditioning: list, control: dict) -> list:
    out = []
    for c in conditioning:
        chain = list(c.get("controls", [])) + [control["control"]]
        out.append({**c, **control, "controls": chain})
    return out


@node("ControlNetApplyAdvanced")
async def controlnet_apply_advanced(ctx, positive, negative, control_net, image, strength, start_percent,
                                    end_percent, vae=None):
    if strength == 0:  # ComfyUI returns the conditioning unchanged
        return (positive, negative), None
    control = {"control": control_net["name"], "control_strength": strength,
               "control_percent": (start_percent, end_percent), "control_size": (image[0].width, image[0].height)}
    return (_with_control(positive, control), _with_control(negative, control)), None


# ---- custom preprocessor nodes (comfyui_controlnet_aux); served only when given to the fake's
# ``custom_nodes`` knob, e.g. FakeComfyUI(custom_nodes=AUX_PREPROCESSORS) --------------------------

_AUX_RESOLUTION = ["INT", {"default": 512, "min": 64, "max": 16384, "step": 64}]


def _aux_entry(name: str, display_name: str, category: str, optional: dict[str, list]) -> dict[str, Any]:
    return {
        "input": {"required": {"image": ["IMAGE"]}, "optional": {**optional, "resolution": _AUX_RESOLUTION}},
        "input_order": {"required": ["image"], "optional": [*optional, "resolution"]},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": name,
        "display_name": display_name,
        "description": "",
        "python_module": "custom_nodes.comfyui_controlnet_aux",
        "category": f"ControlNet Preprocessors/{category}",
        "output_node": False,
    }


_ENABLE = [["enable", "disable"], {"default": "enable"}]
AUX_PREPROCESSORS: dict[str, dict[str, Any]] = {
    "DepthAnythingV2Preprocessor": _aux_entry(
        "DepthAnythingV2Preprocessor", "Depth Anything V2 - Relative", "Normal and Depth Estimators",
        {"ckpt_name": [["depth_anything_v2_vitg.pth", "depth_anything_v2_vitl.pth", "depth_anything_v2_vitb.pth",
                        "depth_anything_v2_vits.pth"], {"default": "depth_anything_v2_vitl.pth"}]}),
    "OpenposePreprocessor": _aux_entry(
        "OpenposePreprocessor", "OpenPose Pose", "Faces and Poses Estimators",
        {"detect_hand": _ENABLE, "detect_body": _ENABLE, "detect_face": _ENABLE}),
    "LineArtPreprocessor": _aux_entry(
        "LineArtPreprocessor", "Realistic Lineart", "Line Extractors",
        {"coarse": [["disable", "enable"], {"default": "disable"}]}),
}


def preprocess_frame(class_type: str, im: Image.Image) -> Image.Image:
    """What a preprocessor class makes of one frame (same size): a black pose canvas, white line art on
    black, or a grayscale "depth map" for anything else."""
    lowered = class_type.lower()
    if "pose" in lowered:
        return Image.new("RGB", im.size, (0, 0, 0))
    if "line" in lowered or "edge" in lowered or "canny" in lowered:
        return edge_map(im, 0.1)
    return ImageOps.autocontrast(im.convert("L")).convert("RGB")


async def aux_preprocessor(ctx, image, **kwargs):
    """The one executor of every custom preprocessor class: image plus any optional inputs."""
    def run() -> Images:
        return Images(preprocess_frame(ctx.class_type, im) for im in image)

    return (await ctx.compute(run, pixels=npix(image) * 2),), None


# ---- video custom nodes: RIFE frame interpolation (ComfyUI-Frame-Interpolation) and AnimateDiff
# (ComfyUI-AnimateDiff-Evolved); served only when given to ``custom_nodes``, e.g.
# FakeComfyUI(custom_nodes={**FRAME_INTERPOLATION, **ANIMATEDIFF}) ----------------------------------


def _custom_entry(name: str, display_name: str, category: str, module: str, required: dict[str, list],
                  optional: dict[str, list], output: list[str]) -> dict[str, Any]:
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": output, "output_is_list": [False] * len(output), "output_name": output,
        "name": name, "display_name": display_name, "description": "", "python_module": module,
        "category": category, "output_node": False,
    }


RIFE_CHECKPOINTS = ["rife47.pth", "rife49.pth", "sudo_rife4_269.662_testV1_scale1.pth"]
FRAME_INTERPOLATION: dict[str, dict[str, Any]] = {
    "RIFE VFI": _custom_entry(
        "RIFE VFI", "RIFE VFI (recommend rife47 and rife49)", "ComfyUI-Frame-Interpolation/VFI",
        "custom_nodes.ComfyUI-Frame-Interpolation",
        {"ckpt_name": [RIFE_CHECKPOINTS, {"default": "rife47.pth"}],
         "frames": ["IMAGE"],
         "clear_cache_after_n_frames": ["INT", {"default": 10, "min": 1, "max": 1000}],
         "multiplier": ["INT", {"default": 2, "min": 1}],
         "fast_mode": ["BOOLEAN", {"default": True}],
         "ensemble": ["BOOLEAN", {"default": True}],
         "scale_factor": [[0.25, 0.5, 1.0, 2.0, 4.0], {"default": 1.0}]},
        {"optional_interpolation_states": ["INTERPOLATION_STATES"]}, ["IMAGE"]),
}
BETA_SCHEDULES = ["autoselect", "sqrt_linear (AnimateDiff)", "linear (AnimateDiff-SDXL)", "linear (HotshotXL/default)",
                  "avg(sqrt_linear,linear)", "lcm avg(sqrt_linear,linear)", "lcm", "lcm >> sqrt_linear", "use existing",
                  "sqrt", "cosine", "squaredcos_cap_v2"]
ANIMATEDIFF: dict[str, dict[str, Any]] = {
    "ADE_AnimateDiffLoaderGen1": _custom_entry(
        "ADE_AnimateDiffLoaderGen1", "AnimateDiff Loader 🎭🅐🅓①", "Animate Diff 🎭🅐🅓/① Gen1 nodes ①",
        "custom_nodes.ComfyUI-AnimateDiff-Evolved",
        {"model": ["MODEL"], "model_name": [[]],  # the files of models/animatediff_models (the fake's models knob)
         "beta_schedule": [BETA_SCHEDULES, {"default": "autoselect"}]},
        {"context_options": ["CONTEXT_OPTIONS"], "motion_lora": ["MOTION_LORA"], "ad_settings": ["AD_SETTINGS"],
         "ad_keyframes": ["AD_KEYFRAMES"], "sample_settings": ["SAMPLE_SETTINGS"], "scale_multival": ["MULTIVAL"],
         "effect_multival": ["MULTIVAL"], "per_block": ["PER_BLOCK"]}, ["MODEL"]),
}


@node("RIFE VFI", progress=True)
async def rife_vfi(ctx, ckpt_name, frames, clear_cache_after_n_frames, multiplier, fast_mode, ensemble,
                   scale_factor, optional_interpolation_states=None):
    """`multiplier` frames for every frame but the last: the ones between are blends of their neighbours."""
    def run() -> Images:
        out = Images()
        for before, after in zip(frames, frames[1:]):
            out += [before] + [Image.blend(before, after, step / multiplier) for step in range(1, multiplier)]
        return Images([*out, *frames[-1:]])

    out = await ctx.compute(run, pixels=npix(frames) * multiplier)
    await ctx.sleep(ctx.delay)
    await ctx.progress(len(frames), len(frames), None)
    return (out,), None


@node("ADE_AnimateDiffLoaderGen1")
async def animatediff_loader_gen1(ctx, model, model_name, beta_schedule, **optional):
    return ({**model, "motion_model": model_name, "beta_schedule": beta_schedule},), None


# runs classes of ``custom_nodes`` that have no simulation of their own
PREPROCESSOR_SPEC = NodeSpec(aux_preprocessor)
for _name in AUX_PREPROCESSORS:
    NODES[_name] = PREPROCESSOR_SPEC


# IS_CHANGED of the simulated nodes: ctx -> value that becomes part of the node's cache key
def _load_image_is_changed(ctx, image: Any = None) -> Any:
    if not isinstance(image, str):
        return float("nan")
    data = ctx.read_file(*split_annotated(image))
    return hashlib.sha256(data).hexdigest() if data is not None else float("nan")


NODES["LoadImage"].is_changed = _load_image_is_changed
NODES["LoadVideo"].is_changed = lambda ctx, file=None: _load_image_is_changed(ctx, file)
NODES["SaveImageWebsocket"].is_changed = lambda ctx, **_: time.time()
