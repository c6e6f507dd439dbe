"""Lake: the tables as data scientists read them, on a real Delta table."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import pyarrow as pa

from eddyline.consumers.lake import Lake
from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.sink import DeltaSink


def _batch(ids: list[str], day: int, action: str) -> pa.Table:
    at = datetime(2026, 11, day, 12, tzinfo=UTC)
    return pa.table(
        {
            "event_id": ids,
            "action": [action] * len(ids),
            "occurred_at": pa.array([at] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def test_time_travel_filters_polars_and_duckdb(tmp_path) -> None:
    sink = DeltaSink(str(tmp_path))
    sink.write("interaction", [(_batch(["a", "b"], 1, "click"), SourceRef("raw", 0, 0))])
    between = datetime.now(UTC)
    time.sleep(0.05)
    sink.write("interaction", [(_batch(["c"], 2, "skip"), SourceRef("raw", 0, 1))])
    lake = Lake(tmp_path)
    assert lake.tables() == ["interaction"]
    assert lake.read("interaction").num_rows == 3
    assert lake.read("interaction", as_of=0).num_rows == 0  # version 0 creates it, empty
    assert lake.read("interaction", as_of=1).num_rows == 2  # by version
    assert lake.read("interaction", as_of=between).num_rows == 2  # by timestamp
    day2 = lake.read("interaction", filters=[("event_date", "=", date(2026, 11, 2))])
    assert day2["event_id"].to_pylist() == ["c"]
    assert lake.polars("interaction", as_of=1).collect().height == 2
    counts = lake.sql("SELECT action, count(*) AS n FROM interaction GROUP BY 1 ORDER BY 1")
    assert counts.to_pylist() == [{"action": "click", "n": 2}, {"action": "skip", "n": 1}]
    assert [h["version"] for h in lake.history("interaction")][:3] == [2, 1, 0]
