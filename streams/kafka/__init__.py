"""Kafka plumbing shared by every role: settings, topic names and creation, the local broker
(``broker``), and the worker's Faust transport (``transport``, needs the [worker] extra)."""

from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings, WorkerSettings
from eddyline.streams.kafka.topics import Topics, ensure_topics

__all__ = ["KafkaSettings", "ProducerSettings", "Topics", "WorkerSettings", "ensure_topics"]
