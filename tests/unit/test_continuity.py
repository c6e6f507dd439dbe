"""OffsetGuard: every offset of a partition reaches the agent, in order, or is re-read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from streams.continuity import MAX_SEEKS, OffsetGuard


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Message:
    tp: TP
    offset: int
    generation_id: int = 1


@dataclass
class Consumer:
    seeks: list[tuple[TP, int]] = field(default_factory=list)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


@dataclass
class App:
    consumer: Consumer = field(default_factory=Consumer)


@dataclass
class Broker:
    """A partition holding ``offsets``; the group committed ``committed_at``."""

    offsets: list[int]
    committed_at: int | None = None

    def committed(self, topic: str, partition: int) -> int | None:
        return self.committed_at

    def first_at_or_after(self, topic: str, partition: int, offset: int) -> int | None:
        return next((o for o in self.offsets if o >= offset), None)


TP0 = TP("raw", 0)


def _admitted(guard: OffsetGuard, offsets: list[int], generation: int = 1) -> list[int]:
    async def run() -> list[int]:
        return [o for o in offsets if await guard.admit(Message(TP0, o, generation))]

    return asyncio.run(run())


def test_a_contiguous_partition_passes_untouched():
    app, broker = App(), Broker(list(range(100)), committed_at=10)
    guard = OffsetGuard(app, broker)
    assert _admitted(guard, list(range(10, 20))) == list(range(10, 20))
    assert app.consumer.seeks == []


def test_a_skipped_offset_is_re_read_and_what_came_early_is_dropped_until_then():
    app, broker = App(), Broker(list(range(100)), committed_at=0)
    rereads: list[tuple[str, int]] = []
    guard = OffsetGuard(app, broker, on_reread=lambda topic, n: rereads.append((topic, n)))
    # 3..5 skipped by the consumer; 6, 7 were already queued; then the re-read from 3
    admitted = _admitted(guard, [0, 1, 2, 6, 7, 3, 4, 5, 6, 7, 8])
    assert admitted == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # each once, in order
    assert app.consumer.seeks == [(TP0, 3)]
    assert rereads == [("raw", 3)]


def test_after_a_rebalance_the_first_offset_must_be_the_committed_one():
    app, broker = App(), Broker(list(range(100)), committed_at=48)
    guard = OffsetGuard(app, broker)
    assert _admitted(guard, [40, 41, 42], generation=1) == [40, 41, 42]
    # generation 2 resumes at 51, though the group committed 48: 48..50 were skipped
    assert _admitted(guard, [51, 48, 49, 50, 51], generation=2) == [48, 49, 50, 51]
    assert app.consumer.seeks == [(TP0, 48)]


def test_a_replay_below_the_expected_offset_is_admitted():
    # After Faust's seek to the committed offset, messages come again: every stage
    # de-duplicates replays, so they pass.
    app, broker = App(), Broker(list(range(100)), committed_at=None)
    guard = OffsetGuard(app, broker)
    assert _admitted(guard, [5, 6, 7, 3, 4, 5, 6, 7, 8]) == [5, 6, 7, 3, 4, 5, 6, 7, 8]
    assert app.consumer.seeks == []


def test_a_gap_with_no_messages_in_it_is_not_re_read():
    # Transaction markers and compaction leave offsets with no message.
    app, broker = App(), Broker([0, 1, 2, 7, 8], committed_at=0)
    guard = OffsetGuard(app, broker)
    assert _admitted(guard, [0, 1, 2, 7, 8]) == [0, 1, 2, 7, 8]
    assert app.consumer.seeks == []


def test_a_re_read_that_skips_again_seeks_again_then_gives_up_rather_than_stall():
    app, broker = App(), Broker(list(range(100)), committed_at=0)
    guard = OffsetGuard(app, broker)
    # 3 is never delivered: each re-read starts at 6 again
    offsets = [0, 1, 2, 6] + [6] * MAX_SEEKS + [7]
    assert _admitted(guard, offsets) == [0, 1, 2, 6, 7]
    assert app.consumer.seeks == [(TP0, 3)] * MAX_SEEKS
