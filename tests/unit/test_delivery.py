"""The SDK's delivery engine against a scripted stand-in for librdkafka's producer: every
envelope is acknowledged, spooled in order, resent, or reported refused; never lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry

from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.sdk.delivery import Delivery
from eddyline.streams.sdk.metrics import ProducerMetrics
from eddyline.streams.sdk.outgoing import DeliveryReport, Outgoing


class FakeClient:
    """librdkafka's Producer, as far as the engine uses it. ``answer(env_value)`` decides
    each produced envelope's report: None (acknowledged) or a KafkaError."""

    def __init__(self, answer: Callable[[bytes], KafkaError | None]) -> None:
        self.answer = answer
        self.held: list[tuple[bytes, Any]] = []
        self.sent: list[tuple[int, bytes]] = []  # (partition, value) acknowledged, in order

    def produce(
        self, topic: str, *, value: bytes, partition: int, headers: Any, on_delivery: Any
    ) -> None:
        self.held.append((value, (partition, on_delivery)))

    def poll(self, timeout: float) -> int:
        served, self.held = self.held, []
        for value, (partition, report) in served:
            err = self.answer(value)
            if err is None:
                self.sent.append((partition, value))
            report(err, None)
        if not served:
            time.sleep(min(timeout, 0.01))
        return len(served)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def purge(self, **kwargs: object) -> None:
        for value, (_, report) in self.held:
            report(KafkaError(KafkaError._PURGE_QUEUE), None)
        self.held = []

    def list_topics(self, *args: object, **kwargs: object) -> None:
        return None

    def __len__(self) -> int:
        return len(self.held)


def _engine(tmp_path: Path, factory: Callable[[dict[str, Any]], Any]) -> tuple[Delivery, list]:
    reports: list[DeliveryReport] = []
    settings = ProducerSettings(spool_dir=tmp_path / "spool", linger_ms=10)
    engine = Delivery(
        settings,
        KafkaSettings(bootstrap="fake:9092"),
        ProducerMetrics.on(CollectorRegistry()),
        threading.RLock(),
        on_tick=lambda now: None,
        on_delivery=reports.append,
        client_factory=factory,
    )
    return engine, reports


def _send(engine: Delivery, n: int, partition: int = 0) -> list[bytes]:
    values = []
    engine.client()
    for _ in range(n):
        seq = engine.next_seq()
        value = f"envelope-{seq}".encode()
        headers = [("eddyline-schema", b"interaction:1"), ("eddyline-count", b"10")]
        env = Outgoing(seq, "interaction", "t", partition, value, headers, 10, time.monotonic())
        with engine._lock:
            engine.route(env)
        values.append(value)
    return values


def test_acknowledged_envelopes_are_delivered_and_nothing_is_pending(tmp_path: Path) -> None:
    client = FakeClient(lambda value: None)
    engine, reports = _engine(tmp_path, lambda conf: client)
    values = _send(engine, 5)
    assert engine.wait(time.monotonic() + 5) == 0
    assert [v for _, v in client.sent] == values and engine.delivered == 50
    assert all(r.error is None for r in reports)
    engine.close()


def test_an_outage_spools_in_order_and_the_spool_is_resent_when_kafka_is_back(
    tmp_path: Path,
) -> None:
    down = [True]
    client = FakeClient(lambda v: KafkaError(KafkaError._MSG_TIMED_OUT) if down[0] else None)
    engine, _ = _engine(tmp_path, lambda conf: client)
    first = _send(engine, 3)
    deadline = time.monotonic() + 5
    while engine.spooled < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    later = _send(engine, 3)  # queue behind the spooled ones of their partition: order
    assert engine.spooled == 60 and engine.delivered == 0 and not client.held
    down[0] = False
    assert engine.wait(time.monotonic() + 10) == 0
    assert [v for _, v in client.sent] == first + later  # every one, once, in order
    assert engine.delivered == 60 and engine.failed == 0
    engine.close()


def test_a_fatal_error_replaces_the_client_and_resends_what_it_held(tmp_path: Path) -> None:
    clients: list[FakeClient] = []

    def factory(conf: dict[str, Any]) -> FakeClient:
        fatal = KafkaError(KafkaError._FATAL, fatal=True)
        clients.append(FakeClient(lambda v: fatal if len(clients) == 1 else None))
        return clients[-1]

    engine, _ = _engine(tmp_path, factory)
    values = _send(engine, 4)
    assert engine.wait(time.monotonic() + 15) == 0
    assert len(clients) == 2 and [v for _, v in clients[1].sent] == values
    assert engine.delivered == 40 and engine.failed == 0
    engine.close()


def test_an_envelope_kafka_refuses_for_good_is_reported_failed(tmp_path: Path) -> None:
    client = FakeClient(lambda v: KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    engine, reports = _engine(tmp_path, lambda conf: client)
    _send(engine, 2)
    assert engine.wait(time.monotonic() + 5) == 0
    assert engine.failed == 20 and engine.spooled == 0 and engine.delivered == 0
    assert {r.error for r in reports} and all(r.error for r in reports)
    engine.close()


def test_what_is_spooled_at_close_is_sent_by_the_next_engine(tmp_path: Path) -> None:
    dead = FakeClient(lambda v: KafkaError(KafkaError._TRANSPORT))
    engine, _ = _engine(tmp_path, lambda conf: dead)
    values = _send(engine, 3)
    deadline = time.monotonic() + 5
    while engine.spooled < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    engine.close()
    healthy = FakeClient(lambda v: None)
    second, _ = _engine(tmp_path, lambda conf: healthy)
    second.client()
    assert second.wait(time.monotonic() + 5) == 0
    assert [v for _, v in healthy.sent] == values
    second.close()


@pytest.mark.parametrize("on_full", ["raise"])
def test_a_full_spool_refuses_new_events_instead_of_growing(tmp_path: Path, on_full: str) -> None:
    from eddyline.streams.sdk.spool import SpoolFullError

    client = FakeClient(lambda v: KafkaError(KafkaError._TRANSPORT))
    settings = ProducerSettings(
        spool_dir=tmp_path / "spool", spool_max_bytes=1 << 16, on_full=on_full
    )
    engine = Delivery(
        settings,
        KafkaSettings(bootstrap="fake:9092"),
        ProducerMetrics.on(CollectorRegistry()),
        threading.RLock(),
        on_tick=lambda now: None,
        client_factory=lambda conf: client,
    )
    engine.client()
    with pytest.raises(SpoolFullError):
        for _ in range(1_000):
            with engine._lock:
                engine.admit()
                seq = engine.next_seq()
                engine.route(Outgoing(seq, "s", "t", 0, b"x" * 4096, [], 1, time.monotonic()))
            engine.drain()
            time.sleep(0.001)
    engine.close()
