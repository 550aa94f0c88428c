"""video_gen against the fake ComfyUI (selftest set, no model): a video upscaled frame by frame, the format
that fits a limit, and requests refused in words before anything is sent."""

from __future__ import annotations

import pytest
from PIL import Image

from image_gen import RequestError
from results.folder import OutputError
from tests.fakes.comfy_nodes import decode_mp4, encode_mp4
from video_gen import animate, interpolate, text_video_values, upscale_video


def clip(tmp_path, count: int = 5, size: tuple[int, int] = (40, 30)):
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4([Image.new("RGB", size, (40 * index, 80, 160)) for index in range(count)], 6.0))
    return path


async def test_a_video_is_upscaled_frame_by_frame_at_its_frame_rate(comfy, engine, tmp_path):
    source = clip(tmp_path)
    result = await upscale_video(engine, source, 2, limit=10 * 1024 * 1024)
    (path,) = result.files
    frames, fps = decode_mp4(path.read_bytes())
    assert (len(frames), fps, frames[0].size) == (5, 6.0, (80, 60))
    assert frames[3].getpixel((0, 0)) == (120, 80, 160)
    graph = comfy.prompts[result.prompt_id]["prompt"]
    assert comfy.read_file("input", "", graph["1"]["inputs"]["file"]) == source.read_bytes()
    assert graph["3"]["inputs"]["scale_by"] == 2.0  # no model in the selftest set: the factor itself
    assert result.params["factor"] == 2 and result.params["format"].startswith("MP4, ")
    with pytest.raises(RequestError, match="a video can be upscaled 2x or 4x"):
        await upscale_video(engine, source, 8)


async def test_a_video_too_large_with_no_frames_beside_it_is_refused_in_words(comfy, engine, tmp_path):
    still = tmp_path / "still.png"
    Image.new("RGB", (64, 48), "green").save(still)
    prompts = len(comfy.prompts)
    with pytest.raises(OutputError, match=r"The video is .* KiB; this channel accepts files up to 1000 bytes\."):
        await animate(engine, still, frames=6, fps=8, limit=1000)  # the selftest animation saves only its MP4
    assert len(comfy.prompts) == prompts + 1
    for values, said in (({"frames": 49}, "frames must be between 1 and 48"), ({"fps": 61}, "fps must be between 1 "
                         "and 60"), ({"motion": 2000}, "motion must be between 1 and 1023")):
        with pytest.raises(RequestError, match=said):
            await animate(engine, still, **values)
    assert len(comfy.prompts) == prompts + 1  # refused before anything was sent


async def test_interpolate_and_text_to_video_are_off_until_their_setting_names_a_model(engine, settings, tmp_path):
    with pytest.raises(RequestError, match="Interpolate is off on this bot"):
        await interpolate(engine, clip(tmp_path), 8)
    with pytest.raises(RequestError, match="no server of this bot can make videos from text"):
        text_video_values(settings, {"prompt": "a boat"})
    on = settings.model_copy(update={"animatediff_model": "mm_sd_v15_v2.ckpt"})
    values = text_video_values(on, {"prompt": "a boat", "frames": 8, "width": 300, "height": 200})
    assert (values["frames"], values["width"], values["height"], values["motion_model"]) == (
        8, 296, 200, "mm_sd_v15_v2.ckpt")
    for request, said in (({"frames": 33}, "frames must be between 1 and 32"),
                          ({"width": 1024}, "a video from text is at most 768x768")):
        with pytest.raises(RequestError, match=said):
            text_video_values(on, {"prompt": "a boat", **request})
