"""OffsetGuard: every offset of a partition reaches the agent, in order, or is re-read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from eddyline.streams.worker.continuity import OffsetGuard
from tests.factories import TP, Message
from tests.factories import FaustApp as App


@dataclass
class Broker:
    """A partition holding ``offsets``; the group committed ``committed_at``."""

    offsets: list[int]
    committed_at: int | None = None

    def committed(self, topic: str, partition: int) -> int | None:
        return self.committed_at

    def first_at_or_after(self, topic: str, partition: int, offset: int) -> int | None:
        return next((o for o in self.offsets if o >= offset), None)

    def log_start(self, topic: str, partition: int) -> int | None:
        return self.offsets[0] if self.offsets else None


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
    app, broker = App(), Broker(list(range(100)), committed_at=5)
    guard = OffsetGuard(app, broker)
    assert _admitted(guard, [5, 6, 7, 3, 4, 5, 6, 7, 8]) == [5, 6, 7, 3, 4, 5, 6, 7, 8]
    assert app.consumer.seeks == []


def test_with_nothing_committed_the_first_offset_must_be_the_partitions_first():
    # The worker reads from the earliest: a first message past it means the head was
    # skipped (seen: a restarted worker never learned a partition's first message).
    app, broker = App(), Broker(list(range(3, 100)), committed_at=None)
    guard = OffsetGuard(app, broker)
    assert _admitted(guard, [5, 3, 4, 5, 6]) == [3, 4, 5, 6]
    assert app.consumer.seeks == [(TP0, 3)]


def test_a_gap_with_no_messages_in_it_is_not_re_read():
    # Transaction markers and compaction leave offsets with no message.
    app, broker = App(), Broker([0, 1, 2, 7, 8], committed_at=0)
    guard = OffsetGuard(app, broker)
    assert _admitted(guard, [0, 1, 2, 7, 8]) == [0, 1, 2, 7, 8]
    assert app.consumer.seeks == []


def test_a_re_read_that_skips_the_gap_again_seeks_again_and_never_admits_past_it():
    app, broker = App(), Broker(list(range(100)), committed_at=0)
    guard = OffsetGuard(app, broker)
    # 3 is skipped again by each of the first three re-reads (each starts at 6 again)
    offsets = [0, 1, 2, 6, 6, 6, 6, 3, 4, 5, 6, 7]
    assert _admitted(guard, offsets) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert app.consumer.seeks == [(TP0, 3)] * 4


def test_a_re_read_whose_first_offset_never_arrives_is_sought_again_by_the_check():
    # Faust's read offset raced the seek: the re-read jumped past 3 and nothing repeats.
    queued = [0]
    app, guard = _stalled_guard(Broker(list(range(10)), committed_at=0), queued)
    assert _admitted(guard, [0, 1, 2, 6]) == [0, 1, 2]  # gap: sought back to 3
    app.consumer.positions[TP0] = 10  # ...but 3..9 went by unseen
    asyncio.run(guard.check_stalled())
    assert asyncio.run(guard.check_stalled()) == [TP0]
    assert app.consumer.seeks == [(TP0, 3), (TP0, 3)]
    assert _admitted(guard, [3, 4, 5]) == [3, 4, 5]


def _stalled_guard(broker: Broker, queued: list[int]) -> tuple[App, OffsetGuard]:
    app = App()
    guard = OffsetGuard(app, broker, topics=["raw"], pending=lambda: queued[0])
    return app, guard


def test_a_partition_read_past_with_nothing_delivered_is_re_read_at_the_second_check():
    # The consumer read 0..5; the agent got 0..2, and 3..5 vanished on the way (nothing
    # later arrives to show the gap): the partition would stall with 3 uncommitted.
    queued = [0]
    app, guard = _stalled_guard(Broker(list(range(6)), committed_at=0), queued)
    assert _admitted(guard, [0, 1, 2]) == [0, 1, 2]
    app.consumer.positions[TP0] = 6
    assert asyncio.run(guard.check_stalled()) == []  # once could be messages in flight
    assert asyncio.run(guard.check_stalled()) == [TP0]  # twice, with no progress: re-read
    assert app.consumer.seeks == [(TP0, 3)]
    assert _admitted(guard, [3, 4, 5]) == [3, 4, 5]


def test_messages_queued_or_progress_between_checks_are_not_a_stall():
    queued = [5]
    app, guard = _stalled_guard(Broker(list(range(20)), committed_at=0), queued)
    assert _admitted(guard, [0, 1, 2]) == [0, 1, 2]
    app.consumer.positions[TP0] = 8
    for _ in range(3):  # the agent's queue holds them
        assert asyncio.run(guard.check_stalled()) == []
    queued[0] = 0
    assert asyncio.run(guard.check_stalled()) == []
    assert _admitted(guard, [3, 4]) == [3, 4]  # progress since the last check
    assert asyncio.run(guard.check_stalled()) == []
    assert app.consumer.seeks == []


def test_a_partition_that_delivered_nothing_since_the_rebalance_is_re_read_from_its_commit():
    queued = [0]
    app, guard = _stalled_guard(Broker(list(range(10)), committed_at=4), queued)
    app.consumer.positions[TP0] = 10  # read 4..9, none arrived
    asyncio.run(guard.check_stalled())
    assert asyncio.run(guard.check_stalled()) == [TP0]
    assert app.consumer.seeks == [(TP0, 4)]


def test_a_position_past_commit_markers_only_is_not_a_stall():
    queued = [0]
    app, guard = _stalled_guard(Broker([0, 1, 2], committed_at=0), queued)
    assert _admitted(guard, [0, 1, 2]) == [0, 1, 2]
    app.consumer.positions[TP0] = 4  # offset 3 is a transaction marker
    for _ in range(3):
        assert asyncio.run(guard.check_stalled()) == []
    assert app.consumer.seeks == []
