"""DeltaSink on real Delta tables in tmp_path: offsets in the commit make appends idempotent."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from deltalake import DeltaTable

from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.sink import DeltaSink


def _batch(ids: list[str]) -> pa.Table:
    now = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    return pa.table(
        {"event_id": ids, "occurred_at": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC"))}
    )


def test_replayed_batches_are_written_once(tmp_path) -> None:
    sink = DeltaSink(str(tmp_path))
    first = [(_batch(["a", "b"]), SourceRef("raw", 0, 10)), (_batch(["c"]), SourceRef("raw", 1, 4))]
    assert sink.write("t", first) == 3
    # A crash before the Kafka commit replays the same messages, plus a new one.
    replay = [*first, (_batch(["d"]), SourceRef("raw", 0, 11))]
    assert sink.write("t", replay) == 1
    ids = DeltaTable(str(tmp_path / "t")).to_pyarrow_table()["event_id"].to_pylist()
    assert sorted(ids) == ["a", "b", "c", "d"]
    assert sink.committed("t", SourceRef("raw", 0, 0)) == 11
    assert sink.committed("t", SourceRef("raw", 1, 0)) == 4


def test_a_second_sink_sees_the_first_ones_offsets(tmp_path) -> None:
    DeltaSink(str(tmp_path)).write("t", [(_batch(["a"]), SourceRef("raw", 2, 7))])
    other = DeltaSink(str(tmp_path))  # e.g. the worker that takes the partition over
    assert other.write("t", [(_batch(["a"]), SourceRef("raw", 2, 7))]) == 0
    assert other.committed("t", SourceRef("raw", 2, 0)) == 7
    assert other.committed("t", SourceRef("raw", 3, 0)) == -1


def test_a_topic_created_again_is_a_new_count_not_a_replay(tmp_path) -> None:
    """Offsets restart at 0 in a recreated topic: keyed by topic name alone, its first
    messages looked already written and were dropped without a trace."""
    sink = DeltaSink(str(tmp_path))
    old = [(_batch([f"old{i}"]), SourceRef("raw", 0, i, epoch="A")) for i in range(50)]
    assert sink.write("t", old) == 50
    new = [(_batch([f"new{i}"]), SourceRef("raw", 0, i, epoch="B")) for i in range(50)]
    assert sink.write("t", new) == 50
    assert sink.write("t", new) == 0  # and the new epoch's replays are still dropped
    assert DeltaTable(str(tmp_path / "t")).count() == 100


def test_tables_are_partitioned_by_event_date(tmp_path) -> None:
    DeltaSink(str(tmp_path)).write("t", [(_batch(["a"]), SourceRef("raw", 0, 0))])
    dt = DeltaTable(str(tmp_path / "t"))
    assert dt.metadata().partition_columns == ["event_date"]
