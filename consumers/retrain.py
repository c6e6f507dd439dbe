"""The reference retraining job: drift event -> DP training with Opacus -> registry -> shadow.

``RetrainJob.handle(drift_event)`` reads the data the event names from Delta by time travel
(before the change: the table at ``lake_version_before``; after it: the rows added since),
trains a logistic model on the post-change rows with Opacus (``PrivacyEngine``, a target ε
and δ, Poisson sampling, RDP accountant), evaluates it against the champion on a holdout of
the most recent post-change rows, and registers it (``consumers.registry``): as
``challenger`` if it beats the champion there, else rejected. With no champion yet, it first
trains one on the pre-change rows (a "bootstrap" version, charged like any other).

``ShadowEvaluator`` then scores champion and challenger on live private traffic, never
answering anyone, promotes the challenger once its rolling log-loss beats the champion's,
and rolls a promotion back if the new champion's live loss falls behind the one it replaced.

Privacy across retrains: every run's accountant history is kept with its version; before
training, the job composes the histories of every earlier run on the same data with the
planned run (Opacus's RDP accountant) and refuses, with a clear message, past
``total_epsilon``. The unit of DP-SGD here is one event (row), on top of the local DP each
field already got at the boundary (docs/retraining.md).

torch and opacus come with the ``[retrain]`` extra; only ``train_dp`` imports them, so the
scorer and the evaluator run without torch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consumers.registry import ModelRegistry, ModelVersion
from schemas.errors import EddylineError
from schemas.events import DriftEvent, ModelEvent

log = logging.getLogger("eddyline.retrain")

POSITIVE_ACTIONS = ("click", "purchase")
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


class RetrainBudgetError(EddylineError):
    """Training would spend more privacy budget on the data than the configured total."""


class NotEnoughDataError(EddylineError):
    """Too few rows after the change to train and evaluate on yet (retried later)."""


def registry_change(
    model: str, version: int, kind: Any, alias: str | None, previous: int | None, reason: str
) -> ModelEvent:
    """The ``ModelEvent`` announcing a registry change on ``signals.models``."""
    return ModelEvent(
        model=model,
        model_version=version,
        kind=kind,
        alias=alias,
        previous_version=previous,
        reason=reason,
    )


# -- the model ---------------------------------------------------------------------------


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


# -- DP training -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    scorer: LinearScorer
    epsilon: float  # what Opacus's accountant measured for this run
    delta: float
    history: list[list[float]]  # the accountant's [noise multiplier, sample rate, steps]


@dataclass(frozen=True)
class TrainConfig:
    epsilon: float = 2.0  # per run
    delta: float = 1e-5
    epochs: int = 3
    batch_size: int = 256
    max_grad_norm: float = 1.0
    learning_rate: float = 0.5
    seed: int = 0


def planned_history(rows: int, cfg: TrainConfig) -> list[list[float]]:
    """The accountant history a run on ``rows`` rows would record (as Opacus computes it
    in ``make_private_with_epsilon``): for the budget check before training."""
    from opacus.accountants.utils import get_noise_multiplier

    batches = math.ceil(rows / cfg.batch_size)
    rate = 1.0 / batches
    sigma = get_noise_multiplier(
        target_epsilon=cfg.epsilon,
        target_delta=cfg.delta,
        sample_rate=rate,
        epochs=cfg.epochs,
        accountant="rdp",
    )
    return [[float(sigma), rate, cfg.epochs * batches]]


def composed_epsilon(history: list[list[float]], delta: float) -> float:
    """ε of every run in ``history`` together, from Opacus's RDP accountant."""
    from opacus.accountants import RDPAccountant

    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(accountant.get_epsilon(delta))


def train_dp(table: pa.Table, cfg: TrainConfig) -> TrainResult:
    """Logistic regression with DP-SGD: Opacus ``make_private_with_epsilon`` (Poisson
    sampling, flat clipping, RDP accountant)."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(cfg.seed)
    scorer = LinearScorer.fit_spec(table)
    x = torch.from_numpy(scorer.design(table))
    y = torch.from_numpy(labels(table))
    model = torch.nn.Linear(x.shape[1], 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size)
    engine = PrivacyEngine(accountant="rdp")
    generator = torch.Generator().manual_seed(cfg.seed)
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=cfg.epsilon,
        target_delta=cfg.delta,
        epochs=cfg.epochs,
        max_grad_norm=cfg.max_grad_norm,
        poisson_sampling=True,
        noise_generator=generator,
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            if len(xb) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad()
            loss_fn(model(xb).squeeze(1), yb).backward()
            optimizer.step()
    linear = model._module  # the GradSampleModule wraps the Linear
    scorer.weights = linear.weight.detach().numpy().ravel().astype(float).tolist()
    scorer.bias = float(linear.bias.detach().numpy()[0])
    history = [[float(s), float(q), int(n)] for s, q, n in engine.accountant.history]
    return TrainResult(scorer, float(engine.accountant.get_epsilon(cfg.delta)), cfg.delta, history)


# -- the job -----------------------------------------------------------------------------


@dataclass
class RetrainJob:
    """Handles drift events for one model (see the module docstring)."""

    lake: str | Path
    registry: ModelRegistry
    model: str = "click"
    stream: str = "interaction"
    config: TrainConfig = field(default_factory=TrainConfig)
    total_epsilon: float = 10.0  # over every run on the stream's data
    min_rows: int = 2_000  # post-change rows needed to train and evaluate
    holdout: float = 0.2  # the most recent share of post-change rows, for evaluation
    publish: Callable[[ModelEvent], None] = lambda event: None

    def handle(self, event: DriftEvent) -> ModelVersion | None:
        """Retrain for ``event``; the version registered, or None when there is nothing to
        do (another model, already handled, stale). Raises on errors to be retried."""
        if event.model != self.model:
            return None
        done = self.registry.by_drift_key(event.idempotency_key)
        if done is not None:
            log.info(
                "drift %s already produced %s v%d", event.idempotency_key, self.model, done.version
            )
            return None
        newer = [
            v
            for v in self.registry.versions(self.model)
            if v.drift_key and v.lineage.get("detected_at", "") > event.detected_at.isoformat()
        ]
        if newer:
            log.info("drift %s is older than one already handled: skipped", event.drift_id)
            return None
        if event.lake_version_before is None:
            raise EddylineError(f"drift event {event.drift_id} names no Delta version")
        after, latest = self._after(event)
        if after.num_rows < self.min_rows:
            raise NotEnoughDataError(
                f"{after.num_rows} rows after the change, {self.min_rows} needed; retry later"
            )
        after = after.sort_by("occurred_at")
        cut = int(after.num_rows * (1 - self.holdout))
        train, holdout = after.slice(0, cut), after.slice(cut)
        champion = self._champion(holdout, event)
        champion_metrics = evaluate(LinearScorer.load(champion.artifact), holdout)
        version = self._train_and_register(
            train,
            holdout,
            {
                "drift_id": str(event.drift_id),
                "detected_at": event.detected_at.isoformat(),
                "table": self.stream,
                "trained_on": {"after_version": event.lake_version_before, "to_version": latest},
                "holdout_rows": holdout.num_rows,
                "champion_version": champion.version,
            },
            drift_key=event.idempotency_key,
            champion_holdout_log_loss=champion_metrics["log_loss"],
        )
        metrics = version.metrics
        better = metrics["holdout_log_loss"] < champion_metrics["log_loss"]
        if better:
            previous = self.registry.set_alias(
                self.model, CHALLENGER, version.version, f"beat v{champion.version} on holdout"
            )
            self.publish(
                registry_change(
                    self.model,
                    version.version,
                    "registered",
                    CHALLENGER,
                    previous,
                    "offline gate passed",
                )
            )
        else:
            self.publish(
                registry_change(
                    self.model,
                    version.version,
                    "rejected",
                    None,
                    None,
                    f"holdout log-loss {metrics['holdout_log_loss']:.4f} >= champion's "
                    f"{champion_metrics['log_loss']:.4f}",
                )
            )
        return version

    def _lake(self) -> Any:
        from consumers.lake import Lake

        return Lake(str(self.lake))

    def _after(self, event: DriftEvent) -> tuple[pa.Table, int]:
        """(the rows added since ``lake_version_before``, the latest table version read):
        the pre-change version is read for its event ids only."""
        lake = self._lake()
        latest = lake.table(self.stream).version()
        seen = lake.read(self.stream, as_of=event.lake_version_before, columns=["event_id"])
        now = lake.read(self.stream, as_of=latest)
        fresh = pc.invert(pc.is_in(now["event_id"], value_set=seen["event_id"].combine_chunks()))
        return now.filter(fresh), latest

    def _champion(self, holdout: pa.Table, event: DriftEvent) -> ModelVersion:
        """The champion, bootstrapping one from the pre-change rows if there is none."""
        current = self.registry.alias(self.model, CHAMPION)
        if current is not None:
            return self.registry.get(self.model, current)
        before = self._lake().read(self.stream, as_of=event.lake_version_before)
        if before.num_rows < self.min_rows:
            raise NotEnoughDataError(f"no champion, and {before.num_rows} rows before the change")
        version = self._train_and_register(
            before,
            holdout,
            {
                "bootstrap": True,
                "table": self.stream,
                "trained_on": {"to_version": event.lake_version_before},
            },
        )
        self.registry.set_alias(self.model, CHAMPION, version.version, "bootstrap: first model")
        self.publish(
            registry_change(
                self.model, version.version, "promoted", CHAMPION, None, "bootstrap: first model"
            )
        )
        return version

    def _train_and_register(
        self,
        rows: pa.Table,
        holdout: pa.Table,
        lineage: dict[str, Any],
        drift_key: str | None = None,
        **extra_metrics: float,
    ) -> ModelVersion:
        """Check the budget, train with DP on ``rows``, score on ``holdout``, register."""
        self._check_budget(rows.num_rows)
        result = train_dp(rows, self.config)
        metrics = {f"holdout_{k}": v for k, v in evaluate(result.scorer, holdout).items()}
        return self.registry.register(
            self.model,
            result.scorer.save,
            metrics={**metrics, **extra_metrics},
            epsilon=result.epsilon,
            delta=result.delta,
            accountant_history=result.history,
            data_key=self.stream,
            drift_key=drift_key,
            lineage=lineage,
        )

    def _check_budget(self, rows: int) -> None:
        spent = self.registry.spent(self.stream)
        planned = planned_history(rows, self.config)
        total = composed_epsilon(spent + planned, self.config.delta)
        if total > self.total_epsilon:
            raise RetrainBudgetError(
                f"retraining {self.model!r} would bring the privacy spent on the "
                f"{self.stream!r} data to ε = {total:.2f} (δ = {self.config.delta:g}), past the "
                f"total of {self.total_epsilon:g}: {len(spent)} earlier training runs spent "
                f"ε = {composed_epsilon(spent, self.config.delta):.2f}. Raise "
                "EDDYLINE_RETRAIN_TOTAL_EPSILON, lower the per-run ε, or wait for new data."
            )


# -- shadow evaluation, promotion, rollback ----------------------------------------------


@dataclass
class ShadowEvaluator:
    """Scores the champion and the challenger (and, after a promotion, the version it
    replaced) on live traffic; promotes and rolls back by their rolling log-loss."""

    registry: ModelRegistry
    model: str = "click"
    window: int = 2_000  # events in each rolling metric
    min_events: int = 1_000  # live events before a decision
    margin: float = 0.0  # how much better (lower) a loss must be to win
    publish: Callable[[ModelEvent], None] = lambda event: None
    _scorers: dict[str, tuple[int, LinearScorer]] = field(default_factory=dict)
    _losses: dict[str, deque[float]] = field(default_factory=dict)
    _refreshed: float = -math.inf

    def refresh(self) -> None:
        """Load whatever the aliases point to now."""
        for alias in (CHAMPION, CHALLENGER, PREVIOUS):
            version = self.registry.alias(self.model, alias)
            loaded = self._scorers.get(alias)
            if version is None:
                self._scorers.pop(alias, None)
                self._losses.pop(alias, None)
            elif loaded is None or loaded[0] != version:
                artifact = self.registry.get(self.model, version).artifact
                self._scorers[alias] = (version, LinearScorer.load(artifact))
                self._losses[alias] = deque(maxlen=self.window)
        self._refreshed = time.monotonic()

    def live_loss(self, alias: str) -> float | None:
        losses = self._losses.get(alias)
        return float(np.mean(losses)) if losses and len(losses) >= self.min_events else None

    def observe(self, table: pa.Table) -> list[ModelEvent]:
        """Score a batch of live private events; the registry changes it led to."""
        if time.monotonic() - self._refreshed > 5.0:  # the registry is read every 5 s at most
            self.refresh()
        if table.num_rows == 0 or CHAMPION not in self._scorers:
            return []
        y = labels(table)
        for alias, (_, scorer) in self._scorers.items():
            self._losses[alias].extend(log_losses(scorer.predict_proba(table), y).tolist())
        events = self._decide()
        for e in events:
            self.publish(e)
        return events

    def _decide(self) -> list[ModelEvent]:
        champ, chall, prev = (self.live_loss(a) for a in (CHAMPION, CHALLENGER, PREVIOUS))
        if chall is not None and champ is not None and chall < champ - self.margin:
            old, new = self._scorers[CHAMPION][0], self._scorers[CHALLENGER][0]
            why = f"live log-loss {chall:.4f} < champion v{old}'s {champ:.4f}"
            self.registry.set_alias(self.model, PREVIOUS, old, f"replaced by v{new}")
            self.registry.set_alias(self.model, CHAMPION, new, why)
            self.registry.set_alias(self.model, CHALLENGER, None, "promoted")
            self.refresh()
            log.warning("promoted %s v%d over v%d: %s", self.model, new, old, why)
            return [registry_change(self.model, new, "promoted", CHAMPION, old, why)]
        if prev is not None and champ is not None and champ > prev + self.margin:
            bad, good = self._scorers[CHAMPION][0], self._scorers[PREVIOUS][0]
            why = f"live log-loss {champ:.4f} > previous v{good}'s {prev:.4f}"
            self.registry.set_alias(self.model, CHAMPION, good, f"rollback: {why}")
            self.registry.set_alias(self.model, PREVIOUS, None, "rolled back to")
            self.refresh()
            log.warning("rolled %s back from v%d to v%d: %s", self.model, bad, good, why)
            return [registry_change(self.model, good, "rolled_back", CHAMPION, bad, why)]
        return []


__all__ = [
    "LinearScorer",
    "NotEnoughDataError",
    "RetrainBudgetError",
    "RetrainJob",
    "ShadowEvaluator",
    "TrainConfig",
    "composed_epsilon",
    "train_dp",
]


# -- the service: `eddyline retrain run` --------------------------------------------------


def run_service(
    lake: str | Path,
    registry_root: str | Path,
    *,
    kafka: Any = None,
    config: TrainConfig | None = None,
    total_epsilon: float = 10.0,
    min_rows: int = 2_000,
    group_id: str = "eddyline-retrain",
    stop: Any = None,
    handled_path: Path | None = None,
    signals: set[str] | None = None,
) -> None:
    """Run the retraining job until ``stop`` (a threading.Event) is set: drift events from
    ``signals.drift`` (their own consumer group, commit after the handler, retries with
    backoff, a dead-letter for handlers that keep failing), registry changes published on
    ``signals.models``. The workers shadow the challenger (``EDDYLINE_SHADOW``)."""
    import threading

    from confluent_kafka import Producer

    from consumers.drift import DriftSubscriber, HandledKeys
    from streams.settings import KafkaSettings
    from streams.topics import Topics

    ks: KafkaSettings = kafka or KafkaSettings()
    stop = stop or threading.Event()
    topics = Topics(ks.namespace)
    # murmur2 as Kafka's Java client and the worker's aiokafka: one model, one partition
    producer = Producer(
        ks.librdkafka({"enable.idempotence": True, "partitioner": "murmur2_random"})
    )

    def publish(event: ModelEvent) -> None:
        # keyed by model: one partition, so readers see a model's changes in order
        producer.produce(topics.models, event.model_dump_json().encode(), key=event.model.encode())
        producer.flush(30)
        log.warning(
            "model event: %s v%d %s (%s)",
            event.model,
            event.model_version,
            event.kind,
            event.reason,
        )

    registry = ModelRegistry(registry_root)
    job = RetrainJob(
        lake,
        registry,
        config=config or TrainConfig(),
        total_epsilon=total_epsilon,
        min_rows=min_rows,
        publish=publish,
    )
    with DriftSubscriber(
        group_id=group_id,
        kafka=ks,
        models={job.model},
        # concept drift by default: label-rate and feature drift are watched and published
        # too, but a model retrained on them would mostly relearn the same concept
        signals=signals if signals is not None else {"error_rate"},
        handled=HandledKeys(handled_path),
    ) as sub:
        sub.run(job.handle, stop=stop)
