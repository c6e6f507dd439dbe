"""Prometheus metrics of a worker, on a registry of its own (served at ``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True)
class WorkerMetrics:
    registry: CollectorRegistry
    events_in: Counter
    events_private: Counter
    events_written: Counter
    deadlettered: Counter
    drift_events: Counter
    learned: Counter
    suppressed: Counter
    delta_commit: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WorkerMetrics:
        reg = registry or CollectorRegistry()
        return cls(
            reg,
            Counter(
                "eddyline_worker_events_in",
                "Rows decoded from raw topics",
                ["stream"],
                registry=reg,
            ),
            Counter(
                "eddyline_worker_events_private",
                "Rows past the privacy boundary",
                ["stream"],
                registry=reg,
            ),
            Counter(
                "eddyline_worker_events_written",
                "Rows committed to Delta",
                ["stream"],
                registry=reg,
            ),
            Counter(
                "eddyline_worker_deadlettered",
                "Rows (or undecodable messages) dead-lettered",
                ["reason"],
                registry=reg,
            ),
            Counter(
                "eddyline_worker_drift_events", "Drift events published", ["model"], registry=reg
            ),
            Counter(
                "eddyline_worker_events_learned",
                "Rows a model predicted, then learned",
                ["model"],
                registry=reg,
            ),
            Counter(
                "eddyline_worker_suppressed",
                "Valid rows withheld by consent or budget",
                ["stream", "reason"],
                registry=reg,
            ),
            Histogram("eddyline_worker_delta_commit_seconds", "Delta commit latency", registry=reg),
        )
