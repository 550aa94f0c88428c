"""The waiting jobs, in the order they will be taken: fair across people.

A priority lane comes first: jobs moved off a failed server (in the order they were first queued),
then admins' priority jobs. Then one round over the people who wait, the one served longest ago
first (someone never served before anyone), so one person's many jobs never hold back another's
first. Pure bookkeeping in memory: the store has every job, and a restart rebuilds this queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from store import Job

FORGET_AFTER = 10_000  # turns after which a user's last turn is forgotten: memory does not grow with history


class FairQueue:
    def __init__(self) -> None:
        self._waiting: dict[int, deque[Job]] = {}  # user -> waiting jobs, oldest first
        self._served: dict[int, int] = {}  # user -> when (a serial number) a job of theirs last started
        self._serial = 0
        self._priority: deque[Job] = deque()
        self._moved: set[int] = set()  # jobs moved off a failed server: at the front, in their first order

    def add(self, job: Job, *, front: bool = False) -> None:
        """Queue a job; `front` (a job moved off a failed server) puts it ahead of everyone, behind
        the jobs moved before it that were queued before it, so moved jobs keep their order."""
        if front:
            index = next((i for i, queued in enumerate(self._priority)
                          if queued.id not in self._moved or queued.id > job.id), len(self._priority))
            self._priority.insert(index, job)
            self._moved.add(job.id)
        elif job.priority > 0:
            self._priority.append(job)
        else:
            self._waiting.setdefault(job.user_id, deque()).append(job)

    def remove(self, job: Job) -> bool:
        """Take a job out (it starts, is cancelled or fails); False if it was not waiting."""
        if job in self._priority:
            self._priority.remove(job)
            self._moved.discard(job.id)
            return True
        queue = self._waiting.get(job.user_id)
        if queue is None or job not in queue:
            return False
        queue.remove(job)
        if not queue:
            del self._waiting[job.user_id]
        return True

    def __iter__(self) -> Iterator[Job]:
        yield from self._priority
        users = sorted(self._waiting, key=lambda user: (self._served.get(user, -1), self._waiting[user][0].id))
        queues = [self._waiting[user] for user in users]
        depth = 0
        while queues:
            queues = [queue for queue in queues if depth < len(queue)]
            for queue in queues:
                yield queue[depth]
            depth += 1

    def position(self, job_id: int) -> int | None:
        return next((index for index, job in enumerate(self) if job.id == job_id), None)

    def served(self, user_id: int) -> None:
        """This user had a turn: to the back of the round."""
        self._serial += 1
        self._served[user_id] = self._serial
        if len(self._served) > FORGET_AFTER:
            self._served = {user: when for user, when in self._served.items() if when > self._serial - FORGET_AFTER}
