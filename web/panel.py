"""The admin dashboard's view of the bot (web/dashboard.py's AdminPanel): what it shows and the actions
its forms take, with the same rules and the same audit log as the /admin commands."""

from __future__ import annotations

import datetime as dt
from typing import Any

from safe_text import clip
from jobs import cluster_view
from jobs.limits import period_start

DAYS = 30


class BotPanel:
    def __init__(self, bot: Any) -> None:
        self.bot = bot  # bot.ComfyBot

    async def overview(self, guild_id: int | None) -> dict[str, Any]:
        bot, scheduler = self.bot, self.bot.scheduler
        whole = await cluster_view.queue(scheduler, bot.store)  # the leader's queue, from any process
        waiting, running = whole.waiting, whole.running
        queue = [{"kind": job.kind, "user_id": job.user_id, "state": "waiting", "position": position,
                  "prompt": clip(str(job.request.get("prompt") or ""), 80)}
                 for position, job in enumerate(waiting) if job.guild_id == guild_id]
        queue += [{"kind": job.kind, "user_id": job.user_id, "state": job.state, "position": None,
                   "prompt": clip(str(job.request.get("prompt") or ""), 80)}
                  for job in running if job.guild_id == guild_id]
        servers = [{"number": number, "label": server["name"], "up": server["healthy"], "problem": server["problem"],
                    "load": server["load"], "capacity": server["capacity"], "drained": server["drained"]}
                   for number, server in enumerate(whole.servers, start=1)]
        processes = [{"name": m.name, "leading": m.leading, "shards": m.shards, "seen": round(m.seen, 1)}
                     for m in await cluster_view.members(bot.store)] if scheduler.shared else []
        since = period_start("day", dt.datetime.now(dt.timezone.utc)).timestamp() - (DAYS - 1) * 86400
        audit = await bot.store.audit_log(guild_id or 0, 200)
        reports = [{"at": entry["at"], "reporter_id": entry["actor_id"], "author_id": entry["details"].get("author_id"),
                    "generation_id": entry["details"].get("generation_id"), "link": entry["details"].get("link")}
                   for entry in audit if entry["action"] == "report"][:20]
        prefix = f"{guild_id or 0}:"
        blocked = [{"user_id": int(scope.removeprefix(prefix)), "reason": str(value.get("reason") or "")}
                   for scope, value in (await bot.store.controls("block")).items() if scope.startswith(prefix)]
        return {"paused": str(guild_id) in scheduler.paused, "paused_everywhere": "all" in scheduler.paused,
                "waiting": sum(1 for job in waiting if job.guild_id == guild_id),
                "running": sum(1 for job in running if job.guild_id == guild_id), "processes": processes,
                "queue": queue, "servers": servers, "usage_by_day": await bot.store.usage_by_day(guild_id, since),
                "currency": bot.settings.cost_currency, "failures": await bot.store.recent_failures(guild_id, 20),
                "reports": reports, "blocked": blocked, "held": [
                    {"hold_id": hold.id, "at": hold.created_at, "user_id": hold.user_id, "channel_id": hold.channel_id,
                     "reason": hold.reason} for hold in await scheduler.moderation.pending(guild_id or 0)]
                if scheduler.moderation is not None else []}

    async def act(self, guild_id: int | None, actor_id: int, action: str, value: str) -> str:
        """One form's action; the link was handed only to admins of that server, and bot-wide actions
        (drain, undrain) still need the bot's own admins."""
        bot = self.bot
        if action in ("pause", "resume"):
            return await bot.limits.pause(guild_id or 0, actor_id, False, action == "pause")
        if action in ("block", "unblock"):
            user, _, reason = value.strip().partition(" ")
            if not user.isdigit() or len(user) > 20:
                raise ValueError("Give the member's id (a number), then the reason.")
            if action == "block" and not reason.strip():
                raise ValueError("Say why the member is blocked; it is kept in the audit log.")
            return await bot.limits.block(guild_id or 0, actor_id, int(user), clip(reason.strip(), 200),
                                         action == "block")
        if action in ("drain", "undrain"):
            if actor_id not in bot.settings.admin_user_ids:
                raise ValueError("Only the bot's own admins (ADMIN_USER_IDS) can do that: it affects every server.")
            if not value.strip().isdigit() or len(value.strip()) > 3:
                raise ValueError("Give the server's number, as the list shows it.")
            return await bot.limits.drain(guild_id or 0, actor_id, int(value), action == "drain")
        if action in ("release", "delete") and bot.scheduler.moderation is not None:  # a held result (moderation)
            if not value.strip().isdigit() or len(value.strip()) > 18:
                raise ValueError("Give the held result's number, as the list shows it.")
            decide = bot.scheduler.moderation.release if action == "release" else bot.scheduler.moderation.delete
            return await decide(int(value), guild_id or 0, actor_id)
        raise ValueError(f"Unknown action {clip(action, 20)!r}.")


