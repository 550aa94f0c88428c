"""The parts of the settings (config.py) that are not settings themselves: the models of the JSON settings
(MODEL_PRESETS, RUNPOD_ENDPOINTS, CREDIT_PACKS), the moderation thresholds' type, and long defaults
(WORKFLOW_DENY_NODES, MODERATION_THRESHOLDS). config.py imports them, and the rest of the bot may import
them from either.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator

# Node classes a user's workflow may not use unless the operator says otherwise (WORKFLOW_DENY_NODES);
# matched case-insensitively as shell patterns. Why each is here is in comfy/vetting.py.
DEFAULT_DENY_NODES = (
    "*python*", "*exec*", "*eval*", "*shell*", "*command*",  # run code the workflow carries
    "Image Save", "Save Text File", "Write to Video", "Write to GIF", "Export API", "Cache Node", "SaveText|pysssss",
    "CheckpointSave", "ImageOnlyCheckpointSave", "ModelSave", "CLIPSave", "VAESave", "LoraSave", "SaveLoRANode",
    "Image Load", "Load Image Batch", "Load Text File", "Text Load Line From File", "Load Cache", "LoadText|pysssss",
    "Create Video from Path", "VHS_Load*Path", "LoadImagesFromFolderKJ", "Load*From*Dir*//Inspire",
    "LoadPromptsFromFile //Inspire",
    "*url*", "*http*", "*request*", "*webhook*", "*download*", "module:comfy_api_nodes*",  # reach the network
)


# Moderation: a category's score at or above its threshold flags a prompt or result (None: never flagged)
Thresholds = dict[str, Annotated[float, Field(ge=0, le=1)] | None]
MODERATION_THRESHOLDS = {"sexual": 0.5, "sexual/minors": 0.2, "violence/graphic": 0.6, "self-harm/intent": 0.6,
                         "self-harm/instructions": 0.6, "hate/threatening": 0.6, "illicit/violent": 0.7}


class ModelPreset(BaseModel):
    """A named model for /generate: a checkpoint, the defaults that suit it, and how /models shows it."""

    checkpoint: str
    description: str = Field("", max_length=200)
    tags: list[str] = []  # "anime", "photo": shown in /models
    preview: str | None = None  # an https:// image URL shown in /models
    width: int | None = Field(None, ge=64, le=16384)
    height: int | None = Field(None, ge=64, le=16384)
    steps: int | None = Field(None, ge=1, le=10000)
    cfg: float | None = Field(None, ge=0, le=30)
    sampler: str | None = None
    scheduler: str | None = None
    negative_prompt: str | None = None
    nsfw: bool = False  # offered and accepted only in age-restricted channels

    @field_validator("preview")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme != "https":
            raise ValueError("preview must be an https:// URL of an image")
        return value


class RunPodEndpoint(BaseModel):
    """A RunPod Serverless endpoint running worker-comfyui, borrowed when the local servers cannot keep up."""

    endpoint_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")
    api_key: SecretStr
    models: list[str] = []  # the model files its image holds: it has no /object_info to tell
    price_per_second: float = Field(0.0, ge=0)  # what RunPod bills per second of a worker's time
    concurrency: int = Field(2, ge=1, le=100)  # jobs sent to it at once
    base_url: str = "https://api.runpod.ai/v2"


class CreditPack(BaseModel):
    """What /credits buy sells: `credits` for `amount` in the currency's smallest unit (cents), via Stripe."""

    credits: int = Field(ge=1, le=1_000_000)
    amount: int = Field(ge=50, le=99_999_999)  # Stripe's least charge is about 50 cents; its most 8 digits
    currency: str = Field("usd", pattern=r"^[a-z]{3}$")  # ISO 4217, lower case, as Stripe writes it
    description: str = Field("", max_length=200)
