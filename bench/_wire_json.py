"""One JSON event per message, as a service or Kafka Connect sends them: the load for
``bench/pipeline.py --wire json`` (and /tmp scripts that time the intake)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
from confluent_kafka import Producer

from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.settings import KafkaSettings

JSON_HEADERS = [("content-type", b"application/json"), ("eddyline-schema", b"interaction:1")]


def json_messages(sim: TrafficSimulator, n: int, at: datetime | None) -> list[bytes]:
    """``n`` interactions as single-event JSON values (the wire's JSON form, with event
    ids), made column-wise (~5 µs an event) so that the sender does not starve the worker."""
    hexes = np.random.default_rng().bytes(16 * n).hex()  # random (v4) ids, from the OS
    h = pl.Series("h", [hexes[i : i + 32] for i in range(0, 32 * n, 32)]).str
    parts = [(0, 8), "-", (8, 4), "-4", (13, 3), "-a", (17, 3), "-", (20, 12)]
    ids = pl.concat_str([pl.lit(p) if isinstance(p, str) else h.slice(*p) for p in parts])
    frame = pl.from_arrow(sim.interaction_columns(n, occurred_at=at))
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(pl.select(ids.alias("event_id")).to_series())
    return frame.write_ndjson().encode().splitlines()


def fill_json(kafka: KafkaSettings, n: int, seed: int, rate: float | None, _: str = "") -> None:
    """``n`` events as one JSON event per message from a plain confluent-kafka producer
    keyed by user (as another service or Kafka Connect would send them)."""
    sim = TrafficSimulator(users=20_000, seed=seed)
    producer = Producer(kafka.librdkafka({"linger.ms": 20, "enable.idempotence": True}))
    topic = f"{kafka.namespace}.events.interaction"
    for size, at in paced(n, rate, 20_000):
        for value in json_messages(sim, size, at):
            key = value[12 : value.index(b'"', 12)]  # {"user_id":"<key>"
            produce(producer, topic, value, key, JSON_HEADERS)
        producer.poll(0)
    assert producer.flush(300) == 0


def paced(n: int, rate: float | None, step: int) -> Iterator[tuple[int, datetime | None]]:
    """Chunks of ``n`` events to send: (size, the time to stamp them with). Paced at
    ``rate`` events/s (a chunk every 20 ms, stamped when it is due); unpaced: chunks of
    ``step``, as fast as they are taken, unstamped."""
    step = max(1, int(rate) // 50) if rate else step
    start = time.monotonic()
    for done in range(0, n, step):
        if rate:
            time.sleep(max(0.0, start + done / rate - time.monotonic()))
        yield min(step, n - done), datetime.now(UTC) if rate else None


def produce(producer: Producer, topic: str, value: bytes, key: bytes, headers: Any = None) -> None:
    """``producer.produce``, waiting while the client's queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)
