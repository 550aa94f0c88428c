"""Tests proving that tests/fakes/comfyui.py behaves like the recorded ComfyUI 0.3.64.

The expected values below were taken from the recorded transcripts (success.json, cached_rerun.json,
validation_error.json, execution_error.json, interrupt.json, upload.json, ws_binary_preview.json,
ws_reconnect.json, no_client_id.json); they are embedded here because nothing in the project may read
the recordings at runtime. Websocket messages are compared in a compact form (see ``compact``):
prompt ids, timestamps, random temp-file suffixes and file counters are normalised.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import io
import json
import re
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.fakes.comfy_nodes import AUX_PREPROCESSORS
from tests.fakes.comfyui import COMFY_500_BODY, FakeComfyUI

pytestmark = pytest.mark.timeout(30)

DATA = Path(__file__).resolve().parents[1] / "data"
MODELS = {"checkpoints": ["sd15.safetensors", "svd_xt.safetensors"], "upscale_models": ["2x-foo.pth", "4x-UltraSharp.pth"]}

RECORDED = {
    'success': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", []],
        ["progress_state", [["1", "running", "0.0", "1.0"]]],
        ["executing", "1", True],
        ["progress_state", [["1", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "running", "0.0", "1.0"]]],
        ["executing", "6", True],
        ["executed", "6", {"images": [{"filename": "ComfyUI_temp_?????_NNNNN_.png", "subfolder": "", "type": "temp"}]}],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "running", "0.0", "1.0"]]],
        ["executing", "2", True],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "running", "0.0", "1.0"]]],
        ["executing", "3", True],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "running", "0.0", "1.0"]]],
        ["executing", "4", True],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"], ["5", "running", "0.0", "1.0"]]],
        ["executing", "5", True],
        ["executed", "5", {"images": [{"filename": "scaled_NNNNN_.png", "subfolder": "bot", "type": "output"}]}],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["6", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"], ["5", "finished", "1.0", "1.0"]]],
        ["execution_success"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'cached_A2': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", ["1", "2", "3", "4", "5", "6"]],
        ["executed", "5", {"images": [{"filename": "scaled_NNNNN_.png", "subfolder": "bot", "type": "output"}]}],
        ["progress_state", [["5", "finished", "1", "1"]]],
        ["executed", "6", {"images": [{"filename": "ComfyUI_temp_?????_NNNNN_.png", "subfolder": "", "type": "temp"}]}],
        ["progress_state", [["5", "finished", "1", "1"], ["6", "finished", "1", "1"]]],
        ["execution_success"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'cached_B': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", ["1", "6"]],
        ["executed", "6", {"images": [{"filename": "ComfyUI_temp_?????_NNNNN_.png", "subfolder": "", "type": "temp"}]}],
        ["progress_state", [["6", "finished", "1", "1"]]],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "running", "0.0", "1.0"]]],
        ["executing", "2", True],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "finished", "1.0", "1.0"]]],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "finished", "1.0", "1.0"], ["3", "running", "0.0", "1.0"]]],
        ["executing", "3", True],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"]]],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "running", "0.0", "1.0"]]],
        ["executing", "4", True],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"]]],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"], ["5", "running", "0.0", "1.0"]]],
        ["executing", "5", True],
        ["executed", "5", {"images": [{"filename": "scaled_NNNNN_.png", "subfolder": "bot", "type": "output"}]}],
        ["progress_state", [["6", "finished", "1", "1"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"], ["5", "finished", "1.0", "1.0"]]],
        ["execution_success"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'cached_C2': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", ["1", "2"]],
        ["executed", "2", {"images": [{"filename": "empty_NNNNN_.png", "subfolder": "bot", "type": "output"}]}],
        ["progress_state", [["2", "finished", "1", "1"]]],
        ["execution_success"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'error_corrupt': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", []],
        ["progress_state", [["1", "running", "0.0", "1.0"]]],
        ["executing", "1", True],
        ["execution_error", "1", "LoadImage", [], "PIL.UnidentifiedImageError"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'error_h264': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", []],
        ["progress_state", [["1", "running", "0.0", "1.0"]]],
        ["executing", "1", True],
        ["progress_state", [["1", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["4", "running", "0.0", "1.0"]]],
        ["executing", "4", True],
        ["executed", "4", {"images": [{"filename": "odd_png_NNNNN_.png", "subfolder": "bot", "type": "output"}, {"filename": "odd_png_NNNNN_.png", "subfolder": "bot", "type": "output"}, {"filename": "odd_png_NNNNN_.png", "subfolder": "bot", "type": "output"}, {"filename": "odd_png_NNNNN_.png", "subfolder": "bot", "type": "output"}]}],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"], ["2", "running", "0.0", "1.0"]]],
        ["executing", "2", True],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["4", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "running", "0.0", "1.0"]]],
        ["executing", "3", True],
        ["execution_error", "3", "SaveVideo", ["1", "2", "4"], "av.error.ExternalError"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'binary_legacy': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", []],
        ["progress_state", [["2", "running", "0.0", "1.0"]]],
        ["executing", "2", True],
        ["progress_state", [["2", "finished", "1.0", "1.0"]]],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "running", "0.0", "1.0"]]],
        ["executing", "1", True],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "finished", "1.0", "1.0"]]],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "finished", "1.0", "1.0"], ["3", "running", "0.0", "1.0"]]],
        ["executing", "3", True],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"]]],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "running", "0.0", "1.0"]]],
        ["executing", "4", True],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "running", "0", "2"]]],
        ["progress", "4", 0, 2],
        ["binary", 1, 2],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "running", "1", "2"]]],
        ["progress", "4", 1, 2],
        ["binary", 1, 2],
        ["progress_state", [["2", "finished", "1.0", "1.0"], ["1", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"], ["4", "finished", "2", "2"]]],
        ["execution_success"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'binary_flagged': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", ["1", "2", "3"]],
        ["progress_state", [["4", "running", "0.0", "1.0"]]],
        ["executing", "4", True],
        ["progress_state", [["4", "running", "0", "2"]]],
        ["binary", 4, ["display_node_id", "image_type", "node_id", "parent_node_id", "prompt_id", "real_node_id"]],
        ["progress", "4", 0, 2],
        ["progress_state", [["4", "running", "1", "2"]]],
        ["binary", 4, ["display_node_id", "image_type", "node_id", "parent_node_id", "prompt_id", "real_node_id"]],
        ["progress", "4", 1, 2],
        ["progress_state", [["4", "finished", "2", "2"]]],
        ["execution_success"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'binary_text': [
        ["status", 1, False],
        ["status", 1, False],
        ["execution_start"],
        ["execution_cached", []],
        ["progress_state", [["1", "running", "0.0", "1.0"]]],
        ["executing", "1", True],
        ["progress_state", [["1", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "running", "0.0", "1.0"]]],
        ["executing", "2", True],
        ["binary", 3, "2", "width: 80, height: 60\n batch size: 3"],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "running", "0.0", "1.0"]]],
        ["executing", "3", True],
        ["executed", "3", {"text": ["80"]}],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"], ["3", "finished", "1.0", "1.0"]]],
        ["execution_success"],
        ["status", 0, False],
        ["executing", None, True],
    ],
    'no_client_id': [
        ["status", 1, False],
        ["status", 1, False],
        ["progress_state", [["1", "running", "0.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "running", "0.0", "1.0"]]],
        ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"]]],
        ["status", 0, False],
    ],
}
# POST /prompt answers for the cases of tests/data/invalid_cases.json, from validation_error.json
RECORDED_VALIDATION: dict[str, tuple[int, Any]] = {
    'unknown_class_type': (400, json.loads(
        '{"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not'
        ' exist.", "details": "Node ID \'#2\'", "extra_info": {}}, "node_errors": {}}'
    )),
    'missing_class_type': (400, json.loads(
        '{"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the cl'
        'ass_type property.", "details": "Node ID \'#1\'", "extra_info": {}}, "node_errors": {}}'
    )),
    'missing_required_input': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "Required input is missing: images", "extra_info": {}}, "node_errors": {"2": {"'
        'errors": [{"type": "required_input_missing", "message": "Required input is missing", "details": '
        '"images", "extra_info": {"input_name": "images"}}], "dependent_outputs": ["2"], "class_type": "S'
        'aveImage"}}}'
    )),
    'value_below_min': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "", "extra_info": {}}, "node_errors": {"1": {"errors": [{"type": "value_smaller'
        '_than_min", "message": "Value 0 smaller than min of 1", "details": "width", "extra_info": {"inpu'
        't_name": "width", "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], '
        '"received_value": 0}}], "dependent_outputs": ["2"], "class_type": "EmptyImage"}}}'
    )),
    'value_above_max': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "", "extra_info": {}}, "node_errors": {"1": {"errors": [{"type": "value_bigger_'
        'than_max", "message": "Value 99999 bigger than max of 16384", "details": "height", "extra_info":'
        ' {"input_name": "height", "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step'
        '": 1}], "received_value": 99999}}], "dependent_outputs": ["2"], "class_type": "EmptyImage"}}}'
    )),
    'bad_combo_value': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "", "extra_info": {}}, "node_errors": {"2": {"errors": [{"type": "value_not_in_'
        'list", "message": "Value not in list", "details": "upscale_method: \'super-res\' not in [\'nearest-'
        'exact\', \'bilinear\', \'area\', \'bicubic\', \'lanczos\']", "extra_info": {"input_name": "upscale_method'
        '", "input_config": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}], "received_'
        'value": "super-res"}}], "dependent_outputs": ["3"], "class_type": "ImageScaleBy"}}}'
    )),
    'bad_type_string_for_int': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "", "extra_info": {}}, "node_errors": {"1": {"errors": [{"type": "invalid_input'
        '_type", "message": "Failed to convert an input value to a INT value", "details": "width, abc, in'
        'valid literal for int() with base 10: \'abc\'", "extra_info": {"input_name": "width", "input_confi'
        'g": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], "received_value": "abc", "exce'
        'ption_message": "invalid literal for int() with base 10: \'abc\'"}}], "dependent_outputs": ["2"], '
        '"class_type": "EmptyImage"}}}'
    )),
    'link_to_missing_node': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "Exception when validating node: \'99\'", "extra_info": {}}, "node_errors": {"2":'
        ' {"errors": [{"type": "exception_during_validation", "message": "Exception when validating node"'
        ', "details": "\'99\'", "extra_info": {"exception_type": "KeyError", "traceback": "<list of str>"}}'
        '], "dependent_outputs": ["2"], "class_type": "SaveImage"}}}'
    )),
    'link_type_mismatch': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "Return type mismatch between linked nodes: images, received_type(MASK) mismatc'
        'h input_type(IMAGE)", "extra_info": {}}, "node_errors": {"2": {"errors": [{"type": "return_type_'
        'mismatch", "message": "Return type mismatch between linked nodes", "details": "images, received_'
        'type(MASK) mismatch input_type(IMAGE)", "extra_info": {"input_name": "images", "input_config": ['
        '"IMAGE", {"tooltip": "The images to save."}], "received_type": "MASK", "linked_node": ["1", 1]}}'
        '], "dependent_outputs": ["2"], "class_type": "SaveImage"}}}'
    )),
    'no_output_node': (400, json.loads(
        '{"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extr'
        'a_info": {}}, "node_errors": {}}'
    )),
    'loadimage_missing_file': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "", "extra_info": {}}, "node_errors": {"1": {"errors": [{"type": "custom_valida'
        'tion_failed", "message": "Custom validation failed for node", "details": "image - Invalid image '
        'file: does_not_exist.png", "extra_info": {"input_name": "image"}}], "dependent_outputs": ["2"], '
        '"class_type": "LoadImage"}}}'
    )),
    'multiple_errors': (400, json.loads(
        '{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validat'
        'ion", "details": "Required input is missing: images", "extra_info": {}}, "node_errors": {"1": {"'
        'errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "detail'
        's": "width", "extra_info": {"input_name": "width", "input_config": ["INT", {"default": 512, "min'
        '": 1, "max": 16384, "step": 1}], "received_value": 0}}], "dependent_outputs": ["3", "4"], "class'
        '_type": "EmptyImage"}, "2": {"errors": [{"type": "value_bigger_than_max", "message": "Value 100.'
        '0 bigger than max of 8.0", "details": "scale_by", "extra_info": {"input_name": "scale_by", "inpu'
        't_config": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}], "received_value":'
        ' 100.0}}, {"type": "value_not_in_list", "message": "Value not in list", "details": "upscale_meth'
        'od: \'nope\' not in [\'nearest-exact\', \'bilinear\', \'area\', \'bicubic\', \'lanczos\']", "extra_info": {"'
        'input_name": "upscale_method", "input_config": [["nearest-exact", "bilinear", "area", "bicubic",'
        ' "lanczos"], {}], "received_value": "nope"}}], "dependent_outputs": ["3", "4"], "class_type": "I'
        'mageScaleBy"}, "4": {"errors": [{"type": "required_input_missing", "message": "Required input is'
        ' missing", "details": "images", "extra_info": {"input_name": "images"}}], "dependent_outputs": ['
        '"4"], "class_type": "PreviewImage"}}}'
    )),
    'partially_valid_200': (200, json.loads(
        '{"node_errors": {"3": {"errors": [{"type": "value_not_in_list", "message": "Value not in list", '
        '"details": "upscale_method: \'nope\' not in [\'nearest-exact\', \'bilinear\', \'area\', \'bicubic\', \'lanc'
        'zos\']", "extra_info": {"input_name": "upscale_method", "input_config": [["nearest-exact", "bilin'
        'ear", "area", "bicubic", "lanczos"], {}], "received_value": "nope"}}], "dependent_outputs": ["4"'
        '], "class_type": "ImageScaleBy"}}}'
    )),
    'no_prompt_key': (400, json.loads(
        '{"error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided"'
        ', "extra_info": {}}, "node_errors": {}}'
    )),
    'malformed_json': (500, '500 Internal Server Error\n\nServer got itself in trouble'),
    'prompt_is_list': (500, '500 Internal Server Error\n\nServer got itself in trouble'),
}

# execution_error.json, LoadImage of a corrupt upload (traceback checked separately)
RECORDED_LOADIMAGE_ERROR = json.loads(
    '{"node_id": "1", "node_type": "LoadImage", "executed": [], "exception_message": "cannot identify'
    ' image file \'/srv/data/input/broken.png\'\\n", "exception_type": "PIL.UnidentifiedImageError", "cu'
    'rrent_inputs": {"image": ["broken.png"]}, "current_outputs": ["1", "2"]}'
)
RECORDED_LOADIMAGE_TB_FIRST = '  File "/srv/ComfyUI/execution.py", line 496, in execute'
RECORDED_LOADIMAGE_TB_LAST = '  File "/srv/venv/lib/python3.11/site-packages/PIL/Image.py", line 3730, in open\n    raise UnidentifiedImageError(msg)\n'

# upload.json: GET /object_info/LoadImage after the uploads
RECORDED_LOADIMAGE_INFO = json.loads(
    '{"LoadImage": {"input": {"required": {"image": [["bot_input (1).png", "bot_input.png", "bot_rgba'
    '.png", "broken.png", "photo.jpg"], {"image_upload": true}]}}, "input_order": {"required": ["imag'
    'e"]}, "output": ["IMAGE", "MASK"], "output_is_list": [false, false], "output_name": ["IMAGE", "M'
    'ASK"], "name": "LoadImage", "display_name": "Load Image", "description": "", "python_module": "n'
    'odes", "category": "image", "output_node": false}}'
)

# ws_binary_preview.json: the raw type-3 frame of GetImageSize
RECORDED_TEXT_FRAME = base64.b64decode('AAAAAwAAAAEyd2lkdGg6IDgwLCBoZWlnaHQ6IDYwCiBiYXRjaCBzaXplOiAz')
# ... and the metadata JSON of a type-4 frame (prompt id replaced by PID)
RECORDED_META_JSON = '{"node_id": "4", "prompt_id": "PID", "display_node_id": "4", "parent_node_id": null, "real_node_id": "4", "image_type": "image/png"}'

# message keys in the recordings (ws_*.json), in order
RECORDED_KEYS = {
    "execution_start": ["prompt_id", "timestamp"],
    "execution_cached": ["nodes", "prompt_id", "timestamp"],
    "execution_success": ["prompt_id", "timestamp"],
    "execution_error": ["prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                        "traceback", "current_inputs", "current_outputs", "timestamp"],
    "execution_interrupted": ["prompt_id", "node_id", "node_type", "executed", "timestamp"],
    "executed": ["node", "display_node", "output", "prompt_id"],
    "progress": ["value", "max", "prompt_id", "node"],
    "progress_state": ["prompt_id", "nodes"],
    "feature_flags": ["supports_preview_metadata", "max_upload_size"],
}
PROGRESS_NODE_KEYS = ["value", "max", "state", "node_id", "prompt_id", "display_node_id", "parent_node_id",
                      "real_node_id"]


# ------------------------------------------------------------------------------------------------
# workflows (the recorded ones, smaller images where the size does not matter)
# ------------------------------------------------------------------------------------------------

SUCCESS_PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "bot_input.png"}},
    "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "scale_by": 2.0}},
    "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    "4": {"class_type": "ImageBlur", "inputs": {"image": ["3", 0], "blur_radius": 2, "sigma": 1.0}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "bot/scaled"}},
    "6": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


def empty_save(color: int, prefix: str = "bot/empty", size: int = 32, batch: int = 1) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": batch, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def blur_chain(color: int, blurs: int = 3) -> dict:
    p: dict[str, Any] = {"1": {"class_type": "EmptyImage",
                               "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": color}}}
    for i in range(2, blurs + 2):
        p[str(i)] = {"class_type": "ImageBlur", "inputs": {"image": [str(i - 1), 0], "blur_radius": 31, "sigma": 5.0}}
    p[str(blurs + 2)] = {"class_type": "PreviewImage", "inputs": {"images": [str(blurs + 1), 0]}}
    return p


WS_IMAGES_PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16746496}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 35071}},
    "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
    "4": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["3", 0]}},
}
GETIMAGESIZE_PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 80, "height": 60, "batch_size": 3, "color": 65280}},
    "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
}
H264_ODD_PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 33, "height": 33, "batch_size": 4, "color": 16711935}},
    "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
    "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "bot/odd", "format": "mp4",
                                               "codec": "h264"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bot/odd_png"}},
}
ANIMATED_PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": 16711680}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": 65280}},
    "3": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": 255}},
    "4": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
    "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["3", 0]}},
    "6": {"class_type": "RepeatImageBatch", "inputs": {"image": ["5", 0], "amount": 4}},
    "7": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["6", 0], "filename_prefix": "bot/anim", "fps": 6.0,
                                                      "lossless": False, "quality": 80, "method": "default"}},
    "8": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["6", 0], "filename_prefix": "bot/anim", "fps": 6.0,
                                                     "compress_level": 4}},
    "9": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 6.0}},
    "10": {"class_type": "SaveVideo", "inputs": {"video": ["9", 0], "filename_prefix": "bot/video", "format": "mp4",
                                                "codec": "h264"}},
    "11": {"class_type": "SaveWEBM", "inputs": {"images": ["6", 0], "filename_prefix": "bot/webm", "codec": "vp9",
                                               "fps": 6.0, "crf": 32.0}},
}
TXT2IMG_PROMPT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 42, "steps": 4, "cfg": 7.0,
                                              "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0],
                                              "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "2x-foo.pth"}},
    "8": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["7", 0], "image": ["6", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bot/t2i"}},
}
SVD_PROMPT = {
    "1": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": "svd_xt.safetensors"}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 255}},
    "3": {"class_type": "SVD_img2vid_Conditioning", "inputs": {
        "clip_vision": ["1", 1], "init_image": ["2", 0], "vae": ["1", 2], "width": 64, "height": 48,
        "video_frames": 6, "motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}},
    "4": {"class_type": "VideoLinearCFGGuidance", "inputs": {"model": ["1", 0], "min_cfg": 1.0}},
    "5": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 7, "steps": 2, "cfg": 2.5,
                                              "sampler_name": "euler", "scheduler": "karras", "positive": ["3", 0],
                                              "negative": ["3", 1], "latent_image": ["3", 2], "denoise": 1.0}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 6.0}},
    "8": {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "bot/svd", "format": "auto",
                                               "codec": "auto"}},
}

CONTROLNET_MODELS = {"checkpoints": ["sd15.safetensors"], "controlnet": ["control_v11p_sd15_canny.pth"]}
CONTROLNET_PROMPT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
    "4": {"class_type": "LoadImage", "inputs": {"image": "pose.png"}},
    "5": {"class_type": "Canny", "inputs": {"image": ["4", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
    "6": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "control_v11p_sd15_canny.pth"}},
    "7": {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["2", 0], "negative": ["3", 0], "control_net": ["6", 0], "image": ["5", 0], "strength": 0.8,
        "start_percent": 0.0, "end_percent": 1.0}},
    "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 1}},
    "9": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 7.0,
                                              "sampler_name": "euler", "scheduler": "normal", "positive": ["7", 0],
                                              "negative": ["7", 1], "latent_image": ["8", 0], "denoise": 1.0}},
    "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
    "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "bot/cn"}},
}


def png_bytes(size: tuple[int, int] = (96, 64), color: tuple[int, int, int] = (0, 0, 128), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# compact form of messages (same as used to extract RECORDED from the transcripts)
# ------------------------------------------------------------------------------------------------


def shape_png(size: tuple[int, int] = (96, 64)) -> bytes:
    """A white rectangle on black: something for edge detectors to find."""
    im = Image.new("RGB", size, (0, 0, 0))
    im.paste((255, 255, 255), (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _norm_output(o: Any) -> Any:
    s = json.dumps(o)
    s = re.sub(r"ComfyUI_temp_[a-z]{5}_", "ComfyUI_temp_?????_", s)
    s = re.sub(r"_\d{5}_\.", "_NNNNN_.", s)
    return json.loads(s)


def compact(m: dict | bytes) -> list:
    if isinstance(m, bytes):
        ev = struct.unpack(">I", m[:4])[0]
        if ev == 1:
            return ["binary", 1, struct.unpack(">I", m[4:8])[0]]
        if ev == 4:
            n = struct.unpack(">I", m[4:8])[0]
            return ["binary", 4, sorted(json.loads(m[8:8 + n]))]
        if ev == 3:
            n = struct.unpack(">I", m[4:8])[0]
            return ["binary", 3, m[8:8 + n].decode(), m[8 + n:].decode()]
        return ["binary", ev]
    t, d = m["type"], m["data"]
    if t == "status":
        return ["status", d["status"]["exec_info"]["queue_remaining"], "sid" in d]
    if t == "progress_state":
        return ["progress_state", [[k, v["state"], repr(v["value"]), repr(v["max"])] for k, v in d["nodes"].items()]]
    if t == "executing":
        return ["executing", d["node"], "prompt_id" in d]
    if t == "executed":
        return ["executed", d["node"], _norm_output(d["output"])]
    if t == "execution_cached":
        return ["execution_cached", d["nodes"]]
    if t == "execution_error":
        return ["execution_error", d["node_id"], d["node_type"], sorted(d["executed"]), d["exception_type"]]
    if t == "execution_interrupted":
        return ["execution_interrupted", d["node_id"], d["node_type"], sorted(d["executed"])]
    if t == "progress":
        return ["progress", d["node"], d["value"], d["max"]]
    if t == "feature_flags":
        return ["feature_flags", d]
    return [t]


def check_shapes(msgs: list, prompt_id: str) -> None:
    """Every message has the recorded keys; timestamps only on execution_*; prompt ids are ours."""
    for m in msgs:
        if isinstance(m, bytes):
            continue
        t, d = m["type"], m["data"]
        if t in RECORDED_KEYS:
            assert list(d) == RECORDED_KEYS[t], m
        assert ("timestamp" in d) == t.startswith("execution_"), m
        if t == "progress_state":
            assert d["prompt_id"] == prompt_id
            for nid, st in d["nodes"].items():
                assert list(st) == PROGRESS_NODE_KEYS
                assert (st["node_id"], st["display_node_id"], st["real_node_id"], st["parent_node_id"]) == (
                    nid, nid, nid, None)
        elif t == "executing" and "prompt_id" in d:
            assert d["prompt_id"] == prompt_id
            assert list(d) == (["node", "prompt_id"] if d["node"] is None else ["node", "display_node", "prompt_id"])
        elif "prompt_id" in d:
            assert d["prompt_id"] == prompt_id


# ------------------------------------------------------------------------------------------------
# client helpers
# ------------------------------------------------------------------------------------------------


class WS:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, fake: FakeComfyUI, client_id: str | None = None,
                      flags: bool = False, **kw: Any) -> WS:
        url = fake.url + "/ws" + (f"?clientId={client_id}" if client_id else "")
        self = cls(await http.ws_connect(url, **kw))
        if flags:
            await self.ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        return self

    async def recv(self, timeout: float = 3.0) -> dict | bytes:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msg.data
        raise ConnectionError(f"websocket ended: {msg.type}")

    async def until(self, pred, timeout: float = 5.0) -> list:
        out: list = []
        deadline = time.monotonic() + timeout
        while True:
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            out.append(m)
            if pred(m):
                return out

    async def until_done(self, prompt_id: str, timeout: float = 5.0) -> list:
        return await self.until(lambda m: isinstance(m, dict) and m["type"] == "executing"
                                and m["data"].get("node") is None and m["data"].get("prompt_id") == prompt_id, timeout)

    async def drain(self, quiet: float = 0.15) -> list:
        out: list = []
        while True:
            try:
                out.append(await self.recv(quiet))
            except asyncio.TimeoutError:
                return out

    async def close(self) -> None:
        await self.ws.close()

    async def closed_by_server(self, timeout: float = 1.0) -> bool:
        """Skip pending messages; True once the server has closed the socket."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await asyncio.wait_for(self.ws.receive(), max(0.01, deadline - time.monotonic()))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return True
        return False


async def submit(http: aiohttp.ClientSession, fake: FakeComfyUI, prompt: dict, client_id: str | None = None,
                 **extra: Any) -> dict:
    body: dict[str, Any] = {"prompt": prompt, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    async with http.post(fake.url + "/prompt", json=body) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        return await r.json()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        return await r.json()


async def upload(http: aiohttp.ClientSession, fake: FakeComfyUI, name: str, data: bytes,
                 **fields: str) -> tuple[int, Any]:
    fd = aiohttp.FormData()
    fd.add_field("image", data, filename=name, content_type="image/png")
    for k, v in fields.items():
        fd.add_field(k, v)
    async with http.post(fake.url + "/upload/image", data=fd) as r:
        return r.status, (await r.json() if r.status == 200 else await r.read())


async def wait_history(http: aiohttp.ClientSession, fake: FakeComfyUI, prompt_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = await get_json(http, f"{fake.url}/history/{prompt_id}")
        if h:
            return h[prompt_id]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no history for {prompt_id}")


def types(msgs: list) -> list:
    return [m["type"] if isinstance(m, dict) else "binary" for m in msgs]


@pytest.fixture
async def fake():
    f = FakeComfyUI(models=MODELS)
    await f.start()
    yield f
    await f.stop()
    assert f.unhandled == []


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------


async def test_plain_gets_api_prefix_and_object_info(fake, http):
    assert fake.url.startswith("http://127.0.0.1:")
    stats = await get_json(http, fake.url + "/system_stats")
    assert stats == json.loads((DATA / "system_stats.json").read_text())
    assert await get_json(http, fake.url + "/api/system_stats") == stats
    assert await get_json(http, fake.url + "/queue") == {"queue_running": [], "queue_pending": []}
    assert await get_json(http, fake.url + "/api/prompt") == {"exec_info": {"queue_remaining": 0}}
    assert await get_json(http, fake.url + "/features") == {"supports_preview_metadata": True,
                                                           "max_upload_size": 104857600}
    assert await get_json(http, fake.url + "/history?max_items=2") == {}
    assert await get_json(http, fake.url + "/object_info/NoSuchNode") == {}
    assert await get_json(http, fake.url + "/embeddings") == []
    recorded = json.loads((DATA / "object_info.json").read_text())
    oi = await get_json(http, fake.url + "/object_info")
    assert list(oi) == list(recorded)
    # models are injected into both combo formats, everything else is verbatim
    assert oi["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"] == [
        MODELS["checkpoints"], {"tooltip": "The name of the checkpoint (model) to load."}]
    assert oi["ImageOnlyCheckpointLoader"]["input"]["required"]["ckpt_name"] == [MODELS["checkpoints"]]
    assert oi["UpscaleModelLoader"]["input"]["required"]["model_name"] == [
        "COMBO", {"multiselect": False, "options": MODELS["upscale_models"]}]
    assert oi["SaveImage"] == recorded["SaveImage"]
    assert oi["LoadImage"]["input"]["required"]["image"] == [[], {"image_upload": True}]
    assert await get_json(http, fake.url + "/api/object_info/SaveImage") == {"SaveImage": recorded["SaveImage"]}
    assert await get_json(http, fake.url + "/models/checkpoints") == sorted(MODELS["checkpoints"])


async def test_success_matches_recording(fake, http):
    src = png_bytes()
    assert await upload(http, fake, "bot_input.png", src) == (
        200, {"name": "bot_input.png", "subfolder": "", "type": "input"})
    ws = await WS.connect(http, fake, "cid-success")
    first = await ws.recv()
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "cid-success"}}
    resp = await submit(http, fake, SUCCESS_PROMPT, "cid-success")
    pid = resp["prompt_id"]
    assert resp == {"prompt_id": pid, "number": 0, "node_errors": {}}
    msgs = await ws.until_done(pid)
    assert [compact(m) for m in msgs] == RECORDED["success"]
    check_shapes(msgs, pid)
    # history is stored before executing{node:null}
    entry = (await get_json(http, f"{fake.url}/history/{pid}"))[pid]
    assert list(entry) == ["prompt", "outputs", "status", "meta"]
    assert entry["prompt"] == [0, pid, SUCCESS_PROMPT, {"client_id": "cid-success"}, ["5", "6"]]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [e for e, _ in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    executed = {m["data"]["node"]: m["data"]["output"] for m in msgs if m["type"] == "executed"}
    assert entry["outputs"] == executed
    assert entry["meta"] == {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                             for n in executed}
    assert executed["5"] == {"images": [{"filename": "scaled_00001_.png", "subfolder": "bot", "type": "output"}]}
    temp = executed["6"]["images"][0]
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", temp["filename"]) and temp["type"] == "temp"
    # downloads
    for info, size in ((executed["5"]["images"][0], (192, 128)), (temp, (96, 64))):
        url = f"{fake.url}/view?filename={info['filename']}&subfolder={info['subfolder']}&type={info['type']}"
        async with http.get(url) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "image/png"
            assert r.headers["Content-Disposition"] == f'filename="{info["filename"]}"'
            img = Image.open(io.BytesIO(await r.read()))
            assert img.size == size
    saved = Image.open(io.BytesIO(fake.files[("output", "bot", "scaled_00001_.png")]))
    png_prompt = json.loads(saved.info["prompt"])
    assert png_prompt["1"]["is_changed"] == [hashlib.sha256(src).hexdigest()]
    assert saved.getpixel((5, 5)) == (255, 255, 127)  # inverted (0, 0, 128)
    assert await get_json(http, fake.url + "/history?max_items=1") == {pid: entry}
    assert await get_json(http, fake.url + "/queue") == {"queue_running": [], "queue_pending": []}


async def test_client_prompt_id_front_number_and_pnginfo(fake, http):
    ws = await WS.connect(http, fake, "cid")
    await ws.recv()
    extra = {"extra_pnginfo": {"discord": {"user": "1234", "msg": "5678"}}}
    r1 = await submit(http, fake, empty_save(3368703), "cid", prompt_id="cbe08c36", extra_data=extra)
    assert r1 == {"prompt_id": "cbe08c36", "number": 0, "node_errors": {}}
    await ws.until_done("cbe08c36")
    entry = await wait_history(http, fake, "cbe08c36")
    assert entry["prompt"][3] == {"extra_pnginfo": {"discord": {"user": "1234", "msg": "5678"}}, "client_id": "cid"}
    img = Image.open(io.BytesIO(fake.files[("output", "bot", "empty_00001_.png")]))
    assert json.loads(img.info["discord"]) == {"user": "1234", "msg": "5678"}
    assert json.loads(img.info["prompt"]) == empty_save(3368703)
    assert img.getpixel((0, 0)) == (0x33, 0x66, 0xFF)
    r2 = await submit(http, fake, empty_save(1193046), "cid", prompt_id="discord-msg-42", front=True)
    assert r2 == {"prompt_id": "discord-msg-42", "number": -1, "node_errors": {}}
    await ws.until_done("discord-msg-42")
    async with http.post(fake.url + "/prompt", json={"prompt": empty_save(6636321), "client_id": "cid",
                                                     "number": -5}) as r:
        text = await r.text()
    assert '"number": -5.0' in text
    await ws.until_done(json.loads(text)["prompt_id"])
    assert sorted(n for (t, s, n) in fake.files if t == "output") == [
        "empty_00001_.png", "empty_00002_.png", "empty_00003_.png"]
    assert fake.prompts["cbe08c36"] == {"prompt": empty_save(3368703), "client_id": "cid", "prompt_id": "cbe08c36",
                                        "extra_data": {"extra_pnginfo": {"discord": {"user": "1234", "msg": "5678"}}}}


async def test_cached_rerun_matches_recording(fake, http):
    await upload(http, fake, "bot_input.png", png_bytes())
    ws = await WS.connect(http, fake, "cid")
    await ws.recv()

    async def run(prompt: dict) -> list:
        pid = (await submit(http, fake, prompt, "cid"))["prompt_id"]
        msgs = await ws.until_done(pid)
        check_shapes(msgs, pid)
        return msgs

    a1 = await run(SUCCESS_PROMPT)
    outputs_a1 = [m["data"]["output"] for m in a1 if m["type"] == "executed"]
    n_files = len(fake.files)
    a2 = await run(SUCCESS_PROMPT)  # identical: everything cached, nothing written, old filenames repeated
    assert [compact(m) for m in a2] == RECORDED["cached_A2"]
    assert len(fake.files) == n_files
    assert sorted(map(json.dumps, (m["data"]["output"] for m in a2 if m["type"] == "executed"))) == sorted(
        map(json.dumps, outputs_a1))
    b_prompt = copy.deepcopy(SUCCESS_PROMPT)
    b_prompt["2"]["inputs"]["scale_by"] = 1.5
    b = await run(b_prompt)  # one widget changed: only downstream nodes run
    assert [compact(m) for m in b] == RECORDED["cached_B"]
    assert ("output", "bot", "scaled_00002_.png") in fake.files
    await run(empty_save(43520))  # C evicts the cache
    c2 = await run(empty_save(43520))
    assert [compact(m) for m in c2] == RECORDED["cached_C2"]
    d = await run(b_prompt)
    assert [m["data"]["nodes"] for m in d if m["type"] == "execution_cached"] == [[]]
    # overwriting the input file changes LoadImage's IS_CHANGED: nothing from it is cached
    await upload(http, fake, "bot_input.png", png_bytes(color=(1, 2, 3)), overwrite="true")
    e = await run(b_prompt)
    assert [m["data"]["nodes"] for m in e if m["type"] == "execution_cached"] == [[]]


async def test_validation_errors_match_recording(fake, http):
    await upload(http, fake, "bot_input.png", png_bytes())
    ws = await WS.connect(http, fake, "cid")
    await ws.recv()
    cases = json.loads((DATA / "invalid_cases.json").read_text())
    bodies = {name: {"prompt": prompt, "client_id": "cid"} for name, prompt in cases.items()}
    bodies["no_prompt_key"] = {"client_id": "cid"}
    bodies["prompt_is_list"] = {"prompt": [1, 2, 3], "client_id": "cid"}
    bodies["malformed_json"] = b'{"prompt": {"1": '
    assert set(bodies) == set(RECORDED_VALIDATION)
    for name, body in bodies.items():
        status, expected = RECORDED_VALIDATION[name]
        kw = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with http.post(fake.url + "/prompt", **kw) as r:
            assert r.status == status, name
            if isinstance(expected, str):
                assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
                assert await r.text() == expected
                continue
            assert r.headers["Content-Type"] == "application/json; charset=utf-8"
            got = await r.json()
        if name == "partially_valid_200":
            got.pop("prompt_id"), got.pop("number")
        if name == "link_to_missing_node":
            tb = got["node_errors"]["2"]["errors"][0]["extra_info"]["traceback"]
            assert isinstance(tb, list) and all(isinstance(x, str) for x in tb)
            got["node_errors"]["2"]["errors"][0]["extra_info"]["traceback"] = "<list of str>"
        if name == "multiple_errors":  # ComfyUI checks the inputs of a node in set order
            for e in (got, expected):
                e["node_errors"]["2"]["errors"].sort(key=lambda x: x["type"])
        assert got == expected, name
    # rejected prompts produce no websocket message; the partially valid one ran only output "2"
    msgs = await ws.until(lambda m: m["type"] == "executing" and m["data"]["node"] is None)
    assert [m["type"] for m in msgs][:3] == ["status", "status", "execution_start"]
    [pid] = fake.history_ids()
    entry = await wait_history(http, fake, pid)
    assert entry["prompt"][4] == ["2"]
    assert list(entry["outputs"]) == ["2"]
    assert await ws.drain(0.1) == []


async def test_model_combos_and_large_list_validation(fake, http):
    bad = copy.deepcopy(TXT2IMG_PROMPT)
    bad["1"]["inputs"]["ckpt_name"] = "nope.safetensors"
    bad["5"]["inputs"]["sampler_name"] = "warp"
    async with http.post(fake.url + "/prompt", json={"prompt": bad}) as r:
        assert r.status == 400
        body = await r.json()
    errors = {e["extra_info"]["input_name"]: e for ne in body["node_errors"].values() for e in ne["errors"]}
    assert errors["ckpt_name"]["details"] == "ckpt_name: 'nope.safetensors' not in ['sd15.safetensors', 'svd_xt.safetensors']"
    assert errors["ckpt_name"]["extra_info"]["input_config"] == [
        MODELS["checkpoints"], {"tooltip": "The name of the checkpoint (model) to load."}]
    # more than 20 options: ComfyUI does not echo the list
    assert errors["sampler_name"]["details"].startswith("sampler_name: 'warp' not in (list of length ")
    assert errors["sampler_name"]["extra_info"]["input_config"] is None
    assert body["node_errors"]["1"]["dependent_outputs"] == ["9"]
    # the other combo format: ["COMBO", {"options": [...]}]
    bad = copy.deepcopy(TXT2IMG_PROMPT)
    bad["7"]["inputs"]["model_name"] = "8x-nope.pth"
    async with http.post(fake.url + "/prompt", json={"prompt": bad}) as r:
        assert r.status == 400
        [err] = (await r.json())["node_errors"]["7"]["errors"]
    assert err["details"] == "model_name: '8x-nope.pth' not in ['2x-foo.pth', '4x-UltraSharp.pth']"
    assert err["extra_info"]["input_config"] == ["COMBO", {"multiselect": False, "options": MODELS["upscale_models"]}]


async def test_execution_error_corrupt_upload_matches_recording(fake, http):
    assert (await upload(http, fake, "broken.png", b"this is not an image" * 9, overwrite="true"))[1]["name"] == "broken.png"
    ws = await WS.connect(http, fake, "cid")
    await ws.recv()
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "broken.png"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bot/never"}}}
    for _ in range(2):  # failed nodes are not cached: the re-run fails the same way
        pid = (await submit(http, fake, prompt, "cid"))["prompt_id"]
        msgs = await ws.until_done(pid)
        assert [compact(m) for m in msgs] == RECORDED["error_corrupt"]
        check_shapes(msgs, pid)
        err = next(m["data"] for m in msgs if m["type"] == "execution_error")
        tb = err.pop("traceback")
        assert tb[0].splitlines()[0] == RECORDED_LOADIMAGE_TB_FIRST and tb[-1] == RECORDED_LOADIMAGE_TB_LAST
        assert {k: v for k, v in err.items() if k not in ("prompt_id", "timestamp")} == RECORDED_LOADIMAGE_ERROR
        entry = await wait_history(http, fake, pid)
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        assert [e for e, _ in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_error"]
        assert entry["outputs"] == {} and entry["meta"] == {}


async def test_h264_odd_size_fails_but_keeps_earlier_outputs(fake, http):
    ws = await WS.connect(http, fake, "cid")
    await ws.recv()
    pid = (await submit(http, fake, H264_ODD_PROMPT, "cid"))["prompt_id"]
    msgs = await ws.until_done(pid)
    assert [compact(m) for m in msgs] == RECORDED["error_h264"]
    err = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert err["exception_message"] == (
        "[Errno 542398533] Generic error in an external library: 'avcodec_open2(\"libx264\", {})'\n")
    assert err["exception_type"] == "av.error.ExternalError"
    assert sorted(err["current_inputs"]) == ["codec", "filename_prefix", "format", "video"]
    entry = await wait_history(http, fake, pid)
    assert entry["status"]["status_str"] == "error"
    assert [i["filename"] for i in entry["outputs"]["4"]["images"]] == [f"odd_png_0000{i}_.png" for i in range(1, 5)]


async def test_interrupt_queue_listing_and_delete(http):
    fake = FakeComfyUI(node_delays={"ImageBlur": 0.4})
    await fake.start()
    try:
        ws = await WS.connect(http, fake, "cid")
        await ws.recv()
        a = (await submit(http, fake, blur_chain(1118481), "cid"))["prompt_id"]
        b = (await submit(http, fake, blur_chain(2236962), "cid"))["prompt_id"]
        c = (await submit(http, fake, empty_save(3355443, "bot/never_runs"), "cid"))["prompt_id"]
        await ws.until(lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
        q = await get_json(http, fake.url + "/queue")
        assert [i[1] for i in q["queue_running"]] == [a] and [i[1] for i in q["queue_pending"]] == [b, c]
        assert q["queue_running"][0] == [0, a, blur_chain(1118481), {"client_id": "cid"}, ["5"]]
        assert fake.queue_pending_ids() == [b, c] and fake.running_id() == a
        assert await get_json(http, f"{fake.url}/history/{a}") == {}  # running
        async with http.post(fake.url + "/queue", json={"delete": [c]}) as r:
            assert r.status == 200 and await r.read() == b"" and "Content-Type" not in r.headers
        assert compact(await ws.recv()) == ["status", 2, False]
        async with http.post(fake.url + "/interrupt", json={"prompt_id": b}) as r:  # b is pending: ignored
            assert r.status == 200 and await r.read() == b""
        await ws.until(lambda m: m["type"] == "executing" and m["data"]["node"] == "3")  # a went on
        async with http.post(fake.url + "/interrupt", json={"prompt_id": a}) as r:
            assert r.status == 200
        tail = await ws.until_done(a)
        assert [compact(m) for m in tail] == [
            ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"],
                                ["3", "finished", "1.0", "1.0"]]],
            ["progress_state", [["1", "finished", "1.0", "1.0"], ["2", "finished", "1.0", "1.0"],
                                ["3", "finished", "1.0", "1.0"], ["4", "running", "0.0", "1.0"]]],
            ["executing", "4", True],
            ["execution_interrupted", "4", "ImageBlur", ["1", "2", "3"]],
            ["status", 1, False],
            ["executing", None, True],
        ]
        check_shapes(tail, a)
        await ws.until(lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
        async with http.post(fake.url + "/interrupt") as r:  # global: no body
            assert r.status == 200
        tail_b = await ws.until_done(b)
        assert [compact(m) for m in tail_b][-4:] == [
            ["executing", "3", True], ["execution_interrupted", "3", "ImageBlur", ["1", "2"]],
            ["status", 0, False], ["executing", None, True]]
        entry = await wait_history(http, fake, a)
        assert entry["outputs"] == {} and entry["meta"] == {}
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        assert [e for e, _ in entry["status"]["messages"]] == [
            "execution_start", "execution_cached", "execution_interrupted"]
        assert await get_json(http, f"{fake.url}/history/{c}") == {}
        # an interrupt while idle is a no-op for the next prompt
        async with http.post(fake.url + "/interrupt", json={}) as r:
            assert r.status == 200
        d = (await submit(http, fake, empty_save(4478310), "cid"))["prompt_id"]
        assert "execution_success" in types(await ws.until_done(d))
        # /queue clear removes pending prompts only
        fake.pause()
        for color in (1, 2):
            await submit(http, fake, empty_save(color), "cid")
        assert len(fake.queue_pending_ids()) == 2
        async with http.post(fake.url + "/queue", json={"clear": True}) as r:
            assert r.status == 200
        msgs = await ws.until(lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
        assert compact(msgs[-1]) == ["status", 0, False]
        assert await get_json(http, fake.url + "/queue") == {"queue_running": [], "queue_pending": []}
        fake.resume()
        assert fake.unhandled == []
    finally:
        await fake.stop()


async def test_interrupt_inside_ksampler_steps(http):
    fake = FakeComfyUI(models=MODELS, node_delays={"KSampler": 1.0})
    await fake.start()
    try:
        ws = await WS.connect(http, fake, "cid")
        await ws.recv()
        prompt = copy.deepcopy(TXT2IMG_PROMPT)
        prompt["5"]["inputs"]["steps"] = 10
        pid = (await submit(http, fake, prompt, "cid"))["prompt_id"]
        msgs = await ws.until(lambda m: isinstance(m, dict) and m["type"] == "progress" and m["data"]["value"] == 2)
        async with http.post(fake.url + "/interrupt", json={"prompt_id": pid}) as r:
            assert r.status == 200
        msgs += await ws.until_done(pid)
        t0 = [compact(m) for m in msgs if isinstance(m, dict)]
        # ComfyUI's pick order runs the UpscaleModelLoader (7) before the sampler's inputs
        assert t0[-3:] == [["execution_interrupted", "5", "KSampler", ["1", "2", "3", "4", "7"]],
                           ["status", 0, False], ["executing", None, True]]
        assert max(m["data"]["value"] for m in msgs if isinstance(m, dict) and m["type"] == "progress") < 10
    finally:
        await fake.stop()
    assert fake.unhandled == []


async def test_client_id_routing_and_prompts_without_client_id(fake, http):
    mine = await WS.connect(http, fake, "mine")
    other = await WS.connect(http, fake, "other")
    await mine.recv(), await other.recv()
    pid = (await submit(http, fake, GETIMAGESIZE_PROMPT, "mine"))["prompt_id"]
    await mine.until_done(pid)
    seen = await other.drain()
    assert {("binary", compact(m)[1]) if isinstance(m, bytes) else m["type"] for m in seen} == {
        "status", "progress_state", ("binary", 3)}
    assert all(m["data"]["prompt_id"] == pid for m in seen if isinstance(m, dict) and m["type"] == "progress_state")
    # without client_id: only status and progress_state reach the sockets (no_client_id.json)
    pid2 = (await submit(http, fake, empty_save(986895, "bot/noclient")))["prompt_id"]
    entry = await wait_history(http, fake, pid2)
    assert entry["prompt"][3] == {}
    for sock in (mine, other):
        assert [compact(m) for m in await sock.drain()] == RECORDED["no_client_id"]
    # a socket without clientId gets a hex sid
    anon = await WS.connect(http, fake)
    first = await anon.recv()
    assert re.fullmatch(r"[0-9a-f]{32}", first["data"]["sid"])


async def test_socket_replacement_and_reconnect_replay(http):
    fake = FakeComfyUI(node_delays={"ImageBlur": 0.3})
    await fake.start()
    try:
        old = await WS.connect(http, fake, "same")
        await old.recv()
        new = await WS.connect(http, fake, "same")
        assert compact(await new.recv()) == ["status", 0, True]
        pid = (await submit(http, fake, empty_save(66051, "bot/reconnect"), "same"))["prompt_id"]
        assert "execution_success" in types(await new.until_done(pid))
        assert await old.drain() == []  # replaced: stays open but receives nothing
        # reconnect mid-run: status, then the current node replayed without prompt_id
        pid = (await submit(http, fake, blur_chain(7833753, blurs=4), "same"))["prompt_id"]
        await new.until(lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
        await new.close()
        again = await WS.connect(http, fake, "same")
        assert compact(await again.recv()) == ["status", 1, True]
        assert await again.recv() == {"type": "executing", "data": {"node": "2"}}
        rest = await again.until_done(pid)
        assert [m["data"]["node"] for m in rest if m["type"] == "executing"] == ["3", "4", "5", "6", None]
        # ComfyUI quirk: when the replaced (old) socket closes, the clientId is unregistered entirely
        assert fake.connected_client_ids() == ["same"]
        await old.close()
        await asyncio.sleep(0.05)
        assert fake.connected_client_ids() == []
        pid = (await submit(http, fake, empty_save(1, "bot/lost"), "same"))["prompt_id"]
        await wait_history(http, fake, pid)
        assert await again.drain() == []
    finally:
        await fake.stop()
    assert fake.unhandled == []


async def test_binary_previews_legacy_flagged_and_text(fake, http):
    legacy = await WS.connect(http, fake, "legacy")
    await legacy.recv()
    pid = (await submit(http, fake, WS_IMAGES_PROMPT, "legacy"))["prompt_id"]
    msgs = await legacy.until_done(pid)
    assert [compact(m) for m in msgs] == RECORDED["binary_legacy"]
    check_shapes(msgs, pid)
    frames = [m for m in msgs if isinstance(m, bytes)]
    colors = [Image.open(io.BytesIO(f[8:])).convert("RGB").getpixel((0, 0)) for f in frames]
    assert colors == [(255, 136, 0), (0, 136, 255)]
    assert Image.open(io.BytesIO(frames[0][8:])).size == (64, 48)

    flagged = await WS.connect(http, fake, "flagged", flags=True)
    assert compact(await flagged.recv()) == ["status", 0, True]
    assert await flagged.recv() == {"type": "feature_flags",
                                    "data": {"supports_preview_metadata": True, "max_upload_size": 104857600}}
    pid = (await submit(http, fake, WS_IMAGES_PROMPT, "flagged"))["prompt_id"]
    msgs = await flagged.until_done(pid)
    assert [compact(m) for m in msgs] == RECORDED["binary_flagged"]  # 1-3 cached, SaveImageWebsocket never
    frame = next(m for m in msgs if isinstance(m, bytes))
    n = struct.unpack(">I", frame[4:8])[0]
    assert frame[8:8 + n].decode() == RECORDED_META_JSON.replace("PID", pid)
    assert frame[8 + n:8 + n + 8] == b"\x89PNG\r\n\x1a\n"
    await legacy.drain()

    pid = (await submit(http, fake, GETIMAGESIZE_PROMPT, "flagged"))["prompt_id"]
    msgs = await flagged.until_done(pid)
    assert [compact(m) for m in msgs] == RECORDED["binary_text"]
    assert [m for m in msgs if isinstance(m, bytes)] == [RECORDED_TEXT_FRAME]
    # the text frame is broadcast: the other socket gets it too (but no executed)
    other = await legacy.drain()
    assert RECORDED_TEXT_FRAME in other and "executed" not in types(other)


async def test_upload_and_view_variants_match_recording(fake, http):
    a, b = png_bytes(), png_bytes(color=(9, 9, 9))
    ok = lambda name, sub="", t="input": (200, {"name": name, "subfolder": sub, "type": t})  # noqa: E731
    assert await upload(http, fake, "bot_input.png", a) == ok("bot_input.png")
    assert await upload(http, fake, "bot_input.png", a) == ok("bot_input.png")  # same bytes: dedup
    assert await upload(http, fake, "bot_input.png", b) == ok("bot_input (1).png")  # different: renamed
    assert await upload(http, fake, "bot_input.png", b) == ok("bot_input (1).png")  # ... and deduped again
    assert await upload(http, fake, "bot_rgba.png", b, overwrite="true") == ok("bot_rgba.png")
    assert await upload(http, fake, "bot_rgba.png", a, overwrite="true") == ok("bot_rgba.png")
    assert fake.files[("input", "", "bot_rgba.png")] == a
    assert await upload(http, fake, "sub_input.png", a, overwrite="true", subfolder="discord/123",
                        type="input") == ok("sub_input.png", "discord/123")
    assert await upload(http, fake, "tmp_input.png", a, overwrite="true", type="temp") == ok("tmp_input.png", t="temp")
    assert await upload(http, fake, "broken.png", b"not an image", overwrite="true") == ok("broken.png")
    assert await upload(http, fake, "photo.jpg", png_bytes(fmt="JPEG"), overwrite="true") == ok("photo.jpg")
    assert await upload(http, fake, "evil.png", a, overwrite="true", subfolder="../../x") == (400, b"")
    fd = aiohttp.FormData()
    fd.add_field("overwrite", "true")
    async with http.post(fake.url + "/upload/image", data=fd) as r:
        assert r.status == 400 and await r.read() == b""
    # uploaded files appear in LoadImage's combo at once
    assert await get_json(http, fake.url + "/object_info/LoadImage") == RECORDED_LOADIMAGE_INFO

    async def view(query: str) -> tuple[int, dict, bytes]:
        async with http.get(f"{fake.url}/view?{query}") as r:
            return r.status, dict(r.headers), await r.read()

    status, headers, body = await view("filename=bot_input.png&type=input&subfolder=")
    assert (status, body) == (200, a)
    assert headers["Content-Type"] == "image/png" and headers["Content-Disposition"] == 'filename="bot_input.png"'
    assert (await view("filename=sub_input.png&type=input&subfolder=discord/123"))[2] == a
    status, headers, body = await view("filename=missing.png&type=input")
    assert (status, body) == (404, b"")
    status, headers, body = await view("filename=bot_input.png&type=input&preview=webp;50")
    assert status == 200 and headers["Content-Type"] == "image/webp" and body[:4] == b"RIFF"
    status, headers, body = await view("filename=bot_input.png&type=input&channel=a")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert (await view("filename=bot_input.png&type=input&subfolder=../../etc"))[0] == 403
    assert (await view("filename=../bot_input.png&type=input"))[0] == 400
    assert (await view("filename=bot_input.png&type=nope"))[0] == 400
    assert (await view("filename=bot_input.png%20[input]"))[2] == a  # annotated name


async def test_history_endpoints(fake, http):
    fake.pause()
    p1 = (await submit(http, fake, empty_save(1), "c"))["prompt_id"]
    assert await get_json(http, f"{fake.url}/history/{p1}") == {}  # pending
    assert fake.history_ids() == []
    fake.resume()
    await wait_history(http, fake, p1)
    ids = [p1] + [(await submit(http, fake, empty_save(c), "c"))["prompt_id"] for c in (2, 3)]
    for pid in ids:
        await wait_history(http, fake, pid)
    assert list(await get_json(http, fake.url + "/history?max_items=2")) == ids[1:]
    assert list(await get_json(http, fake.url + "/history")) == ids
    assert list(await get_json(http, fake.url + "/history?max_items=1&offset=0")) == ids[:1]
    assert await get_json(http, fake.url + "/history/unknown") == {}
    async with http.post(fake.url + "/history", json={"delete": [ids[0]]}) as r:
        assert r.status == 200 and await r.read() == b""
    assert fake.history_ids() == ids[1:]
    async with http.post(fake.url + "/api/history", json={"clear": True}) as r:
        assert r.status == 200
    assert await get_json(http, fake.url + "/history") == {}
    # prompt ids are only echoed: reusing one overwrites its history entry
    for color in (4, 5):
        await submit(http, fake, empty_save(color), "c", prompt_id="dup")
    await asyncio.sleep(0.1)
    entry = await wait_history(http, fake, "dup")
    assert entry["prompt"][2]["1"]["inputs"]["color"] == 5


async def test_http_fault_switches(fake, http):
    fake.fail_http("/prompt")
    async with http.post(fake.url + "/prompt", json={"prompt": empty_save(1)}) as r:
        assert r.status == 500 and r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await r.text() == COMFY_500_BODY
    assert fake.prompts == {}  # not processed
    await submit(http, fake, empty_save(1))
    fake.fail_http("/api/history", status=503, count=2)
    for path in ("/history", "/api/history"):
        async with http.get(fake.url + path) as r:
            assert r.status == 503
    await get_json(http, fake.url + "/history")
    fake.garbage_json("/queue")
    async with http.get(fake.url + "/api/queue") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json; charset=utf-8"
        with pytest.raises(ValueError):
            json.loads(await r.text())
    await get_json(http, fake.url + "/queue")
    fake.slow("/system_stats", 0.5)
    t0 = time.monotonic()
    await get_json(http, fake.url + "/system_stats")
    assert time.monotonic() - t0 >= 0.45
    t0 = time.monotonic()
    await get_json(http, fake.url + "/system_stats")
    assert time.monotonic() - t0 < 0.3
    fake.fail_http("/ws")
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(fake.url + "/ws?clientId=x")
    assert exc.value.status == 500
    assert [r["path"] for r in fake.requests].count("/ws") == 1
    post = next(r for r in fake.requests if r["method"] == "POST")
    assert post["json"] == {"prompt": empty_save(1)} and post["headers"]["Content-Type"] == "application/json"


async def test_silent_drop_sockets_and_restart(fake, http):
    ws = await WS.connect(http, fake, "s")
    await ws.recv()
    fake.silent = True
    pinger = await WS.connect(http, fake, "p", autoping=False)
    pid = (await submit(http, fake, empty_save(1), "s"))["prompt_id"]
    await wait_history(http, fake, pid)
    assert await ws.drain() == []
    await pinger.ws.ping(b"still there?")
    msg = await asyncio.wait_for(pinger.ws.receive(), 1)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"still there?")
    fake.silent = False
    await pinger.close()

    await fake.drop_sockets()
    assert await ws.closed_by_server()
    ws = await WS.connect(http, fake, "s")
    assert compact(await ws.recv()) == ["status", 0, True]
    assert fake.history_ids() == [pid]  # state kept

    url = fake.url
    fake.pause()
    pending = (await submit(http, fake, empty_save(2), "s"))["prompt_id"]
    await fake.restart()
    assert await ws.closed_by_server()
    assert fake.url == url
    assert await get_json(http, fake.url + "/history") == {}
    assert await get_json(http, fake.url + "/queue") == {"queue_running": [], "queue_pending": []}
    assert pending not in fake.queue_pending_ids()
    async with http.get(fake.url + "/view?filename=empty_00001_.png&subfolder=bot&type=output") as r:
        assert r.status == 200  # files survive
    fake.resume()
    r = await submit(http, fake, empty_save(3), "s")
    assert r["number"] == 0  # the counter restarted
    h = await wait_history(http, fake, r["prompt_id"])
    assert h["outputs"]["2"]["images"][0]["filename"] == "empty_00002_.png"  # the counter comes from the disk

    # a running prompt is forgotten too
    fake.node_delays["ImageBlur"] = 5.0
    ws = await WS.connect(http, fake, "s")
    await ws.recv()
    long = (await submit(http, fake, blur_chain(9), "s"))["prompt_id"]
    await ws.until(lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
    assert fake.running_id() == long
    restarting = asyncio.create_task(fake.restart(downtime=0.4))  # returns when the server is back
    await asyncio.sleep(0.15)
    assert fake.running_id() is None
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as fresh:
            await fresh.get(fake.url + "/queue")
    await restarting
    async with aiohttp.ClientSession() as fresh:
        async with fresh.get(fake.url + "/history") as resp:
            assert resp.status == 200 and await resp.json() == {}


async def test_fail_node_and_unsimulated_class(fake, http):
    ws = await WS.connect(http, fake, "c")
    await ws.recv()
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}}}
    fake.fail_node("ImageInvert", exception_message="boom")
    pid = (await submit(http, fake, prompt, "c"))["prompt_id"]
    msgs = await ws.until_done(pid)
    check_shapes(msgs, pid)
    err = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert (err["node_id"], err["node_type"], err["exception_type"], err["exception_message"], err["executed"]) == (
        "2", "ImageInvert", "RuntimeError", "boom\n", ["1"])
    assert err["current_inputs"]["image"][0].startswith("<fake IMAGE")
    assert types(msgs)[-3:] == ["execution_error", "status", "executing"]
    pid = (await submit(http, fake, prompt, "c"))["prompt_id"]  # count=1: runs now; node 1 cached, 2 not
    msgs = await ws.until_done(pid)
    assert [m["data"]["nodes"] for m in msgs if m["type"] == "execution_cached"] == [["1"]]
    assert "execution_success" in types(msgs)
    fake.fail_node("3", exception_message="disk full", exception_type="OSError")
    prompt["1"]["inputs"]["color"] = 8
    msgs = await ws.until_done((await submit(http, fake, prompt, "c"))["prompt_id"])
    assert next(m["data"]["exception_type"] for m in msgs if m["type"] == "execution_error") == "OSError"
    # a class the fake knows from object_info but does not simulate fails loudly
    fake.object_info["FancyNode"] = {**fake.object_info["ImageInvert"], "name": "FancyNode"}
    prompt["2"]["class_type"] = "FancyNode"
    msgs = await ws.until_done((await submit(http, fake, prompt, "c"))["prompt_id"])
    err = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert err["exception_message"] == "fake ComfyUI cannot run FancyNode\n"


async def test_model_workflows(fake, http):
    ws = await WS.connect(http, fake, "m")
    await ws.recv()
    pid = (await submit(http, fake, TXT2IMG_PROMPT, "m"))["prompt_id"]
    msgs = await ws.until_done(pid)
    check_shapes(msgs, pid)
    ks = [i for i, m in enumerate(msgs) if isinstance(m, dict) and m["type"] == "progress" and m["data"]["node"] == "5"]
    assert [(msgs[i]["data"]["value"], msgs[i]["data"]["max"]) for i in ks] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for i in ks:  # legacy client: JPEG preview right after each progress message
        assert compact(msgs[i + 1]) == ["binary", 1, 1]
    assert [(m["data"]["value"], m["data"]["max"]) for m in msgs
            if isinstance(m, dict) and m["type"] == "progress" and m["data"]["node"] == "8"] == [(1, 1)]
    out = next(m["data"]["output"] for m in msgs if isinstance(m, dict) and m["type"] == "executed")
    assert out == {"images": [{"filename": "t2i_00001_.png", "subfolder": "bot", "type": "output"}]}
    assert Image.open(io.BytesIO(fake.files[("output", "bot", "t2i_00001_.png")])).size == (128, 96)

    flagged = await WS.connect(http, fake, "mf", flags=True)
    await flagged.recv(), await flagged.recv()
    prompt = copy.deepcopy(TXT2IMG_PROMPT)
    prompt["5"]["inputs"]["seed"] = 43
    msgs = await flagged.until_done((await submit(http, fake, prompt, "mf"))["prompt_id"])
    metas = [json.loads(m[8:8 + struct.unpack(">I", m[4:8])[0]]) for m in msgs if isinstance(m, bytes)]
    assert len(metas) == 4 and {m["image_type"] for m in metas} == {"image/jpeg"}

    pid = (await submit(http, fake, SVD_PROMPT, "m"))["prompt_id"]
    await ws.until_done(pid)
    entry = await wait_history(http, fake, pid)
    assert entry["outputs"]["8"] == {"images": [{"filename": "svd_00001_.mp4", "subfolder": "bot", "type": "output"}],
                                     "animated": [True]}
    async with http.get(f"{fake.url}/view?filename=svd_00001_.mp4&subfolder=bot&type=output") as r:
        assert r.headers["Content-Type"] == "video/mp4"
        assert (await r.read()).startswith((DATA / "samples" / "video_00001_.mp4").read_bytes())  # + its frames


async def test_animated_outputs_share_the_counter(fake, http):
    ws = await WS.connect(http, fake, "a")
    await ws.recv()
    pid = (await submit(http, fake, ANIMATED_PROMPT, "a"))["prompt_id"]
    msgs = await ws.until_done(pid)
    check_shapes(msgs, pid)
    outs = (await wait_history(http, fake, pid))["outputs"]
    assert all(o["animated"] == [True] for o in outs.values())
    names = {o["images"][0]["filename"] for o in outs.values()}
    assert {n for n in names if n.startswith("anim_")} in (
        {"anim_00001_.png", "anim_00002_.webp"}, {"anim_00001_.webp", "anim_00002_.png"})
    assert {"video_00001_.mp4", "webm_00001_.webm"} <= names
    expected_types = {".png": "image/png", ".webp": "image/webp", ".mp4": "video/mp4", ".webm": "video/webm"}
    for name in names:
        async with http.get(f"{fake.url}/view?filename={name}&subfolder=bot&type=output") as r:
            assert r.headers["Content-Type"] == expected_types[Path(name).suffix]
            data = await r.read()
        if name.endswith((".png", ".webp")):
            assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 12
    assert fake.files[("output", "bot", "webm_00001_.webm")] == (DATA / "samples" / "webm_00001_.webm").read_bytes()


async def test_knobs_output_bytes_and_node_delays(http):
    fake = FakeComfyUI(node_delay=0.05, node_delays={"EmptyImage": 0.3})
    fake.output_bytes = b"\x89PNG fake" * 10
    await fake.start()
    try:
        ws = await WS.connect(http, fake, "k")
        await ws.recv()
        t0 = time.monotonic()
        pid = (await submit(http, fake, empty_save(5, "bot/raw", batch=2), "k"))["prompt_id"]
        await ws.until_done(pid)
        assert 0.33 <= time.monotonic() - t0 < 2.0
        assert fake.files[("output", "bot", "raw_00002_.png")] == fake.output_bytes
    finally:
        await fake.stop()
    assert fake.unhandled == []


async def test_unexpected_exceptions_are_recorded_and_answered_400(fake, http, monkeypatch):
    def broken() -> dict:
        raise RuntimeError("bug in the fake")

    monkeypatch.setattr(fake, "_queue_info", broken)
    async with http.get(fake.url + "/prompt") as r:
        assert r.status == 400
    assert len(fake.unhandled) == 1 and "bug in the fake" in fake.unhandled[0]
    fake.unhandled.clear()


async def test_stop_is_fast_with_busy_worker_open_sockets_and_slow_requests(http):
    fake = FakeComfyUI(node_delay=10.0)
    await fake.start()
    ws = await WS.connect(http, fake, "z")
    await submit(http, fake, empty_save(1), "z")
    fake.pause()
    await submit(http, fake, empty_save(2), "z")
    fake.slow("/queue", 10.0)
    pending = asyncio.ensure_future(http.get(fake.url + "/queue"))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    await fake.stop()
    await fake.stop()  # idempotent
    assert time.monotonic() - t0 < 1.0
    pending.cancel()
    with pytest.raises(BaseException):
        await pending
    assert await ws.closed_by_server()


async def test_simple_nodes_and_input_conversion(fake, http):
    def prompt(seed: int, prefix: str) -> dict:
        return {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 20, "height": 10, "batch_size": 1, "color": 0x808080}},
            "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": seed, "strength": 0.5}},
            "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "bilinear", "width": 40,
                                                         "height": 0, "crop": "disabled"}},
            "4": {"class_type": "GetImageSize", "inputs": {"image": ["3", 0]}},
            "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
            "6": {"class_type": "PrimitiveString", "inputs": {"value": "w="}},
            "7": {"class_type": "StringConcatenate", "inputs": {"string_a": ["6", 0], "string_b": 40, "delimiter": ""}},
            "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
            "9": {"class_type": "PrimitiveFloat", "inputs": {"value": 2}},
            "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
            "11": {"class_type": "PrimitiveInt", "inputs": {"value": "7"}},
            "12": {"class_type": "PreviewAny", "inputs": {"source": ["11", 0]}},
            "13": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
        }

    outs = []
    for seed, prefix in ((5, "n/a"), (6, "n/b"), (5, "n/c")):  # the seed-6 run evicts the seed-5 cache
        pid = (await submit(http, fake, prompt(seed, prefix), "c"))["prompt_id"]
        outs.append((await wait_history(http, fake, pid))["outputs"])
    assert {k: v["text"] for k, v in outs[0].items() if "text" in v} == {
        "5": ["20"], "8": ["w=40"], "10": ["2.0"], "12": ["7"]}
    # validation converted the literals in the stored prompt, as ComfyUI does
    assert (await get_json(http, fake.url + "/history?max_items=1")).popitem()[1]["prompt"][2]["11"]["inputs"] == {
        "value": 7}
    pixels = [Image.open(io.BytesIO(fake.files[("output", "n", f"{p}_00001_.png")])) for p in "abc"]
    assert pixels[0].size == (40, 20)
    assert pixels[0].tobytes() == pixels[2].tobytes() != pixels[1].tobytes()


async def test_canny_keeps_the_input_size(fake, http):
    await upload(http, fake, "shape.png", shape_png((90, 70)))
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "shape.png"}},
              "2": {"class_type": "Canny", "inputs": {"image": ["1", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bot/canny"}}}
    pid = (await submit(http, fake, prompt))["prompt_id"]
    entry = await wait_history(http, fake, pid)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["3"] == {"images": [{"filename": "canny_00001_.png", "subfolder": "bot", "type": "output"}]}
    edges = Image.open(io.BytesIO(fake.files[("output", "bot", "canny_00001_.png")]))
    assert (edges.size, edges.mode) == ((90, 70), "RGB")
    assert {c for _, c in edges.getcolors()} == {(0, 0, 0), (255, 255, 255)}  # the rectangle's outline, nothing else
    assert edges.getpixel((45, 35)) == (0, 0, 0) and edges.getpixel((22, 35)) == (255, 255, 255)
    # the thresholds are validated with the recorded limits
    prompt["2"]["inputs"]["low_threshold"] = 1.5
    async with http.post(fake.url + "/prompt", json={"prompt": prompt}) as r:
        assert r.status == 400
        [err] = (await r.json())["node_errors"]["2"]["errors"]
    assert (err["type"], err["message"]) == ("value_bigger_than_max", "Value 1.5 bigger than max of 0.99")


async def test_controlnet_workflow(http):
    fake = FakeComfyUI(models=CONTROLNET_MODELS)
    await fake.start()
    try:
        recorded = json.loads((DATA / "object_info.json").read_text())
        oi = await get_json(http, fake.url + "/object_info")
        assert oi["ControlNetLoader"]["input"]["required"]["control_net_name"] == [CONTROLNET_MODELS["controlnet"]]
        assert oi["ControlNetApplyAdvanced"] == recorded["ControlNetApplyAdvanced"]
        assert oi["Canny"] == recorded["Canny"]
        await upload(http, fake, "pose.png", shape_png((96, 64)))
        ws = await WS.connect(http, fake, "cn")
        await ws.recv()
        prompt = copy.deepcopy(CONTROLNET_PROMPT)
        prompt["12"] = {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}}
        prompt["13"] = {"class_type": "PreviewAny", "inputs": {"source": ["7", 1]}}
        pid = (await submit(http, fake, prompt, "cn"))["prompt_id"]
        msgs = await ws.until_done(pid)
        check_shapes(msgs, pid)
        assert "execution_success" in types(msgs) and "execution_error" not in types(msgs)
        assert sorted(m["data"]["node"] for m in msgs if isinstance(m, dict) and m["type"] == "executing"
                      and m["data"]["node"] is not None) == sorted(prompt)
        outs = (await wait_history(http, fake, pid))["outputs"]
        assert outs["11"] == {"images": [{"filename": "cn_00001_.png", "subfolder": "bot", "type": "output"}]}
        assert Image.open(io.BytesIO(fake.files[("output", "bot", "cn_00001_.png")])).size == (96, 64)
        # both outputs of ControlNetApplyAdvanced carry the control, the texts stay where they were
        for nid, text in (("12", "a cat"), ("13", "blurry")):
            [cond] = json.loads(outs[nid]["text"][0])
            assert cond["text"] == text
            assert (cond["control"], cond["control_strength"], cond["control_size"]) == (
                "control_v11p_sd15_canny.pth", 0.8, [96, 64])
        # strength 0: the conditioning passes through unchanged, as in ComfyUI
        prompt["7"]["inputs"]["strength"] = 0
        outs = (await wait_history(http, fake, (await submit(http, fake, prompt, "cn"))["prompt_id"]))["outputs"]
        assert json.loads(outs["12"]["text"][0]) == [{"text": "a cat", "clip": "sd15.safetensors"}]
        await ws.close()
    finally:
        await fake.stop()
    assert fake.unhandled == []


async def test_controlnet_name_not_in_the_models_knob_is_refused(http):
    fake = FakeComfyUI(models=CONTROLNET_MODELS)
    await fake.start()
    try:
        await upload(http, fake, "pose.png", shape_png())
        bad = copy.deepcopy(CONTROLNET_PROMPT)
        bad["6"]["inputs"]["control_net_name"] = "control_v11f1p_sd15_depth.pth"
        async with http.post(fake.url + "/prompt", json={"prompt": bad}) as r:
            assert r.status == 400
            body = await r.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert list(body["node_errors"]) == ["6"]
        assert body["node_errors"]["6"]["class_type"] == "ControlNetLoader"
        assert body["node_errors"]["6"]["dependent_outputs"] == ["11"]
        assert body["node_errors"]["6"]["errors"] == [{
            "type": "value_not_in_list", "message": "Value not in list",
            "details": "control_net_name: 'control_v11f1p_sd15_depth.pth' not in ['control_v11p_sd15_canny.pth']",
            "extra_info": {"input_name": "control_net_name", "input_config": [["control_v11p_sd15_canny.pth"], {}],
                           "received_value": "control_v11f1p_sd15_depth.pth"}}]
    finally:
        await fake.stop()
    assert fake.unhandled == []


async def test_controlnet_loader_without_models_knob_has_no_options(fake, http):
    await upload(http, fake, "pose.png", shape_png())
    async with http.post(fake.url + "/prompt", json={"prompt": CONTROLNET_PROMPT}) as r:
        assert r.status == 400
        [err] = (await r.json())["node_errors"]["6"]["errors"]
    assert err["details"] == "control_net_name: 'control_v11p_sd15_canny.pth' not in []"
    assert await get_json(http, fake.url + "/models/controlnet") == []


def preprocessor_prompt() -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "shape.png"}},
        "2": {"class_type": "DepthAnythingV2Preprocessor", "inputs": {
            "image": ["1", 0], "ckpt_name": "depth_anything_v2_vits.pth", "resolution": 512}},
        "3": {"class_type": "OpenposePreprocessor", "inputs": {
            "image": ["1", 0], "detect_hand": "enable", "detect_body": "enable", "detect_face": "disable",
            "resolution": 512}},
        "4": {"class_type": "LineArtPreprocessor", "inputs": {"image": ["1", 0]}},  # optional inputs left out
        "5": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pre/depth"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "pre/pose"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "pre/lineart"}},
    }


async def test_custom_preprocessors_only_when_installed(fake, http):
    # a bare fake neither lists nor accepts them: the unknown-class validation error
    oi = await get_json(http, fake.url + "/object_info")
    assert not set(AUX_PREPROCESSORS) & set(oi)
    assert await get_json(http, fake.url + "/object_info/OpenposePreprocessor") == {}
    await upload(http, fake, "shape.png", shape_png((80, 60)))
    async with http.post(fake.url + "/prompt", json={"prompt": preprocessor_prompt()}) as r:
        assert r.status == 400
        assert await r.json() == {"error": {
            "type": "invalid_prompt", "message": "Cannot execute because node DepthAnythingV2Preprocessor does not exist.",
            "details": "Node ID '#2'", "extra_info": {}}, "node_errors": {}}

    installed = FakeComfyUI(custom_nodes=AUX_PREPROCESSORS)
    await installed.start()
    try:
        recorded = json.loads((DATA / "object_info.json").read_text())
        oi = await get_json(http, installed.url + "/object_info")
        assert list(oi) == list(recorded) + list(AUX_PREPROCESSORS)  # custom nodes after the built-in ones
        for name, entry in AUX_PREPROCESSORS.items():
            assert oi[name] == entry
            assert set(entry) == set(recorded["ControlNetLoader"])  # every key of a real entry
            assert (entry["name"], entry["python_module"], entry["output"]) == (
                name, "custom_nodes.comfyui_controlnet_aux", ["IMAGE"])
            assert entry["input"]["optional"]["resolution"] == [
                "INT", {"default": 512, "min": 64, "max": 16384, "step": 64}]
        assert await get_json(http, installed.url + "/object_info/OpenposePreprocessor") == {
            "OpenposePreprocessor": AUX_PREPROCESSORS["OpenposePreprocessor"]}
        await upload(http, installed, "shape.png", shape_png((80, 60)))
        pid = (await submit(http, installed, preprocessor_prompt()))["prompt_id"]
        entry = await wait_history(http, installed, pid)
        assert entry["status"]["status_str"] == "success"
        assert sorted(entry["outputs"]) == ["5", "6", "7"]
        depth, pose, lineart = (Image.open(io.BytesIO(installed.files[("output", "pre", f"{n}_00001_.png")]))
                                for n in ("depth", "pose", "lineart"))
        assert {im.size for im in (depth, pose, lineart)} == {(80, 60)}
        assert all(r == g == b for _, (r, g, b) in depth.getcolors())
        assert pose.getextrema() == ((0, 0), (0, 0), (0, 0))
        assert {c for _, c in lineart.getcolors()} == {(0, 0, 0), (255, 255, 255)}
        # their inputs are validated like any other class's
        bad = preprocessor_prompt()
        bad["2"]["inputs"]["ckpt_name"] = "depth_anything_v2_vitx.pth"
        bad["3"]["inputs"]["resolution"] = 32
        async with http.post(installed.url + "/prompt", json={"prompt": bad}) as r:
            assert r.status == 200  # output "7" is still valid
            node_errors = (await r.json())["node_errors"]
        assert [e["type"] for e in node_errors["2"]["errors"]] == ["value_not_in_list"]
        assert node_errors["2"]["errors"][0]["details"] == (
            "ckpt_name: 'depth_anything_v2_vitx.pth' not in ['depth_anything_v2_vitg.pth', "
            "'depth_anything_v2_vitl.pth', 'depth_anything_v2_vitb.pth', 'depth_anything_v2_vits.pth']")
        assert [e["message"] for e in node_errors["3"]["errors"]] == ["Value 32 smaller than min of 64"]
    finally:
        await installed.stop()
    assert installed.unhandled == []


async def test_custom_node_without_simulation_runs_as_preprocessor(http):
    entry = {**AUX_PREPROCESSORS["DepthAnythingV2Preprocessor"], "name": "MiDaS-DepthMapPreprocessor",
             "display_name": "MiDaS Depth Map"}
    fake = FakeComfyUI(custom_nodes={"MiDaS-DepthMapPreprocessor": entry})
    await fake.start()
    try:
        oi = await get_json(http, fake.url + "/object_info")
        assert "MiDaS-DepthMapPreprocessor" in oi and "DepthAnythingV2Preprocessor" not in oi
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 2,
                                                               "color": 0x336699}},
                  "2": {"class_type": "MiDaS-DepthMapPreprocessor", "inputs": {"image": ["1", 0], "resolution": 256}},
                  "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "midas"}}}
        entry = await wait_history(http, fake, (await submit(http, fake, prompt))["prompt_id"])
        assert entry["status"]["status_str"] == "success"
        assert [i["filename"] for i in entry["outputs"]["3"]["images"]] == ["midas_00001_.png", "midas_00002_.png"]
        im = Image.open(io.BytesIO(fake.files[("output", "", "midas_00001_.png")]))
        assert im.size == (40, 30) and len(set(im.getpixel((0, 0)))) == 1
    finally:
        await fake.stop()
    assert fake.unhandled == []

