"""Prometheus metrics of a worker, on a registry of its own (served at ``/metrics``), with
the client's standard ``process_*`` (CPU seconds, resident memory, open files) and
``python_*`` (GC, version) collectors.

Cost: each stage adds the CPU time of the thread it ran on (``time.thread_time``) and the
rows it handled (``charge``); with a price per core-hour that is a cost per million rows
per stage (``eddyline_worker_cost_per_million_events``). Threads of native pools (Arrow's,
delta-rs's) are not a stage's thread: ``process_cpu_seconds_total`` has the whole."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

# The rolling metrics a learner spec may name (online_learning.spec), one gauge each, and the
# window's size in events.
_MODEL_QUALITY = {
    "error_rate": "Error rate (0-1)",
    "accuracy": "Accuracy (0-1)",
    "log_loss": "Log loss",
    "brier": "Brier score",
    "mae": "Mean absolute error (regression)",
    "rmse": "Root mean squared error (regression)",
    "window_events": "Events in the rolling window",
}
_ROWS = (1, 10, 100, 500, 1000, 2000, 5000, 20000, 100000)


@dataclass(frozen=True)
class WorkerMetrics:
    registry: CollectorRegistry
    events_in: Counter
    events_private: Counter
    rows_written: Counter
    deadletters: Counter
    deadlettered_events: Counter
    drift_events: Counter
    learned: Counter
    suppressed: Counter
    budget_charged: Counter
    pii_masked: Counter
    rereads: Counter
    epochs: Counter
    replayed: Counter
    repeated: Counter
    delta_commit: Histogram
    envelope_rows: Histogram
    commit_rows: Histogram
    predict: Histogram
    lag: Gauge
    stalled: Gauge
    brokers: Gauge
    under_replicated: Gauge
    offline: Gauge
    model_seen: Gauge
    model_quality: dict[str, Gauge]
    files: Gauge
    stage_cpu: Counter
    stage_rows: Counter
    cost: Gauge
    active_users: Gauge
    cost_per_user: Gauge
    price_per_core_hour: float = 0.05
    accounting: bool = True  # off: ``charge`` does nothing (an A/B of its own cost)
    _spent: dict[str, list[float]] = field(default_factory=dict)

    def charge(self, stage: str, started: float, rows: int) -> None:
        """Add the CPU this thread spent since ``started`` (``time.thread_time()``) and the
        rows it handled to ``stage``'s cost."""
        if not self.accounting:
            return
        seconds = time.thread_time() - started
        self.stage_cpu.labels(stage).inc(seconds)
        self.stage_rows.labels(stage).inc(rows)
        total = self._spent.setdefault(stage, [0.0, 0.0])
        total[0] += seconds
        total[1] += rows
        if total[1]:
            self.cost.labels(stage).set(self.cost_of(stage))

    def spent(self) -> dict[str, tuple[float, int]]:
        """Each stage's CPU seconds and rows so far (a copy)."""
        return {stage: (total[0], int(total[1])) for stage, total in self._spent.items()}

    def cost_of(self, stage: str) -> float:
        """A stage's CPU per million rows so far, priced at the price per core-hour."""
        seconds, rows = self._spent.get(stage, (0.0, 0.0))
        return seconds / rows * 1e6 / 3600 * self.price_per_core_hour if rows else 0.0

    @classmethod
    def create(
        cls,
        registry: CollectorRegistry | None = None,
        price_per_core_hour: float = 0.05,
        accounting: bool = True,
    ) -> WorkerMetrics:
        reg = registry or CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            reg.register(collector)

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(f"eddyline_worker_{name}", doc, labels, registry=reg)

        return cls(
            reg,
            counter("events_in", "Rows decoded from raw topics", ["stream"]),
            counter("events_private", "Rows past the privacy boundary", ["stream"]),
            counter("rows_written", "Rows committed to a Delta table", ["table"]),
            counter(
                "deadletters",
                "Dead-letter entries published (each names one source message, or rows of it)",
                ["reason"],
            ),
            counter(
                "deadlettered_events",
                "Events the dead-letter entries stand for (an undecodable message counts as one)",
                ["reason"],
            ),
            counter("drift_events", "Drift events published", ["model"]),
            counter("events_learned", "Rows a model predicted, then learned", ["model"]),
            counter(
                "suppressed",
                "Valid rows withheld by consent or budget "
                "(budget_coarsened: released without their protected fields)",
                ["stream", "reason"],
            ),
            counter(
                "budget_charged",
                "Events charged to their user's privacy budget (each spends the stream's "
                "per-event epsilon; see `eddyline budget show`)",
                ["stream"],
            ),
            counter(
                "pii_masked",
                "Sensitive strings masked in kept free text, by kind",
                ["stream", "kind"],
            ),
            counter(
                "offsets_reread",
                "Messages the consumer skipped (seen across rebalances) and an agent re-read",
                ["topic"],
            ),
            counter(
                "source_epochs",
                "A source topic seen under a new topic id (deleted and created again): the "
                "stage's offsets for it start afresh instead of skipping its messages",
                ["stage", "topic"],
            ),
            counter(
                "events_replayed",
                "Rows of a raw message privatised again (after a crash or rebalance) that their "
                "user's saved budget already covers: dropped, their output was delivered before",
                ["stream"],
            ),
            counter(
                "events_repeated",
                "Rows repeating an event_id their user sent before within the repeat window "
                "(a client's retry after a lost response): dropped before their budget is charged",
                ["stream"],
            ),
            Histogram("eddyline_worker_delta_commit_seconds", "Delta commit latency", registry=reg),
            Histogram(
                "eddyline_worker_envelope_rows",
                "Rows per raw envelope",
                buckets=_ROWS,
                registry=reg,
            ),
            Histogram(
                "eddyline_worker_commit_rows", "Rows per Delta commit", buckets=_ROWS, registry=reg
            ),
            Histogram("eddyline_worker_predict_seconds", "GET /predict latency", registry=reg),
            Gauge(
                "eddyline_worker_consumer_lag",
                "Messages behind the partition's end",
                ["topic", "partition"],
                registry=reg,
            ),
            Gauge(
                "eddyline_worker_partition_stalled_seconds",
                "How long messages have waited on a partition while the agent's finished "
                "offset stood still (0: it is moving; see /status)",
                ["agent", "topic", "partition"],
                registry=reg,
            ),
            Gauge(
                "eddyline_worker_kafka_brokers",
                "Brokers in the cluster's metadata (a broker down drops out within seconds)",
                registry=reg,
            ),
            Gauge(
                "eddyline_worker_under_replicated_partitions",
                "Partitions of the worker's topics with fewer in-sync replicas than replicas",
                registry=reg,
            ),
            Gauge(
                "eddyline_worker_offline_partitions",
                "Partitions of the worker's topics without a leader (not writable)",
                registry=reg,
            ),
            Gauge(
                "eddyline_worker_model_events_seen",
                "Events a model has learned, ever",
                ["model"],
                registry=reg,
            ),
            {
                metric: Gauge(
                    f"eddyline_worker_model_{metric}",
                    f"{doc} of an online model's predictions over its rolling window "
                    "(the last 10,000 events it predicted, then learned)",
                    ["model"],
                    registry=reg,
                )
                for metric, doc in _MODEL_QUALITY.items()
            },
            Gauge(
                "eddyline_worker_table_files",
                "Data files in the table's current version",
                ["table"],
                registry=reg,
            ),
            counter(
                "stage_cpu_seconds",
                "CPU seconds of the thread a stage ran on (privatize, lake, learn, predict)",
                ["stage"],
            ),
            counter("stage_rows", "Rows (predictions for predict) a stage handled", ["stage"]),
            Gauge(
                "eddyline_worker_cost_per_million_events",
                "A stage's CPU per million rows, priced at EDDYLINE_PRICE_PER_CORE_HOUR",
                ["stage"],
                registry=reg,
            ),
            Gauge(
                "eddyline_worker_active_users",
                "Users (pseudonyms) charged to a privacy budget in the current budget window",
                registry=reg,
            ),
            Gauge(
                "eddyline_worker_cost_per_active_user",
                "The CPU cost (privatize, lake, learn) of the events charged in the current "
                "budget window, per active user, at EDDYLINE_PRICE_PER_CORE_HOUR",
                registry=reg,
            ),
            price_per_core_hour,
            accounting,
        )
