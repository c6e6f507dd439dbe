"""Partitions an agent is not getting through: messages wait, its offset stands still.

Each agent reports the offsets it was handed (``received``) and those it has finished
(``advanced``); the worker's lag timer compares them with each assigned partition's end
(``check``). A partition is stalled for an agent when work waits (messages the agent holds
unfinished, or messages past what it finished and past the group's committed offset that
the consumer has not all handed over) and what it finished has not moved for
``stall_after_s``. The worker shows the
seconds in ``eddyline_worker_partition_stalled_seconds{agent,topic,partition}`` and lists
stalled partitions in ``/status``: a poison message, a sink that refuses every commit or a
crash loop shows up there, named, instead of as a lag that merely grows.

Examples:
    >>> now = [0.0]
    >>> progress = PartitionProgress(stall_after_s=30, clock=lambda: now[0])
    >>> progress.reads("lake", ["events.interaction.private"])
    >>> progress.received("lake", "events.interaction.private", 0, 49)
    >>> progress.advanced("lake", "events.interaction.private", 0, 9)
    >>> progress.check("events.interaction.private", 0, end=50, committed=10, position=50)
    {'lake': 0.0}
    >>> now[0] = 45.0
    >>> progress.check("events.interaction.private", 0, end=50, committed=10, position=50)
    {'lake': 45.0}
    >>> progress.advanced("lake", "events.interaction.private", 0, 49)
    >>> progress.check("events.interaction.private", 0, end=50, committed=10, position=50)
    {'lake': 0.0}
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

_Key = tuple[str, str, int]  # (agent, topic, partition)


class PartitionProgress:
    """What each agent has finished, per partition, and since when it has not moved."""

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._readers: dict[str, set[str]] = defaultdict(set)  # topic -> agents
        self._done: dict[_Key, int] = {}
        self._received: dict[_Key, int] = {}
        self._moved: dict[_Key, float] = {}
        self._waiting: dict[_Key, float] = {}  # since when messages have waited
        self._stalled: dict[_Key, dict[str, Any]] = {}

    def reads(self, agent: str, topics: Iterable[str]) -> None:
        """``agent`` consumes ``topics``."""
        for topic in topics:
            self._readers[topic].add(agent)

    def received(self, agent: str, topic: str, partition: int, offset: int) -> None:
        """``agent`` was handed the message at ``offset``."""
        key = (agent, topic, partition)
        self._received[key] = max(offset, self._received.get(key, -1))

    def advanced(self, agent: str, topic: str, partition: int, offset: int) -> None:
        """``agent`` has finished the message at ``offset``."""
        key = (agent, topic, partition)
        if offset > self._done.get(key, -1):
            self._done[key] = offset
            self._moved[key] = self._clock()

    def check(
        self,
        topic: str,
        partition: int,
        *,
        end: int,
        committed: int | None,
        position: int | None,
        queued: dict[str, int] | None = None,
    ) -> dict[str, float]:
        """Seconds each reader of the partition has been stalled (0.0: it is not).

        ``end``: the partition's high watermark; ``committed``: the group's committed
        offset; ``position``: the consumer's; ``queued``: messages waiting in each agent's
        queue. An agent that holds nothing unfinished while the consumer has read to the
        end with nothing queued for it is idle: the offsets left are transaction markers,
        not messages."""
        now = self._clock()
        out: dict[str, float] = {}
        for agent in sorted(self._readers.get(topic, ())):
            key = (agent, topic, partition)
            done = self._done.get(key, -1)
            holding = self._received.get(key, -1) > done
            next_offset = max(done + 1, committed or 0)
            drained = position is not None and position >= end and not (queued or {}).get(agent)
            if not holding and (end <= next_offset or drained):
                self._waiting.pop(key, None)
                self._stalled.pop(key, None)
                out[agent] = 0.0
                continue
            since = max(self._waiting.setdefault(key, now), self._moved.get(key, float("-inf")))
            stalled = now - since if now - since >= self.stall_after_s else 0.0
            out[agent] = stalled
            if stalled:
                self._stalled[key] = {
                    "agent": agent,
                    "topic": topic,
                    "partition": partition,
                    "next_offset": next_offset,
                    "end": end,
                    "stalled_s": round(stalled, 1),
                }
            else:
                self._stalled.pop(key, None)
        return out

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: its state goes with it."""
        for key in [k for k in self._waiting if k[1:] == (topic, partition)]:
            self._waiting.pop(key, None)
        for key in [k for k in self._stalled if k[1:] == (topic, partition)]:
            self._stalled.pop(key, None)

    def stalled(self) -> list[dict[str, Any]]:
        """The partitions stalled at the last check, for /status."""
        return [self._stalled[key] for key in sorted(self._stalled)]
