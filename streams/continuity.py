"""Offset continuity: each agent sees every message of its partitions, or re-reads them.

Faust can skip messages of a partition a worker keeps across a rebalance: messages fetched
just before it are dropped as stale after it, while the consumer's read offset has already
moved past them, so the seek to the committed offset does not bring them back (the same
family as faust-streaming#216 and #221; seen here as three raw messages never privatised
by a worker that kept its partitions while a second one joined). Exactly-once cannot
survive that: a later message's offset, once in a Delta commit or a budget save, makes the
skipped one look done.

``OffsetGuard`` checks each message's offset against the one expected next on its
partition: after a rebalance, the group's committed offset (where Faust resumes), then
one past the last message seen. A higher offset is a gap; the broker is asked whether the
gap holds messages (it may not: transaction markers, compaction). If it does, the consumer
is sought back to the gap's first message and the agent drops what arrives until that
message does, so the partition is processed again in order. A lower offset is a replay,
which every stage already de-duplicates. Messages dropped here are never acked, so Kafka's
committed offset cannot pass them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.settings import KafkaSettings

log = logging.getLogger("eddyline.worker")


class Broker(Protocol):
    """What ``OffsetGuard`` asks the broker (``KafkaProbe`` in a worker)."""

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of the partition (None if it has none)."""
        ...

    def first_at_or_after(self, topic: str, partition: int, offset: int) -> int | None:
        """The offset of the first message at or after ``offset`` (None if there is none)."""
        ...


@dataclass
class _Rewind:
    offset: int  # sought back to here; dropping messages until it arrives
    dropped: set[int] = field(default_factory=set)
    seeks: int = 1


MAX_SEEKS = 5  # re-reads of one gap before giving up on it (and saying so)


class OffsetGuard:
    """One agent's offset check (``admit``); not shared between agents."""

    def __init__(self, app: Any, broker: Broker, on_reread: Any = None) -> None:
        self.app, self.broker = app, broker
        self.on_reread = on_reread  # called with (topic, gap size) on each re-read
        self.generation: int | None = None
        self.expected: dict[Any, int] = {}  # TP -> next offset
        self.rewinding: dict[Any, _Rewind] = {}

    async def admit(self, message: Any) -> bool:
        """Whether the agent should process ``message`` (False: drop it, do not ack it)."""
        if message.generation_id != self.generation:
            # A rebalance: Faust seeks every partition to its committed offset.
            self.generation = message.generation_id
            self.expected.clear()
            self.rewinding.clear()
        tp, offset = message.tp, message.offset
        rewind = self.rewinding.get(tp)
        if rewind is not None:
            if offset <= rewind.offset:  # the re-read has arrived (or an older replay)
                del self.rewinding[tp]
                self.expected[tp] = offset + 1
                return True
            if offset in rewind.dropped:  # the re-read passed over the gap again
                if rewind.seeks >= MAX_SEEKS:
                    log.error(
                        "%s/%d: offsets from %d could not be re-read after %d seeks; "
                        "going on from %d",
                        tp.topic,
                        tp.partition,
                        rewind.offset,
                        rewind.seeks,
                        offset,
                    )
                    del self.rewinding[tp]
                    self.expected[tp] = offset + 1
                    return True
                rewind.seeks += 1
                rewind.dropped.clear()
                await self.app.consumer.seek(tp, rewind.offset)
            rewind.dropped.add(offset)
            return False
        want = self.expected.get(tp)
        if want is None:
            want = await asyncio.to_thread(self.broker.committed, tp.topic, tp.partition)
        if want is None or offset <= want:
            self.expected[tp] = offset + 1
            return True
        first = await asyncio.to_thread(self.broker.first_at_or_after, tp.topic, tp.partition, want)
        if first is None or first >= offset:  # nothing in the gap: markers or compaction
            self.expected[tp] = offset + 1
            return True
        log.warning(
            "%s/%d: offsets %d..%d were skipped by the consumer; re-reading them",
            tp.topic,
            tp.partition,
            first,
            offset - 1,
        )
        if self.on_reread is not None:
            self.on_reread(tp.topic, offset - first)
        self.rewinding[tp] = _Rewind(first, {offset})
        await self.app.consumer.seek(tp, first)
        return False


class KafkaProbe:
    """``Broker`` over a confluent-kafka consumer that never joins the group: committed
    offsets by OffsetFetch, messages by assigning a partition directly. Blocking: call it
    from a thread; calls are serialised, so the guards of all agents can share one."""

    def __init__(self, ks: KafkaSettings, group: str, timeout: float = 10.0) -> None:
        self.ks, self.group, self.timeout = ks, group, timeout
        self._consumer: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer(
                self.ks.librdkafka(
                    {
                        "group.id": self.group,
                        "enable.auto.commit": False,
                        "enable.partition.eof": True,
                    }
                )
            )
        return self._consumer

    def committed(self, topic: str, partition: int) -> int | None:
        from confluent_kafka import TopicPartition

        with self._lock:
            (tp,) = self._client().committed(
                [TopicPartition(topic, partition)], timeout=self.timeout
            )
        return tp.offset if tp.offset >= 0 else None

    def first_at_or_after(self, topic: str, partition: int, offset: int) -> int | None:
        from confluent_kafka import KafkaError, TopicPartition

        with self._lock:
            consumer = self._client()
            consumer.assign([TopicPartition(topic, partition, offset)])
            try:
                msg = consumer.poll(self.timeout)
            finally:
                consumer.unassign()
        if msg is not None and msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return None
            msg = None
        # No answer: say the gap starts with a message, so it is re-read (replays are
        # de-duplicated downstream; a skipped message would be lost).
        found: int = offset if msg is None else msg.offset()
        return found

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


__all__ = ["Broker", "KafkaProbe", "OffsetGuard"]
