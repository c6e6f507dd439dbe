"""Online learning throughput: predict, then learn, then the drift detector, per event.

The shipped click model (polars features, River scaler + logistic regression with
``predict_proba_many``/``learn_many``, the tuned ADWIN on its 0/1 error) over privatised
batches the size the SDK sends, against River's own ``learn_one`` loop as the baseline.

    .venv/bin/python bench/learning.py [--events 500000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eddyline.simulate import TrafficSimulator
from online_learning.learner import ClickModel


def batches(n: int, size: int) -> list[pa.Table]:
    sim = TrafficSimulator(users=10_000, seed=1, drift_at=n // 2)
    cols = ["item_category", "position", "dwell_time_s", "action"]
    return [
        pa.Table.from_pylist([e.model_dump() for e in sim.interactions(size)]).select(cols)
        for _ in range(n // size)
    ]


def run_many(data: list[pa.Table]) -> float:
    model = ClickModel()
    start = time.perf_counter()
    for batch in data:
        model.process(batch)
    return sum(b.num_rows for b in data) / (time.perf_counter() - start)


def run_one(data: list[pa.Table], limit: int = 50_000) -> float:
    """River's per-event API on the same features: the naive baseline."""
    model, rows, n = ClickModel(), [], 0
    for batch in data:
        x = model.features(batch).to_dicts()
        y = model.target(batch).to_list()
        rows += list(zip(x, y, strict=True))
        if len(rows) >= limit:
            break
    start = time.perf_counter()
    for xi, yi in rows[:limit]:
        model.pipeline.predict_proba_one(xi)
        model.pipeline.learn_one(xi, yi)
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = batches(args.events, args.batch)
    many = [run_many(data) for _ in range(args.rounds)]
    one = run_one(data)
    print(
        f"learn_many path: {', '.join(f'{r:,.0f}' for r in many)} events/s; "
        f"learn_one loop: {one:,.0f} events/s",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "bench": "learning",
                "events": args.events,
                "batch": args.batch,
                "events_per_s": round(statistics.median(many)),
                "learn_one_events_per_s": round(one),
                "target_events_per_s": 500_000,
            }
        )
    )


if __name__ == "__main__":
    main()
