"""Online learning throughput: predict, then learn, then the drift detectors, per event.

Each shipped learner spec (``click`` over interactions, ``satisfaction`` over feedback) runs
as the worker runs it: polars features from private rows, the River pipeline's
``predict_proba_many``/``learn_many``, rolling metrics, ADWIN on the 0/1 error and the
spec's watchers, on batches the size the SDK sends. Baseline, same run: River's own
per-event ``predict_proba_one`` + ``learn_one`` loop on the same features.

    .venv/bin/python bench/learning.py [--events 500000] [--batch 5000] [--rounds 3]

``events_per_s`` is both specs together: all their events over all their time.
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
from eddyline.online_learning.learner import OnlineModel
from eddyline.simulate import TrafficSimulator

SPECS = ("click", "satisfaction")


def batches(spec: str, n: int, size: int) -> list[pa.Table]:
    """Private-shaped batches (every column of the event) with a change half-way."""
    sim = TrafficSimulator(users=10_000, seed=1, drift_at=n // 2)
    out = []
    for _ in range(n // size):
        if spec == "click":
            events = list(sim.interactions(size))
        else:
            sim._emitted += size  # the simulator's clock: feedback drifts with it
            events = list(sim.feedback(size))
        out.append(pa.Table.from_pylist([e.model_dump(mode="python") for e in events]))
    return out


def run_many(spec: str, data: list[pa.Table]) -> tuple[int, float]:
    """(events, seconds) for the spec's model over the batches, from a fresh model."""
    model = OnlineModel.builtin(spec)  # built (spec read, River imported) before the clock
    start = time.perf_counter()
    for batch in data:
        model.process(batch)
    return sum(b.num_rows for b in data), time.perf_counter() - start


def run_one(spec: str, data: list[pa.Table], limit: int = 50_000) -> float:
    """River's per-event API on the same features: the naive baseline."""
    model, rows, n = OnlineModel.builtin(spec), [], 0
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
    parser.add_argument("--events", type=int, default=500_000, help="per spec")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = {spec: batches(spec, args.events, args.batch) for spec in SPECS}
    per_spec: dict[str, list[float]] = {spec: [] for spec in SPECS}
    combined = []
    for _ in range(args.rounds):
        runs = {spec: run_many(spec, data[spec]) for spec in SPECS}
        for spec, (n, s) in runs.items():
            per_spec[spec].append(n / s)
        combined.append(sum(n for n, _ in runs.values()) / sum(s for _, s in runs.values()))
    one = {spec: run_one(spec, data[spec]) for spec in SPECS}
    for spec in SPECS:
        print(
            f"{spec}: learn_many path {', '.join(f'{r:,.0f}' for r in per_spec[spec])} events/s;"
            f" learn_one loop {one[spec]:,.0f} events/s",
            file=sys.stderr,
        )
    median = statistics.median(combined)
    one_combined = len(SPECS) / sum(1 / r for r in one.values())
    print(
        json.dumps(
            {
                "bench": "learning",
                "events": args.events * len(SPECS),
                "batch": args.batch,
                "events_per_s": round(median),
                **{f"{s}_events_per_s": round(statistics.median(r)) for s, r in per_spec.items()},
                "learn_one_events_per_s": round(one_combined),
                "ratio_vs_learn_one": round(median / one_combined, 1),
                "target_events_per_s": 500_000,
            }
        )
    )


if __name__ == "__main__":
    main()
