"""How the Kafka cluster looks from a worker: brokers alive, partitions short of replicas or
without a leader. The worker's metrics (``eddyline_worker_kafka_brokers``,
``eddyline_worker_under_replicated_partitions``, ``eddyline_worker_offline_partitions``)
show an outage and the recovery after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eddyline.streams.kafka.settings import KafkaSettings


@dataclass(frozen=True)
class ClusterHealth:
    brokers: int
    under_replicated: int  # partitions with fewer in-sync replicas than replicas
    offline: int  # partitions without a leader


class HealthProbe:
    """Reads the cluster's metadata for the topics given (one librdkafka client, reused)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._admin: Any = None

    def read(self, topics: list[str], timeout: float = 5.0) -> ClusterHealth:
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(self._settings.librdkafka())
        meta = self._admin.list_topics(timeout=timeout)
        under = offline = 0
        for name in topics:
            topic = meta.topics.get(name)
            for part in topic.partitions.values() if topic is not None else ():
                under += len(part.isrs) < len(part.replicas)
                offline += part.leader < 0
        return ClusterHealth(len(meta.brokers), under, offline)
