"""The prompt and workflow ComfyUI embeds in its PNG and WebP files are read back exactly, without
decoding pixels; every damaged or foreign file is refused with a sentence, never a crash."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfy.embedded import MAX_TEXT, EmbeddedError, read_embedded
from comfy.ui_format import to_api
from tests.fakes.comfy_nodes import load_object_info

DATA = Path(__file__).resolve().parents[1] / "data" / "user_workflows"
WORKFLOW = json.loads((DATA / "ui" / "txt2img.json").read_text())
PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 7, "model": ["4", 0]}, "_meta": {"title": "KSampler"}}}


def refusal(data: bytes, **limits) -> str:
    with pytest.raises(EmbeddedError) as caught:
        read_embedded(data, **limits)
    return str(caught.value)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(*texts: bytes, width: int = 8, height: int = 8, image_data: bytes | None = None) -> bytes:
    """A PNG built chunk by chunk: header, the given chunks, image data (valid unless given), end."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = image_data if image_data is not None else zlib.compress(b"\x00" * ((width + 1) * height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(texts) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def text(key: str, value: str) -> bytes:
    return chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1"))


def pillow_png(info: PngInfo | None = None) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def webp(exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    extra = {"exif": exif} if exif is not None else {}
    Image.new("RGB", (16, 16), (30, 30, 200)).save(out, format="WEBP", **extra)
    return out.getvalue()


# --- files ComfyUI saves -----------------------------------------------------------------------------

def test_the_committed_png_gives_back_its_prompt_and_workflow():
    prompt, workflow = read_embedded((DATA / "png" / "txt2img.png").read_bytes())
    assert workflow == WORKFLOW
    assert prompt == to_api(WORKFLOW, load_object_info())
    assert prompt["4"]["inputs"] == {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}


def test_the_committed_animated_webp_gives_back_its_prompt_and_workflow():
    data = (DATA / "png" / "txt2img.webp").read_bytes()
    assert data[:4] == b"RIFF" and b"ANIM" in data[:64]
    prompt, workflow = read_embedded(data)
    assert workflow == WORKFLOW
    assert prompt == to_api(WORKFLOW, load_object_info())


def test_text_that_is_not_latin_1_comes_back_from_an_international_text_chunk():
    prompt = {"6": {"class_type": "CLIPTextEncode", "inputs": {"text": "ein Fuchs im Schnee 🦊, 雪の狐"}}}
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt, ensure_ascii=False))  # Pillow writes iTXt for this
    data = pillow_png(info)
    assert b"iTXtprompt" in data
    assert read_embedded(data) == (prompt, None)


def test_compressed_text_chunks_are_read():
    info = PngInfo()
    info.add_text("prompt", json.dumps(PROMPT), zip=True)  # zTXt
    info.add_itxt("workflow", json.dumps(WORKFLOW), zip=True)
    data = pillow_png(info)
    assert b"zTXtprompt" in data and b"iTXtworkflow" in data
    assert read_embedded(data) == (PROMPT, WORKFLOW)


def test_an_animated_png_carries_them_in_comf_chunks_after_the_frames():
    info = PngInfo()  # as SaveAnimatedPNG writes them
    info.add(b"comf", b"prompt\x00" + json.dumps(PROMPT).encode("latin-1"), after_idat=True)
    info.add(b"comf", b"workflow\x00" + json.dumps(WORKFLOW).encode("latin-1"), after_idat=True)
    first, second = Image.new("RGB", (16, 16), (0, 0, 0)), Image.new("RGB", (16, 16), (255, 255, 255))
    out = io.BytesIO()
    first.save(out, format="PNG", save_all=True, append_images=[second], pnginfo=info, duration=100)
    data = out.getvalue()
    assert b"acTL" in data and data.index(b"comfprompt") > data.index(b"fdAT")
    assert read_embedded(data) == (PROMPT, WORKFLOW)


def test_a_png_without_metadata_has_neither():
    assert read_embedded(pillow_png()) == (None, None)
    info = PngInfo()
    info.add_text("parameters", "a fox, Steps: 20")  # another program's metadata
    assert read_embedded(pillow_png(info)) == (None, None)


def test_a_png_with_only_a_prompt_gives_only_the_prompt():
    assert read_embedded(png(text("prompt", json.dumps(PROMPT)))) == (PROMPT, None)


def test_a_prompt_of_null_counts_as_absent():
    assert read_embedded(png(text("prompt", "null"), text("workflow", json.dumps(WORKFLOW)))) == (None, WORKFLOW)


def test_pixels_are_never_decoded():
    garbage = png(text("prompt", json.dumps(PROMPT)), image_data=b"not zlib at all", width=100_000, height=100_000)
    assert read_embedded(garbage) == (PROMPT, None)


def test_a_webp_without_exif_has_neither():
    assert read_embedded(webp()) == (None, None)


def test_a_webp_with_other_exif_has_neither():
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    assert read_embedded(webp(exif)) == (None, None)


def test_the_workflow_may_sit_in_any_exif_string():
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(PROMPT)
    exif[0x010E] = "workflow:" + json.dumps(WORKFLOW)  # the editor's workflow after another extra key
    exif[0x010F] = "note:{}"
    assert read_embedded(webp(exif)) == (PROMPT, WORKFLOW)


# --- refusals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"GIF89a\x01\x00\x01\x00", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"{\"nodes\": []}",
                                  b"RIFF\x10\x00\x00\x00AVI LIST"])
def test_a_file_that_is_neither_is_refused(data):
    assert refusal(data) == "the file is neither a PNG nor a WebP, so it holds no ComfyUI workflow"


def test_anything_but_bytes_is_refused():
    assert refusal("not bytes") == "the attachment is not a file's bytes"


def test_a_file_over_the_limit_is_refused_before_reading():
    assert refusal(pillow_png(), limit=50) == f"the image is {len(pillow_png()):,} bytes; at most 50 are read for a workflow"


def test_a_truncated_png_is_refused():
    data = (DATA / "png" / "txt2img.png").read_bytes()
    start = data.index(b"tEXtprompt") - 4
    assert refusal(data[:start + 40]) == f"the PNG is cut short: its tEXt chunk at byte {start} runs past the end"
    assert refusal(data[:-12]) == "the PNG is cut short: it ends before its last chunk"
    assert refusal(data[:8]) == "the PNG is cut short: it ends before its last chunk"


def test_a_damaged_text_chunk_is_refused():
    data = bytearray((DATA / "png" / "txt2img.png").read_bytes())
    start = data.index(b"tEXtprompt") - 4
    data[start + 30] ^= 0x01
    assert refusal(bytes(data)) == f"the PNG's tEXt chunk at byte {start} is damaged (bad checksum)"


def test_a_png_without_its_header_chunk_is_refused():
    data = b"\x89PNG\r\n\x1a\n" + text("prompt", "{}") + chunk(b"IEND", b"")
    assert refusal(data) == "the file starts like a PNG but its first chunk is not the image header"


@pytest.mark.parametrize(("value", "sentence"), [
    ("{\"3\": ", "the embedded prompt is not valid JSON"),
    ("[1, 2]", "the embedded prompt is not a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "the embedded prompt is nested too deeply"),
    ("{\"a\": " + "9" * 5000 + "}", "the embedded prompt is not valid JSON"),
])
def test_a_prompt_that_is_not_a_json_object_is_refused(value, sentence):
    assert refusal(png(text("prompt", value))) == sentence


def test_a_text_bomb_is_refused():
    bomb = zlib.compress(b" " * (MAX_TEXT + 1), 9)
    data = png(chunk(b"zTXt", b"workflow\x00\x00" + bomb))
    assert refusal(data) == f"the PNG's \"workflow\" text inflates past {MAX_TEXT:,} bytes"
    assert refusal(png(chunk(b"zTXt", b"prompt\x00\x00not zlib"))) == "the PNG's compressed \"prompt\" text is damaged"


def test_broken_international_text_is_refused():
    assert refusal(png(chunk(b"iTXt", b"prompt\x00\x00\x00\x00\x00\xff\xfe"))) == "the PNG's \"prompt\" text is not UTF-8"
    assert refusal(png(chunk(b"iTXt", b"prompt\x00"))) == "the PNG's iTXt chunk \"prompt\" is cut short"
    assert refusal(png(chunk(b"tEXt", b"prompt"))) == "the PNG has a tEXt chunk without a keyword"


def test_a_truncated_webp_is_refused():
    data = (DATA / "png" / "txt2img.webp").read_bytes()
    exif = data.index(b"EXIF")
    assert refusal(data[:exif + 20]) == f"the WebP is cut short: its EXIF chunk at byte {exif} runs past the end"
    assert refusal(webp()[:-6]).startswith("the WebP is cut short: ")


def test_a_damaged_exif_block_is_refused():
    data = webp()
    body = b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 4  # claims 65535 entries it does not have
    riff = data[12:] + b"EXIF" + struct.pack("<I", len(body)) + body
    damaged = b"RIFF" + struct.pack("<I", len(riff) + 4) + b"WEBP" + riff
    assert refusal(damaged) == "the WebP's EXIF block is damaged (its table claims 65535 entries it does not hold)"
    body = b"MM\x00*\x00\x00\x00\x08\x00\x01" + struct.pack(">HHII", 0x0110, 2, 400, 90)  # a text past the end
    riff = data[12:] + b"EXIF" + struct.pack("<I", len(body)) + body
    damaged = b"RIFF" + struct.pack("<I", len(riff) + 4) + b"WEBP" + riff
    assert refusal(damaged) == "the WebP's EXIF block is damaged (a value lies outside it)"
    no_tiff = b"EXIF" + struct.pack("<I", 4) + b"JUNK"
    riff = data[12:] + no_tiff
    assert refusal(b"RIFF" + struct.pack("<I", len(riff) + 4) + b"WEBP" + riff) == \
        "the WebP's EXIF block is damaged (no TIFF header)"


@pytest.mark.parametrize("name", ["txt2img.png", "txt2img.webp"])
def test_damaged_copies_only_ever_give_an_embedded_error(name):
    original = (DATA / "png" / name).read_bytes()
    rng = random.Random(20)
    for _ in range(400):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = bytes(data[:rng.randint(len(data) // 2, len(data))]) if rng.random() < 0.3 else bytes(data)
        try:
            prompt, workflow = read_embedded(cut)
        except EmbeddedError as error:
            assert str(error)
        else:
            assert prompt is None or isinstance(prompt, dict)
            assert workflow is None or isinstance(workflow, dict)
