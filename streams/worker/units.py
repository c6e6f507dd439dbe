"""How the intake cuts a fetch into units for the privacy stage, and where it starts.

A fetch is cut per partition, in offset order (:func:`plan`): an Arrow envelope (or any
message that is not JSON) alone, and runs of consecutive single-event JSON messages of one
schema and one noise window, each privatised as one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from eddyline.privacy.noise import NoiseKeys
from eddyline.schemas.envelope import H_CONTENT_TYPE, H_SCHEMA, JSON
from eddyline.schemas.json_batch import JsonRun
from eddyline.schemas.source import SourceRef
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import admin_client

log = logging.getLogger("eddyline.intake")


@dataclass(frozen=True)
class Unit:
    """What the privacy stage takes at once: one message, or a run of JSON messages."""

    messages: list[Any]  # confluent-kafka Messages of one partition, in offset order
    json: bool


def content_of(message: Any) -> tuple[str, str | None]:
    """(content type, schema header) of a raw message, as the envelope codec decides it: a
    message without a content type is JSON when its value starts with ``{``."""
    content, schema = "", None
    for key, value in message.headers() or ():
        name = key.lower()
        if name == H_CONTENT_TYPE:
            content = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        elif name == H_SCHEMA:
            schema = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if not content:
        value = message.value()
        content = JSON if value is not None and value[:1] == b"{" else ""
    return content, schema


def plan(messages: Sequence[Any], window_of: Callable[[float], int], max_run: int) -> list[Unit]:
    """Cut one partition's messages (offset order) into units: a JSON message joins the run
    before it when both name the same schema and fall in the same noise window, up to
    ``max_run``; anything else (an Arrow envelope, a message no codec reads) stands alone,
    so the stage sees every message in order.

    One Python step per message (the content type is in its headers): ~0.5 µs, against the
    ~60 µs a message Faust costs (bench/RESULTS.md, ``--wire json``)."""
    units: list[Unit] = []
    key: tuple[str | None, int] | None = None
    for message in messages:
        content, schema = content_of(message)
        if content != JSON:
            units.append(Unit([message], json=False))
            key = None
            continue
        here = (schema, window_of(message.timestamp()[1] / 1000))
        if key == here and len(units[-1].messages) < max_run:
            units[-1].messages.append(message)
        else:
            units.append(Unit([message], json=True))
            key = here
    return units


def json_run(unit: Unit, src: SourceRef) -> JsonRun:
    """A run's messages as ``schemas.json_batch`` reads them (``src``: the run's last)."""
    n, first = len(unit.messages), unit.messages[0]
    return JsonRun(
        [m.value() for m in unit.messages],
        np.fromiter((m.offset() for m in unit.messages), np.int64, n),
        np.fromiter((m.timestamp()[1] / 1000 for m in unit.messages), np.float64, n),
        content_of(first)[1],
        SourceRef(src.topic, src.partition, src.offset, src.epoch, first.offset()),
    )


def window_of(noise: NoiseKeys, now: float, timestamp: float) -> int:
    """The noise window of a message with this Kafka timestamp (``privacy.noise``)."""
    return noise.window_for(timestamp, now)


def faust_offsets(
    ks: KafkaSettings, group: str, partitions: list[TopicPartition]
) -> dict[tuple[str, int], int]:
    """The offsets the Faust group ``group`` committed for these partitions (a worker
    upgraded from the privatize agent continues where that agent stopped)."""
    admin, _ = admin_client(ks)
    request = ConsumerGroupTopicPartitions(group, partitions)
    try:
        result = admin.list_consumer_group_offsets([request])[request.group_id].result(30)
    except Exception as exc:  # no such group: a new deployment
        log.debug("no offsets of the Faust group: %r", exc)
        return {}
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}
