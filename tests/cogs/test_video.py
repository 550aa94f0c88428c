"""The video side through the fake Discord and the fake ComfyUI (default workflow set): Animate again's
form, Upscale and Interpolate on a video, /video with AnimateDiff, each offered only where a server has
its nodes, and the format (MP4, WebP, GIF) that fits the channel's upload limit, with its reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.bot_harness import animate, bot_settings, custom_ids, result_of
from tests.conftest import MODELS
from tests.fakes.comfy_nodes import ANIMATEDIFF, FRAME_INTERPOLATION, decode_mp4
from tests.fakes.comfyui import FakeComfyUI

VIDEO_MODELS = {**MODELS, "checkpoints": [*MODELS["checkpoints"], "svd_xt.safetensors"],
                "animatediff_models": ["mm_sd_v15_v2.ckpt"]}


async def started_comfy(custom_nodes: dict | None = None) -> FakeComfyUI:
    fake = FakeComfyUI(models={key: list(value) for key, value in VIDEO_MODELS.items()}, custom_nodes=custom_nodes)
    await fake.start()
    return fake


@pytest.fixture
async def comfy():
    fake = await started_comfy()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


@pytest.fixture
async def comfy_video_nodes():
    fake = await started_comfy({**FRAME_INTERPOLATION, **ANIMATEDIFF})
    yield fake
    await fake.stop()
    assert fake.unhandled == []


def settings_for(tmp_path, url, **overrides):
    return bot_settings(tmp_path, url, workflow_set="default", **overrides)


async def ready(discord_fake, running, settings):
    await running.start(settings)
    await discord_fake.wait_for(lambda: running.bot.scheduler.pool.any_healthy() and all(
        backend.object_info is not None for backend in running.bot.scheduler.pool.backends), timeout=5)


def fields(message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


def graph_of(comfy, kind_node: str, *others) -> dict:
    """The last prompt that has a node of class `kind_node`, on `comfy` or any of `others`."""
    return [body["prompt"] for fake in (comfy, *others) for body in fake.prompts.values()
            if any(node["class_type"] == kind_node for node in body["prompt"].values())][-1]


def node(graph: dict, class_type: str) -> dict:
    (found,) = [body["inputs"] for body in graph.values() if body["class_type"] == class_type]
    return found


async def answer(discord_fake, interaction) -> str:
    await interaction.wait_acked(3)
    return discord_fake.messages[interaction.original_message_id].content


async def animation(discord_fake, size: int = 64):
    image = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a kite", "width": size, "height": size}), timeout=20)
    return image, await result_of(discord_fake, await animate(discord_fake, image.id, "cf:anim:1:0"), timeout=20)


async def test_animate_under_an_image_opens_a_form_with_the_defaults_filled_in(comfy, discord_fake, running, tmp_path):
    settings = settings_for(tmp_path, comfy.url, default_motion=90)
    await ready(discord_fake, running, settings)
    image = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a kite", "width": 64, "height": 64}), timeout=20)
    opened = await discord_fake.click(image.id, "cf:anim:1:0")
    await opened.wait_acked(3)
    assert opened.modal["title"] == "Animate" and opened.modal["custom_id"] == "cf:animimg:1:0"
    form = {row["components"][0]["custom_id"]: row["components"][0].get("value") for row in opened.modal["components"]}
    assert form == {"frames": "14", "fps": "8", "motion": "90", "seed": None}
    assert comfy.prompts and len(comfy.prompts) == 1  # nothing runs before the form is sent
    await running.stop()
    await ready(discord_fake, running, settings)  # the form needs nothing in memory

    refused = await discord_fake.submit_modal(opened, {"frames": "0"})
    assert await answer(discord_fake, refused) == "That animation cannot be made: frames must be between 1 and 48 (got 0)."
    assert len(comfy.prompts) == 1
    again = await discord_fake.click(image.id, "cf:anim:1:0")
    await again.wait_acked(3)
    video = await result_of(discord_fake, await discord_fake.submit_modal(again, {"frames": "5", "seed": "77"}),
                            timeout=20)
    graph = graph_of(comfy, "SVD_img2vid_Conditioning")
    conditioning = graph["3"]["inputs"]
    assert (conditioning["video_frames"], conditioning["fps"], conditioning["motion_bucket_id"]) == (5, 8, 90)
    assert graph["5"]["inputs"]["seed"] == 77
    assert fields(video)["Frames"] == "5 at 8 fps" and len(decode_mp4(video.attachments[0]["data"])[0]) == 5


async def test_animate_again_opens_a_form_with_its_values_and_checks_what_comes_back(comfy, discord_fake, running,
                                                                                      tmp_path):
    settings = settings_for(tmp_path, comfy.url)
    await ready(discord_fake, running, settings)
    image, video = await animation(discord_fake)
    (attachment,) = video.attachments
    assert attachment["filename"].endswith(".mp4") and attachment["data"][4:8] == b"ftyp"
    shown = fields(video)
    assert shown["Frames"] == "14 at 8 fps" and shown["Motion"] == "127"
    assert shown["Format"] == f"MP4, {len(attachment['data']) / 1024:.1f} KiB: fits this channel's 8.0 MiB limit"
    # no server has RIFE: Upscale (core nodes) is offered on the video, Interpolate is not
    assert custom_ids(video) == ["cf:vup:2:2", "cf:animform:2", "cf:fav:2", "cf:del:2", "cf:report:2", "cf:share:2"]
    first = graph_of(comfy, "SVD_img2vid_Conditioning")
    seed = first["5"]["inputs"]["seed"]

    opened = await discord_fake.click(video.id, "cf:animform:2")
    await opened.wait_acked(3)
    form = {row["components"][0]["custom_id"]: row["components"][0].get("value") for row in opened.modal["components"]}
    assert form == {"frames": "14", "fps": "8", "motion": "127", "seed": str(seed)}
    await running.stop()
    await ready(discord_fake, running, settings)  # the form needs nothing in memory

    for values, said in (({"frames": "many"}, "frames must be a whole number, like 14."),
                         ({"frames": "500"}, "frames must be between 1 and 48 (got 500)."),
                         ({"motion": "0"}, "motion must be between 1 and 1023 (got 0)."),
                         ({"fps": "7.5"}, "frames per second must be a whole number, like 8."),
                         ({"seed": "-3"}, "the seed must be a whole number, or empty for a new one.")):
        again = await discord_fake.click(video.id, "cf:animform:2")
        await again.wait_acked(3)
        refused = await discord_fake.submit_modal(again, {**form, **values})
        assert await answer(discord_fake, refused) == f"That animation cannot be made: {said}"
    prompts = len(comfy.prompts)
    sent = await discord_fake.submit_modal(opened, {"frames": "6", "fps": "12", "motion": "300", "seed": ""})
    remade = await result_of(discord_fake, sent, timeout=20)
    assert len(comfy.prompts) == prompts + 1
    graph = graph_of(comfy, "SVD_img2vid_Conditioning")
    conditioning = graph["3"]["inputs"]
    assert (conditioning["video_frames"], conditioning["fps"], conditioning["motion_bucket_id"]) == (6, 12, 300)
    assert graph["7"]["inputs"]["fps"] == 12 and graph["5"]["inputs"]["seed"] != seed
    assert comfy.read_file("input", "", graph["2"]["inputs"]["image"]) == image.attachments[0]["data"]
    frames, fps = decode_mp4(remade.attachments[0]["data"])
    assert (len(frames), fps, frames[0].size) == (6, 12.0, (64, 64))
    assert fields(remade)["Frames"] == "6 at 12 fps" and fields(remade)["Motion"] == "300"
    assert fields(remade)["From"].startswith("[the original image](")  # the image, not the first animation

    discord_fake.messages[video.id].components[0]["components"][0]["custom_id"] = "cf:interp:2"  # a forged id
    forged = await discord_fake.click(video.id, "cf:interp:2")
    assert await answer(discord_fake, forged) == ("Interpolate is not available on this bot's servers right now: "
                                                  "it needs the ComfyUI-Frame-Interpolation nodes.")


async def test_upscale_and_interpolate_a_video_where_a_server_has_rife(comfy, comfy_video_nodes, discord_fake,
                                                                        running, tmp_path):
    plain, comfy = comfy, comfy_video_nodes  # two servers: only the second has RIFE
    await ready(discord_fake, running, settings_for(tmp_path, plain.url, comfyui_urls=[plain.url, comfy.url],
                                                    interpolate_model="rife47.pth"))
    _, video = await animation(discord_fake)
    assert custom_ids(video) == ["cf:vup:2:2", "cf:interp:2", "cf:animform:2", "cf:fav:2", "cf:del:2", "cf:report:2", "cf:share:2"]
    posted = video.attachments[0]["data"]

    upscaled = await result_of(discord_fake, await discord_fake.click(video.id, "cf:vup:2:2"), timeout=20)
    graph = graph_of(comfy, "GetVideoComponents", plain)
    uploaded = [fake.read_file("input", "", node(graph, "LoadVideo")["file"]) for fake in (plain, comfy)]
    assert posted in uploaded  # the video, uploaded to the server that ran it
    assert node(graph, "UpscaleModelLoader")["model_name"] == "RealESRGAN_x4plus.pth"
    assert node(graph, "ImageScaleBy")["scale_by"] == 0.5 and node(graph, "CreateVideo")["fps"] == ["2", 2]
    frames, fps = decode_mp4(upscaled.attachments[0]["data"])
    assert (len(frames), fps, frames[0].size) == (14, 8.0, (128, 128))  # every frame, same frame rate
    assert upscaled.embeds[0]["title"] == "Upscaled video 2x" and upscaled.content.endswith("your video is ready.")
    assert fields(upscaled)["Size"] == "128×128" and fields(upscaled)["Frames"] == "14 at 8 fps"
    assert custom_ids(upscaled) == ["cf:interp:3", "cf:fav:3", "cf:del:3", "cf:report:3", "cf:share:3"]

    smoother = await result_of(discord_fake, await discord_fake.click(video.id, "cf:interp:2"), timeout=20)
    graph = graph_of(comfy, "RIFE VFI")  # on the server that has RIFE, never the other
    assert not any(node["class_type"] == "RIFE VFI" for body in plain.prompts.values() for node in body["prompt"].values())
    rife = node(graph, "RIFE VFI")
    assert (rife["ckpt_name"], rife["multiplier"], rife["frames"]) == ("rife47.pth", 2, ["2", 0])
    assert node(graph, "CreateVideo")["fps"] == 16 and node(graph, "SaveAnimatedWEBP")["fps"] == 16
    frames, fps = decode_mp4(smoother.attachments[0]["data"])
    original, _ = decode_mp4(posted)
    assert (len(frames), fps) == (27, 16.0) and frames[0].tobytes() == original[0].tobytes()
    between = Image.blend(original[0], original[1], 0.5)
    assert frames[1].tobytes() == between.tobytes()  # a frame made between the first two
    assert smoother.embeds[0]["title"] == "Interpolated video: twice the frame rate"
    assert fields(smoother)["Frames"] == "27 at 16 fps"
    assert custom_ids(smoother) == ["cf:vup:4:2", "cf:fav:4", "cf:del:4", "cf:report:4", "cf:share:4"]


async def test_a_video_too_large_for_the_channel_is_posted_as_webp_with_the_reason(comfy, discord_fake, running,
                                                                                    tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url))
    discord_fake.attachment_size_limit = 64 * 1024  # this channel takes 64 KiB; the MP4 of 14 frames of 256² is more
    _, video = await animation(discord_fake, size=256)
    (attachment,) = video.attachments
    webp = Image.open(io.BytesIO(attachment["data"]))
    assert attachment["filename"].endswith(".webp") and webp.format == "WEBP"
    assert (webp.n_frames, webp.size) == (14, (256, 256)) and len(attachment["data"]) <= 64 * 1024
    mp4 = [data for (kind, _, name), data in comfy.files.items() if kind == "output" and name.endswith(".mp4")]
    assert len(mp4) == 1 and len(mp4[0]) > 64 * 1024
    assert fields(video)["Format"] == (f"WebP, {len(attachment['data']) / 1024:.1f} KiB: the MP4 "
                                       f"({len(mp4[0]) / 1024:.1f} KiB) is over this channel's 64.0 KiB limit")
    # larger still once upscaled: a video posted as WebP offers no Upscale, only Animate again…
    assert custom_ids(video) == ["cf:animform:2", "cf:fav:2", "cf:del:2", "cf:report:2", "cf:share:2"]
    discord_fake.messages[video.id].components[0]["components"][0]["custom_id"] = "cf:vup:2:2"  # a forged id
    refused = await discord_fake.click(video.id, "cf:vup:2:2")
    assert await answer(discord_fake, refused) == ("This video was posted as WebP, as its MP4 is too large for "
                                                   "this channel; upscaled, it would not fit either.")


async def test_video_from_text_only_where_a_server_has_animatediff(comfy, comfy_video_nodes, discord_fake, running,
                                                                    tmp_path):
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url, animatediff_model="mm_sd_v15_v2.ckpt"))
    refused = await discord_fake.slash("video", {"prompt": "a paper boat"})
    assert await answer(discord_fake, refused) == (
        "No server of this bot can make videos from text right now: it needs the AnimateDiff-Evolved nodes and a "
        "motion model. Animate an image instead (its Animate button, or Apps → Animate this image).")
    assert comfy.prompts == {}
    await running.stop()

    comfy = comfy_video_nodes
    await ready(discord_fake, running, settings_for(tmp_path, comfy.url, animatediff_model="mm_sd_v15_v2.ckpt",
                                                    sfw_negative="nsfw"))
    made = await result_of(discord_fake, await discord_fake.slash(
        "video", {"prompt": "a paper boat", "frames": 8, "fps": 10, "seed": 5}), timeout=20)
    graph = graph_of(comfy, "ADE_AnimateDiffLoaderGen1")
    loader = node(graph, "ADE_AnimateDiffLoaderGen1")
    assert (loader["model_name"], loader["model"]) == ("mm_sd_v15_v2.ckpt", ["4", 0])
    assert node(graph, "KSampler")["model"] == ["10", 0] and node(graph, "KSampler")["seed"] == 5
    assert node(graph, "EmptyLatentImage")["batch_size"] == 8 and node(graph, "CreateVideo")["fps"] == 10
    assert [body["text"] for body in (graph["6"]["inputs"], graph["7"]["inputs"])] == ["a paper boat", "nsfw"]
    frames, fps = decode_mp4(made.attachments[0]["data"])
    assert (len(frames), fps, frames[0].size) == (8, 10.0, (512, 512))
    assert made.embeds[0]["title"] == "Video" and made.embeds[0]["description"] == "a paper boat"
    assert fields(made)["Frames"] == "8 at 10 fps" and fields(made)["Format"].startswith("MP4, ")
    assert custom_ids(made) == ["cf:vup:1:2", "cf:reroll:1", "cf:fav:1", "cf:del:1", "cf:report:1", "cf:share:1"]
    too_many = await discord_fake.slash("video", {"prompt": "a paper boat", "frames": 32, "fps": 10})
    assert (await result_of(discord_fake, too_many, timeout=20)).attachments  # 32: AnimateDiff's most
