"""/status as Discord shows it: whether the servers are up, the queue, and the caller's jobs in the
words their messages use, from one snapshot of the queue (jobs/queue_view.py)."""

from __future__ import annotations

import discord

from jobs import wording
from jobs.cluster_view import Member
from jobs.queue_view import Status
from safe_text import clip
from ui.views import COLOR_FAIL, COLOR_OK, fit_embed
from version import VERSION

SERVERS_SHOWN = 15  # with the queue and the caller's jobs, the embed stays within Discord's 6000 characters


def status_embed(status: Status, members: list[Member] | None = None) -> discord.Embed:
    """/status: whether the servers are up, the queue, and the caller's jobs (running ones first) in the
    words their messages use: the same snapshot of the queue (queue_view.QueueView.snapshot); with several
    bot processes, which of them serves which shards and which dispatches (`members`)."""
    up = [server for server in status.servers if server.healthy]
    embed = discord.Embed(title="Status", color=COLOR_OK if up else COLOR_FAIL)
    unusable = f"it answers, but not the way ComfyUI does; {wording.LOG_HINT}."
    if len(status.servers) == 1:
        (server,) = status.servers
        lines = ["🟢 ComfyUI is up." if server.healthy else f"⚠️ ComfyUI cannot be used: {unusable}"
                 if server.problem else "🔴 ComfyUI is not answering."]
    else:
        lines = [f"{'🟢' if up else '🔴'} {len(up)} of {len(status.servers)} ComfyUI servers are up."]
        for number, server in enumerate(status.servers[:SERVERS_SHOWN], start=1):
            state = "up" if server.healthy else f"cannot be used: {unusable}" if server.problem else "not answering"
            lines.append(f"• Server {number}: {state}" + (f", {wording.plural(server.load, 'job')} of ours."
                                                         if server.healthy else ""))
        if len(status.servers) > SERVERS_SHOWN:
            lines.append(f"… and {len(status.servers) - SERVERS_SHOWN} more servers.")
    embed.add_field(name="Servers", inline=False, value="\n".join(lines))
    embed.add_field(name="Queue", inline=False, value=queue_line(status))
    mine = []
    for job, position, giving_up_in in status.mine[:10]:
        what = f"Your {wording.noun(job.kind)} “{clip(job.request.get('prompt') or '', 40)}”" \
            if job.request.get("prompt") else f"Your {wording.noun(job.kind)}"
        if position is not None:
            state = wording.wait_clause(position, giving_up_in)
        else:
            state = "running" if job.state == "running" else "starting, next on the GPU"
        mine.append(f"• {what}: {state}.")
    embed.add_field(name="Your jobs", inline=False, value="\n".join(mine) or "You have no jobs waiting or running.")
    if members:
        embed.add_field(name="Bot processes", inline=False, value="\n".join(member_lines(members)))
    embed.set_footer(text=f"Bot version {VERSION}")
    return fit_embed(embed)


def member_lines(members: list[Member]) -> list[str]:
    """One line per process of the cluster: its name, its shards, and whether it dispatches the jobs."""
    lines = []
    for member in members[:SERVERS_SHOWN]:
        shards = "every shard" if member.shards is None else \
            f"shard{'s' if len(member.shards) != 1 else ''} {', '.join(map(str, member.shards))}"
        role = f"dispatching to {wording.plural(member.servers, 'server')}" if member.leading else "standing by"
        lines.append(f"• {clip(member.name, 40)}: {shards}, {role}.")
    return lines


def queue_line(status: Status) -> str:
    """How many jobs wait and run, and when a new one would start: right away only when nothing waits
    and a server has room."""
    line = f"{wording.plural(status.waiting, 'job')} waiting, {status.running} on the GPU."
    if status.waiting == 0 and status.free:
        return f"{line} A new job would start right away."
    if status.new_job_starts is not None:
        return f"{line} A new job would start in about {wording.about(status.new_job_starts)}."
    return line
