"""The model family the retraining job trains and the worker shadows: a linear model over a
learner spec's features, scored in numpy (no torch needed to score).

The family follows the spec's kind: **logistic** (binary: one output, sigmoid, log-loss),
**linear** (regression: one output on the standardised target, squared error) or
**softmax** (multiclass: one output per class seen in training, cross-entropy). The design
matrix is built from the spec's features the way the online model reads them: numeric
columns standardised with the training means and deviations (null -> 0 first), one-hot
columns for the spec's ``categories`` or the values seen in training, hashed ids as one-hot
buckets, the hour of day as sin and cos.

``consumers.retrain`` fits it with DP-SGD; ``online_learning.shadow`` scores registered
versions of it on live traffic.

Examples:
    >>> import pyarrow as pa
    >>> from eddyline.online_learning.spec import load_spec
    >>> rows = pa.table({"item_category": ["news", "tech"], "position": [0, 3],
    ...                  "dwell_time_s": [10.0, 2.0], "action": ["click", "skip"]})
    >>> scorer = SpecScorer.fit(load_spec("click"), rows)
    >>> scorer.family, scorer.design(rows).shape
    ('logistic', (2, 4))
    >>> round(evaluate(scorer, rows)["log_loss"], 4)  # untrained: P = 0.5 everywhere
    0.6931
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eddyline.online_learning.features import hash_buckets, hour_of_day, target_values
from eddyline.online_learning.spec import Feature, LearnerSpec, TargetRule

FAMILY = {"binary": "logistic", "regression": "linear", "multiclass": "softmax"}


@dataclass
class SpecScorer:
    """A linear model over a spec's features (see the module docstring). Holds the spec's
    features and target, not the spec: a saved scorer loads without the event type."""

    kind: str
    features: list[dict[str, Any]]
    target: list[dict[str, Any]]
    categories: dict[str, list[str]] = field(default_factory=dict)  # one-hot columns
    means: list[float] = field(default_factory=list)  # numeric columns, in feature order
    stds: list[float] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # multiclass
    y_mean: float = 0.0  # regression: the target is learned standardised
    y_std: float = 1.0
    weights: list[list[float]] = field(default_factory=list)  # (inputs, outputs)
    bias: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, spec: LearnerSpec, table: pa.Table) -> SpecScorer:
        """A scorer shaped by ``table`` (categories, scales, classes), weights zero."""
        scorer = cls(
            spec.kind,
            [f.model_dump(mode="json") for f in spec.features],
            [r.model_dump(mode="json") for r in spec.target],
        )
        for f in scorer._features:
            if f.kind == "one_hot":
                seen = pc.unique(pc.cast(table[f.column], pa.string())).to_pylist()
                scorer.categories[f.column] = f.categories or sorted(v for v in seen if v)
        nums = scorer._numeric(table)
        scorer.means = nums.mean(axis=0).tolist() if len(nums) else [0.0] * nums.shape[1]
        scorer.stds = (nums.std(axis=0) + 1e-9).tolist() if len(nums) else [1.0] * nums.shape[1]
        y = target_values(spec.kind, spec.target, table).drop_nulls()
        if spec.kind == "multiclass":
            scorer.classes = sorted(str(v) for v in y.unique().to_list())
        elif spec.kind == "regression" and len(y):
            scorer.y_mean, scorer.y_std = float(y.mean()), float(y.std() or 1.0)  # type: ignore[arg-type]
        width = scorer.design(table.slice(0, 0)).shape[1]
        scorer.weights = [[0.0] * scorer.outputs for _ in range(width)]
        scorer.bias = [0.0] * scorer.outputs
        return scorer

    @property
    def family(self) -> str:
        return FAMILY[self.kind]

    @property
    def outputs(self) -> int:
        return max(len(self.classes), 2) if self.kind == "multiclass" else 1

    @property
    def _features(self) -> list[Feature]:
        return [Feature.model_validate(f) for f in self.features]

    @property
    def _target(self) -> list[TargetRule]:
        return [TargetRule.model_validate(r) for r in self.target]

    def design(self, table: pa.Table) -> np.ndarray:
        """``(rows, inputs)`` float32: the model's inputs for ``table``."""
        blocks: list[np.ndarray] = []
        n = table.num_rows
        for f in self._features:
            col = table[f.column]
            if f.kind == "one_hot":
                blocks.append(_one_hot(pc.cast(col, pa.string()), self.categories[f.column]))
            elif f.kind == "hashed":
                buckets = hash_buckets(col, f.buckets) if n else np.zeros(0, np.int32)
                out = np.zeros((n, f.buckets))
                out[np.arange(n), buckets] = 1.0
                blocks.append(out)
            elif f.kind == "hour_of_day":
                blocks.append(hour_of_day(col) if n else np.zeros((0, 2)))
        nums = (self._numeric(table) - np.array(self.means)) / np.array(self.stds)
        blocks.append(nums.reshape(n, len(self.means)))
        return np.hstack(blocks).astype(np.float32)

    def labels(self, table: pa.Table) -> np.ndarray:
        """What the model is trained on: 0/1 (binary), the standardised number
        (regression) or the class index (multiclass; -1 for a class not seen in training).
        Rows without a label are NaN (binary, regression) or -2 (multiclass)."""
        y = target_values(self.kind, self._target, table)
        if self.kind == "multiclass":
            index = {c: i for i, c in enumerate(self.classes)}
            return np.array([-2 if v is None else index.get(v, -1) for v in y.to_list()])
        values = y.cast(float).to_numpy().astype(np.float64)
        return (values - self.y_mean) / self.y_std if self.kind == "regression" else values

    def outputs_for(self, table: pa.Table) -> np.ndarray:
        """``(rows, outputs)``: the raw linear outputs (logits, or the standardised value)."""
        z = self.design(table) @ np.array(self.weights, dtype=np.float32).reshape(-1, self.outputs)
        out: np.ndarray = z + np.array(self.bias, dtype=np.float32)
        return out

    def predict(self, table: pa.Table) -> np.ndarray:
        """P(true) (binary), the number (regression), or ``(rows, classes)`` probabilities."""
        z = self.outputs_for(table).astype(np.float64)
        out: np.ndarray
        if self.kind == "binary":
            out = 1.0 / (1.0 + np.exp(-z[:, 0]))
        elif self.kind == "regression":
            out = z[:, 0] * self.y_std + self.y_mean
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        return out

    def losses(self, table: pa.Table) -> np.ndarray:
        """Per labelled row: log-loss (binary), squared error in the target's units
        (regression) or cross-entropy (multiclass; a class unseen in training costs
        -log 1e-7)."""
        y, p = self.labels(table), self.predict(table)
        if self.kind == "multiclass":
            keep = y > -2
            p_y = np.where(y[keep] >= 0, p[keep][np.arange(keep.sum()), np.maximum(y[keep], 0)], 0)
            out: np.ndarray = -np.log(np.clip(p_y, 1e-7, 1.0))
            return out
        keep = ~np.isnan(y)
        if self.kind == "regression":
            out = (p[keep] - (y[keep] * self.y_std + self.y_mean)) ** 2
            return out
        return log_losses(p[keep], y[keep])

    def save(self, folder: Path) -> None:
        (folder / "scorer.json").write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, folder: Path) -> SpecScorer:
        data = json.loads((folder / "scorer.json").read_text())
        if "kind" not in data:  # a click scorer registered before spec kinds
            data = _click_scorer_v0(data)
        return cls(**data)

    def _numeric(self, table: pa.Table) -> np.ndarray:
        cols = [
            pc.fill_null(pc.cast(table[f.column], pa.float64()), 0.0).to_numpy()
            for f in self._features
            if f.kind == "numeric"
        ]
        return np.column_stack(cols) if cols else np.zeros((table.num_rows, 0))


def _click_scorer_v0(old: dict[str, Any]) -> dict[str, Any]:
    """The click model's scorer as registries held it before spec kinds (one-hot
    ``item_category``, then ``position`` and ``dwell_time_s`` standardised; a logistic
    model), in this form: the same inputs in the same order, so the same predictions."""
    return {
        "kind": "binary",
        "features": [
            {"column": "item_category", "kind": "one_hot"},
            {"column": "position"},
            {"column": "dwell_time_s"},
        ],
        "target": [{"column": "action", "is_in": ["click", "purchase"]}],
        "categories": {"item_category": old["categories"]},
        "means": old["means"],
        "stds": old["stds"],
        "weights": [[w] for w in old["weights"]],
        "bias": [old["bias"]],
    }


def _one_hot(column: pa.ChunkedArray, categories: list[str]) -> np.ndarray:
    idx = pc.index_in(column, value_set=pa.array(categories, pa.string()))
    values = idx.to_numpy(zero_copy_only=False).astype(np.float64)
    out = np.zeros((len(values), len(categories)))
    known = ~np.isnan(values)
    out[np.flatnonzero(known), values[known].astype(np.int64)] = 1.0
    return out


def log_losses(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-event log-loss of probabilities ``p`` for 0/1 labels ``y``."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    out: np.ndarray = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return out


def evaluate(scorer: SpecScorer, table: pa.Table) -> dict[str, float]:
    """On the labelled rows of ``table``: ``loss`` (what promotion compares: log-loss,
    squared error or cross-entropy), the kind's own names for it and its accuracy
    (``log_loss``, ``accuracy``; regression: ``mse``, ``mae``), and ``rows``."""
    losses = scorer.losses(table)
    loss = float(losses.mean()) if len(losses) else float("nan")
    out = {"loss": loss, "rows": float(len(losses))}
    if scorer.kind == "regression":
        return {**out, "mse": loss, "mae": float(np.sqrt(losses).mean()) if len(losses) else loss}
    y, p = scorer.labels(table), scorer.predict(table)
    if scorer.kind == "binary":
        keep = ~np.isnan(y)
        right = (p[keep] >= 0.5) == (y[keep] == 1)
    else:
        keep = y > -2
        right = p[keep].argmax(axis=1) == y[keep]
    return {**out, "log_loss": loss, "accuracy": float(right.mean()) if len(right) else loss}
