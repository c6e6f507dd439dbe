"""The offset guard's questions, answered by the real broker (streams/continuity.py)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.worker.continuity import KafkaProbe, OffsetGuard
from tests.factories import TP, Message
from tests.factories import FaustApp as App

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(kafka: KafkaSettings) -> str:
    """A one-partition topic written by a transactional producer: two transactions of five
    messages, so offsets 5 and 11 hold commit markers, not messages."""
    name = f"{kafka.namespace}.continuity"
    admin = AdminClient(kafka.librdkafka())
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    producer = Producer(kafka.librdkafka({"transactional.id": f"{name}-tx"}))
    producer.init_transactions(30)
    for batch in range(2):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(name, value=f"{batch}-{i}".encode())
        producer.commit_transaction(30)
    return name


def test_the_probe_finds_messages_and_the_groups_committed_offset(kafka, topic):
    group = f"{kafka.namespace}.group"
    probe = KafkaProbe(kafka, group)
    try:
        assert probe.committed(topic, 0) is None  # the group never committed
        committer = Consumer(kafka.librdkafka({"group.id": group}))
        committer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
        committer.close()
        assert probe.committed(topic, 0) == 7
        assert probe.first_at_or_after(topic, 0, 0) == 0
        assert probe.first_at_or_after(topic, 0, 5) == 6  # 5 is a commit marker
        assert probe.first_at_or_after(topic, 0, 11) is None  # a marker, then the end
        assert probe.log_start(topic, 0) == 0
    finally:
        probe.close()


def test_a_gap_of_markers_passes_and_a_gap_of_messages_is_re_read(kafka, topic):
    probe, app = KafkaProbe(kafka, f"{kafka.namespace}.group"), App()
    guard = OffsetGuard(app, probe)
    tp = TP(topic, 0)

    async def admitted(offsets: list[int]) -> list[int]:
        return [o for o in offsets if await guard.admit(Message(tp, o))]

    try:
        # 0..4, the marker at 5, 6..10: nothing to re-read
        assert asyncio.run(admitted([0, 1, 2, 3, 4, 6, 7])) == [0, 1, 2, 3, 4, 6, 7]
        assert app.consumer.seeks == []
        # 8 and 9 skipped by a consumer: sought back to 8
        assert asyncio.run(admitted([10, 8, 9, 10])) == [8, 9, 10]
        assert app.consumer.seeks == [(tp, 8)]
    finally:
        probe.close()
