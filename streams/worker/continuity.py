"""Offset continuity: each agent sees every message of its partitions, or re-reads them.

Faust can skip messages around a rebalance (also the first one, when a worker starts):
messages fetched just before it are dropped as stale after it, while the consumer's read
offset has already moved past them, so the seek to the committed offset does not bring
them back (the same family as faust-streaming#216 and #221): messages of a partition a
worker kept while another joined, the first message of a partition after a restart, the
last messages of a partition. Exactly-once cannot survive that: a later
message's offset, once in a Delta commit, a budget save or a model checkpoint, makes the
skipped one look done.

``OffsetGuard.admit`` checks each message's offset against the one expected next on its
partition: after a rebalance, where the consumer resumes (the group's committed offset,
else the partition's first message), then one past the last message seen. A higher
offset is a gap; the broker is asked whether the gap holds messages (it may not:
transaction markers, compaction). If it does, the consumer is sought back to the gap's
first message and the agent drops what arrives until that message does, so the partition
is processed again in order. A lower offset is a replay, which every stage already
de-duplicates. Messages dropped here are never acked, so Kafka's committed offset cannot
pass them. ``OffsetGuard.check_stalled`` (a timer) catches what ``admit`` cannot see: a
partition the consumer has read past while nothing reached the agent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from eddyline.streams.kafka.settings import KafkaSettings

log = logging.getLogger("eddyline.worker")


class Broker(Protocol):
    """What ``OffsetGuard`` asks the broker (``KafkaProbe`` in a worker)."""

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of the partition (None if it has none)."""
        ...

    def first_at_or_after(self, topic: str, partition: int, offset: int) -> int | None:
        """The offset of the first message at or after ``offset`` (None if there is none)."""
        ...

    def log_start(self, topic: str, partition: int) -> int | None:
        """The partition's first offset (None if it is empty): cheap, no fetch."""
        ...


@dataclass
class _Rewind:
    offset: int  # sought back to here; dropping messages until it arrives
    dropped: set[int] = field(default_factory=set)
    seeks: int = 1


class Seeker:
    """The consumer's seeks, shared by the guards of all agents: agents reading the same
    topic (the lake and a learn agent both read the private topics) must not undo each
    other's re-reads. A seek to an offset at or past one made for the same partition
    in the last ``window_s`` is skipped: that re-read brings the messages anyway."""

    def __init__(self, consumer: Any, window_s: float = 10.0) -> None:
        self.consumer, self.window_s = consumer, window_s
        self._recent: dict[Any, tuple[int, float]] = {}  # TP -> (offset, when)

    async def seek(self, tp: Any, offset: int, again: bool = False) -> None:
        """Seek ``tp`` back to ``offset``; ``again``: a re-read that passed over the gap
        once more, which no earlier seek can cover."""
        now = time.monotonic()
        last = self._recent.get(tp)
        recent = last is not None and now - last[1] < self.window_s
        if not again and recent and last is not None and last[0] <= offset:
            return
        self._recent[tp] = (offset, now)
        # On the consumer's own thread (Faust's plain seek touches aiokafka from this
        # one, which crashed its fetcher mid-fetch: KeyError in fetched_records).
        try:
            await self.consumer.seek_wait({tp: offset})
        except Exception as exc:  # revoked meanwhile: the rebalance re-seeks it anyway
            log.warning("seek of %s to %d failed: %r", tp, offset, exc)


class OffsetGuard:
    """One agent's offset check (``admit``); not shared between agents."""

    def __init__(
        self,
        app: Any,
        broker: Broker,
        on_reread: Callable[[str, int], None] | None = None,
        topics: Iterable[str] = (),
        pending: Callable[[], int] | None = None,
        seeker: Seeker | None = None,
    ) -> None:
        self.app, self.broker = app, broker
        self.seeker = seeker or Seeker(app.consumer)
        self.on_reread = on_reread  # called with (topic, gap size) on each re-read
        self.topics = set(topics)  # the agent's topics (for check_stalled)
        self.pending = pending  # messages queued for the agent, not yet admitted
        self.generation: int | None = None
        self.expected: dict[Any, int] = {}  # TP -> next offset
        self.rewinding: dict[Any, _Rewind] = {}
        self._suspects: dict[Any, int] = {}  # TP -> next offset, at the last check
        self._committed: dict[Any, int | None] = {}  # TP -> committed, this generation
        self._committed_generation: int | None = None

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
                # Seek again, however often it takes: going on would lose the gap for good,
                # while a partition that keeps re-reading shows (lag, /status, the log).
                rewind.seeks += 1
                log.warning(
                    "%s/%d: the re-read passed over offset %d again; seeking again (%d)",
                    tp.topic,
                    tp.partition,
                    rewind.offset,
                    rewind.seeks,
                )
                rewind.dropped.clear()
                await self.seeker.seek(tp, rewind.offset, again=True)
            rewind.dropped.add(offset)
            return False
        want = self.expected.get(tp)
        if want is None:
            want = await self._resume_offset(tp)
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
        await self.seeker.seek(tp, first)
        return False

    async def check_stalled(self) -> list[Any]:
        """Re-read the partitions the consumer has read past while the agent got nothing.

        ``admit`` sees gaps only when a later message arrives: if every message left of a
        partition was skipped, none does, and the partition stalls with its offset
        uncommitted. Called every few seconds: a partition whose consumer position is past
        the next offset the agent expects, with messages in between (the broker is asked)
        and none queued for the agent, at two checks in a row without progress, is sought
        back to that offset. The partitions sought back."""
        app, consumer = self.app, self.app.consumer
        busy = app.rebalancing or app.in_recovery or not app.flow_control.is_active()
        if busy or (self.pending is not None and self.pending() > 0):
            self._suspects.clear()  # in flux, or messages on the way: nothing to judge
            return []
        current = self.generation == app.consumer_generation_id
        suspects: dict[Any, int] = {}
        stuck: list[tuple[Any, int]] = []
        for tp in consumer.assignment():
            if tp.topic not in self.topics:
                continue
            rewind = self.rewinding.get(tp) if current else None
            if rewind is not None:  # a re-read under way: its first offset must arrive
                want: int | None = rewind.offset
            else:
                want = self.expected.get(tp) if current else None
            if want is None:  # nothing received since the rebalance: where it resumes
                want = await self._resume_offset(tp)
            try:
                position = await consumer.position(tp)
            except Exception as exc:  # revoked meanwhile
                log.debug("%s: no position (%r)", tp, exc)
                continue
            floor = want or 0
            if position is None or position <= floor:
                continue
            if self._suspects.get(tp) != floor:
                suspects[tp] = floor  # judged at the next check, if no progress by then
                continue
            suspects[tp] = floor
            if rewind is not None:
                # The re-read passed over its first offset (Faust's read offset raced the
                # seek) and nothing came again to show it: seek once more.
                stuck.append((tp, floor))
                continue
            first = await asyncio.to_thread(
                self.broker.first_at_or_after, tp.topic, tp.partition, floor
            )
            if first is not None and first < position:  # else markers only: nothing lost
                stuck.append((tp, first))
        self._suspects = suspects
        for tp, first in stuck:
            rewind = self.rewinding.get(tp)
            if rewind is not None:
                rewind.seeks += 1
                log.warning(
                    "%s/%d: the re-read from offset %d did not arrive; seeking again (%d)",
                    tp.topic,
                    tp.partition,
                    first,
                    rewind.seeks,
                )
                rewind.dropped.clear()
                await self.seeker.seek(tp, first, again=True)
                continue
            log.warning(
                "%s/%d: the consumer read past offset %d but the agent never got it; "
                "re-reading from there",
                tp.topic,
                tp.partition,
                first,
            )
            if self.on_reread is not None:
                self.on_reread(tp.topic, 1)
            self.rewinding[tp] = _Rewind(first)
            await self.seeker.seek(tp, first)
        return [tp for tp, _ in stuck]

    async def _resume_offset(self, tp: Any) -> int | None:
        """Where the consumer resumes the partition after a rebalance: the group's committed
        offset, or (none committed; the worker reads from the earliest) its first message.
        Asked once per partition and generation: it moves only when the agent acks, which
        it cannot without messages. None: the partition is empty."""
        if self._committed_generation != self.app.consumer_generation_id:
            self._committed_generation = self.app.consumer_generation_id
            self._committed.clear()
        if tp not in self._committed:
            offset = await asyncio.to_thread(self.broker.committed, tp.topic, tp.partition)
            if offset is None:  # a marker at the start shows as a gap, which admit checks
                offset = await asyncio.to_thread(self.broker.log_start, tp.topic, tp.partition)
            self._committed[tp] = offset
        return self._committed[tp]

    def state(self) -> dict[str, Any]:
        """For ``/status``: next expected offsets and re-reads in progress."""
        return {
            "generation": self.generation,
            "expected": {f"{tp.topic}/{tp.partition}": o for tp, o in self.expected.items()},
            "rewinding": {
                f"{tp.topic}/{tp.partition}": r.offset for tp, r in self.rewinding.items()
            },
        }


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

    def log_start(self, topic: str, partition: int) -> int | None:
        from confluent_kafka import TopicPartition

        with self._lock:
            low, high = self._client().get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout
            )
        return None if low >= high else int(low)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


__all__ = ["Broker", "KafkaProbe", "OffsetGuard", "Seeker"]
