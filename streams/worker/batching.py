"""When the lake agent commits: envelopes gather while the previous Delta commit runs.

A commit costs ~1 µs a row in delta-rs (in a thread, off the event loop), plus a fixed
~0.1-0.2 s. Faust's ``take(max, within)`` gathers a batch only *between* commits, so a
worker with a backlog paid a full ``within`` wait after every commit, and the last
envelopes of a backlog waited out the window before the last commit started.
:class:`CommitBatcher` gathers
while a commit runs and decides each commit by size, age and quiet:

* at once when ``max_messages`` envelopes or ``max_rows`` rows are pending;
* when the oldest pending envelope has waited ``max_wait_s`` (the latency bound);
* when nothing has arrived for ``idle_s`` while at least ``idle_min_rows`` rows are
  pending: a backlog's tail, or a burst, goes in now. A trickle (fewer rows) waits for
  the age bound, so quiet streams do not commit a tiny file per envelope.

A batch is whatever is pending when it falls due (more than the limits when envelopes
arrived during a long commit). Commits run one at a time, in arrival order (each records
its source offsets in Delta, ``streams/lake.py``). Memory is bounded: ``add`` waits while
twice the limits are pending, which backs up into Faust's queue and from there pauses
the partitions.

Examples:
    >>> import asyncio
    >>> async def main() -> list[list[str]]:
    ...     done = []
    ...     async def commit(batch):
    ...         done.append(batch)
    ...     policy = FlushPolicy(max_messages=2, max_rows=100, max_wait_s=0.05,
    ...                          idle_s=0.0, idle_min_rows=0)
    ...     batcher = CommitBatcher(commit, policy)
    ...     runner = asyncio.ensure_future(batcher.run())
    ...     await batcher.add("a", rows=10)
    ...     await batcher.add("b", rows=10)  # two envelopes: due at once
    ...     await asyncio.sleep(0.01)
    ...     await batcher.add("c", rows=10)  # goes when it is 0.05 s old
    ...     await asyncio.sleep(0.2)
    ...     runner.cancel()
    ...     return done
    >>> asyncio.run(main())
    [['a', 'b'], ['c']]
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class FlushPolicy:
    """When a batch is committed (module docstring). ``idle_s`` 0 turns the quiet rule off.
    No defaults here: the worker's are its settings (``WorkerSettings.lake_*``)."""

    max_messages: int
    max_rows: int
    max_wait_s: float
    idle_s: float
    idle_min_rows: int


class CommitBatcher(Generic[T]):
    """Items gathered into batches, each handed to ``commit`` once it is due (the policy),
    one commit at a time, by :meth:`run` (a task beside the code calling :meth:`add`)."""

    def __init__(
        self,
        commit: Callable[[list[T]], Awaitable[None]],
        policy: FlushPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._commit = commit
        self.policy = policy
        self._clock = clock
        self._pending: list[T] = []
        self._rows = 0
        self._first_at = 0.0  # arrival of the oldest pending item
        self._last_at = 0.0  # arrival of the newest
        self._arrived = asyncio.Event()  # set by add: the run loop re-decides
        self._room = asyncio.Event()  # set when pending is under twice the limits
        self._room.set()
        self._closing = False

    @property
    def pending(self) -> int:
        """Items gathered and not yet handed to a commit."""
        return len(self._pending)

    async def add(self, item: T, rows: int) -> None:
        """Gather ``item`` (``rows`` rows); waits first while twice the limits are pending."""
        await self._room.wait()
        now = self._clock()
        if not self._pending:
            self._first_at = now
        self._pending.append(item)
        self._rows += rows
        self._last_at = now
        p = self.policy
        if len(self._pending) >= 2 * p.max_messages or self._rows >= 2 * p.max_rows:
            self._room.clear()
        self._arrived.set()

    def _due_in(self) -> float:
        """Seconds until the pending batch is due (0: now; inf: nothing pending)."""
        if not self._pending:
            return math.inf
        p = self.policy
        if len(self._pending) >= p.max_messages or self._rows >= p.max_rows:
            return 0.0
        now = self._clock()
        due = self._first_at + p.max_wait_s
        if p.idle_s > 0 and self._rows >= p.idle_min_rows:
            due = min(due, self._last_at + p.idle_s)
        return max(0.0, due - now)

    def close(self) -> None:
        """Make what is pending due now: :meth:`run` commits it (after the commit in
        flight, if any) and returns. What is added from now on goes in too."""
        self._closing = True
        self._arrived.set()

    async def run(self) -> None:
        """Commit batches as they fall due, until :meth:`close` and nothing is pending. A
        cancelled run commits nothing more: what is pending then is simply not committed,
        and its source messages are not acknowledged (they are replayed)."""
        while True:
            if self._closing and not self._pending:
                return
            wait = 0.0 if self._closing else self._due_in()
            if wait > 0:
                self._arrived.clear()
                timeout = None if math.isinf(wait) else wait
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                except TimeoutError:
                    pass
                continue  # decide again: something arrived, or the deadline passed
            batch, self._pending, self._rows = self._pending, [], 0
            self._room.set()
            await self._commit(batch)


__all__ = ["CommitBatcher", "FlushPolicy"]
