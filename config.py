"""Settings: read once at start from the environment and an optional `.env` file.

Every field maps to an upper-case environment variable of the same name
(`comfyui_url` <- `COMFYUI_URL`). `load_settings()` turns a bad value into one
line naming the variable and what is allowed, and exits with status 2.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from config_models import (DEFAULT_DENY_NODES, MODERATION_THRESHOLDS, CreditPack, ModelPreset,  # noqa: F401
                           RunPodEndpoint, Thresholds)  # re-exported: `from config import ModelPreset` and the like

MIB = 1024 * 1024

class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Discord
    discord_token: SecretStr | None = None
    discord_guild_ids: list[int] = []  # sync commands to these guilds (instant) instead of globally
    model_presets: dict[str, ModelPreset] = {}  # JSON: {"name": {"checkpoint": "...", "steps": 30}}
    commands_per_minute: int = Field(6, ge=1, le=600)  # per user, commands and button clicks together
    jobs_per_user: int = Field(3, ge=1, le=100)  # waiting and running at once
    cdn_hosts: list[str] = ["cdn.discordapp.com", "media.discordapp.net"]
    waiting_per_guild: int = Field(100, ge=1, le=100_000)  # jobs one server (guild) may have waiting
    admin_user_ids: list[int] = []  # may use /generate priority:True (so may members with Manage Server)
    nsfw_channel_id: int | None = None  # age-restricted jobs from other channels run, and are posted here
    sfw_negative: str = Field("", max_length=1000)  # added to every job's negative prompt outside age-restricted channels
    discord_sharded: bool = False  # run as AutoShardedBot, for bots in very many servers

    # ComfyUI
    comfyui_url: str = "http://127.0.0.1:8188"
    comfyui_urls: list[str] = []  # several servers used as one pool; when empty, COMFYUI_URL alone
    server_capacity: int = Field(2, ge=1, le=16)  # our prompts per server at once: one running, one waiting
    server_grace: float = Field(60.0, gt=0, le=600)  # seconds a server may be silent before its jobs move
    server_prices: dict[str, float] = {}  # JSON: server URL -> price per GPU-hour, for each job's cost
    runpod_endpoints: list[RunPodEndpoint] = []  # JSON list: RunPod Serverless endpoints for overflow
    runpod_overflow_after: float = Field(300.0, ge=0)  # send a job to RunPod when the local wait passes this
    runpod_guilds: list[int] = []  # Discord servers that may use paid RunPod capacity; empty: all
    cost_currency: str = Field("USD", max_length=8)
    # Credits (jobs/credits.py): off unless enabled. A job costs its kind's price x its images x its size in
    # started CREDIT_PIXELS (a kind not listed, or priced 0, is free); the daily allowance is given on a
    # person's first priced job of a UTC day in a server, and what is left of an earlier day's then expires
    credits_enabled: bool = False
    credit_prices: dict[str, int] = {"txt2img": 1, "img2img": 1, "inpaint": 1, "outpaint": 1, "controlnet": 1,
                                     "upscale": 1, "animate": 5, "video_upscale": 5, "interpolate": 3,
                                     "text_to_video": 5, "workflow": 1}
    credit_pixels: int = Field(1024 * 1024, ge=64 * 64, le=2**31)
    credits_daily_allowance: int = Field(0, ge=0, le=1_000_000)
    comfyui_auth_header: str = "Authorization"
    comfyui_auth_token: SecretStr | None = None
    comfyui_timeout: float = Field(30.0, gt=0, le=600)
    job_timeout: float = Field(1800.0, gt=0, le=24 * 3600)

    # Workflows and models
    workflows_dir: Path = Path("workflows")
    workflow_set: str = Field("default", pattern=r"^[A-Za-z0-9_-]+$")
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    upscale_model: str = "RealESRGAN_x4plus.pth"
    upscale_model_scale: int = Field(4, ge=1, le=8)
    video_checkpoint: str = "svd_xt.safetensors"
    # JSON: each ControlNet type people may choose -> its model file; a type also needs its
    # controlnet_<type> workflow in the set (and, past canny, the preprocessor's custom nodes)
    controlnet_models: dict[str, str] = {"canny": "control_v11p_sd15_canny.pth"}
    styles_file: Path = Path(__file__).resolve().parent / "styles.toml"  # the style presets the operator edits
    pipelines_file: Path = Path(__file__).resolve().parent / "pipelines.toml"  # the operator's pipelines (/pipeline)
    nsfw_loras: list[str] = []  # LoRA files (or shell patterns like "nsfw/*") used only in age-restricted channels
    # JSON list: node classes (or shell patterns, "module:<python module pattern>") no user workflow may use;
    # the default names nodes that run code, read or write files anywhere, or reach the network
    workflow_deny_nodes: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY_NODES))

    # Files
    outputs_dir: Path = Path("outputs")
    output_limit: int = Field(100, ge=1, le=100_000)
    data_dir: Path = Path("data")
    upload_limit: int = Field(10 * MIB, ge=64 * 1024, le=500 * MIB)
    download_limit: int = Field(100 * MIB, ge=MIB, le=4096 * MIB)  # the most bytes taken from ComfyUI or the CDN per file

    # Limits on what a request may ask for
    max_width: int = Field(2048, ge=64, le=16384)
    max_height: int = Field(2048, ge=64, le=16384)
    max_steps: int = Field(100, ge=1, le=10000)
    max_batch: int = Field(4, ge=1, le=10)  # Discord shows at most 10 attachments in one message
    max_frames: int = Field(48, ge=1, le=1024)
    default_steps: int = Field(25, ge=1, le=10000)
    default_cfg: float = Field(7.0, ge=0, le=100)
    default_width: int = Field(512, ge=64, le=16384)  # at most MAX_WIDTH: a default is always a size jobs may have
    default_height: int = Field(512, ge=64, le=16384)
    default_frames: int = Field(14, ge=1, le=1024)
    default_fps: int = Field(8, ge=1, le=120)
    default_motion: int = Field(127, ge=1, le=1023)  # how much moves in an animation (SVD's motion_bucket_id)
    # custom-node video workflows, off while empty: the RIFE checkpoint of Interpolate (ComfyUI-Frame-Interpolation,
    # e.g. rife47.pth) and the motion module of /video (ComfyUI-AnimateDiff-Evolved, e.g. mm_sd_v15_v2.ckpt)
    interpolate_model: str = ""
    animatediff_model: str = ""

    # The web app (the gallery): off while WEB_PORT is unset
    web_port: int | None = Field(None, ge=1, le=65535)
    web_host: str = "127.0.0.1"  # behind the operator's reverse proxy
    web_base_url: str | None = None  # how people reach it, e.g. https://bot.example.org (links in Discord)
    web_secret: SecretStr | None = None  # signs gallery links; unset, one made once and kept in the database
    gallery_link_hours: float = Field(24.0, gt=0, le=24 * 30)
    webhook_private_ok: bool = False  # let API webhooks reach private addresses (receivers on the operator's network)

    # Buying credits with Stripe Checkout (jobs/payments.py): off while STRIPE_SECRET_KEY is unset or credits are off
    stripe_secret_key: SecretStr | None = None  # sk_live_… or sk_test_…; masked like every secret
    stripe_webhook_secret: SecretStr | None = None  # whsec_…: POST /stripe/webhook refuses every event while unset
    stripe_api_base: str = "https://api.stripe.com"  # another address only for tests or an egress proxy
    # JSON: {"small": {"credits": 100, "amount": 500, "currency": "usd"}}; at most 5 (one row of Discord buttons)
    credit_packs: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 _-]{1,40}$")], CreditPack] = Field(
        {}, max_length=5)

    # Moderation of prompts and results by an OpenAI-compatible endpoint: off while MODERATION_URL is unset
    moderation_url: str | None = None  # e.g. https://api.openai.com/v1 (POST {url}/moderations)
    moderation_api_key: SecretStr | None = None
    moderation_model: str = Field("omni-moderation-latest", max_length=100)
    # JSON: category -> score from which it is flagged (null: never); categories left out follow the provider's flag
    moderation_thresholds: Thresholds = MODERATION_THRESHOLDS
    moderation_nsfw_thresholds: Thresholds = {**MODERATION_THRESHOLDS, "sexual": None, "violence/graphic": 0.9}
    moderation_timeout: float = Field(10.0, gt=0, le=120)  # seconds one check may take
    moderation_on_error: Literal["hold", "post"] = "hold"  # the provider down or slow: hold for a moderator, or post

    # Several processes and machines (README, "From one process to many")
    database_url: SecretStr | None = None  # postgresql://user:password@host/db; unset: SQLite in DATA_DIR
    database_pool_size: int = Field(10, ge=2, le=200)  # connections each process may hold
    output_store: str | None = None  # s3://bucket/prefix keeps results in object storage; unset: OUTPUTS_DIR
    s3_endpoint_url: str | None = None  # MinIO, R2, B2...; unset: AWS S3 itself
    s3_public_url: str | None = None  # the endpoint as browsers reach it, for presigned links (default: the above)
    s3_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{2,32}$")
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # object storage: remove results older than this, or the oldest past this many GB; neither: keep OUTPUT_LIMIT
    output_keep_days: float | None = Field(None, gt=0, le=36500)
    output_keep_gb: float | None = Field(None, gt=0)
    shard_count: int | None = Field(None, ge=1, le=10_000)  # Discord shards of the whole bot, over every process
    shard_ids: list[int] = []  # the shards this process serves (with SHARD_COUNT); empty: all of them
    process_name: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")  # in logs and /status; default host-pid

    # Logging
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False

    @field_validator("web_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else _checked_url(value)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL, for example postgresql://bot:password@127.0.0.1/bot")
        return value

    @field_validator("output_store")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme != "s3" or not urlsplit(value).hostname):
            raise ValueError("must be an s3:// URL naming a bucket, for example s3://bot-results/outputs")
        return value

    @field_validator("s3_endpoint_url", "s3_public_url", "moderation_url", "stripe_api_base")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _checked_url(value)

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT, the number of shards over every process")
        if self.shard_count is not None and any(not 0 <= shard < self.shard_count for shard in self.shard_ids):
            raise ValueError(f"SHARD_IDS must be from 0 to SHARD_COUNT - 1 ({self.shard_count - 1})")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("SHARD_IDS lists a shard twice")
        return self

    @field_validator("discord_token", "comfyui_auth_token", "web_secret", "database_url", "s3_access_key_id",
                     "s3_secret_access_key", "stripe_secret_key", "stripe_webhook_secret",
                     "moderation_url", "moderation_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("controlnet_models")
    @classmethod
    def _control_types(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not name.isascii() or not name.isidentifier() or not name.islower()]
        if bad:
            raise ValueError(f"type names are lower-case letters, digits and _ (not {', '.join(map(repr, bad))})")
        if len(value) > 25:
            raise ValueError("at most 25 types (Discord shows at most 25 choices)")
        return value

    @field_validator("comfyui_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _checked_url(value)

    @field_validator("comfyui_urls")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        checked = [_checked_url(value) for value in values]
        if len(set(checked)) != len(checked):
            raise ValueError("lists the same server twice")
        return checked

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Settings:
        """aiohttp refuses an Authorization header next to a user:password in the URL: say so at start."""
        if (self.comfyui_auth_token is not None and self.comfyui_auth_header.lower() == "authorization"
                and any(urlsplit(url).password or urlsplit(url).username for url in self.servers())):
            raise ValueError("COMFYUI_AUTH_TOKEN (an Authorization header) and a user:password in COMFYUI_URL "
                             "cannot be used together: keep one of them")
        return self

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Settings:
        """The default size is one a job may have: never a size the bot then refuses."""
        for side in ("width", "height"):
            default, most = getattr(self, f"default_{side}"), getattr(self, f"max_{side}")
            if default > most:
                raise ValueError(f"DEFAULT_{side.upper()} ({default}) is larger than MAX_{side.upper()} ({most})")
        return self

    def servers(self) -> list[str]:
        """The ComfyUI servers of the pool."""
        return self.comfyui_urls or [self.comfyui_url]

    def comfyui_headers(self) -> dict[str, str]:
        """Headers for a ComfyUI behind an authenticating proxy (none by default)."""
        if self.comfyui_auth_token is None:
            return {}
        return {self.comfyui_auth_header: self.comfyui_auth_token.get_secret_value()}

    def workflow_dir(self) -> Path:
        return self.workflows_dir / self.workflow_set

    def secrets(self) -> list[str]:
        """The configured secret values, for the logs to mask wherever they appear.

        The tokens, and for each ComfyUI URL with a password: the password as written, decoded
        (when percent-encoded), and the `user:password` of HTTP basic auth as it goes on the wire.
        """
        found = [token.get_secret_value() for token in (self.discord_token, self.comfyui_auth_token, self.web_secret,
                                                         self.s3_secret_access_key, self.stripe_secret_key,
                                                         self.stripe_webhook_secret,
                                                         self.moderation_api_key,
                                                         *(endpoint.api_key for endpoint in self.runpod_endpoints))
                 if token]
        database = urlsplit(self.database_url.get_secret_value()) if self.database_url else None
        if database is not None and database.password:
            found += [database.password, unquote(database.password)]
        for url in dict.fromkeys([self.comfyui_url, *self.comfyui_urls]):
            parts = urlsplit(url)
            if parts.password:
                user, password = unquote(parts.username or ""), unquote(parts.password)
                basic = base64.b64encode(f"{user}:{password}".encode()).decode()
                found += [parts.password, password, basic]
        return list(dict.fromkeys(value for value in found if value))

    def described(self) -> dict[str, str]:
        """Every setting as text, secrets masked: what `bot.py check` prints."""
        shown = {}
        for name, value in self:
            if name == "comfyui_url":
                value = redact_url(value)
            elif name == "comfyui_urls":
                value = [redact_url(url) for url in value]
            if isinstance(value, SecretStr):
                value = "(set, hidden)" if value.get_secret_value() else "(empty)"
            elif value is None:
                value = "(not set)"
            shown[name.upper()] = str(value)
        return shown


def redact_url(url: str) -> str:
    """The URL with its password masked: `http://user:pass@host` -> `http://user:***@host`."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}").geturl()


def _checked_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL, for example http://127.0.0.1:8188")
    return value.rstrip("/")


def describe_error(error: ValidationError) -> list[str]:
    """One line per bad setting: the variable, what was wrong, and the value's kind of rule."""
    lines = []
    for problem in error.errors():
        name = str(problem["loc"][0]).upper() if problem["loc"] else "settings"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"config error: {name}: {message}")
    return lines


class ConfigError(ValueError):
    """The settings cannot be read; `lines` says, one per bad setting, what is wrong."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def read_settings(**overrides) -> Settings:
    """Settings from the environment and .env; ConfigError naming each bad one."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_error(error)) from None
    except SettingsError as error:  # a complex value (a list, a dict) that is not JSON
        field = re.search(r'field "(\w+)"', str(error))
        name = field[1].upper() if field else "settings"
        raise ConfigError([f"config error: {name}: not valid JSON"]) from None


def load_settings(**overrides) -> Settings:
    """Settings from the environment; on a bad value print why and exit 2 (no traceback)."""
    try:
        return read_settings(**overrides)
    except ConfigError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        raise SystemExit(2) from None
