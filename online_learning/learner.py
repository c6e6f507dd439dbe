"""Online models over privatised batches: predict, then learn, then watch the error.

Examples:
    >>> import pyarrow as pa
    >>> m = ClickModel()
    >>> batch = pa.table({"item_category": ["news", "tech"], "position": [0, 3],
    ...                   "dwell_time_s": [10.0, 2.0], "action": ["click", "skip"]})
    >>> m.process(batch).errors.shape
    (2,)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from river import compose, linear_model, optim, preprocessing

from online_learning.detectors import AdwinDetector, Alarm, BlockWatcher

POSITIVE_ACTIONS = ("click", "purchase")
METRICS_WINDOW = 10_000
# Watched features are scaled to about [0, 1] by their validation bounds.
_FEATURE_SCALE = {"position": 1_000.0}


def _window() -> deque[float]:
    return deque(maxlen=METRICS_WINDOW)


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did to a model: per-row errors (0/1), drift alarms on the error
    (concept drift), and alarms of the watchers (signal, watched name, alarm)."""

    errors: np.ndarray
    alarms: list[Alarm]
    watched: list[tuple[str, str, Alarm]] = field(default_factory=list)


def _watchers() -> dict[str, BlockWatcher]:
    # Block means of 8 events: an eighth of the per-event ADWIN cost (detectors.py).
    # Prior drift: the share of positive labels. Data drift: list position (not noised,
    # scaled to [0, 1] by its validation bound; the noised dwell time is too noisy to
    # watch per event). Both directions count: a feature moving either way is a change.
    # A move under 0.05 (5 points of label rate; 5% of the feature's range) is not reported.
    return {
        "label_rate": BlockWatcher(AdwinDetector(direction="both", min_change=0.05)),
        "feature:position": BlockWatcher(AdwinDetector(direction="both", min_change=0.05)),
    }


@dataclass
class ClickModel:
    """Probability that an interaction is a click or purchase, from privatised features.

    Features: the item category (one-hot), list position, and the noised dwell time.
    A River scaler + logistic regression, trained with ``learn_many``; ADWIN watches the
    0/1 error of each prediction made *before* learning from the row (progressive
    validation), so the error rate is an honest live metric.
    """

    name: str = "click"
    version: int = 1
    stream: str = "interaction"
    detector: AdwinDetector = field(default_factory=AdwinDetector)
    pipeline: compose.Pipeline = field(
        default_factory=lambda: compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(0.05)),
        )
    )
    seen: int = 0
    checkpoints: int = 0  # checkpoints taken of this model's lineage (survives restores)
    #: per-event progressive (predict-then-learn) 0/1 errors and log-losses, the latest
    #: METRICS_WINDOW of them: the rolling metrics
    #: detectors on other signals than the error: "label_rate", "feature:<column>"
    watchers: dict[str, BlockWatcher] = field(default_factory=_watchers)
    recent_errors: deque[float] = field(default_factory=lambda: _window(), repr=False)
    recent_losses: deque[float] = field(default_factory=lambda: _window(), repr=False)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # checkpoints from before the rolling metrics existed restore with empty windows
        self.__dict__.update(state)
        self.__dict__.setdefault("recent_errors", _window())
        self.__dict__.setdefault("watchers", _watchers())
        self.__dict__.setdefault("recent_losses", _window())

    def predict_one(self, item_category: str, position: float, dwell_time_s: float) -> float:
        """Probability of a click or purchase for one (privatised) interaction."""
        x = {
            "position": float(position),
            "dwell_time_s": float(dwell_time_s),
            f"item_category_{item_category}": 1.0,
        }
        return float(self.pipeline.predict_proba_one(x).get(True, 0.0))

    def features(self, batch: pa.Table) -> pl.DataFrame:
        frame = pl.from_arrow(batch.select(["item_category", "position", "dwell_time_s"]))
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(pl.col("position").cast(pl.Float64)).to_dummies("item_category")

    def target(self, batch: pa.Table) -> pl.Series:
        actions = pl.from_arrow(batch["action"])
        assert isinstance(actions, pl.Series)
        return actions.is_in(POSITIVE_ACTIONS).alias("y")

    def rolling_metrics(self) -> dict[str, float]:
        """Progressive metrics over the last METRICS_WINDOW events (empty before any)."""
        if not self.recent_errors:
            return {}
        error = float(np.mean(self.recent_errors))
        return {
            "error_rate": error,
            "accuracy": 1.0 - error,
            "log_loss": float(np.mean(self.recent_losses)),
            "events": float(len(self.recent_errors)),
        }

    def process(self, batch: pa.Table) -> BatchOutcome:
        """Predict each row, score the predictions, learn from the batch, update drift."""
        if batch.num_rows == 0:
            return BatchOutcome(np.zeros(0), [])
        x, y = self.features(batch), self.target(batch)
        proba = self.pipeline.predict_proba_many(x)
        p_true = proba["True"].to_numpy() if "True" in proba.columns else np.zeros(len(x))
        truth = y.to_numpy()
        errors = ((p_true > 0.5) != truth).astype(np.float64)
        q = np.clip(p_true, 1e-7, 1 - 1e-7)
        losses = -np.where(truth, np.log(q), np.log(1 - q))
        self.recent_errors.extend(errors.tolist())
        self.recent_losses.extend(losses.tolist())
        self.pipeline.learn_many(x, y)
        self.seen += batch.num_rows
        watched = []
        for name, detector in self.watchers.items():
            if name == "label_rate":
                values = truth.astype(np.float64)
            else:
                column = name.split(":", 1)[1]
                values = batch[column].to_numpy(zero_copy_only=False).astype(np.float64)
                values = values / _FEATURE_SCALE.get(column, 1.0)
            for alarm in detector.update_many(values):
                signal = "label_rate" if name == "label_rate" else "feature"
                watched.append((signal, name, alarm))
        return BatchOutcome(errors, self.detector.update_many(errors), watched)
