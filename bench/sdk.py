"""SDK throughput: events/s from constructing the event to Kafka's acknowledgement.

Compares, in one run against the same broker, the eddyline SDK (typed event, validated,
batched into Arrow envelopes, idempotent acks=all) with what an app would write by hand:
a plain confluent-kafka producer sending one JSON message per event built from a dict.
A third figure: the SDK's columnar path, ``emit_many`` (the same events built as columns,
10,000 rows a call, validated column by column). Rounds alternate; figures are medians
(the machine is shared and noisy).

    .venv/bin/python bench/sdk.py [--events 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import fresh_namespace, kafka_for_bench

from eddyline.schemas.events import InteractionEvent
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import Topics, ensure_topics
from eddyline.streams.sdk.producer import EventProducer

CATEGORIES = ("news", "sports", "music", "tech")


def run_sdk(kafka: KafkaSettings, n: int, spool: str) -> float:
    settings = ProducerSettings(spool_dir=Path(spool))
    producer = EventProducer(settings, kafka=kafka, registry=CollectorRegistry())
    producer.emit(
        InteractionEvent(
            user_id="warm",
            app_id="bench",
            item_id="sku-0",
            item_category="news",
            action="view",
            dwell_time_s=1.0,
        )
    )
    producer.flush()  # connect and learn partitions outside the timed part
    start = time.perf_counter()
    for i in range(n):
        producer.emit(
            InteractionEvent(
                user_id=f"user-{i % 5000}",
                app_id="bench",
                item_id=f"sku-{i % 997}",
                item_category=CATEGORIES[i & 3],
                action="click",
                dwell_time_s=12.5,
                position=i % 20,
            )
        )
    assert producer.flush(120) == 0
    elapsed = time.perf_counter() - start
    producer.close()
    return n / elapsed


def run_sdk_columns(kafka: KafkaSettings, n: int, spool: str, chunk: int = 10_000) -> float:
    settings = ProducerSettings(spool_dir=Path(spool))
    producer = EventProducer(settings, kafka=kafka, registry=CollectorRegistry())
    producer.emit_many(InteractionEvent, columns(range(1)))
    producer.flush()  # connect and learn partitions outside the timed part
    start = time.perf_counter()
    for lo in range(0, n, chunk):
        producer.emit_many(InteractionEvent, columns(range(lo, min(n, lo + chunk))))
    assert producer.flush(120) == 0
    elapsed = time.perf_counter() - start
    producer.close()
    return n / elapsed


def columns(idx: range) -> dict[str, list[object]]:
    """The same events as run_sdk's, built as columns (as an app holding a frame would)."""
    k = len(idx)
    return {
        "user_id": [f"user-{i % 5000}" for i in idx],
        "app_id": ["bench"] * k,
        "item_id": [f"sku-{i % 997}" for i in idx],
        "item_category": [CATEGORIES[i & 3] for i in idx],
        "action": ["click"] * k,
        "dwell_time_s": [12.5] * k,
        "position": [i % 20 for i in idx],
    }


def run_plain(kafka: KafkaSettings, n: int) -> float:
    topic = Topics(kafka.namespace).raw("interaction")
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    producer.produce(topic, b"{}")
    producer.flush()
    start = time.perf_counter()
    for i in range(n):
        event = {
            "event_id": str(uuid.uuid4()),
            "user_id": f"user-{i % 5000}",
            "occurred_at": datetime.now(UTC).isoformat(),
            "app_id": "bench",
            "item_id": f"sku-{i % 997}",
            "item_category": CATEGORIES[i & 3],
            "action": "click",
            "dwell_time_s": 12.5,
            "position": i % 20,
        }
        while True:
            try:
                producer.produce(topic, json.dumps(event).encode(), key=event["user_id"])
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with (
        kafka_for_bench() as bootstrap,
        tempfile.TemporaryDirectory() as spool,
        fresh_namespace(bootstrap, "sdk") as namespace,
    ):
        kafka = KafkaSettings(bootstrap=bootstrap, namespace=namespace)
        ensure_topics(kafka, ["interaction"])
        sdk, plain, cols = [], [], []
        for r in range(args.rounds):
            sdk.append(run_sdk(kafka, args.events, spool))
            plain.append(run_plain(kafka, args.events))
            cols.append(run_sdk_columns(kafka, args.events, spool))
            print(
                f"round {r + 1}: sdk {sdk[-1]:,.0f}/s  plain {plain[-1]:,.0f}/s  "
                f"sdk emit_many {cols[-1]:,.0f}/s",
                file=sys.stderr,
            )
    med_sdk, med_plain = statistics.median(sdk), statistics.median(plain)
    med_cols = statistics.median(cols)
    print(
        json.dumps(
            {
                "bench": "sdk",
                "events": args.events,
                "rounds": args.rounds,
                "events_per_s": round(med_sdk),
                "plain_events_per_s": round(med_plain),
                "ratio_vs_plain": round(med_sdk / med_plain, 3),
                "columnar_events_per_s": round(med_cols),
                "columnar_ratio_vs_plain": round(med_cols / med_plain, 3),
                "target_events_per_s": 250_000,
                "target_ratio_vs_plain": 0.8,
            }
        )
    )


if __name__ == "__main__":
    main()
