"""Drift detection quality: delay, misses and false alarms, against River's ADWIN and
against Lorden's bound.

Error streams (what the worker's error detector watches), per kind, ``--seeds`` each:
  synthetic  a 0/1 error whose rate jumps 0.10 -> 0.30 (abrupt) or ramps over 1,000 values
             (gradual), change at 5,000 of 8,000: the laws are known
  models     the predict-then-learn errors of a linear model (StandardScaler |
             LogisticRegression) and a Hoeffding tree on River's generators: Agrawal and
             SEA (abrupt, gradual) and Hyperplane (incremental), change at 10,000 of 16,000
             (bench/_drift_streams.py; cached)
Ours is ``CusumDetector`` (online_learning/cusum.py; ``--method adwin``: the ADWIN the spec
may choose instead). The reference is River's default ADWIN on the same values: its delay
as is, its false alarms behind the same gates (our warm-up's end, errors going up, one alarm
per 2,000 values). Delay: values from the change to the first alarm at or after it (none
before the end: missed). False alarms: on each generator's no-change stream (same seeds).
Lorden's bound, for the abrupt kinds: no detector whose mean time to a false alarm is
ARL has a worst-case mean delay below ln(ARL) / KL(p1 || p0) (asymptotically; Lorden 1971), p0
and p1 the error rates before and after (known for synthetic streams; for models, the mean
over the seeds of the 2,000 values before and the 300 after the change), ARL our detector's
measured mean run length on that generator and model's no-change streams (values past the
warm-up / false alarms, at least one). The feature and label watchers (ADWIN on block
means) are measured on their synthetic streams as before, and reported apart.

    .venv/bin/python bench/drift.py [--seeds 20] [--first-seed 100] [--method cusum|adwin]
                                      [--threshold 13.5] [--shifts 0.1,0.2,0.4]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from river import drift

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _drift_streams import CHANGE as MODEL_CHANGE
from _drift_streams import error_streams

from eddyline.online_learning.cusum import CusumDetector
from eddyline.online_learning.detectors import AdwinDetector, BlockWatcher

CHANGE, LENGTH = 5_000, 8_000  # the synthetic streams
COOLDOWN = 2_000
Detect = Callable[[np.ndarray], tuple[list[int], int]]  # values -> (alarm positions, warm end)


def _bernoulli(rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(rate)) < rate).astype(np.float64)


def synthetic(kind: str, seed: int, change: bool = True) -> np.ndarray:
    rng, i = np.random.default_rng(seed), np.arange(LENGTH)
    if not change:
        return _bernoulli(np.full(LENGTH, 0.10), rng)
    if kind == "abrupt":
        return _bernoulli(np.where(i < CHANGE, 0.10, 0.30), rng)
    return _bernoulli(0.10 + 0.20 * np.clip((i - CHANGE) / 1_000, 0, 1), rng)


def ours(args: argparse.Namespace) -> Detect:
    def run(values: np.ndarray) -> tuple[list[int], int]:
        if args.method == "adwin":
            a = AdwinDetector(delta=args.delta, clock=args.clock, warmup=1_000, cooldown=COOLDOWN)
            return [x.index - 1 for x in a.update_many(values)], 1_000
        c = CusumDetector(threshold=args.threshold, shifts=args.shifts, cooldown=COOLDOWN)
        alarms = [x.index - 1 for x in c.update_many(values)]
        return alarms, c.warm_end if c.warm_end is not None else len(values)

    return run


def river_adwin(values: np.ndarray) -> list[int]:
    detector, alarms = drift.ADWIN(), []
    for i, v in enumerate(values.tolist()):
        detector.update(v)  # type: ignore[no-untyped-call]
        if detector.drift_detected:
            alarms.append(i)
    return alarms


def adwin_gated(values: np.ndarray, warm: int) -> list[int]:
    """River's default ADWIN behind our gates: after the warm-up, rises only (its window's
    mean after the cut above the mean before), one alarm per COOLDOWN values."""
    detector, alarms, last = drift.ADWIN(), [], -(10**9)
    for i, v in enumerate(values.tolist()):
        before = detector.estimation
        detector.update(v)  # type: ignore[no-untyped-call]
        rising = detector.estimation > before
        if detector.drift_detected and i >= warm and i - last >= COOLDOWN and rising:
            alarms.append(i)
            last = i
    return alarms


def _kl(p1: float, p0: float) -> float:
    return p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))


def measure(
    name: str,
    changed: list[np.ndarray],
    quiet: tuple[str, list[np.ndarray]],
    change: int,
    detect: Detect,
    laws: tuple[float, float] | None,
) -> dict[str, float | int | None]:
    """One kind's figures: delays (ours, ADWIN), misses, false alarms (ours, gated ADWIN) on
    the no-change streams, and Lorden's bound where the laws are given."""
    delays, adwin_delays, missed, adwin_missed = [], [], 0, 0
    for values in changed:
        alarms = [i - change for i in detect(values)[0] if i >= change]
        theirs = [i - change for i in river_adwin(values) if i >= change]
        missed, adwin_missed = missed + (not alarms), adwin_missed + (not theirs)
        delays += alarms[:1]
        adwin_delays += theirs[:1]
    false = adwin_false = scanned = 0
    for values in quiet[1]:
        alarms, warm = detect(values)
        false += len(alarms)
        adwin_false += len(adwin_gated(values, warm))
        scanned += len(values) - warm
    median = statistics.median(delays) if delays else None
    bound = ratio = None
    if laws is not None:
        bound = math.log(scanned / max(false, 1)) / _kl(laws[1], laws[0])
        ratio = round(median / bound, 3) if median is not None else None
    return {
        "kind": name,
        "median_delay": median,
        "adwin_median_delay": statistics.median(adwin_delays) if adwin_delays else None,
        "missed": missed,
        "adwin_missed": adwin_missed,
        "false_alarms": false,
        "adwin_false_alarms": adwin_false,
        "scanned": scanned,
        "quiet": quiet[0],  # which no-change streams (shared by the kinds of a generator)
        "lorden_bound": round(bound, 1) if bound else None,
        "lorden_ratio": ratio,
        "delays": delays,
        "adwin_delays": adwin_delays,
    }


def watchers(seeds: int, delta: float, clock: int) -> dict[str, float | int]:
    """The feature (0.5 sigma) and label-rate (0.30 -> 0.45) watchers: ADWIN on block means."""
    out: dict[str, float | int] = {}
    for name in ("feature", "label"):
        delays, missed = [], 0
        for seed in range(seeds):
            rng, i = np.random.default_rng(seed), np.arange(LENGTH)
            if name == "feature":
                values = rng.normal(0, 1, LENGTH) + np.where(i < CHANGE, 0.0, 0.5)
            else:
                values = _bernoulli(np.where(i < CHANGE, 0.30, 0.45), rng)
            watcher = BlockWatcher(
                AdwinDetector(
                    delta=delta, clock=clock, warmup=1_000, cooldown=COOLDOWN, direction="both"
                )
            )
            after = [a.index - CHANGE for a in watcher.update_many(values) if a.index >= CHANGE]
            missed += not after
            delays += after[:1]
        out[f"{name}_median_delay"] = statistics.median(delays) if delays else -1
        out[f"{name}_missed"] = missed
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--first-seed", type=int, default=100, help="model streams: seeds from here (a holdout set)"
    )
    parser.add_argument("--method", choices=["cusum", "adwin"], default="cusum")
    parser.add_argument("--threshold", type=float, default=CusumDetector.threshold, help="cusum")
    parser.add_argument(
        "--shifts",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=CusumDetector.shifts,
        help="cusum: the error rises tested, comma-separated",
    )
    parser.add_argument("--delta", type=float, default=0.01, help="adwin; watchers: 0.002")
    parser.add_argument("--clock", type=int, default=2, help="adwin")
    args = parser.parse_args()
    detect = ours(args)
    rows = []
    quiet = ("synthetic", [synthetic("", 1_000 + s, change=False) for s in range(args.seeds)])
    for kind in ("abrupt", "gradual"):
        changed = [synthetic(kind, s) for s in range(args.seeds)]
        laws = (0.10, 0.30) if kind == "abrupt" else None
        rows.append(measure(f"synthetic-{kind}", changed, quiet, CHANGE, detect, laws))
    print(f"model error streams: {args.seeds} seeds (cached after the first run)", file=sys.stderr)
    changes, quiet_models = error_streams(args.seeds, first_seed=args.first_seed)
    for (kind, model), changed in changes.items():
        pre = float(np.mean([v[MODEL_CHANGE - 2_000 : MODEL_CHANGE].mean() for v in changed]))
        post = float(np.mean([v[MODEL_CHANGE : MODEL_CHANGE + 300].mean() for v in changed]))
        laws = (pre, post) if kind.endswith("abrupt") else None
        generator = kind.split("-")[0]
        quiet = (f"{generator}/{model}", quiet_models[(generator, model)])
        rows.append(measure(f"{kind}/{model}", changed, quiet, MODEL_CHANGE, detect, laws))
    _report(rows, args)


def _report(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"{'kind':32s} {'ours':>7s} {'ADWIN':>7s} {'ratio':>6s} {'missed':>7s} "
        f"{'false (gated ADWIN)':>20s} {'Lorden':>7s} {'x bound':>8s}",
        file=sys.stderr,
    )
    for r in rows:
        ratio = (r["median_delay"] or 0) / (r["adwin_median_delay"] or 1)
        print(
            f"{r['kind']:32s} {r['median_delay']!s:>7s} {r['adwin_median_delay']!s:>7s} "
            f"{ratio:6.2f} {r['missed']:>3d} ({r['adwin_missed']}) "
            f"{r['false_alarms']:>10d} ({r['adwin_false_alarms']:>3d})      "
            f"{r['lorden_bound']!s:>7s} {r['lorden_ratio']!s:>8s}",
            file=sys.stderr,
        )
    delays = [d for r in rows for d in r["delays"]]
    adwin_delays = [d for r in rows for d in r["adwin_delays"]]
    once = {r["quiet"]: r for r in rows}.values()  # each no-change set counted once
    scanned = sum(r["scanned"] for r in once) / 10_000
    med, ref = statistics.median(delays), statistics.median(adwin_delays)
    lorden = [r["lorden_ratio"] for r in rows if r["lorden_ratio"] is not None]
    result = {
        "bench": "drift",
        "seeds": args.seeds,
        "method": args.method,
        "threshold": args.threshold,
        "delta": args.delta,
        "clock": args.clock,
        "missed": sum(r["missed"] for r in rows),
        "adwin_missed": sum(r["adwin_missed"] for r in rows),
        "median_delay": med,
        "adwin_median_delay": ref,
        "delay_ratio_vs_adwin": round(med / ref, 3),
        "false_alarms_per_10k": round(sum(r["false_alarms"] for r in once) / scanned, 3),
        "adwin_false_alarms_per_10k": round(
            sum(r["adwin_false_alarms"] for r in once) / scanned, 3
        ),
        "lorden_ratio": max(lorden),  # the worst kind's median delay / its bound
        "lorden_ratios": {r["kind"]: r["lorden_ratio"] for r in rows if r["lorden_ratio"]},
        "watchers": watchers(args.seeds, 0.002, 2),  # the spec's Watch defaults
        "target_delay_ratio": 0.85,
        "target_lorden_ratio": 1.5,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
