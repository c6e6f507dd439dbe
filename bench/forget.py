"""Forget on a large lake: seconds per request and rows scanned, 10 million rows.

Builds an ``interaction`` table of N rows (100,000 users, 30 days of event_date partitions,
the lake's columns) once, then runs forget requests through ``Governance.forget`` against
the local broker (the suppression entry, the Delta DELETE, the count that must be 0, the
log row), with no settle time and no vacuum (the worker's hourly vacuum removes the old
files). Each request touches every file holding one of the user's rows: the pseudonym is
uniform HMAC output, so file statistics prune nothing, and the DELETE reads every file of
the table and rewrites those that held the user.

    EDDYLINE_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python bench/forget.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.schemas.arrow import new_uuid_column
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import STREAMS, ensure_topics
from eddyline.streams.worker.governance import Governance

KEY = b"bench-forget-key-0123456789abcdef"
USERS = 100_000


def build(lake: Path, rows: int) -> list[str]:
    """The table, in 1M-row appends; the raw user ids (user i is ``user-i``)."""
    pseudonymizer = HmacPseudonymizer(KEY)
    ids = [f"user-{i}" for i in range(USERS)]
    pids = pseudonymizer.apply(pa.array(ids))
    rng = np.random.default_rng(1)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        who = pa.array(rng.integers(0, USERS, n))
        at = [t0 + timedelta(days=int(d)) for d in rng.integers(0, 30, 30)]
        when = pa.array(at, pa.timestamp("us", tz="UTC")).take(pa.array(rng.integers(0, 30, n)))
        table = pa.table(
            {
                "event_id": new_uuid_column(n),
                "user_pid": pids.take(who),
                "key_id": pa.array(["k1"] * n),
                "occurred_at": when,
                "item_id": pa.array(rng.integers(0, 5_000, n)).cast(pa.string()),
                "action": pa.array(["view", "click", "purchase", "skip"]).take(
                    pa.array(rng.integers(0, 4, n))
                ),
                "dwell_time_s": pa.array(rng.uniform(0, 300, n)),
                "event_date": when.cast(pa.date32()),
            }
        )
        write_deltalake(
            str(lake / "interaction"), table, mode="append", partition_by=["event_date"]
        )
    return ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eddyline-forget-"))
    started = time.monotonic()
    ids = build(root / "lake", args.rows)
    built_s = time.monotonic() - started
    dt = DeltaTable(str(root / "lake" / "interaction"))
    files = len(dt.file_uris())
    print(f"built {args.rows:,} rows in {files} files in {built_s:.0f}s")
    ks = KafkaSettings(namespace=f"bench-forget-{uuid.uuid4().hex[:6]}")
    ensure_topics(ks, STREAMS)
    ws = WorkerSettings(
        lake_path=str(root / "lake"), state_dir=root / "state", pseudonym_key=KEY.decode()
    )
    governance = Governance(ws, ks, settle_s=0)
    seconds, removed, rewritten = [], [], []
    for user in ids[: args.requests]:
        t = time.monotonic()
        row = governance.forget(user, requested_by="bench")
        seconds.append(time.monotonic() - t)
        removed.append(row["rows_removed"])
        touched = json.loads(row["tables"])["interaction"]
        rewritten.append(touched["rows_rewritten"])
        print(
            f"forget {user}: {seconds[-1]:.2f}s, {row['rows_removed']} rows removed, "
            f"{touched['files_rewritten']} files and {touched['rows_rewritten']:,} rows rewritten"
        )
    figures = {
        "bench": "forget",
        "rows": args.rows,
        "files": files,
        "requests": args.requests,
        "seconds_per_request": round(statistics.median(seconds), 2),
        "rows_scanned_per_request": args.rows,  # every file: statistics prune no pseudonym
        "rows_removed_per_request": round(statistics.median(removed)),
        "rows_rewritten_per_request": round(statistics.median(rewritten)),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
