"""A running job's progress in words: the stage it is at, a bar that only moves forward, the time.

Stages come from the node types of whatever workflow runs ("KSampler" is "Drawing"), so an
operator's own workflow reads as well as the shipped ones; a node nobody mapped is "Working".
Knows nothing of Discord.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from jobs import kinds
from comfy.types import Event, NodeStarted, Progress, Started
from jobs.wording import EMOJI, about, seconds

BAR_WIDTH = 12
FINISHING = 2.5  # seconds left below which a countdown says "finishing…" rather than "about 5 s left"
SAMPLING = "Drawing"  # an upscale samples as "Upscaling", an animation as "Animating"
STAGES = {
    "Loading the model": {"CheckpointLoaderSimple", "CheckpointLoader", "ImageOnlyCheckpointLoader", "UNETLoader",
                          "VAELoader", "CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader", "LoraLoader",
                          "LoraLoaderModelOnly", "UpscaleModelLoader", "ControlNetLoader", "CLIPVisionLoader",
                          "unCLIPCheckpointLoader", "StyleModelLoader", "ADE_AnimateDiffLoaderGen1"},
    "Reading the prompt": {"CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeSDXLRefiner", "StringConcatenate",
                           "ConditioningCombine", "ConditioningConcat", "ConditioningSetArea", "CLIPSetLastLayer"},
    "Reading the image": {"LoadImage", "LoadImageMask", "VAEEncode", "VAEEncodeForInpaint", "CLIPVisionEncode",
                          "ImagePadForOutpaint", "Canny", "ControlNetApply", "ControlNetApplyAdvanced"},
    "Preparing": {"EmptyLatentImage", "EmptyImage", "EmptySD3LatentImage", "ImageScale", "SetLatentNoiseMask",
                  "ImageCompositeMasked"},
    SAMPLING: {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "ImageAddNoise"},
    "Decoding": {"VAEDecode", "VAEDecodeTiled"},
    "Upscaling": {"ImageUpscaleWithModel", "ImageScaleBy", "LatentUpscale", "LatentUpscaleBy"},
    "Animating": {"SVD_img2vid_Conditioning", "VideoLinearCFGGuidance", "RepeatImageBatch"},
    "Reading the video": {"LoadVideo", "GetVideoComponents"},
    "Interpolating": {"RIFE VFI"},
    "Saving": {"SaveImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveVideo", "SaveWEBM", "CreateVideo",
               "PreviewImage", "PreviewAny", "SaveImageWebsocket"},
}
STAGE_OF = {class_type: stage for stage, classes in STAGES.items() for class_type in classes}


def stage(class_type: str, kind: str) -> str:
    """The stage a node type stands for, in words; "Working" for one nobody mapped."""
    found = STAGE_OF.get(class_type, "Working")
    declared = kinds.KINDS.get(kind)
    return (declared.sampling if declared is not None else SAMPLING) if found == SAMPLING else found


@dataclass
class Progression:
    """What a running job's message shows; fed by ComfyUI events."""

    kind: str = "txt2img"
    started: float | None = None  # when ComfyUI started the prompt (monotonic)
    stage: str = "Starting"
    sampling: bool = False  # the current node reports sampler steps
    value: int = 0
    maximum: int = 0
    shown: float = 0.0  # the bar's share: it never goes back within a job
    preview: bytes | None = None
    preview_mime: str = "image/png"
    stepping: tuple[float, int] | None = None  # (when, step) the current sampler's steps were first seen
    stepped: float = 0.0  # when the current sampler's step last moved

    def apply(self, event: Event) -> None:
        if self.started is None and isinstance(event, Started | NodeStarted | Progress):
            self.started = time.monotonic()
        if isinstance(event, Started) and self.stage == "Starting":
            self.stage = "Running"  # a server that reports no nodes (RunPod) stays here, with its time
        if isinstance(event, NodeStarted):
            self.stage = stage(event.class_type, self.kind)
            self.sampling = STAGE_OF.get(event.class_type) == SAMPLING
            self.value = self.maximum = 0
            self.stepping = None
        elif isinstance(event, Progress) and event.max > 1:  # a one-step bar says nothing
            self.value, self.maximum = min(event.value, event.max), event.max
            if self.stepping is None or self.value < self.stepping[1]:
                self.stepping = (time.monotonic(), self.value)
            self.stepped = time.monotonic()
            self.shown = max(self.shown, self.value / self.maximum)

    def left(self) -> float | None:
        """Seconds the sampler still needs at the pace of its steps so far, counting down from its last
        step (0 once that time is up); None before that pace is known."""
        if not self.sampling or self.stepping is None or not self.maximum:
            return None
        since, first = self.stepping
        done = self.value - first
        if done < 2:
            return None
        return max(0.0, (self.stepped - since) / done * (self.maximum - self.value) - (time.monotonic() - self.stepped))

    def text(self) -> str:
        """Two lines at most: the stage with the time so far, and the bar once there is one."""
        elapsed = time.monotonic() - self.started if self.started is not None else 0.0
        steps = f" (step {self.value} of {self.maximum})" if self.maximum and self.sampling else (
            f" ({self.value / self.maximum:.0%})" if self.maximum else "")
        left = self.left()
        if left is not None and left < FINISHING:  # the time is up: finishing on its last step, else no promise
            countdown = ", finishing…" if self.maximum - self.value <= 1 else "."
        else:
            countdown = "." if left is None else f", about {about(left)} left."
        lines = [f"{EMOJI['running']} {self.stage}{steps}, {seconds(elapsed)} so far{countdown}"]
        if self.shown > 0:
            filled = round(self.shown * BAR_WIDTH)
            lines.append(f"`{'█' * filled}{'░' * (BAR_WIDTH - filled)}` {self.shown:.0%}")
        return "\n".join(lines)
