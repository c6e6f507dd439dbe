"""Online models over privatised batches: predict, then learn, then watch for drift.

An :class:`OnlineModel` runs one :class:`~online_learning.spec.LearnerSpec`: features from
the batch's private columns (polars), the River pipeline with ``predict_proba_many`` /
``learn_many`` when every step has them (else a tight per-row loop), rolling progressive
metrics, a CUSUM detector on the error (``online_learning.cusum``; the 0/1 error, or a
regression's absolute residual) and the spec's watchers (ADWIN).

Examples:
    >>> import pyarrow as pa
    >>> m = OnlineModel.builtin("click")
    >>> batch = pa.table({"item_category": ["news", "tech"], "position": [0, 3],
    ...                   "dwell_time_s": [10.0, 2.0], "action": ["click", "skip"]})
    >>> m.process(batch).errors.shape
    (2,)
    >>> 0.0 <= m.predict_one({"item_category": "news", "position": "3", "dwell_time_s": "9"}) <= 1
    True
    >>> m.predict_one({"item_category": "news"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    eddyline.online_learning.spec.LearnerSpecError: model 'click': missing feature ...)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter
from river import base

from eddyline.online_learning.changes import ChangeReports
from eddyline.online_learning.cusum import CusumDetector
from eddyline.online_learning.detectors import AdwinDetector, Alarm, BlockWatcher
from eddyline.online_learning.features import feature_frame, target_values
from eddyline.online_learning.spec import Detector, LearnerSpec, LearnerSpecError, load_spec
from eddyline.schemas.events import base_kind
from eddyline.schemas.registry import REGISTRY

METRICS_WINDOW = 10_000
CALIBRATION_BINS = 10


def _window() -> deque[float]:
    return deque(maxlen=METRICS_WINDOW)


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did to a model: per-row errors (0/1), drift alarms on the error
    (concept drift), and alarms of the watchers (signal, watched name, alarm)."""

    errors: np.ndarray
    alarms: list[Alarm]
    watched: list[tuple[str, str, Alarm]] = field(default_factory=list)


def _detector(
    d: Detector, warmup: int, cooldown: int, bound: Literal["unit", "warmup"] = "unit"
) -> AdwinDetector | CusumDetector:
    if d.method == "cusum":
        return CusumDetector(
            threshold=d.threshold,
            warmup=warmup if d.warmup is None else d.warmup,
            cooldown=cooldown if d.cooldown is None else d.cooldown,
            direction=d.direction,
            min_change=d.min_change,
            bound=bound,
        )
    return _adwin(d, warmup, cooldown, bound)


def _adwin(
    d: Detector, warmup: int, cooldown: int, bound: Literal["unit", "warmup"] = "unit"
) -> AdwinDetector:
    return AdwinDetector(
        bound=bound,
        delta=d.delta,
        clock=d.clock,
        warmup=warmup if d.warmup is None else d.warmup,
        cooldown=cooldown if d.cooldown is None else d.cooldown,
        direction=d.direction,
        min_change=d.min_change,
    )


@dataclass
class OnlineModel:
    """One learner spec, running: the River pipeline, its detectors, its rolling metrics.

    Every prediction is made *before* the model learns from the row (progressive
    validation), so the error rate the detector watches is an honest live metric.
    """

    spec: LearnerSpec
    pipeline: Any
    detector: AdwinDetector | CusumDetector
    #: detectors on other signals than the error: "label_rate", "feature:<column>"
    watchers: dict[str, BlockWatcher]
    seen: int = 0
    checkpoints: int = 0  # checkpoints taken of this model's lineage (survives restores)
    #: per-event progressive (predict-then-learn) values, the latest METRICS_WINDOW of
    #: them: 0/1 errors, log-losses, squared errors of the probability (Brier)
    recent_errors: deque[float] = field(default_factory=_window, repr=False)
    recent_losses: deque[float] = field(default_factory=_window, repr=False)
    recent_brier: deque[float] = field(default_factory=_window, repr=False)
    #: the predicted probabilities of the same events (calibration, prediction distribution)
    recent_proba: deque[float] = field(default_factory=_window, repr=False)

    @classmethod
    def from_spec(
        cls, spec: LearnerSpec, warmup: int = 1_000, cooldown: int = 2_000
    ) -> OnlineModel:
        """A fresh model; ``warmup``/``cooldown`` apply where the spec leaves them unset."""
        watchers = {
            w.key: BlockWatcher(_adwin(w, warmup, cooldown), block=w.block)
            for w in spec.drift.watch
        }
        # a regression's error is its absolute residual: unbounded (detectors.py, bound)
        bound: Literal["unit", "warmup"] = "warmup" if spec.kind == "regression" else "unit"
        error = _detector(spec.drift.error, warmup, cooldown, bound)
        return cls(spec, spec.build_pipeline(), error, watchers)

    @classmethod
    def builtin(cls, name: str, **kwargs: Any) -> OnlineModel:
        """A fresh model of a shipped spec (``click``, ``satisfaction``)."""
        return cls.from_spec(load_spec(name), **kwargs)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def stream(self) -> str:
        return self.spec.stream

    @property
    def minibatch(self) -> bool:
        """Whether every pipeline step learns and predicts on whole frames."""
        return all(
            isinstance(
                s, base.MiniBatchTransformer | base.MiniBatchClassifier | base.MiniBatchRegressor
            )
            for s in self.pipeline.steps.values()
        )

    def features(self, batch: pa.Table) -> pl.DataFrame:
        """The model's input frame for a batch of private rows."""
        return feature_frame(self.spec, batch)

    def target(self, batch: pa.Table) -> pl.Series:
        """The label per row (null where there is none): ``features.target_values``."""
        return target_values(self.spec.kind, self.spec.target, batch)

    def predict_one(self, values: dict[str, Any]) -> float:
        """Probability of the positive label (binary specs) or the predicted number
        (regression) for one row of feature values: see :meth:`predict`."""
        out = self.predict(values)
        return float(out.get("probability", out.get("value", math.nan)))

    def predict(self, values: dict[str, Any]) -> dict[str, Any]:
        """The model's answer for one row of feature values (strings are parsed by the
        event's field types, as a query string would send them): ``probability`` (binary),
        ``value`` (regression) or ``class`` and ``probabilities`` (multiclass). Raises
        :class:`LearnerSpecError` naming a missing or malformed feature."""
        x = self.features(pa.Table.from_pylist([self.parse_row(values)])).to_dicts()[0]
        if self.spec.kind == "regression":
            return {"value": float(self.pipeline.predict_one(x) or 0.0)}
        proba = self.pipeline.predict_proba_one(x)
        if self.spec.kind == "binary":
            return {"probability": float(proba.get(True, 0.0))}
        probabilities = {str(k): float(v) for k, v in proba.items()}
        best = max(probabilities, key=probabilities.__getitem__) if probabilities else None
        return {"class": best, "probabilities": probabilities}

    def parse_row(self, values: dict[str, Any]) -> dict[str, Any]:
        """One row of the spec's feature columns, typed by the event's fields (strings
        parsed as a query string sends them); ``LearnerSpecError`` names a bad feature."""
        event = REGISTRY.latest(self.stream)
        needs = [f.column for f in self.spec.features]
        unknown = sorted(set(values) - set(needs))
        if unknown:
            raise LearnerSpecError(
                f"model {self.name!r}: unknown feature {unknown[0]!r} (needs {', '.join(needs)})"
            )
        row: dict[str, Any] = {}
        for f in self.spec.features:
            raw = values.get(f.column)
            if raw is None and f.kind != "hour_of_day":
                raise LearnerSpecError(
                    f"model {self.name!r}: missing feature {f.column!r} (needs {', '.join(needs)})"
                )
            annotation: Any = event.model_fields[f.column].annotation
            kind = base_kind(annotation)
            try:
                if raw is None:  # hour_of_day: now
                    row[f.column] = datetime.now(UTC)
                elif isinstance(raw, str):  # a query string: pydantic's string parsing
                    row[f.column] = TypeAdapter(annotation).validate_strings(raw)
                else:
                    row[f.column] = TypeAdapter(annotation).validate_python(raw)
            except ValueError:  # pydantic's ValidationError is one
                raise LearnerSpecError(
                    f"model {self.name!r}: feature {f.column!r} needs a {f.kind} "
                    f"{kind.__name__} value, got {raw!r}"
                ) from None
        return row

    def rolling_metrics(self) -> dict[str, float]:
        """The spec's progressive metrics over the last METRICS_WINDOW events."""
        if not self.recent_errors:
            return {}
        error = float(np.mean(self.recent_errors))  # mean 0/1 error, or absolute residual
        every = {
            "error_rate": lambda: error,
            "accuracy": lambda: 1.0 - error,
            "log_loss": lambda: float(np.mean(self.recent_losses)),
            "brier": lambda: float(np.mean(self.recent_brier)),
            "mae": lambda: error,
            "rmse": lambda: math.sqrt(float(np.mean(self.recent_losses))),
        }
        out: dict[str, float] = {m: every[m]() for m in self.spec.metrics}
        out["events"] = float(len(self.recent_errors))
        return out

    def calibration(self, bins: int = CALIBRATION_BINS) -> list[list[float]]:
        """The rolling window's predictions in ``bins`` equal-width probability bins: per
        bin ``[count, mean predicted probability, observed positive rate]`` (the last two 0
        for an empty bin). The counts are the prediction distribution; the means against the
        rates are the reliability diagram. Aggregates only: no event can be told apart.
        Binary specs only (empty for the others)."""
        if self.spec.kind != "binary":
            return []
        proba = np.asarray(self.__dict__.get("recent_proba", ()), dtype=np.float64)
        if proba.size == 0:
            return []
        errors = np.asarray(self.recent_errors, dtype=np.float64)[-proba.size :]
        truth = (proba > 0.5) != (errors > 0.5)  # the label, from the prediction and its error
        which = np.minimum((proba * bins).astype(np.int64), bins - 1)
        count = np.bincount(which, minlength=bins)
        mean_p = np.bincount(which, weights=proba, minlength=bins) / np.maximum(count, 1)
        rate = np.bincount(which, weights=truth, minlength=bins) / np.maximum(count, 1)
        return [[float(c), float(m), float(r)] for c, m, r in zip(count, mean_p, rate, strict=True)]

    def process(self, batch: pa.Table) -> BatchOutcome:
        """Predict each row, score the predictions, learn from the batch, update drift."""
        if batch.num_rows == 0:
            return BatchOutcome(np.zeros(0), [])
        y = self.target(batch)
        if y.null_count():  # no label: nothing to score or learn
            keep = y.is_not_null()
            batch, y = batch.filter(pa.array(keep.to_numpy())), y.filter(keep)
            if batch.num_rows == 0:
                return BatchOutcome(np.zeros(0), [])
        x = self.features(batch)
        kind = self.spec.kind
        errors, losses, p_true = _score_and_learn(kind, self.pipeline, x, y, self.minibatch)
        self.recent_errors.extend(errors.tolist())
        self.recent_losses.extend(losses.tolist())
        truth = y.to_numpy() if self.spec.kind == "binary" else None
        if truth is not None:
            truth = truth.astype(bool)
            self.__dict__.setdefault("recent_proba", _window())  # checkpoints from before it
            self.recent_proba.extend(p_true.tolist())
            if "brier" in self.spec.metrics:
                self.recent_brier.extend(((p_true - truth) ** 2).tolist())
        self.seen += batch.num_rows
        watched: list[tuple[str, str, Alarm]] = []
        for w in self.spec.drift.watch:
            if w.column is None:  # the label rate: binary specs only (spec.py)
                assert truth is not None
                values = truth.astype(np.float64)
            else:
                col = pc.drop_null(batch[w.column])
                values = col.to_numpy(zero_copy_only=False).astype(np.float64) / w.scale
            for alarm in self.watchers[w.key].update_many(values):
                watched.append((w.signal, w.key, alarm))
        # one report per change, placed in event time (online_learning/changes.py)
        reports: ChangeReports = self.__dict__.setdefault("reports", ChangeReports())
        start = getattr(self.detector, "seen", self.seen)  # the detector's own count
        alarms = self.detector.update_many(errors)
        reports.learned(start, start + len(errors), *_event_times(batch, start))
        return BatchOutcome(errors, reports.new(alarms), watched)


def _event_times(batch: pa.Table, start: int) -> tuple[int, int]:
    """The batch's first and last ``occurred_at`` in µs (its counts where it has none)."""
    if "occurred_at" not in batch.column_names:
        return start, start + batch.num_rows - 1
    at = pc.cast(pc.cast(batch["occurred_at"], pa.timestamp("us", tz="UTC")), pa.int64())
    low, high = pc.min_max(at).values()
    return int(low.as_py() or 0), int(high.as_py() or 0)


def _score_and_learn(
    kind: str, pipeline: Any, x: pl.DataFrame, y: pl.Series, minibatch: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict every row, then learn the batch: (per-row error, per-row loss, P(true)).
    The error is what the drift detector watches and the loss feeds the loss metric: 0/1
    error and log-loss (binary, multiclass), absolute residual and squared error
    (regression). P(true) is for binary specs (zeros otherwise)."""
    n = len(x)
    if kind == "regression":
        if minibatch:
            pred = pipeline.predict_many(x).to_numpy().astype(np.float64)
            pipeline.learn_many(x, y)
        else:
            pred = np.empty(n)
            for i, (xi, yi) in enumerate(zip(x.iter_rows(named=True), y, strict=True)):
                pred[i] = pipeline.predict_one(xi) or 0.0
                pipeline.learn_one(xi, yi)
        residual = y.to_numpy().astype(np.float64) - pred
        return np.abs(residual), residual**2, np.zeros(n)
    if kind == "multiclass":  # River's multi-class models learn one row at a time
        wrong, p_y = np.empty(n), np.empty(n)
        for i, (xi, yi) in enumerate(zip(x.iter_rows(named=True), y, strict=True)):
            proba = pipeline.predict_proba_one(xi)
            best = max(proba, key=proba.__getitem__) if proba else None
            wrong[i], p_y[i] = best != yi, proba.get(yi, 0.0)
            pipeline.learn_one(xi, yi)
        return wrong, -np.log(np.clip(p_y, 1e-7, 1.0)), np.zeros(n)
    if minibatch:
        proba = pipeline.predict_proba_many(x)
        p_true = proba["True"].to_numpy() if "True" in proba.columns else np.zeros(n)
        pipeline.learn_many(x, y)
    else:  # e.g. a Hoeffding tree: no mini-batch API, so a tight per-row loop
        p_true = np.empty(n)
        for i, (xi, yi) in enumerate(zip(x.iter_rows(named=True), y, strict=True)):
            p_true[i] = pipeline.predict_proba_one(xi).get(True, 0.0)
            pipeline.learn_one(xi, yi)
    truth = y.to_numpy().astype(bool)
    q = np.clip(p_true, 1e-7, 1 - 1e-7)
    errors = ((p_true > 0.5) != truth).astype(np.float64)
    return errors, -np.where(truth, np.log(q), np.log(1 - q)), p_true
