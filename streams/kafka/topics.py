"""Topic names and their creation.

``events.<stream>`` (raw), ``events.<stream>.private`` (past the privacy boundary),
``events.deadletter``, ``signals.drift``; each behind the optional namespace prefix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # exported at runtime, missing from the stubs' __all__

from eddyline.schemas.errors import BrokerError
from eddyline.streams.kafka.clients import ClientErrors, metadata
from eddyline.streams.kafka.settings import KafkaSettings

# The built-in event streams: one raw and one private topic, and one Delta table, each
# (a worker's are EDDYLINE_STREAMS: schemas/streams.py).
STREAMS = ["interaction", "feedback"]

# Raw events hold personal data: keep them only as long as a worker could be behind.
RAW_RETENTION_MS = 24 * 3600 * 1000
# Retention deletes whole segments, so a segment rolls hourly: a raw message is gone within
# an hour past its retention (Kafka's default segment lives a week).
RAW_SEGMENT_MS = 3600 * 1000
RAW_TOPIC_CONFIG = {
    "retention.ms": str(RAW_RETENTION_MS),
    "segment.ms": str(RAW_SEGMENT_MS),
    # The broker stamps each raw message with its append time: the noise secrets' windows
    # follow it (privacy/noise.py), and no sender chooses it.
    "message.timestamp.type": "LogAppendTime",
}


def noise_keep_windows(window_s: int) -> int:
    """How many windows a noise secret outlives its own: a replay reaches back as far as
    raw messages live (retention, plus the segment they wait in), plus one window."""
    return math.ceil((RAW_RETENTION_MS + RAW_SEGMENT_MS) / 1000 / window_s) + 1


@dataclass(frozen=True)
class Topics:
    """Every topic name eddyline uses, for one namespace."""

    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    def raw(self, stream: str) -> str:
        return self._name(f"events.{stream}")

    def private(self, stream: str) -> str:
        return self._name(f"events.{stream}.private")

    def learn(self, stream: str) -> str:
        """The private envelopes of ``stream`` again, in ONE partition: the group gives it
        to one worker, which alone learns the stream's models (docs/architecture.md,
        "Scale-out")."""
        return self._name(f"events.{stream}.learn")

    @property
    def deadletter(self) -> str:
        return self._name("events.deadletter")

    @property
    def drift(self) -> str:
        return self._name("signals.drift")

    @property
    def models(self) -> str:
        return self._name("signals.models")

    @property
    def costs(self) -> str:
        """Each worker's CPU per stage, sampled every minute (the ``worker_costs`` table)."""
        return self._name("signals.costs")

    @property
    def drift_deadletter(self) -> str:
        """Drift events a subscriber's handler kept failing on (with the error)."""
        return self._name("signals.drift.deadletter")

    @property
    def suppressed(self) -> str:
        """Subjects forgotten or whose consent was withdrawn (compacted; every worker reads
        all of it): what the stages withhold (privacy/governance.py)."""
        return self._name("governance.suppressed")

    @property
    def requests(self) -> str:
        """Governance requests a backend sends (forget, withdraw consent); a worker acts."""
        return self._name("governance.requests")

    def all(self, streams: list[str]) -> list[str]:
        names = [self.raw(s) for s in streams] + [self.private(s) for s in streams]
        names += [self.learn(s) for s in streams]
        signals = [self.deadletter, self.drift, self.models, self.costs, self.drift_deadletter]
        return [*names, *signals, self.suppressed, self.requests]


def ensure_topics(settings: KafkaSettings, streams: list[str], timeout: float = 30.0) -> list[str]:
    """Create whichever eddyline topics are missing; return the names created.

    Replication: ``settings.replication``, else as many copies as the cluster has brokers,
    up to 3 (with ``min.insync.replicas`` 2 from 3 copies: a write survives one broker)."""
    topics = Topics(settings.namespace)
    admin, errors = admin_client(settings)
    meta = metadata(admin, errors, settings.bootstrap, timeout)
    existing, copies = set(meta.topics), replication_for(settings, len(meta.brokers))
    wanted = []
    single = {topics.learn(s) for s in streams}  # one owner each: one partition
    for name in topics.all(streams):
        if name in existing:
            continue
        raw_ids = [*map(topics.raw, streams), topics.requests]  # personal data: short-lived
        config = dict(RAW_TOPIC_CONFIG) if name in raw_ids else {}
        if name == topics.suppressed:
            config["cleanup.policy"] = "compact"  # the latest entry of each subject
        if copies >= 3:
            config["min.insync.replicas"] = "2"
        partitions = 1 if name in single else settings.partitions
        wanted.append(NewTopic(name, partitions, copies, config=config))
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"cannot create topic {name!r}: {exc}") from exc
    _wait_until_ready(admin, {t.topic: t.num_partitions for t in wanted}, timeout)
    return [t.topic for t in wanted]


def admin_client(settings: KafkaSettings) -> tuple[AdminClient, ClientErrors]:
    """An admin client and the errors it met that no retry can fix."""
    errors = ClientErrors()
    return AdminClient(settings.librdkafka({"error_cb": errors})), errors


def replication_for(settings: KafkaSettings, brokers: int) -> int:
    """How many copies of each partition: the setting, else min(brokers, 3)."""
    return settings.replication or min(max(brokers, 1), 3)


def cluster_replication(settings: KafkaSettings, timeout: float = 30.0) -> KafkaSettings:
    """``settings`` with ``replication`` chosen from the cluster if it was not set (what
    the worker passes to Faust for the topics it creates itself)."""
    if settings.replication:
        return settings
    admin, errors = admin_client(settings)
    brokers = len(metadata(admin, errors, settings.bootstrap, timeout).brokers)
    return settings.model_copy(update={"replication": replication_for(settings, brokers)})


def _wait_until_ready(admin: AdminClient, names: dict[str, int], timeout: float) -> None:
    """Until the broker's metadata shows every topic with a leader for each partition.

    The controller acknowledges a creation before the broker serves the topic: a producer
    asking at once can be told it does not exist (a broker loading many partitions)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            meta = admin.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise BrokerError(f"cannot reach Kafka: {exc}") from exc
        pending = [
            name
            for name in names
            if name not in meta
            or meta[name].error is not None
            or len(meta[name].partitions) < names[name]
            or any(p.leader < 0 for p in meta[name].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topics created but not served after {timeout:.0f}s: {pending}")
        time.sleep(0.1)


def topic_ids(settings: KafkaSettings, names: list[str], timeout: float = 10.0) -> dict[str, str]:
    """Each existing topic's id (its incarnation: a topic deleted and created again under the
    same name has a new id); topics that do not exist are left out."""
    from confluent_kafka import TopicCollection

    admin, _ = admin_client(settings)
    futures = admin.describe_topics(TopicCollection(list(names)), request_timeout=timeout)
    out = {}
    for name, future in futures.items():
        try:
            out[name] = str(future.result(timeout).topic_id)
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" not in str(exc):
                raise BrokerError(f"cannot describe topic {name!r}: {exc}") from exc
    return out


def _scan(
    settings: KafkaSettings, topic: str, timeout: float, partitions: Iterable[int] | None = None
) -> Iterator[Any]:
    """Every message now in ``topic`` (confluent-kafka ``Message``s), from the start to the
    high mark of each partition (of ``partitions`` only, if given)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        settings.librdkafka({"group.id": "eddyline-read-all", "enable.auto.commit": False})
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            return
        wanted = set(meta.partitions) if partitions is None else set(partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in meta.partitions
            if p in wanted
        }
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            msg = consumer.poll(timeout)
            if msg is None:
                break
            if msg.error() is not None:
                continue
            yield msg
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends[partition]:
                pending.discard(partition)
    finally:
        consumer.close()


def read_all(
    settings: KafkaSettings, topic: str, timeout: float = 10.0
) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every message now in ``topic`` (value, headers), read from the start to the high mark."""
    out: list[tuple[bytes, dict[str, bytes]]] = []
    for msg in _scan(settings, topic, timeout):
        pairs = msg.headers() or []
        items = pairs.items() if isinstance(pairs, dict) else pairs
        headers = {k: v.encode() if isinstance(v, str) else (v or b"") for k, v in items}
        out.append((msg.value() or b"", headers))
    return out


def read_latest(
    settings: KafkaSettings,
    topic: str,
    timeout: float = 10.0,
    partitions: Iterable[int] | None = None,
) -> dict[bytes, bytes]:
    """The latest value of each key in a compacted (changelog) topic (in ``partitions``
    only, if given); deleted keys left out."""
    out: dict[bytes, bytes] = {}
    for msg in _scan(settings, topic, timeout, partitions):
        key, value = msg.key() or b"", msg.value()
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
