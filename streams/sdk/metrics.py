"""Prometheus metrics of the producer SDK, on the registry the app passes (or the default)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_BY_REGISTRY: dict[int, ProducerMetrics] = {}


@dataclass(frozen=True)
class ProducerMetrics:
    emitted: Counter
    delivered: Counter
    failed: Counter
    spooled: Counter
    batch_events: Histogram
    delivery_latency: Histogram
    client_restarts: Counter
    brokers_up: Gauge
    kafka_retries: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry | None = None) -> ProducerMetrics:
        """The SDK metrics on ``registry``, created once per registry."""
        registry = registry or REGISTRY
        found = _BY_REGISTRY.get(id(registry))
        if found is None:
            found = _BY_REGISTRY[id(registry)] = cls._create(registry)
        return found

    @classmethod
    def _create(cls, reg: CollectorRegistry) -> ProducerMetrics:
        def counter(name: str, doc: str) -> Counter:
            return Counter(f"eddyline_sdk_{name}", doc, ["stream"], registry=reg)

        return cls(
            counter("emitted_events", "Events accepted by emit"),
            counter("delivered_events", "Events acknowledged by Kafka"),
            counter("failed_events", "Events Kafka refused for good, or that could not be kept"),
            counter("spooled_events", "Events written to the offline spool"),
            Histogram(
                "eddyline_sdk_batch_events",
                "Events per envelope",
                buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
                registry=reg,
            ),
            Histogram(
                "eddyline_sdk_delivery_seconds",
                "Envelope creation to acknowledgement",
                registry=reg,
            ),
            Counter(
                "eddyline_sdk_client_restarts",
                "Kafka clients replaced after a fatal error (what they held resent from the spool)",
                registry=reg,
            ),
            Gauge(
                "eddyline_sdk_kafka_brokers_up",
                "Brokers the SDK's Kafka client is connected to (librdkafka's statistics)",
                registry=reg,
            ),
            Counter(
                "eddyline_sdk_kafka_retries",
                "Produce requests librdkafka sent again (a leader moved, a broker went away)",
                registry=reg,
            ),
        )
