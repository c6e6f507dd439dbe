"""The SDK when Kafka goes away: a broker of its own, stopped and restarted for real."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from eddyline.schemas.envelope import decode
from eddyline.schemas.events import InteractionEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import LocalBroker, free_port
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import STREAMS, Topics, ensure_topics, read_all
from eddyline.streams.sdk.producer import EventProducer
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(port=free_port(), controller_port=free_port(), root=tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


def _received(kafka: KafkaSettings) -> dict[str, list[str]]:
    """Event ids per user, in the order the topic holds them."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for value, headers in read_all(kafka, Topics(kafka.namespace).raw("interaction")):
        table = decode(value, headers).table
        assert table is not None
        for user, eid in zip(
            table["user_id"].to_pylist(), table["event_id"].to_pylist(), strict=True
        ):
            by_user[user].append(eid)
    return by_user


def _assert_exactly_once_in_order(kafka: KafkaSettings, sent: list[InteractionEvent]) -> None:
    by_user = _received(kafka)
    received = [e for ids in by_user.values() for e in ids]
    assert len(received) == len(sent) and set(received) == {str(e.event_id) for e in sent}
    for user, ids in by_user.items():
        assert ids == [str(e.event_id) for e in sent if e.user_id == user], user


def test_broker_down_mid_stream_spools_then_delivers_all_in_order(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap, namespace="down")
    ensure_topics(kafka, STREAMS)
    settings = ProducerSettings(
        delivery_timeout_ms=3_000, linger_ms=20, batch_max_events=200, spool_dir=tmp_path / "spool"
    )
    sim = TrafficSimulator(users=40, seed=12)
    sent = list(sim.interactions(6_000))
    with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as producer:
        for e in sent[:2_000]:
            producer.emit(e)
        assert producer.flush(30) == 0
        own_broker.stop()
        started = time.monotonic()
        for e in sent[2_000:4_000]:  # the broker is gone: emit must keep accepting
            producer.emit(e)
        assert time.monotonic() - started < 5, "emit blocked while the broker was down"
        wait_for(lambda: producer.spooled >= 2_000, 30, "the spool to take the events")
        own_broker.start()
        for e in sent[4_000:]:
            producer.emit(e)
        assert producer.flush(60) == 0
    assert producer.delivered == 6_000 and producer.failed == 0
    _assert_exactly_once_in_order(kafka, sent)


CHILD = textwrap.dedent("""
    import sys, time
    from prometheus_client import CollectorRegistry
    from eddyline.simulate import TrafficSimulator
    from eddyline.streams.sdk.producer import EventProducer
    from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings

    bootstrap, spool, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    kafka = KafkaSettings(bootstrap=bootstrap, namespace="killed")
    settings = ProducerSettings(delivery_timeout_ms=2_000, linger_ms=20, spool_dir=spool)
    events = list(TrafficSimulator(users=30, seed=13).interactions(2_000))[start : start + n]
    producer = EventProducer(settings, kafka=kafka, registry=CollectorRegistry())
    for e in events:
        producer.emit(e)
    producer.flush(2.5)
    while producer.spooled < n and producer.delivered < n:
        time.sleep(0.1)
    print("spooled" if producer.spooled else "delivered", producer.spooled, flush=True)
    time.sleep(600)  # wait to be killed
""")


def _child(broker: LocalBroker, spool: Path, start: int, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, broker.bootstrap, str(spool), str(start), str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_process_killed_with_a_full_spool_delivers_after_restart(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap, namespace="killed")
    ensure_topics(kafka, STREAMS)
    spool = tmp_path / "spool"
    first = _child(own_broker, spool, 0, 500)  # learns the partition count while Kafka is up
    assert first.stdout is not None and first.stdout.readline().startswith("delivered")
    first.kill()
    first.wait()
    own_broker.stop()
    second = _child(own_broker, spool, 500, 1_500)
    assert second.stdout is not None and second.stdout.readline().split() == ["spooled", "1500"]
    second.kill()  # SIGKILL: no flush, no atexit
    second.wait()
    own_broker.start()
    settings = ProducerSettings(spool_dir=spool)
    with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as restarted:
        assert restarted.flush(60) == 0  # nothing emitted: it sends what the dead one left
    assert restarted.delivered == 1_500
    _assert_exactly_once_in_order(
        kafka, list(TrafficSimulator(users=30, seed=13).interactions(2_000))
    )


class _FatallyFailedClient:
    """librdkafka's producer after a fatal (idempotence) error, which no broker can be made
    to raise on demand: what it holds fails with ``_FATAL``, and so does every later
    ``produce``. Only a new client can send again."""

    def __init__(self) -> None:
        from confluent_kafka import KafkaError

        self.error = KafkaError(KafkaError._FATAL, "test: fatal idempotence error", fatal=True)
        self.held: list[Any] = []
        self.accepted = 0
        self.refused = 0

    def produce(self, *args: object, on_delivery: Any, **kwargs: object) -> None:
        from confluent_kafka import KafkaException

        if self.accepted >= 3:  # took a few, then the fatal error struck
            self.refused += 1
            raise KafkaException(self.error)
        self.accepted += 1
        self.held.append(on_delivery)

    def poll(self, timeout: float) -> int:
        if not self.refused:  # in flight until the error strikes
            return 0
        served, self.held = self.held, []
        for report in served:
            report(self.error, None)
        return len(served)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def purge(self, **kwargs: object) -> None:
        return None

    def list_topics(self, *args: object, **kwargs: object) -> None:
        return None

    def __len__(self) -> int:
        return len(self.held)


def test_after_a_fatal_client_error_a_new_client_delivers_every_event_once_in_order(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """The envelopes the failed client held, and those refused by it, are spooled (not
    counted as failed and dropped), and a new librdkafka client sends them."""
    registry = CollectorRegistry()
    settings = ProducerSettings(linger_ms=20, batch_max_events=100, spool_dir=tmp_path / "spool")
    sent = list(TrafficSimulator(users=30, seed=14).interactions(3_000))
    with EventProducer(settings, kafka=kafka, registry=registry) as producer:
        for e in sent[:1_000]:
            producer.emit(e)
        assert producer.flush(30) == 0
        failed = producer._delivery._producer = _FatallyFailedClient()  # type: ignore[assignment]
        for e in sent[1_000:2_000]:
            producer.emit(e)
        wait_for(
            lambda: producer._delivery._producer is not failed, 30, "the client to be replaced"
        )
        for e in sent[2_000:]:
            producer.emit(e)
        assert producer.flush(60) == 0
    assert failed.accepted == 3 and failed.refused >= 1  # both ways of failing happened
    assert producer.delivered == 3_000 and producer.failed == 0
    assert registry.get_sample_value("eddyline_sdk_client_restarts_total") == 1
    _assert_exactly_once_in_order(kafka, sent)
