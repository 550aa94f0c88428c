"""structlog setup: readable lines on a terminal, one JSON object per line when LOG_JSON=true.

Secrets never reach a log line, whatever LOG_LEVEL says:
- Loggers that write credentials at DEBUG stay at INFO even with LOG_LEVEL=debug (`QUIET`):
  `websockets` logs every handshake header line (Authorization included), `discord.http` and
  `discord.webhook.async_` log request URLs holding interaction tokens, `discord.gateway` logs
  whole gateway payloads (interaction tokens), `aiohttp.client` may log request details.
- The last processor before rendering (`Redactor`, in the root handler: for our lines and every
  library's alike, aiohttp's "Error handling request" with a too-long request line included) masks
  `scheme://user:pass@`, Authorization and Bearer values, tokens in Discord webhook URLs, the web
  app's signed link tokens (in /g/ and /admin/ paths, `?token=`-like query values, or any run of a
  token's 71 characters), API keys (cfb_...) and webhook secrets (whsec_...), and the exact secret
  values passed to `configure` (see `config.Settings.secrets()`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

from links import TOKEN_LENGTH

MASK = "***"
QUIET = ("websockets", "websockets.client", "discord.http", "discord.gateway", "discord.webhook.async_",
         "aiohttp.client")
MIN_SECRET = 4  # shorter configured values are not masked everywhere (they would mangle every line)
# (what must be in the text, lowercased, for the pattern to have a chance; the pattern; its replacement):
# a log line's fields are mostly short and plain, and a pattern that cannot match is not run
PATTERNS = [
    ("://", re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@'\"]*:)[^/\s'\"]+@", re.I), r"\1***@"),  # URL password
    ("authorization", re.compile(r"""((?:proxy-)?authorization['"]?\s*[:=]\s*['"]?)[^'"\r\n]+""", re.I), r"\1***"),
    ("bearer", re.compile(r"\b(bearer\s+)[\w.~+/-]+=*", re.I), r"\1***"),
    ("/", re.compile(r"(/(?:webhooks|interactions)/\d+/)[\w.-]+"), r"\1***"),  # Discord interaction tokens
    ("token", re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]+""", re.I), r"\1***"),  # "token": "..." in payloads
    # the web app's signed links: a token in a gallery or dashboard path, and any run of a token's length
    ("/", re.compile(r"(/(?:g|admin)/)[\w-]{16,}"), r"\1***"),
    ("", re.compile(rf"(?<![\w-])[\w-]{{{TOKEN_LENGTH}}}(?![\w-])"), MASK),
    ("=", re.compile(r"([?&;](?:[\w-]*token|[\w-]*key|secret|password|sig(?:nature)?)=)[^&#\s'\"]+", re.I), r"\1***"),
    ("_", re.compile(r"\b(cfb_|whsec_)[\w-]{8,}"), r"\1***"),  # API keys and webhook secrets, wherever they are
]
SECRET_KEY = re.compile(r"(?i)^(.*[_-])?(token|password|secret|authorization)$")


class Redactor:
    """A structlog processor: masks credential-looking text in the event and every field, nested too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return self.clean(event_dict)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        if len(text) < MIN_SECRET:
            return text
        lowered = text.lower()
        for needle, pattern, replacement in PATTERNS:
            if needle in lowered and (needle or len(text) >= TOKEN_LENGTH):
                text = pattern.sub(replacement, text)
        return text

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {key: MASK if isinstance(key, str) and isinstance(item, str) and SECRET_KEY.match(key)
                    else self.clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            items = [self.clean(item) for item in value]
            return items if isinstance(value, list) else tuple(items)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        shown = repr(value)  # what the renderers print for any other object (an exception, a URL...)
        masked = self.mask(shown)
        return value if masked == shown else masked


def configure(level: str = "info", as_json: bool = False, *, secrets: Iterable[str] = (),
              stream: TextIO | None = None) -> None:
    """Route structlog and the standard library (discord.py, aiohttp) through one renderer.

    `secrets` are replaced by `***` wherever they appear; `stream` defaults to sys.stderr.
    """
    stream = sys.stderr if stream is None else stream
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(
        colors=stream.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    # the Redactor runs here, last, for structlog events and foreign stdlib records alike, after the
    # traceback became text (format_exc_info) so that an exception message is masked too
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, Redactor(secrets), renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:  # never DEBUG: these write credentials there (see the module docstring)
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
