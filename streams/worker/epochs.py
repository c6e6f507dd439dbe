"""Which incarnation of each source topic the worker reads: Kafka's topic id (the epoch).

Every exactly-once key names it (``schemas.source``). The worker learns the ids when an
agent starts and asks again whenever a partition's offsets go backwards (a replay after a
crash or a rebalance, or a topic deleted and created again, whose offsets restart at 0):
the position of every message it processes carries the id current for it.

Examples:
    >>> import asyncio
    >>> ids = {"events.interaction": "A"}
    >>> epochs = TopicEpochs(lambda names: {n: ids[n] for n in names if n in ids})
    >>> asyncio.run(epochs.refresh(["events.interaction"]))
    >>> epochs.regressed("events.interaction", 0, 7)
    False
    >>> epochs.source("events.interaction", 0, 7)
    SourceRef(topic='events.interaction', partition=0, offset=7, epoch='A', first=None)
    >>> ids["events.interaction"] = "B"  # deleted and created again
    >>> epochs.regressed("events.interaction", 0, 0)
    True
    >>> asyncio.run(epochs.refresh(["events.interaction"]))
    >>> epochs.source("events.interaction", 0, 0).epoch
    'B'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from eddyline.schemas.source import SourceRef

log = logging.getLogger("eddyline.worker")


class TopicEpochs:
    """Topic ids by name, asked of Kafka through ``lookup`` (names -> ids)."""

    def __init__(self, lookup: Callable[[list[str]], dict[str, str]]) -> None:
        self._lookup = lookup
        self._ids: dict[str, str] = {}
        self._last: dict[tuple[str, int], int] = {}

    async def refresh(self, topics: Iterable[str]) -> None:
        """Ask Kafka for these topics' ids now (in a thread: a metadata round trip)."""
        await asyncio.to_thread(self.refresh_now, topics)

    def refresh_now(self, topics: Iterable[str]) -> None:
        """Ask Kafka for these topics' ids, blocking (the intake's thread)."""
        found = self._lookup(sorted(set(topics)))
        for name, topic_id in found.items():
            old = self._ids.get(name)
            if old is not None and old != topic_id:
                log.warning("topic %s was created again (id %s, was %s)", name, topic_id, old)
            self._ids[name] = topic_id

    def regressed(self, topic: str, partition: int, offset: int) -> bool:
        """Whether ``offset`` is not past the last one seen on the partition (then the
        topic's id may have changed: ask again before processing)."""
        key = (topic, partition)
        last = self._last.get(key)
        self._last[key] = offset
        return last is not None and offset <= last

    def source(self, topic: str, partition: int, offset: int) -> SourceRef:
        return SourceRef(topic, partition, offset, self._ids.get(topic, ""))
