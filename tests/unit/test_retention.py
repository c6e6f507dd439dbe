"""Retention per table on real Delta tables, under a simulated clock: rows past it go, the
rest stay, the log says so, and once vacuum has run the older versions cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from eddyline.consumers.lake import Lake, LakeError
from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.sink import DeltaSink
from eddyline.streams.worker.upkeep import UpkeepPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(ids: list[str], at: datetime) -> pa.Table:
    return pa.table(
        {
            "event_id": ids,
            "user_pid": ["p"] * len(ids),
            "occurred_at": pa.array([at] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def test_rows_past_their_tables_retention_go_and_vacuum_ends_time_travel(tmp_path: Path) -> None:
    clock = [T0.timestamp()]
    sink = DeltaSink(
        str(tmp_path),
        upkeep=UpkeepPolicy(retention_days=365),  # the default for every table...
        retention={"interaction": 30},  # ...and one table's own
        background_upkeep=False,
        wall_clock=lambda: clock[0],
    )
    sink.write("interaction", [(_batch(["old1", "old2"], T0), SourceRef("raw", 0, 0))])
    sink.write("feedback", [(_batch(["fb"], T0), SourceRef("raw2", 0, 0))])
    sink.write("interaction", [(_batch(["new"], T0 + timedelta(days=40)), SourceRef("raw", 0, 1))])
    before = sink.version("interaction")
    clock[0] = (T0 + timedelta(days=45)).timestamp()  # 45 days on: past 30, not past 365
    sink.write(
        "interaction", [(_batch(["newer"], T0 + timedelta(days=45)), SourceRef("raw", 0, 2))]
    )
    sink.write("feedback", [(_batch(["fb2"], T0 + timedelta(days=45)), SourceRef("raw2", 0, 1))])
    lake = Lake(tmp_path)
    assert sorted(lake.read("interaction")["event_id"].to_pylist()) == ["new", "newer"]
    assert sorted(lake.read("feedback")["event_id"].to_pylist()) == ["fb", "fb2"]
    [logged] = lake.read("governance_log").to_pylist()
    assert (logged["action"], logged["rows_removed"]) == ("retention", 2)
    assert "event_date before 2026-01-16" in logged["detail"]
    # before vacuum, time travel still reads the old rows; after it, never again
    assert lake.read("interaction", as_of=before).num_rows == 3
    lake.table("interaction").vacuum(
        retention_hours=0, dry_run=False, enforce_retention_duration=False
    )
    with pytest.raises(LakeError):
        lake.read("interaction", as_of=before)
