"""A video's format chosen to fit an upload limit: the MP4 when it fits, else a WebP or GIF made from its
frames, with the reason in words; real files, decoded back with Pillow."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from results.media import TooLarge, choose_video_format
from tests.fakes.comfy_nodes import encode_mp4


def frames(count: int, size: tuple[int, int], grainy: bool = False) -> list[Image.Image]:
    rng = random.Random(7)
    made = []
    for index in range(count):
        image = Image.new("RGB", size, (index * 10 % 256, 90, 200))
        if grainy:  # few colours, no order: hard for WebP's transform, easy for a GIF's small palette
            image.putdata([tuple(rng.randrange(4) * 85 for _ in range(3)) for _ in range(size[0] * size[1])])
        made.append(image)
    return made


def write(tmp_path, images: list[Image.Image]):
    video, animation = tmp_path / "clip.mp4", tmp_path / "clip.webp"
    video.write_bytes(encode_mp4(images, 8.0))
    images[0].save(animation, "WEBP", save_all=True, append_images=images[1:], duration=125, lossless=True)
    return video, animation


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


async def test_the_mp4_is_posted_when_it_fits(tmp_path):
    video, animation = write(tmp_path, frames(6, (64, 48)))
    choice = await choose_video_format(video, animation, 10 * 1024 * 1024)
    size = video.stat().st_size
    assert (choice.suffix, choice.data) == (".mp4", None)
    assert choice.reason == f"MP4, {size / 1024:.1f} KiB: fits this channel's 10.0 MiB limit"


async def test_a_webp_of_the_frames_when_the_mp4_is_too_large(tmp_path):
    video, animation = write(tmp_path, frames(12, (256, 192)))
    size = video.stat().st_size
    choice = await choose_video_format(video, animation, 40_000)
    assert size > 40_000 and choice.suffix == ".webp" and len(choice.data) <= 40_000
    webp = opened(choice.data)
    assert webp.format == "WEBP" and webp.n_frames == 12 and webp.size == (256, 192)
    assert choice.reason == (f"WebP, {len(choice.data) / 1024:.1f} KiB: the MP4 ({size / 1024:.1f} KiB) is over "
                             "this channel's 39.1 KiB limit")


async def test_a_gif_at_half_the_frame_rate_when_grainy_frames_beat_webp(tmp_path):
    video, animation = write(tmp_path, frames(8, (160, 120), grainy=True))
    choice = await choose_video_format(video, animation, 85_000)
    assert choice.suffix == ".gif" and len(choice.data) <= 85_000
    gif = opened(choice.data)
    assert gif.format == "GIF" and gif.n_frames == 4 and gif.size == (160, 120) and gif.info["duration"] == 250
    assert choice.reason.startswith(f"GIF, {len(choice.data) / 1024:.1f} KiB: the MP4 (")
    assert choice.reason.endswith("is over this channel's 83.0 KiB limit, and so is a WebP of this size; "
                                  "at half the frame rate")


async def test_smaller_frames_before_giving_up_and_words_when_nothing_fits(tmp_path):
    video, animation = write(tmp_path, frames(12, (256, 192), grainy=True))
    choice = await choose_video_format(video, animation, 60_000)
    assert choice.suffix == ".webp" and opened(choice.data).size < (256, 192)
    assert choice.reason.endswith(f", made smaller ({opened(choice.data).width}×{opened(choice.data).height})")
    with pytest.raises(TooLarge, match=r"even as a small WebP or GIF it is over this channel's 1000 bytes limit; "
                                       r"ask for fewer frames\."):
        await choose_video_format(video, animation, 1000)
    with pytest.raises(TooLarge, match=r"this channel accepts files up to 1000 bytes"):
        await choose_video_format(video, None, 1000)  # no frames to make it smaller from


async def test_frames_too_many_to_read_are_refused_in_words_not_read(tmp_path, monkeypatch):
    video, animation = write(tmp_path, frames(12, (256, 192)))
    monkeypatch.setattr("results.media._FRAME_PIXELS", 11 * 256 * 192)  # the bound, at a test's scale
    with pytest.raises(TooLarge, match=r"too long and large \(12 frames of 256×192\) to make smaller; ask for "
                                       r"fewer frames\."):
        await choose_video_format(video, animation, 40_000)
