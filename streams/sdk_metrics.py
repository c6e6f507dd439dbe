"""Prometheus metrics of the producer SDK, on the registry the app passes (or the default)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

_BY_REGISTRY: dict[int, ProducerMetrics] = {}


@dataclass(frozen=True)
class ProducerMetrics:
    emitted: Counter
    delivered: Counter
    failed: Counter
    batch_events: Histogram
    delivery_latency: Histogram

    @classmethod
    def on(cls, registry: CollectorRegistry | None = None) -> ProducerMetrics:
        """The SDK metrics on ``registry``, created once per registry."""
        registry = registry or REGISTRY
        found = _BY_REGISTRY.get(id(registry))
        if found is None:
            found = cls(
                Counter(
                    "eddyline_sdk_emitted_events",
                    "Events accepted by emit",
                    ["stream"],
                    registry=registry,
                ),
                Counter(
                    "eddyline_sdk_delivered_events",
                    "Events acknowledged by Kafka",
                    ["stream"],
                    registry=registry,
                ),
                Counter(
                    "eddyline_sdk_failed_events",
                    "Events Kafka did not acknowledge",
                    ["stream"],
                    registry=registry,
                ),
                Histogram(
                    "eddyline_sdk_batch_events",
                    "Events per envelope",
                    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
                    registry=registry,
                ),
                Histogram(
                    "eddyline_sdk_delivery_seconds",
                    "Envelope send to acknowledgement",
                    registry=registry,
                ),
            )
            _BY_REGISTRY[id(registry)] = found
        return found
