"""Drift detection quality: delay and false alarms on seeded streams with known changes.

Four kinds of stream, each 20 seeds x 8,000 values, the change at value 5,000:
  abrupt   a model's 0/1 error rate jumps 0.10 -> 0.30          (concept drift)
  gradual  the error rate ramps 0.10 -> 0.30 over 1,000 values  (concept drift)
  feature  a watched feature's mean shifts by 0.5 sigma          (data drift)
  label    the positive-label rate moves 0.30 -> 0.45            (prior drift)
Delay = values from the change to the first alarm at or after it; an alarm before the
change is a false alarm. River's default ADWIN runs on the same values as the reference.

    .venv/bin/python bench/drift.py [--seeds 20] [--delta 0.01] [--clock 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from river import drift

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eddyline.online_learning.detectors import AdwinDetector

CHANGE, LENGTH = 5_000, 8_000
Stream = Callable[[np.random.Generator], np.ndarray]


def _bernoulli(rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(rate)) < rate).astype(np.float64)


def abrupt(rng: np.random.Generator) -> np.ndarray:
    return _bernoulli(np.where(np.arange(LENGTH) < CHANGE, 0.10, 0.30), rng)


def gradual(rng: np.random.Generator) -> np.ndarray:
    ramp = np.clip((np.arange(LENGTH) - CHANGE) / 1_000, 0, 1)
    return _bernoulli(0.10 + 0.20 * ramp, rng)


def feature(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 1, LENGTH) + np.where(np.arange(LENGTH) < CHANGE, 0.0, 0.5)


def label(rng: np.random.Generator) -> np.ndarray:
    return _bernoulli(np.where(np.arange(LENGTH) < CHANGE, 0.30, 0.45), rng)


STREAMS: dict[str, tuple[Stream, str]] = {
    "abrupt": (abrupt, "up"),
    "gradual": (gradual, "up"),  # errors: only a rise matters
    "feature": (feature, "both"),
    "label": (label, "both"),
}


def _first_alarms(indices: list[int]) -> tuple[int | None, int]:
    """(delay of the first alarm at or after the change, false alarms before it)."""
    false = sum(1 for i in indices if i < CHANGE)
    after = [i - CHANGE for i in indices if i >= CHANGE]
    return (after[0] if after else None), false


def river_adwin(values: np.ndarray) -> tuple[int | None, int]:
    detector, alarms = drift.ADWIN(), []
    for i, v in enumerate(values.tolist()):
        detector.update(v)  # type: ignore[no-untyped-call]
        if detector.drift_detected:
            alarms.append(i)
    return _first_alarms(alarms)


def ours(values: np.ndarray, direction: str, delta: float, clock: int) -> tuple[int | None, int]:
    detector = AdwinDetector(
        delta=delta, clock=clock, warmup=1_000, cooldown=2_000, direction=direction
    )  # type: ignore[arg-type]
    # Alarm.index counts values seen (1-based); the value that raised it is index - 1.
    return _first_alarms([a.index - 1 for a in detector.update_many(values)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--delta", type=float, default=0.01)
    parser.add_argument("--clock", type=int, default=2)
    args = parser.parse_args()
    rows: dict[str, dict[str, list[float]]] = {}
    ref_delays, our_delays, ref_false, our_false, missed, ref_missed = [], [], 0, 0, 0, 0
    for name, (make, direction) in STREAMS.items():
        r_d, o_d = [], []
        for seed in range(args.seeds):
            values = make(np.random.default_rng(seed))
            (rd, rf), (od, of) = (
                river_adwin(values),
                ours(values, direction, args.delta, args.clock),
            )
            ref_false, our_false = ref_false + rf, our_false + of
            ref_missed, missed = ref_missed + (rd is None), missed + (od is None)
            r_d += [] if rd is None else [rd]
            o_d += [] if od is None else [od]
        ref_delays, our_delays = ref_delays + r_d, our_delays + o_d
        rows[name] = {"adwin": r_d, "ours": o_d}
        print(
            f"{name:8s} median delay: ours {statistics.median(o_d):6.1f}  "
            f"default ADWIN {statistics.median(r_d):6.1f}",
            file=sys.stderr,
        )
    pre_change = len(STREAMS) * args.seeds * CHANGE / 10_000  # units of 10,000 values
    med, ref_med = statistics.median(our_delays), statistics.median(ref_delays)
    print(
        json.dumps(
            {
                "bench": "drift",
                "seeds": args.seeds,
                "delta": args.delta,
                "clock": args.clock,
                "missed": missed,
                "adwin_missed": ref_missed,
                "median_delay": med,
                "adwin_median_delay": ref_med,
                "delay_ratio_vs_adwin": round(med / ref_med, 3),
                "false_alarms_per_10k": round(our_false / pre_change, 3),
                "adwin_false_alarms_per_10k": round(ref_false / pre_change, 3),
                "target_delay_ratio": 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
