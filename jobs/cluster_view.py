"""The queue as every process of a cluster sees it. Only the leader (jobs/leader.py) holds the queue, so
it publishes a report of it with each heartbeat (cluster/heartbeat.py, into the store's processes table):
the servers, the waiting jobs in order, the jobs on a server and when a new job would start. A follower
answers /status from the leader's last report and the store's jobs; the leader from its own queue. Each
process's report also says who it is: its shards, and whether it leads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from jobs.queue_view import ServerStatus, Status
from store import ACTIVE_STATES, Job

REPORT_AGE = 20.0  # seconds after which a process that sent no heartbeat is left out of the cluster


@dataclass(frozen=True)
class Member:
    """A process of the cluster, as /status, /admin and the dashboard list it."""

    name: str
    leading: bool
    shards: list[int] | None  # None: every shard (an unsharded bot)
    servers: int  # servers it dispatches to (the leader), else 0
    seen: float  # seconds since its last heartbeat


def report(scheduler: Any, shards: list[int] | None) -> dict[str, Any]:
    """What this process publishes with its heartbeat: itself, and the queue if it leads."""
    info: dict[str, Any] = {"leading": scheduler.leading, "shards": shards}
    if not scheduler.leading:
        return info
    snapshot = scheduler.snapshot()
    info["servers"] = [{"name": backend.label, "healthy": backend.healthy, "load": len(backend.jobs),
                        "capacity": backend.capacity, "last_model": backend.last_model, "problem": backend.problem,
                        "drained": backend.drained}
                       for backend in scheduler.pool.backends]
    info["places"] = [[place.job.id, place.ahead, place.giving_up_in] for place in snapshot.places]
    info["order"] = [job.id for job in scheduler.waiting_jobs()]
    info.update(waiting=snapshot.waiting, running=snapshot.running, new_job_starts=snapshot.new_job_starts,
                free=snapshot.free)
    return info


async def members(store: Any, now: float | None = None) -> list[Member]:
    """The processes heard from lately, the leader first."""
    now = time.time() if now is None else now
    found = [Member(p.name, bool(p.info.get("leading")), p.info.get("shards"), len(p.info.get("servers") or ()),
                    now - p.seen_at) for p in await store.processes(now - REPORT_AGE)]
    return sorted(found, key=lambda member: (not member.leading, member.name))


@dataclass(frozen=True)
class Queue:
    """The whole queue, as the dashboard shows it: waiting jobs in the order they will start, the jobs on a
    server, and the servers (each a dict: name, healthy, load, capacity, problem, drained)."""

    waiting: list[Job]
    running: list[Job]
    servers: list[dict[str, Any]]


async def leader_info(store: Any) -> dict[str, Any] | None:
    """The leader's last report, if a leader was heard from lately."""
    leader = next((p for p in await store.processes(time.time() - REPORT_AGE) if p.info.get("leading")), None)
    return None if leader is None else leader.info


async def queue(scheduler: Any, store: Any) -> Queue:
    """The queue from the scheduler itself on the leader, else the store's jobs in the leader's order."""
    if scheduler.leading:
        servers = [{"name": b.label, "healthy": b.healthy, "load": len(b.jobs), "capacity": b.capacity,
                    "problem": b.problem, "drained": b.drained} for b in scheduler.pool.backends]
        return Queue(list(scheduler.waiting_jobs()), scheduler.running_jobs(), servers)
    info = await leader_info(store) or {}
    order = {place[0]: index for index, place in enumerate(info.get("places", []))}
    active = await store.jobs_in(ACTIVE_STATES)
    waiting = sorted((job for job in active if job.state == "waiting"), key=lambda job: order.get(job.id, len(order)))
    return Queue(waiting, [job for job in active if job.state != "waiting"], info.get("servers", []))


async def position(scheduler: Any, store: Any, job_id: int) -> int | None:
    """A waiting job's place in the queue (0: next), as the API shows it: from the leader's queue, or its last
    report (None also for a job it has not reported yet)."""
    if scheduler.leading:
        return scheduler.position(job_id)
    order = (await leader_info(store) or {}).get("order", [])
    return order.index(job_id) if job_id in order else None


async def status(scheduler: Any, store: Any, user_id: int) -> Status:
    """/status: from the queue itself on the leader (or a process alone), else from the leader's report."""
    if scheduler.leading:
        return scheduler.status(user_id)
    info = await leader_info(store)
    if info is None:  # between two leaders: the jobs as stored, servers unknown
        mine = [(job, None, None) for job in await store.jobs_in(ACTIVE_STATES) if job.user_id == user_id]
        return Status([], sum(1 for job, _, _ in mine if job.state == "waiting"), 0, mine)
    servers = [ServerStatus(s["name"], s["healthy"], s["load"], s["capacity"], s["last_model"], s["problem"])
               for s in info.get("servers", [])]
    places = {job_id: (ahead, giving_up_in) for job_id, ahead, giving_up_in in info.get("places", [])}
    mine = []
    for job in await store.jobs_in(ACTIVE_STATES):
        if job.user_id == user_id:
            ahead, giving_up_in = places.get(job.id, (None, None))
            mine.append((job, ahead, giving_up_in))
    mine.sort(key=lambda entry: (entry[1] is not None, entry[1] or 0))
    return Status(servers, info.get("waiting", 0), info.get("running", 0), mine, info.get("new_job_starts"),
                  bool(info.get("free")))
