"""The reference retraining job: drift event -> DP training with Opacus -> registry -> shadow.

``RetrainJob.handle(drift_event)`` reads the data the event names from Delta by time travel
(before the change: the table at ``lake_version_before``; after it: the rows added since),
trains the family its learner spec declares (logistic, linear or softmax over the spec's
features: ``online_learning.scoring``) on the post-change rows with Opacus
(``PrivacyEngine``, a target ε and δ, Poisson sampling, RDP accountant), evaluates it
against the champion on a holdout of the most recent post-change rows, and registers it
(``online_learning.registry``): as ``challenger`` if its loss beats the champion's there,
else rejected. With no champion yet, it first
trains one on the pre-change rows (a "bootstrap" version, charged like any other).

The worker's ``online_learning.shadow.ShadowEvaluator`` then scores champion and challenger
on live private traffic, promotes the challenger once its rolling loss beats the
champion's, and rolls a promotion back if the new champion falls behind.

Privacy across retrains: every run's accountant history is kept with its version; before
training, the job composes the histories of every earlier run on the same data with the
planned run (Opacus's RDP accountant) and refuses, with a clear message, past
``total_epsilon``. The unit of DP-SGD here is one event (row), on top of the local DP each
field already got at the boundary (docs/retraining.md).

torch and opacus come with the ``[retrain]`` extra; only ``consumers.training`` imports them,
so the scorer (``online_learning.scoring``) and the shadow evaluator run without torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from eddyline.consumers.training import (
    TrainConfig,
    composed_epsilon,
    labelled,
    planned_history,
    train_dp,
)
from eddyline.online_learning.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    ModelVersion,
    registry_change,
)
from eddyline.online_learning.scoring import SpecScorer, evaluate
from eddyline.online_learning.spec import LearnerSpec, load_spec
from eddyline.schemas.errors import EddylineError, UserError
from eddyline.schemas.events import DriftEvent, ModelEvent

log = logging.getLogger("eddyline.retrain")


class RetrainBudgetError(UserError):
    """Training would spend more privacy budget on the data than the configured total."""


class NotEnoughDataError(EddylineError):
    """Too few rows after the change to train and evaluate on yet (retried later)."""


# -- the job -----------------------------------------------------------------------------


@dataclass
class RetrainJob:
    """Handles drift events for one model (see the module docstring)."""

    lake: str | Path
    registry: ModelRegistry
    spec: LearnerSpec = field(default_factory=lambda: load_spec("click"))
    config: TrainConfig = field(default_factory=TrainConfig)
    total_epsilon: float = 10.0  # over every run on the stream's data
    min_rows: int = 2_000  # post-change rows needed to train and evaluate
    holdout: float = 0.2  # the most recent share of post-change rows, for evaluation
    publish: Callable[[ModelEvent], None] = lambda event: None

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def stream(self) -> str:
        return self.spec.stream

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
        champion_metrics = evaluate(SpecScorer.load(self.registry.artifact_dir(champion)), holdout)
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
            champion_holdout_loss=champion_metrics["loss"],
        )
        metrics = version.metrics
        better = metrics["holdout_loss"] < champion_metrics["loss"]
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
                    f"holdout loss {metrics['holdout_loss']:.4f} >= champion's "
                    f"{champion_metrics['loss']:.4f}",
                )
            )
        return version

    def _lake(self) -> Any:
        from eddyline.consumers.lake import Lake

        return Lake(str(self.lake))

    def _after(self, event: DriftEvent) -> tuple[pa.Table, int]:
        """(the rows added since ``lake_version_before``, the latest table version read):
        the pre-change version is read for its event ids only."""
        lake = self._lake()
        latest = lake.table(self.stream).version()
        seen = lake.read(self.stream, as_of=event.lake_version_before, columns=["event_id"])
        now = lake.read(self.stream, as_of=latest)
        fresh = pc.invert(pc.is_in(now["event_id"], value_set=seen["event_id"].combine_chunks()))
        return labelled(self.spec, now.filter(fresh)), latest

    def _champion(self, holdout: pa.Table, event: DriftEvent) -> ModelVersion:
        """The champion, bootstrapping one from the pre-change rows if there is none."""
        current = self.registry.alias(self.model, CHAMPION)
        if current is not None:
            return self.registry.get(self.model, current)
        before = self._lake().read(self.stream, as_of=event.lake_version_before)
        before = labelled(self.spec, before)
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
        result = train_dp(self.spec, rows, self.config)
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


__all__ = ["NotEnoughDataError", "RetrainBudgetError", "RetrainJob", "TrainConfig", "run_service"]


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
    specs: list[LearnerSpec] | None = None,
) -> None:
    """Run the retraining job until ``stop`` (a threading.Event) is set: drift events from
    ``signals.drift`` (their own consumer group, commit after the handler, retries with
    backoff, a dead-letter for handlers that keep failing), registry changes published on
    ``signals.models``. One job per learner spec (default: the worker's
    ``EDDYLINE_LEARNERS``, after ``EDDYLINE_STREAMS``' event modules are imported). The
    workers shadow the challengers (``EDDYLINE_SHADOW``)."""
    import threading

    from confluent_kafka import Producer

    from eddyline.consumers.drift import DriftSubscriber, HandledKeys
    from eddyline.online_learning.spec import load_specs
    from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
    from eddyline.streams.kafka.topics import Topics

    if specs is None:
        ws = WorkerSettings()
        ws.load_streams()
        specs = load_specs(ws.learners)
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
    jobs = {
        spec.name: RetrainJob(
            lake,
            registry,
            spec,
            config=config or TrainConfig(),
            total_epsilon=total_epsilon,
            min_rows=min_rows,
            publish=publish,
        )
        for spec in specs
    }
    with DriftSubscriber(
        group_id=group_id,
        kafka=ks,
        models=set(jobs),
        # concept drift by default (the error, or a regression's residual): label-rate and
        # feature drift are watched and published too, but a model retrained on them would
        # mostly relearn the same concept
        signals=signals if signals is not None else {"error_rate", "residual"},
        handled=HandledKeys(handled_path),
    ) as sub:
        sub.run(lambda event: jobs[event.model].handle(event), stop=stop)
