"""The admin dashboard: one page for the admins of a Discord server, reached through a signed admin link.

`GET /admin/{token}` shows the queue, the ComfyUI servers, usage over the last 30 days (bar charts
drawn on the server as inline SVG: the page has no JavaScript), cost per day, recent failures,
moderation reports and blocked members, with forms to pause and resume, block and unblock, drain and
undrain. `POST /admin/{token}/act` runs one of those actions and answers 303 back to the page, with
the sentence to show in `msg`.

The bot supplies the data and carries out the actions through an `AdminPanel`. Tokens are admin links
(`links.sign_admin`): a gallery link opens no dashboard, and an admin link no gallery. Every form
carries a CSRF token derived from the link token (`csrf_token`); a POST without it, or with another,
is refused with a 403 page before the panel is asked anything.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import structlog
from aiohttp import web
from jinja2 import Environment

from config import Settings
from logs import Redactor
from safe_text import clip
from store import Store
from links import LinkError, link_secret, verify_admin

log = structlog.get_logger(__name__)

ACTIONS = ("pause", "resume", "block", "unblock", "drain", "undrain", "release", "delete")
VALUE_MAX = 500  # characters of a form's value passed on
MESSAGE_MAX = 300  # characters of the sentence shown at the top
TEXT_MAX = 300  # characters of a prompt, error, problem or reason shown
CHART_DAYS = 30
ASK_AGAIN = "Ask the bot for a new dashboard link in Discord."
NO_STORE = {"Cache-Control": "no-store"}
_CSRF_CONTEXT = b"comfyui-bot admin csrf\x00"


class AdminPanel(Protocol):
    """What the dashboard needs from the bot (bot.py implements it; the tests fake it)."""

    async def overview(self, guild_id: int | None) -> dict:
        """Everything the page shows, for the server `guild_id` (None: outside servers):

        {"paused": bool, "paused_everywhere": bool, "waiting": int, "running": int,
         "queue": [{"kind": str, "user_id": int, "state": str, "position": int | None, "prompt": str}],
         "servers": [{"number": int, "label": str, "up": bool, "problem": str | None, "load": int,
                      "capacity": int, "drained": bool}],
         "usage_by_day": [{"day": "2026-11-28", "images": int, "gpu_seconds": float, "cost": float}],
         "currency": str,
         "failures": [{"at": float, "kind": str, "user_id": int, "error": str}],
         "reports": [{"at": float, "reporter_id": int, "author_id": int, "generation_id": int,
                      "link": str | None}],
         "blocked": [{"user_id": int, "reason": str}],
         "held": [{"hold_id": int, "at": float, "user_id": int, "channel_id": int, "reason": str}]}

        usage_by_day: up to 30 days, oldest first (days missing between two given ones are drawn as
        zero); failures: newest first, up to 20; reports: newest first; held (results moderation holds
        back): oldest first.
        """
        ...

    async def act(self, guild_id: int | None, actor_id: int, action: str, value: str) -> str:
        """Do `action` in `guild_id` for `actor_id` (who holds the link), if that person may: "pause",
        "resume", "block" (value "<user id> <reason>"), "unblock" (value: user id), "drain" or
        "undrain" (value: server number), "release" or "delete" (value: a held result's number). Returns the sentence to show ("Paused."); raises ValueError
        with a sentence for a bad value."""
        ...


def csrf_token(secret: str, token: str) -> str:
    """The CSRF token every form of the dashboard at `token` carries: an HMAC of the link token."""
    return hmac.new(secret.encode("utf-8"), _CSRF_CONTEXT + token.encode("utf-8"), hashlib.sha256).hexdigest()


class Dashboard:
    """The dashboard's route handlers. `templates` and `error_page` are the gallery's (same look)."""

    def __init__(self, admin: AdminPanel, store: Store, settings: Settings, clock: Callable[[], float],
                 templates: Environment, error_page: Callable[..., web.Response]) -> None:
        self._admin = admin
        self._store = store
        self._settings = settings
        self._clock = clock
        self._templates = templates
        self._error_page = error_page
        self._secret: str | None = None
        self._redactor = Redactor(settings.secrets())

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/admin/{token}", self.page)
        app.router.add_post("/admin/{token}/act", self.act)

    # --- routes ---------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            _, guild_id = await self._owner(token)
        except LinkError as exc:
            return self._refused(request, exc.reason)
        data = await self._admin.overview(guild_id)
        message = self._text(request.query.get("msg", ""), MESSAGE_MAX)
        values = self._view(data)
        html = self._templates.get_template("dashboard.html").render(
            root=_root(request), home=f"{_root(request)}admin/{token}", guild_id=guild_id, message=message,
            failed=request.query.get("err") == "1", action=f"{_root(request)}admin/{token}/act",
            csrf=csrf_token(await self._link_secret(), token), **values)
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=NO_STORE)

    async def act(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            user_id, guild_id = await self._owner(token)
        except LinkError as exc:
            return self._refused(request, exc.reason)
        form = await request.post()
        given = form.get("csrf")
        expected = csrf_token(await self._link_secret(), token)
        if not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            log.warning("dashboard_csrf_refused", guild_id=guild_id, user_id=user_id)
            return self._error_page(request, 403, "Form not accepted",
                                    "This form did not come from your dashboard page, or the page is out of date.",
                                    "Open the dashboard again and send the form from there.")
        action = form.get("action")
        values = [value.strip() for value in form.getall("value", []) if isinstance(value, str)]
        value = " ".join(value for value in values if value)
        failed = True
        if action not in ACTIONS:
            said = "That is not something the dashboard can do."
        elif len(value) > VALUE_MAX:
            said = f"That is too long: at most {VALUE_MAX} characters."
        else:
            try:
                said = await self._admin.act(guild_id, user_id, str(action), value)
                failed = False
            except ValueError as error:
                said = str(error) or "That value is not valid."
            log.info("dashboard_action", action=action, by=user_id, guild_id=guild_id, refused=failed)
        query = {"msg": self._text(said, MESSAGE_MAX), **({"err": "1"} if failed else {})}
        location = f"{_root(request)}admin/{token}?{urlencode(query)}"
        return web.Response(status=303, headers={"Location": location, **NO_STORE})

    # --- access ---------------------------------------------------------------------------

    async def _link_secret(self) -> str:
        if self._secret is None:
            self._secret = await link_secret(self._store, self._settings)
            self._redactor = Redactor([*self._settings.secrets(), self._secret])
        return self._secret

    async def _owner(self, token: str) -> tuple[int, int | None]:
        return verify_admin(await self._link_secret(), token, self._clock())

    def _refused(self, request: web.Request, reason: str) -> web.Response:
        message = ("This dashboard link has expired." if reason == "expired"
                   else "This dashboard link is not valid: it may have been cut short or changed.")
        return self._error_page(request, 403, "Link not accepted", message, ASK_AGAIN)

    # --- what the page shows --------------------------------------------------------------

    def _text(self, value: object, limit: int = TEXT_MAX) -> str:
        """Text from the panel or the query, bounded, with any configured secret masked."""
        return clip(self._redactor.mask(" ".join(str(value if value is not None else "").split())), limit)

    def _view(self, data: Mapping[str, Any]) -> dict[str, Any]:
        text = self._text
        currency = text(data.get("currency") or "", 20)
        queue = [{
            "position": item.get("position"),
            "kind": text(item.get("kind"), 40),
            "user_id": item.get("user_id"),
            "state": text(item.get("state"), 40),
            "prompt": text(item.get("prompt")),
        } for item in data.get("queue") or []]
        servers = []
        for server in data.get("servers") or []:
            problem = text(server.get("problem") or "")
            status = "down" if not server.get("up") else "unusable" if problem else "up"
            servers.append({
                "number": server.get("number"), "label": text(server.get("label"), 80), "status": status,
                "problem": problem or ("not answering" if status == "down" else ""),
                "load": server.get("load", 0), "capacity": server.get("capacity", 0),
                "drained": bool(server.get("drained")),
            })
        days = _days(data.get("usage_by_day") or [])
        failures = [{"at": _when(item.get("at")), "kind": text(item.get("kind"), 40), "user_id": item.get("user_id"),
                     "error": text(item.get("error"))} for item in data.get("failures") or []]
        reports = [{"at": _when(item.get("at")), "reporter_id": item.get("reporter_id"),
                    "author_id": item.get("author_id"), "generation_id": item.get("generation_id"),
                    "link": _https(item.get("link"))} for item in data.get("reports") or []]
        blocked = [{"user_id": item.get("user_id"), "reason": text(item.get("reason"))}
                   for item in data.get("blocked") or []]
        processes = [{"name": text(item.get("name"), 64), "leading": bool(item.get("leading")),
                      "shards": "every shard" if item.get("shards") is None
                      else ", ".join(str(int(shard)) for shard in item.get("shards") or []) or "none",
                      "seen": _amount(item.get("seen"))} for item in data.get("processes") or []]
        used = [day for day in reversed(days) if day["images"] or day["gpu_seconds"] or day["cost"]]
        return {
            "paused": bool(data.get("paused")), "paused_everywhere": bool(data.get("paused_everywhere")),
            "waiting": int(data.get("waiting") or 0), "running": int(data.get("running") or 0),
            "queue": queue, "servers": servers, "currency": currency, "days": days, "cost_days": used,
            "totals": {"images": sum(day["images"] for day in days),
                       "gpu_seconds": sum(day["gpu_seconds"] for day in days),
                       "cost": sum(day["cost"] for day in days)},
            "charts": [bar_chart(days, "images", "Images per day", "images", 0),
                       bar_chart(days, "gpu_seconds", "GPU seconds per day", "GPU seconds", 1)],
            "failures": failures, "reports": reports, "blocked": blocked, "processes": processes,
            "held": [{"hold_id": item.get("hold_id"), "at": _when(item.get("at")), "user_id": item.get("user_id"),
                      "channel_id": item.get("channel_id"), "reason": text(item.get("reason"))}
                     for item in data.get("held") or []],
        }


def add_routes(app: web.Application, admin: AdminPanel, store: Store, settings: Settings,
               clock: Callable[[], float], templates: Environment,
               error_page: Callable[..., web.Response]) -> Dashboard:
    """Mount /admin/{token} and /admin/{token}/act on `app`."""
    dashboard = Dashboard(admin, store, settings, clock, templates, error_page)
    dashboard.add_routes(app)
    return dashboard


# --- charts ----------------------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 600, 180
_TOP, _BOTTOM = 24, 150  # the plot's top and baseline, in the chart's units; labels below


def bar_chart(days: list[dict[str, Any]], key: str, title: str, unit: str, digits: int) -> dict[str, Any]:
    """An inline SVG bar chart of `days[...][key]`, one bar per day, as numbers for the template."""
    values = [float(day[key]) for day in days]
    peak = max(values, default=0.0)
    count = max(len(days), 1)
    slot = CHART_WIDTH / count
    width = min(slot * 0.8, 48.0)
    plot = _BOTTOM - _TOP
    bars = []
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        height = 0.0 if peak <= 0 or value <= 0 else max(value / peak * plot, 1.5)
        bars.append({"x": round(index * slot + (slot - width) / 2, 2), "y": round(_BOTTOM - height, 2),
                     "width": round(width, 2), "height": round(height, 2),
                     "label": f"{day['day']}: {_number(value, digits)} {unit}"})
    return {"key": key.replace("_", "-"), "title": title, "unit": unit, "bars": bars, "width": CHART_WIDTH,
            "height": CHART_HEIGHT, "top": _TOP, "baseline": _BOTTOM, "peak": _number(peak, digits),
            "first": days[0]["day"] if days else "", "last": days[-1]["day"] if len(days) > 1 else "",
            "total": _number(sum(values), digits)}


def _days(given: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The usage per day, oldest first, the days between two given ones filled in with zeros, at most
    the last CHART_DAYS days."""
    found: dict[str, dict[str, Any]] = {}
    for item in given:
        day = str(item.get("day") or "")[:10]
        found[day] = {"day": day, "images": _count(item.get("images")), "gpu_seconds": _amount(item.get("gpu_seconds")),
                      "cost": _amount(item.get("cost"))}
    try:
        dates = sorted(date.fromisoformat(day) for day in found)
    except ValueError:
        return list(found.values())[-CHART_DAYS:]
    if not dates:
        return []
    first = max(dates[0], dates[-1] - timedelta(days=CHART_DAYS - 1))
    span = (dates[-1] - first).days + 1
    every = [(first + timedelta(days=offset)).isoformat() for offset in range(span)]
    return [found.get(day) or {"day": day, "images": 0, "gpu_seconds": 0.0, "cost": 0.0} for day in every]


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def _amount(value: Any) -> float:
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _when(at: Any) -> str:
    try:
        return datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _https(link: Any) -> str | None:
    """A report's message link, if it is an https address (nothing else becomes a link)."""
    if not isinstance(link, str) or len(link) > 500:
        return None
    parts = urlsplit(link)
    return link if parts.scheme == "https" and parts.hostname and not any(c.isspace() for c in link) else None


def _root(request: web.Request) -> str:
    """The relative path from this page up to the app's root: "../" per folder level."""
    return "../" * (request.rel_url.raw_path.count("/") - 1) or "./"
