"""The intake's own state in Kafka: the budget ledgers and the noise secrets.

Each lives in a compacted topic whose partition is the raw partition it belongs to, so both
follow a raw partition to its next owner (after a crash or a rebalance), which reads that
partition of both topics before it consumes (``StateTopics.load``):

* ``<app id>-budget-changelog``: one value per (stream, raw partition, shard of 16 by
  pseudonym), the shard's users in columns (``streams.worker.budget_state``). ``eddyline
  budget show`` reads it.
* ``<app id>-noise-changelog``: one secret per (stream, raw partition, window)
  (``privacy.noise``), read by workers only; rolled and cleaned within hours, so a destroyed
  secret (a tombstone) is soon gone from disk.

Keys and values are JSON (the format of the Faust tables these topics were before the
intake took the raw topics over, so a worker upgraded in place keeps its ledgers). Writes go
through the intake's producer: a save flushes every output first (a saved offset promises
the user's events up to it are delivered, so a replay can skip them), and a new noise secret
is flushed before any noise drawn from it leaves the worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # exported at runtime

from eddyline.schemas.errors import BrokerError
from eddyline.streams.kafka.clients import metadata
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import admin_client, read_latest, replication_for
from eddyline.streams.worker.budget_state import app_id, changelog_topic

# Compacted, rolled and cleaned within hours, so a destroyed secret is soon gone from disk.
NOISE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(3600 * 1000),
    "delete.retention.ms": str(3600 * 1000),
    "min.cleanable.dirty.ratio": "0.01",
}

#: (topic, key, value or None for a tombstone, partition): how the state is written.
Produce = Callable[[str, bytes, bytes | None, int], None]


def noise_topic(ws: WorkerSettings, ks: KafkaSettings) -> str:
    return f"{app_id(ws, ks)}-noise-changelog"


class StateTopics:
    """The two state topics of one worker group (module docstring)."""

    def __init__(self, ws: WorkerSettings, ks: KafkaSettings, produce: Produce) -> None:
        self.ks, self._produce = ks, produce
        self.budget, self.noise = changelog_topic(ws, ks), noise_topic(ws, ks)

    def ensure(self, timeout: float = 30.0) -> None:
        """Create the topics that are missing (compacted; as many partitions as the raw
        topics, as many copies as the event topics)."""
        admin, errors = admin_client(self.ks)
        meta = metadata(admin, errors, self.ks.bootstrap, timeout)
        copies = replication_for(self.ks, len(meta.brokers))
        extra = {"min.insync.replicas": "2"} if copies >= 3 else {}
        wanted = [
            NewTopic(name, self.ks.partitions, copies, config={**config, **extra})
            for name, config in (
                (self.budget, {"cleanup.policy": "compact"}),
                (self.noise, NOISE_TOPIC_CONFIG),
            )
            if name not in meta.topics
        ]
        for name, future in admin.create_topics(wanted).items() if wanted else ():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"cannot create topic {name!r}: {exc}") from exc

    def load(self, partitions: Iterable[int]) -> tuple[list[tuple[str, Any]], dict[str, str]]:
        """The saved ledger shards (key, columns) and noise secrets (name -> hex) of these
        raw partitions, read to the end of both topics."""
        wanted = sorted(set(partitions))
        budget = [
            (json.loads(k), json.loads(v))
            for k, v in read_latest(self.ks, self.budget, partitions=wanted).items()
        ]
        noise = {
            json.loads(k): json.loads(v)
            for k, v in read_latest(self.ks, self.noise, partitions=wanted).items()
        }
        return [(k, v) for k, v in budget if v], noise

    def put_budget(self, key: str, columns: dict[str, Any] | None, partition: int) -> None:
        value = None if not columns else json.dumps(columns, separators=(",", ":")).encode()
        self._produce(self.budget, json.dumps(key).encode(), value, partition)

    def put_noise(self, name: str, secret_hex: str | None, partition: int) -> None:
        value = None if secret_hex is None else json.dumps(secret_hex).encode()
        self._produce(self.noise, json.dumps(name).encode(), value, partition)
