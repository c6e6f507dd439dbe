"""The model family the retraining job trains and the worker shadows: a logistic model over
privatised interaction columns, scored in numpy (no torch needed to score).

``consumers.retrain`` fits it with DP-SGD; ``online_learning.shadow`` scores registered
versions of it on live traffic.

Examples:
    >>> import pyarrow as pa
    >>> rows = pa.table({"item_category": ["news", "tech"], "position": [0, 3],
    ...                  "dwell_time_s": [10.0, 2.0], "action": ["click", "skip"]})
    >>> scorer = LinearScorer.fit_spec(rows)
    >>> scorer.weights = [0.0] * 4
    >>> evaluate(scorer, rows)["log_loss"] == evaluate(scorer, rows)["log_loss"]
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

POSITIVE_ACTIONS = ("click", "purchase")


@dataclass
class LinearScorer:
    """A logistic model over privatised interaction columns, scored in numpy.

    Features: one-hot ``item_category`` (categories seen in training), ``position`` and
    ``dwell_time_s`` standardised with the training means and deviations."""

    categories: list[str]
    means: list[float]
    stds: list[float]
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0

    @classmethod
    def fit_spec(cls, table: pa.Table) -> LinearScorer:
        cats = sorted(c for c in pc.unique(table["item_category"]).to_pylist() if c is not None)
        nums = _numeric(table)
        return cls(cats, nums.mean(axis=0).tolist(), (nums.std(axis=0) + 1e-9).tolist())

    def design(self, table: pa.Table) -> np.ndarray:
        cats = pc.index_in(table["item_category"], value_set=pa.array(self.categories))
        idx = cats.to_numpy(zero_copy_only=False)
        onehot = np.zeros((table.num_rows, len(self.categories)), dtype=np.float32)
        known = ~np.isnan(idx.astype(np.float64))
        onehot[np.flatnonzero(known), idx[known].astype(np.int64)] = 1.0
        nums = (_numeric(table) - np.array(self.means)) / np.array(self.stds)
        return np.hstack([onehot, nums.astype(np.float32)])

    def predict_proba(self, table: pa.Table) -> np.ndarray:
        z = self.design(table) @ np.array(self.weights, dtype=np.float32) + self.bias
        out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return out

    def save(self, folder: Path) -> None:
        (folder / "scorer.json").write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, folder: Path) -> LinearScorer:
        return cls(**json.loads((folder / "scorer.json").read_text()))


def _numeric(table: pa.Table) -> np.ndarray:
    cols = [
        pc.fill_null(pc.cast(table[c], pa.float64()), 0.0).to_numpy()
        for c in ("position", "dwell_time_s")
    ]
    return np.column_stack(cols)


def labels(table: pa.Table) -> np.ndarray:
    out: np.ndarray = (
        pc.is_in(table["action"], value_set=pa.array(POSITIVE_ACTIONS))
        .to_numpy(zero_copy_only=False)
        .astype(np.float32)
    )
    return out


def log_losses(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-event log-loss of probabilities ``p`` for 0/1 labels ``y``."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    out: np.ndarray = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return out


def evaluate(scorer: LinearScorer, table: pa.Table) -> dict[str, float]:
    p, y = scorer.predict_proba(table), labels(table)
    return {
        "log_loss": float(log_losses(p, y).mean()),
        "accuracy": float(((p >= 0.5) == (y == 1)).mean()),
        "rows": float(table.num_rows),
    }
