"""The proof that the bot runs as a cluster: three bot processes on one PostgreSQL database and one S3
bucket, two guilds, four fake ComfyUIs; 200 /generate jobs from 20 people, half in each guild; the
leader killed with SIGKILL mid-run (while jobs wait, run, and one is being posted) and restarted later.

People act as people do: each sends JOBS_PER_USER + 2 commands at once (the extra ones are refused, in
words, and sent again later), waits for their results, and sends the next ones. The first burst arrives
while the servers are paused and in the order a first-come queue would serve worst (one person after
another, one guild after the other). While a guild's process is dead its people wait for it, as their
Discord client would fail their commands; around the kill itself no command is in flight (`Gate`), so
each command's fate is known: an interaction lost inside a killed process is not what this test is about.

Afterwards, from what the fakes and the store saw: every job delivered exactly once (one result message
per job nonce); the limit held (refusals seen, and no overlap beyond it in the jobs table); the order was
fair across the cluster; the fake Discord saw no rule broken; only the leader's shared ComfyUI client ids
ever sent prompts; results posted before the kill still answer their buttons afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter, defaultdict

import pytest

from tests.e2e.cluster_harness import Cluster, until
from tests.e2e.conftest import JOBS_PER_USER
from tests.e2e.people import (Sent, dispatch_order, finished, first_prompts, job_text, outcome, person_id,
                              results_index, send)
from tests.fakes.discord import Guild, Message, shard_of

PEOPLE, PER_PERSON = 20, 10
BURST = JOBS_PER_USER + 2
CLICKER = "7999"  # clicks buttons on others' results: anyone in the channel may
WAIT = 120.0  # seconds any one step may take before the test gives up
STAMP_SLACK = 0.25  # seconds between a store's time stamp and the statement it stamps (see _most_at_once)

pytestmark = pytest.mark.timeout(330)


class Gate:
    """People pass it to send commands; `close()` waits until no command is in flight and keeps new ones out."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def passing(self):
        await asyncio.wait_for(self._open.wait(), WAIT)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self._open.clear()
        await until(lambda: self.in_flight == 0, WAIT, "commands still in flight")

    def open(self) -> None:
        self._open.set()


class Run:
    """What happened, for the checks at the end."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.accepted: list[Sent] = []
        self.refusals: dict[int, list[int]] = defaultdict(list)  # person -> refused count of each burst
        self.clicks: list[tuple[str, object]] = []  # (where, interaction)
        self.gate = Gate()
        self.killed: str | None = None
        self.kill_states: dict[str, int] = {}
        self.first_burst: list[Sent] = []  # accepted while the servers were paused
        self.killed_at = 0.0  # perf_counter() at the kill
        self.delivering: set[str] = set()  # interactions of the jobs being delivered when the leader was killed

    def guild_of(self, person: int) -> Guild:
        return self.cluster.guilds[0 if person < PEOPLE // 2 else 1]

    def served(self, guild: Guild) -> bool:
        count = self.cluster.discord.shard_count
        return any(shard == (shard_of(guild.id, count), count) for _, shard in self.cluster.discord.connections())

    def results(self) -> list[Message]:
        return [m for messages in results_index(self.cluster.discord).values() for m in messages if m.attachments]

    async def sort_out(self, sents: list[Sent]) -> tuple[list[Sent], list[Sent]]:
        """Which commands became jobs (the store has their interaction token) and which were refused."""
        async def known():
            rows = await self.cluster.db.fetch("SELECT interaction_token FROM jobs WHERE interaction_token = ANY($1)",
                                               [sent.interaction.token for sent in sents])
            stored = {row[0] for row in rows}
            kinds = [(sent, "stored" if sent.interaction.token in stored else (outcome(self.cluster.discord, sent.interaction)
                                                                            or ("open",))[0]) for sent in sents]
            assert not [kind for _, kind in kinds if kind in ("failed", "result")], kinds
            return None if any(kind == "open" for _, kind in kinds) else kinds

        kinds = await until(known, WAIT, lambda: f"commands not settled\n{self.cluster.logs()}")
        return [s for s, kind in kinds if kind == "stored"], [s for s, kind in kinds if kind == "refused"]

    async def idle(self, person: int) -> None:
        """Until none of the person's jobs is active in the store."""
        async def none_active() -> bool:
            return not await self.cluster.db.fetchval(
                "SELECT count(*) FROM jobs WHERE user_id = $1 AND state IN ('waiting','submitted','running','delivering')",
                int(person_id(person)))
        await until(none_active, WAIT, f"person {person} still has active jobs")

    async def burst(self, person: int, texts: list[str]) -> tuple[list[Sent], list[Sent]]:
        guild = self.guild_of(person)
        while True:
            await until(lambda: self.served(guild), 3 * WAIT, f"no process serves guild {guild.id}")
            async with self.gate.passing():
                if not self.served(guild):
                    continue
                sents = [await send(self.cluster.discord, person, text, guild) for text in texts]
                return await self.sort_out(sents)

    async def person(self, person: int, todo: list[str], first: list[Sent]) -> None:
        pending = first
        while True:
            for sent in pending:
                kind, message = await finished(self.cluster.discord, sent, WAIT)
                assert kind == "result", f"{sent.text}: {message.content}"
            await self.idle(person)
            if not todo:
                return
            accepted, refused = await self.burst(person, todo[:BURST])
            # none active when they were sent: the first JOBS_PER_USER are taken; more only if one ended meanwhile
            assert len(accepted) >= min(len(todo[:BURST]), JOBS_PER_USER), (person, len(accepted), len(refused))
            self.accepted += accepted
            self.refusals[person].append(len(refused))
            todo = [sent.text for sent in refused] + todo[BURST:]
            pending = accepted

    async def click(self, where: str, message: Message, prefix: str) -> None:
        custom_id = next(cid for cid in message.custom_ids if cid.startswith(prefix))
        interaction = await self.cluster.discord.click(message.id, custom_id, user_id=CLICKER, username="clicker")
        self.clicks.append((where, interaction))
        kind, shown = await self.cluster.discord.wait_for(lambda: outcome(self.cluster.discord, interaction), WAIT)
        assert kind == "result", f"{where} {custom_id}: {shown.content}\n{self.cluster.logs()}"

    async def kill_and_restart(self, leader: str) -> None:
        """Mid-run: SIGKILL the leader while one result is being posted, click buttons on results posted
        before, and restart it once the new leader has delivered more."""
        db = self.cluster.db

        async def busy() -> bool:
            states = dict(await db.fetch("SELECT state, count(*) FROM jobs GROUP BY state"))
            return len(self.results()) >= 50 and states.get("waiting", 0) >= 8 and states.get("running", 0) >= 1

        await until(busy, 2 * WAIT, "the run never got busy")
        # three servers stop taking prompts (each keeps what it holds), so jobs still wait and run at the
        # kill however fast the fourth drains the queue meanwhile; it makes the result that is held
        slowed = self.cluster.comfys[1:]
        for fake in slowed:
            fake.pause()
        await self.gate.close()
        self.cluster.discord.hold_channel_posts(1)
        held = await self.cluster.discord.wait_for_held_post(timeout=WAIT)
        self.kill_states = dict(await db.fetch("SELECT state, count(*) FROM jobs GROUP BY state"))
        tokens = {row[0] for row in await db.fetch("SELECT interaction_token FROM jobs WHERE state = 'delivering'")}
        self.delivering = {ia.id for ia in self.cluster.discord.interactions.values() if ia.token in tokens}
        before = [m for m in self.results() if m.id != held.id]
        await self.cluster.bots[leader].kill()
        self.killed, self.killed_at = leader, time.perf_counter()
        for fake in slowed:
            fake.resume()
        self.gate.open()
        delivered_at_kill = len(self.results())
        await self.cluster.wait_leader(WAIT, not_in=(leader,))
        later = []
        for guild in self.cluster.guilds:
            posted = next(m for m in before if m.channel_id == guild.channel_id)
            if self.cluster.bot_of(guild).name != leader:  # its process lives: through it, now
                await self.click(f"guild {guild.id} during the outage", posted, "cf:vary:")
            else:
                later.append((guild, posted))
        await until(lambda: len(self.results()) >= delivered_at_kill + 30, 2 * WAIT, "no progress after the kill")
        await self.cluster.restart(leader)
        for guild, posted in later:  # through the restarted process, a follower now
            await self.click(f"guild {guild.id} after the restart", posted, "cf:up:")


async def test_three_processes_deliver_every_job_once_through_a_leader_kill(cluster: Cluster):
    began = time.monotonic()
    run = Run(cluster)
    leader = await cluster.wait_leader()
    todo = {person: [job_text(person, number) for number in range(PER_PERSON)] for person in range(PEOPLE)}

    # the first burst: servers paused, one person after another, one guild after the other
    for fake in cluster.comfys:
        fake.pause()
    sents = [await send(cluster.discord, person, text, run.guild_of(person))
             for person in range(PEOPLE) for text in todo[person][:BURST]]
    accepted, refused = await run.sort_out(sents)
    run.accepted += accepted
    run.first_burst = accepted
    first = {person: [s for s in accepted if s.person == person] for person in range(PEOPLE)}
    for person in range(PEOPLE):
        assert len(first[person]) == JOBS_PER_USER, (person, len(first[person]))
        mine = [s.text for s in refused if s.person == person]
        run.refusals[person].append(len(mine))
        todo[person] = mine + todo[person][BURST:]

    async def queued() -> bool:  # the leader's own report (its heartbeat) counts every job it queued
        info = json.loads(await cluster.db.fetchval("SELECT info FROM processes WHERE name = $1", leader) or "{}")
        return info.get("waiting") == len(accepted) - sum(len(fake.prompts) for fake in cluster.comfys)

    await until(queued, 30, "the leader did not queue the first burst")
    resumed = time.perf_counter()
    for fake in cluster.comfys:
        fake.resume()

    async with asyncio.timeout(280):
        await asyncio.gather(run.kill_and_restart(leader),
                             *(run.person(person, todo[person], first[person]) for person in range(PEOPLE)))
    await check(run, resumed)
    print(f"\n{len(run.accepted)} jobs, {sum(map(sum, run.refusals.values()))} refusals, killed {run.killed} "
          f"with states {run.kill_states}; {time.monotonic() - began:.1f} s")


async def check(run: Run, resumed: float) -> None:
    cluster, discord = run.cluster, run.cluster.discord
    assert len(run.accepted) == PEOPLE * PER_PERSON
    assert sorted(s.text for s in run.accepted) == sorted(job_text(p, n) for p in range(PEOPLE) for n in range(PER_PERSON))
    # the kill came while jobs waited, ran and one was being posted
    assert run.kill_states.get("waiting", 0) > 0 and run.kill_states.get("running", 0) > 0, run.kill_states
    assert run.kill_states.get("delivering", 0) > 0, run.kill_states

    # every job delivered exactly once: one result message per job's nonce, and no other result anywhere
    index = results_index(discord)
    progress = [s.interaction.original_message_id for s in run.accepted] + [ia.original_message_id for _, ia in run.clicks]
    counts = Counter(len([m for m in index.get(p, []) if m.attachments]) for p in progress)
    assert counts == {1: len(progress)}, counts
    posted = [m for m in discord.messages.values() if m.attachments and not m.deleted and not m.ephemeral]
    assert len(posted) == len(progress), len(posted)
    assert not [m for m in discord.messages.values() if m.content.startswith("❌") and "limit is" not in m.content]

    # the store: every job done, one generation each; and no person over the limit at any moment
    jobs = await cluster.db.fetch("SELECT id, user_id, state, created_at, updated_at, interaction_token FROM jobs")
    assert Counter(row["state"] for row in jobs) == {"done": len(progress)}
    # one result each, recorded once and posted (a result and its job's move to delivering are one
    # transaction, so a leader killed between them leaves nothing for the next one to record again)
    rows = await cluster.db.fetch("SELECT job_id, message_id FROM generations")
    assert sorted(row[0] for row in rows) == sorted(row["id"] for row in jobs), "a job without one result"
    assert [row[0] for row in rows if row[1] is None] == [], "a result recorded but never posted"
    for user, rows in _by_user(jobs).items():
        assert _most_at_once(rows) <= JOBS_PER_USER, user
    assert all(bursts[0] == BURST - JOBS_PER_USER for bursts in run.refusals.values()), dict(run.refusals)

    # the results are in the shared bucket
    keys = set(cluster.bucket_keys())
    files = [json.loads(row[0]) for row in await cluster.db.fetch("SELECT files FROM generations")]
    missing = [name for names in files for name in names if f"{cluster.bucket_prefix}/{name}" not in keys]
    assert not missing, missing[:5]

    # one dispatcher at a time: every prompt came under the shared client id, never a follower's
    order = dispatch_order(cluster.comfys)
    wrong = [(p.server, p.client_id) for p in order if p.client_id != f"{cluster.instance}-{p.server}"]
    assert not wrong, wrong[:5]
    # no Discord rule broken. A job being delivered when its leader died is delivered again by the next,
    # whose post finds the message already made (the same nonce) and whose delete of the progress message
    # may find it gone: a 404 the bot expects, the one answer it cannot avoid (it cannot know)
    redone = [v for v in discord.violations if v.startswith("[10008 unknown-message] DELETE webhook message")
              and v.rsplit("of interaction ", 1)[-1].split(" ")[0] in run.delivering]
    # (a request the killed process was sending when it died is not the bot's doing: the fake records it
    # as "client gone", not as unhandled)
    assert [v for v in cluster.check_fakes() if v.removeprefix("discord: ") not in redone] == []

    # every log line names its process (multi-line tracebacks aside: there are none)
    for name, bot in cluster.bots.items():
        lines = [line for line in bot.log_path.read_text(errors="replace").splitlines()
                 if line and not line.startswith("=== start")]
        assert lines and [line for line in lines if f"process={name}" not in line] == [], name

    # fairness over the whole cluster, from the order the servers received the prompts
    job_of = {row["interaction_token"]: row["id"] for row in jobs}
    sent_by_job = {job_of[s.interaction.token]: s for s in run.accepted}
    firsts = [p for p in first_prompts(order) if p.job_id in sent_by_job]
    early = sum(1 for p in firsts if p.received < resumed)  # taken while the servers were paused
    after = firsts[early:early + 20]
    assert len({p.person for p in after}) >= 18, [p.person for p in after]
    ahead = defaultdict(list)  # person -> for each job, how many jobs started while it waited
    received = [p.received for p in firsts]
    for p in firsts:
        sent = sent_by_job[p.job_id]
        ahead[sent.person].append(sum(1 for other in received if sent.sent_at < other < p.received))
    means = {person: statistics.mean(values) for person, values in ahead.items()}
    overall = statistics.mean(means.values())
    print(f"\njobs started ahead of a person's job while it waited, mean by person: min {min(means.values()):.1f}, "
          f"max {max(means.values()):.1f}, overall {overall:.1f}; {early} taken while paused")
    assert max(means.values()) <= 2 * overall, means  # nobody passed over again and again
    # the first burst, once queued whole, went in rounds: nobody's next job before everyone's turn came
    first_burst = {job_of[s.interaction.token] for s in run.first_burst}
    turns: Counter = Counter()
    sequence = []
    for p in firsts[early:]:
        if p.job_id in first_burst and p.received < run.killed_at:  # the next leader starts its rounds anew
            turns[p.person] += 1
            sequence.append((p.person, turns[p.person]))
    # (prompts sent side by side to different servers may arrive swapped: a job may be one round off)
    highest = 0
    for person, turn in sequence:
        assert turn >= highest - 1, f"{person}'s turn {turn} after a turn {highest}: {sequence}"
        highest = max(highest, turn)


def _by_user(rows) -> dict[int, list]:
    found = defaultdict(list)
    for row in rows:
        found[row["user_id"]].append(row)
    return found


def _most_at_once(rows) -> int:
    """The most jobs active when one was stored: for each job, those stored before it (by id: the user's
    inserts are serialized) that ended (updated_at of a done job) after it was stored (created_at), itself
    included. The store stamps created_at before it takes the user's lock and counts, and an ending job
    stamps updated_at before its update commits, so an end within STAMP_SLACK of a start counts as before it."""
    return max(1 + sum(1 for other in rows if other["id"] < row["id"]
                       and other["updated_at"] > row["created_at"] + STAMP_SLACK) for row in rows)
