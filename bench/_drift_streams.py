"""Error streams of real online models on River's synthetic generators, for bench/drift.py.

Each stream kind is a generator and a change: ``agrawal`` (classification function 0 -> 2),
``sea`` (threshold 7 -> 9.5, 5% label noise), ``hyperplane`` (ten features, five of whose
weights start moving); ``abrupt`` (the new concept from CHANGE on), ``gradual`` (River's
ConceptDriftStream, a sigmoid mix over 2,000 values centred 1,000 after CHANGE) and
``incremental`` (the hyperplane's weights move by 0.01 a value from CHANGE on). A model
(``linear``: StandardScaler | LogisticRegression; ``tree``: HoeffdingTreeClassifier)
predicts each value before learning it (progressive validation); the 0/1 errors are what
a drift detector watches. The same generator without the change gives the no-change
stream (false alarms). Streams are cached as .npy files (``EDDYLINE_BENCH_CACHE``, default
the system's temp folder), so detector variants compare on identical values.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from river import compose, linear_model, preprocessing, tree
from river.datasets import synth

CHANGE, LENGTH = 10_000, 16_000
GRADUAL_WIDTH = 2_000
KINDS = ["agrawal-abrupt", "agrawal-gradual", "sea-abrupt", "sea-gradual", "hyperplane-incremental"]
MODELS = ["linear", "tree"]


def _concepts(gen: str, seed: int) -> tuple[Any, Any]:
    if gen == "agrawal":
        return (
            synth.Agrawal(0, seed=seed, perturbation=0.05),
            synth.Agrawal(2, seed=seed + 10_000, perturbation=0.05),
        )
    if gen == "sea":
        return synth.SEA(2, noise=0.05, seed=seed), synth.SEA(3, noise=0.05, seed=seed + 10_000)
    # the same seed: the same starting weights, which then move
    fixed = synth.Hyperplane(seed=seed, n_drift_features=5, mag_change=0.0)
    moving = synth.Hyperplane(seed=seed, n_drift_features=5, mag_change=0.01, sigma=0.0)
    return fixed, moving


def _values(kind: str, seed: int, change: bool) -> Iterator[tuple[dict[str, Any], Any]]:
    gen, how = kind.split("-")
    before, after = _concepts(gen, seed)
    if not change:
        return iter(before.take(LENGTH))
    if how == "gradual":
        mix = synth.ConceptDriftStream(
            before, after, position=CHANGE + GRADUAL_WIDTH // 2, width=GRADUAL_WIDTH, seed=seed
        )
        return iter(mix.take(LENGTH))
    return itertools.chain(before.take(CHANGE), after.take(LENGTH - CHANGE))


def _model(name: str) -> Any:
    if name == "linear":
        return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    return tree.HoeffdingTreeClassifier(grace_period=100)


def _compute(kind: str, model: str, seed: int, change: bool) -> np.ndarray:
    m = _model(model)
    errors = np.empty(LENGTH)
    for i, (x, y) in enumerate(_values(kind, seed, change)):
        errors[i] = m.predict_one(x) != y
        m.learn_one(x, y)
    return errors


def _cache() -> Path:
    root = Path(os.environ.get("EDDYLINE_BENCH_CACHE", tempfile.gettempdir()))
    folder = root / "eddyline-drift-streams-v1"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _one(args: tuple[str, str, int, bool]) -> np.ndarray:
    kind, model, seed, change = args
    name = kind if change else kind.split("-")[0]  # one no-change stream per generator
    path = _cache() / f"{name}-{model}-{seed}-{int(change)}.npy"
    if path.exists():
        return np.load(path)
    errors = _compute(kind, model, seed, change)
    np.save(path.with_suffix(".tmp.npy"), errors)
    path.with_suffix(".tmp.npy").rename(path)
    return errors


def error_streams(
    seeds: int, first_seed: int = 100, workers: int = 2
) -> tuple[dict[tuple[str, str], list[np.ndarray]], dict[tuple[str, str], list[np.ndarray]]]:
    """(changes, quiet): per (kind, model) one error stream with the change per seed, and
    per (generator, model) one without a change per seed (seeds first_seed, first_seed + 1,
    ...)."""
    generators = sorted({k.split("-")[0] for k in KINDS})
    first = {g: next(k for k in KINDS if k.startswith(g)) for g in generators}
    seed_list = range(first_seed, first_seed + seeds)
    jobs = [(k, m, s, True) for k in KINDS for m in MODELS for s in seed_list]
    jobs += [(first[g], m, s, False) for g in generators for m in MODELS for s in seed_list]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_one, jobs, chunksize=4))
    changes: dict[tuple[str, str], list[np.ndarray]] = {}
    quiet: dict[tuple[str, str], list[np.ndarray]] = {}
    for (k, m, _, c), errors in zip(jobs, results, strict=True):
        if c:
            changes.setdefault((k, m), []).append(errors)
        else:
            quiet.setdefault((k.split("-")[0], m), []).append(errors)
    return changes, quiet
