"""Kafka: settings, topics, the producer SDK, the local broker. The Faust worker lives in
``streams.app`` (needs the [worker] extra) and is not imported here."""

from streams.aio import AsyncEventProducer
from streams.broker import KAFKA_VERSION, LocalBroker
from streams.producer import DeliveryReport, EventProducer
from streams.settings import KafkaSettings, ProducerSettings, WorkerSettings
from streams.topics import Topics, ensure_topics

__all__ = [
    "KAFKA_VERSION",
    "AsyncEventProducer",
    "DeliveryReport",
    "EventProducer",
    "KafkaSettings",
    "LocalBroker",
    "ProducerSettings",
    "Topics",
    "WorkerSettings",
    "ensure_topics",
]
