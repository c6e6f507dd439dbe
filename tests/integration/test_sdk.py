"""The SDK against the real broker."""

from __future__ import annotations

from collections import defaultdict

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from eddyline.schemas.envelope import decode
from eddyline.schemas.errors import TopicNotFoundError
from eddyline.schemas.events import InteractionEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import Topics, read_all
from eddyline.streams.sdk.partitioner import partition_for
from eddyline.streams.sdk.producer import EventProducer

pytestmark = pytest.mark.integration


def test_our_partitioner_agrees_with_librdkafkas_java_compatible_one(kafka: KafkaSettings) -> None:
    topic = Topics(kafka.namespace).raw("feedback")
    producer = Producer(kafka.librdkafka({"partitioner": "murmur2_random"}))
    got: dict[str, int] = {}
    keys = [f"user-{i}" for i in range(300)]
    for key in keys:
        producer.produce(
            topic,
            key=key,
            value=b"x",
            on_delivery=lambda err, msg: got.__setitem__(msg.key().decode(), msg.partition()),
        )
    producer.flush(30)
    assert got == {k: partition_for(k.encode(), 3) for k in keys}


def test_every_emitted_event_arrives_exactly_once_in_per_user_order(kafka: KafkaSettings) -> None:
    sim = TrafficSimulator(users=50, seed=5)
    settings = ProducerSettings(batch_max_events=300, linger_ms=20)
    sent = list(sim.interactions(6_000))
    with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as producer:
        for event in sent:
            producer.emit(event)
    assert producer.delivered == 6_000 and producer.failed == 0
    by_user: dict[str, list[str]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    messages = read_all(kafka, Topics(kafka.namespace).raw("interaction"))
    assert 6_000 / 300 <= len(messages) < 6_000 / 10  # batched, not one message per event
    for value, headers in messages:
        table = decode(value, headers).table
        assert table is not None
        for user, eid in zip(
            table["user_id"].to_pylist(), table["event_id"].to_pylist(), strict=True
        ):
            by_user[user].append(eid)
            partitions[user].add(partition_for(user.encode(), 3))
    received = [eid for ids in by_user.values() for eid in ids]
    assert sorted(received) == sorted(str(e.event_id) for e in sent)  # all, none twice
    for user, ids in by_user.items():  # read per partition in offset order == emit order
        expected = [str(e.event_id) for e in sent if e.user_id == user]
        assert ids == expected
        assert len(partitions[user]) == 1


def test_emitting_to_a_missing_topic_says_how_to_create_it(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, namespace="never-created")
    with (
        EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer,
        pytest.raises(TopicNotFoundError, match="eddyline topics create"),
    ):
        producer.emit(
            InteractionEvent(
                user_id="u",
                app_id="a",
                item_id="i",
                item_category="n",
                action="view",
                dwell_time_s=1.0,
            )
        )


def test_async_producer_delivers_from_an_event_loop(kafka: KafkaSettings) -> None:
    import asyncio

    from eddyline.streams.sdk.aio import AsyncEventProducer

    sent = list(TrafficSimulator(users=10, seed=6).interactions(1_000))

    async def main() -> int:
        async with AsyncEventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
            for event in sent:
                await producer.emit(event)
            assert await producer.flush(30) == 0
            return producer.delivered

    assert asyncio.run(main()) == 1_000
    ids = [
        eid
        for v, h in read_all(kafka, Topics(kafka.namespace).raw("interaction"))
        for eid in decode(v, h).table["event_id"].to_pylist()
    ]
    assert sorted(ids) == sorted(str(e.event_id) for e in sent)


def test_delivery_reports_cover_every_event(kafka: KafkaSettings) -> None:
    reports = []
    with EventProducer(kafka=kafka, registry=CollectorRegistry(), on_delivery=reports.append) as p:
        for event in TrafficSimulator(users=10, seed=9).interactions(700):
            p.emit(event)
    assert sum(r.count for r in reports if r.error is None) == 700
    assert all(r.stream == "interaction" and r.latency_s >= 0 for r in reports)


def test_envelopes_split_to_fit_batch_max_bytes(kafka: KafkaSettings) -> None:
    settings = ProducerSettings(batch_max_events=5_000, batch_max_bytes=20_000, linger_ms=1_000)
    with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as p:
        for event in TrafficSimulator(users=1, seed=2).interactions(3_000):
            p.emit(event)
    sizes = [len(v) for v, _ in read_all(kafka, Topics(kafka.namespace).raw("interaction"))]
    assert (
        sum(
            int(h["eddyline-count"])
            for _, h in read_all(kafka, Topics(kafka.namespace).raw("interaction"))
        )
        == 3_000
    )
    assert max(sizes) <= 20_000 and len(sizes) > 5


def test_emit_from_many_threads_delivers_each_event_once(kafka: KafkaSettings) -> None:
    import threading

    sims = [list(TrafficSimulator(users=25, seed=40 + t).interactions(2_000)) for t in range(4)]
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        threads = [
            threading.Thread(target=lambda evs=evs: [producer.emit(e) for e in evs]) for evs in sims
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ids = [
        eid
        for v, h in read_all(kafka, Topics(kafka.namespace).raw("interaction"))
        for eid in decode(v, h).table["event_id"].to_pylist()
    ]
    assert len(ids) == 8_000 and set(ids) == {str(e.event_id) for evs in sims for e in evs}


def test_emit_many_beside_emit_delivers_each_row_once_in_per_user_order_and_partition(
    kafka: KafkaSettings,
) -> None:
    import polars as pl
    import pyarrow as pa

    from eddyline.streams.kafka.topics import _scan

    sent = list(TrafficSimulator(users=40, seed=8).interactions(9_000))
    columns = [
        "event_id",
        "user_id",
        "occurred_at",
        "app_id",
        "item_id",
        "item_category",
        "action",
        "dwell_time_s",
        "position",
    ]

    def frame(events: list[InteractionEvent]) -> dict[str, list]:
        rows = [e.model_dump() for e in events]
        return {c: [str(r[c]) if c == "event_id" else r[c] for r in rows] for c in columns}

    settings = ProducerSettings(batch_max_events=700, linger_ms=20)
    with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as producer:
        # three ways in, interleaved for the same users: a polars frame, single events,
        # an Arrow table
        assert producer.emit_many(InteractionEvent, pl.DataFrame(frame(sent[:3_000]))) == 3_000
        for event in sent[3_000:6_000]:
            producer.emit(event)
        assert producer.emit_many(InteractionEvent, pa.table(frame(sent[6_000:]))) == 3_000
    assert producer.delivered == 9_000 and producer.failed == 0
    by_user: dict[str, list[str]] = defaultdict(list)
    for msg in _scan(kafka, Topics(kafka.namespace).raw("interaction"), 10.0):
        headers = {k: v for k, v in msg.headers()}
        table = decode(msg.value(), headers).table
        assert table is not None and table.num_rows <= 700
        for user, eid in zip(
            table["user_id"].to_pylist(), table["event_id"].to_pylist(), strict=True
        ):
            assert partition_for(user.encode(), 3) == msg.partition()  # Kafka's partitioner
            by_user[user].append(eid)
    expected: dict[str, list[str]] = defaultdict(list)
    for e in sent:
        expected[e.user_id].append(str(e.event_id))
    assert by_user == expected  # every row once, each user's in the order emitted
