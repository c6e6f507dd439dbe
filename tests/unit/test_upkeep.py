"""Delta upkeep and concurrency on real tables in tmp_path."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.sink import DeltaSink
from eddyline.streams.worker.upkeep import TableUpkeep, UpkeepPolicy

T0 = datetime(2026, 11, 29, tzinfo=UTC)


def _batch(start: int, n: int, extra: dict | None = None) -> pa.Table:
    cols = {
        "event_id": [f"e{i}" for i in range(start, start + n)],
        "occurred_at": pa.array(
            [T0 + timedelta(seconds=i) for i in range(start, start + n)],
            pa.timestamp("us", tz="UTC"),
        ),
    }
    return pa.table({**cols, **(extra or {})})


def test_an_hour_of_one_second_commits_stays_compact_and_correct(tmp_path: Path) -> None:
    clock = [0.0]
    policy = UpkeepPolicy(
        checkpoint_every=100, compact_every=60, vacuum_every_s=600, retention_hours=0
    )
    # upkeep inline after each commit: the policy's exact steps over simulated time (the
    # worker's sink runs it in a background thread, next test)
    sink = DeltaSink(str(tmp_path), upkeep=policy, background_upkeep=False)
    sink.upkeep["t"] = TableUpkeep(policy, clock=lambda: clock[0])
    before_compaction = None
    for second in range(3_600):  # one commit per simulated second, 5 events each
        clock[0] = float(second)
        if second == 3_599:
            before_compaction = sink.version("t")
        sink.write("t", [(_batch(second * 5, 5), SourceRef("raw", 0, second))])
    dt = DeltaTable(str(tmp_path / "t"))
    ids = dt.to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist()
    assert sorted(ids) == sorted(f"e{i}" for i in range(18_000))  # every row, once
    assert len(dt.file_uris()) <= 61, "small files were not compacted"
    assert list((tmp_path / "t" / "_delta_log").glob("*.checkpoint.parquet"))
    stats = sink.upkeep["t"].stats
    assert stats.compactions == 60 and stats.checkpoints == 36 and stats.vacuumed_files > 0
    # compaction rewrites files, never rows: the version before the last one reads the same
    old = DeltaTable(str(tmp_path / "t"), version=before_compaction)
    assert old.to_pyarrow_table().num_rows == dt.to_pyarrow_table().num_rows - 5


def test_background_upkeep_never_holds_a_commit(tmp_path: Path, monkeypatch) -> None:
    started, release = threading.Event(), threading.Event()
    real = TableUpkeep.after_commit

    def slow(self: TableUpkeep, dt: DeltaTable, commits: int = 1) -> None:
        started.set()  # a compaction that takes as long as the test wants
        release.wait(60)
        real(self, dt, commits)

    monkeypatch.setattr(TableUpkeep, "after_commit", slow)
    sink = DeltaSink(str(tmp_path), upkeep=UpkeepPolicy(compact_every=3, checkpoint_every=3))
    sink.write("t", [(_batch(0, 5), SourceRef("raw", 0, 0))])
    assert started.wait(30)  # upkeep runs, and is stuck ...
    for i in range(1, 6):  # ... while the commits go on
        assert sink.write("t", [(_batch(i * 5, 5), SourceRef("raw", 0, i))]) == 5
    assert not sink.upkeep_idle(timeout=0.2)
    release.set()
    assert sink.upkeep_idle(timeout=60)
    dt = DeltaTable(str(tmp_path / "t"))
    ids = dt.to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist()
    assert sorted(ids) == sorted(f"e{i}" for i in range(30))  # every row, once
    stats = sink.upkeep["t"].stats  # the five commits it missed: caught up in one round
    assert (stats.compactions, stats.checkpoints) == (1, 1)
    assert len(dt.file_uris()) == 1, "the six small files were not compacted"


def test_a_stale_writer_is_rejected_and_its_retry_writes_nothing_twice(
    tmp_path: Path, monkeypatch
) -> None:
    old_owner, new_owner = DeltaSink(str(tmp_path)), DeltaSink(str(tmp_path))
    old_owner.write("t", [(_batch(0, 3), SourceRef("raw", 0, 0))])
    new_owner.version("t")
    replay = [(_batch(3, 3), SourceRef("raw", 0, 1))]
    stale = old_owner._tables["t"]
    monkeypatch.setattr(type(stale), "update_incremental", lambda self: None)
    # the partition moved: the new owner commits offset 1 first ...
    monkeypatch.undo()
    assert new_owner.write("t", replay) == 3
    # ... while the old owner still holds a snapshot from before that commit.
    monkeypatch.setattr(type(stale), "update_incremental", lambda self: None)
    with pytest.raises(CommitFailedError):
        old_owner.write("t", replay)
    monkeypatch.undo()
    assert old_owner.write("t", replay) == 0  # the retry sees offset 1 committed
    assert DeltaTable(str(tmp_path / "t")).to_pyarrow_table().num_rows == 6


def test_an_optional_field_added_later_reads_as_null_in_old_rows(tmp_path: Path) -> None:
    sink = DeltaSink(str(tmp_path))
    sink.write("t", [(_batch(0, 2), SourceRef("raw", 0, 0))])
    sink.write("t", [(_batch(2, 2, {"coupon": ["A", None]}), SourceRef("raw", 0, 1))])
    rows = {
        r["event_id"]: r["coupon"]
        for r in DeltaTable(str(tmp_path / "t")).to_pyarrow_table().to_pylist()
    }
    assert rows == {"e0": None, "e1": None, "e2": "A", "e3": None}
