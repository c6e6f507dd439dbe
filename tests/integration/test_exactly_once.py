"""Exactly once into Delta while workers crash (kill -9) and the group rebalances."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from eddyline.demo import send_invalid
from eddyline.schemas.envelope import H_CONTENT_TYPE, H_SCHEMA, JSON
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import deadlettered_rows, delta_ids, wait_for

pytestmark = pytest.mark.integration
JSON_HEADERS = [(H_CONTENT_TYPE, JSON.encode()), (H_SCHEMA, b"interaction:1")]


class Stream(threading.Thread):
    """Emits ``total`` interactions at ``rate``/s in the background, then flushes: through
    the SDK (``wire="sdk"``: Arrow envelopes), as one JSON event per message from a plain
    confluent-kafka producer keyed by user (``"json"``), or alternating the two every
    2,000 events (``"mixed"``)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        total: int,
        rate: float,
        seed: int,
        wire: str = "sdk",
        drift_at: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.kafka, self.total, self.rate, self.seed = kafka, total, rate, seed
        self.wire, self.drift_at = wire, drift_at
        self.sent: list[str] = []
        self.invalid: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            sim = TrafficSimulator(users=5_000, seed=self.seed, drift_at=self.drift_at)
            step = 2_000
            plain = Producer(self.kafka.librdkafka({"enable.idempotence": True, "linger.ms": 20}))
            topic = Topics(self.kafka.namespace).raw("interaction")
            with EventProducer(kafka=self.kafka, registry=CollectorRegistry()) as producer:
                for n, start in enumerate(range(0, self.total, step)):
                    t0 = time.monotonic()
                    as_json = self.wire == "json" or (self.wire == "mixed" and n % 2)
                    for event in sim.interactions(step):
                        if as_json:
                            _produce(plain, topic, event.user_id.encode(), event.model_dump_json())
                        else:
                            producer.emit(event)
                        self.sent.append(str(event.event_id))
                    time.sleep(max(0.0, step / self.rate - (time.monotonic() - t0)))
                assert producer.flush(120) == 0
                assert plain.flush(120) == 0
            send_invalid(self.kafka, 100)
            self.invalid = [f"00000000-0000-4000-8000-{i:012d}" for i in range(100)]
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def _produce(producer: Producer, topic: str, key: bytes, value: str) -> None:
    while True:
        try:
            producer.produce(topic, value, key, headers=JSON_HEADERS)
            producer.poll(0)
            return
        except BufferError:  # the client's queue is full: let it drain
            producer.poll(0.05)


def _worker(env: dict[str, str], tmp_path: Path, n: int) -> WorkerProcess:
    return WorkerProcess(env, tmp_path / f"worker-{n}.log", free_port()).start(timeout=90)


def _assert_exactly_once(lake: Path, kafka: KafkaSettings, stream: Stream) -> None:
    wait_for(
        lambda: len(delta_ids(lake, "interaction")) >= len(stream.sent),
        300,
        "every event in Delta",
        every=2,
    )
    written = delta_ids(lake, "interaction")
    assert len(written) == len(stream.sent), f"{len(written) - len(stream.sent)} duplicates"
    assert set(written) == set(stream.sent)
    wait_for(
        lambda: len(deadlettered_rows(kafka)) == len(stream.invalid),
        60,
        "every invalid event dead-lettered",
    )


@pytest.fixture
def crash_env(worker_env: dict[str, str]) -> dict[str, str]:
    # The broker's minimum: a killed worker's partitions move after 6 s. The budget is set out
    # of reach: after a crash, replayed events are charged again (fail-safe over-counting,
    # docs/privacy.md), and this test is about delivery, not about suppression.
    return {**worker_env, "EDDYLINE_SESSION_TIMEOUT_S": "6", "EDDYLINE_BUDGET_EPSILON": "1e6"}


@pytest.mark.parametrize("wire", ["sdk", "json", "mixed"])
def test_kill_9_five_times_while_500k_events_stream_in(
    kafka: KafkaSettings, crash_env, tmp_path, wire: str
) -> None:
    # sdk: 250 envelopes of 2,000 events; json: 500,000 single-event messages; mixed: both,
    # interleaved on every partition.
    lake = Path(crash_env["EDDYLINE_LAKE_PATH"])
    stream = Stream(kafka, 500_000, rate=10_000, seed=31, wire=wire)
    worker = _worker(crash_env, tmp_path, 0)
    stream.start()
    rng = random.Random(2026)  # the kill moments are random, and reproducible
    for n in range(1, 6):
        time.sleep(rng.uniform(2.0, 8.0))
        worker.kill()
        worker = _worker(crash_env, tmp_path, n)
    stream.join()
    assert stream.error is None, stream.error
    try:
        _assert_exactly_once(lake, kafka, stream)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.dump()}") from exc
    finally:
        worker.stop()


def test_a_worker_joins_and_leaves_mid_stream(kafka: KafkaSettings, crash_env, tmp_path):
    lake = Path(crash_env["EDDYLINE_LAKE_PATH"])
    stream = Stream(kafka, 200_000, rate=10_000, seed=32)
    first = _worker(crash_env, tmp_path, 0)
    stream.start()
    time.sleep(5)
    second = _worker(crash_env, tmp_path, 1)  # joins: partitions are split between the two
    time.sleep(6)
    assert second.stop() == 0  # leaves gracefully (SIGTERM): partitions move back
    stream.join()
    assert stream.error is None, stream.error
    try:
        _assert_exactly_once(lake, kafka, stream)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{first.dump()}") from exc
    finally:
        first.stop()


def test_a_graceful_stop_commits_what_the_lake_had_gathered(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Commits due only by age, a minute away: what reaches Delta, reached it at the stop.
    env = {**worker_env, "EDDYLINE_LAKE_MAX_WAIT_S": "60", "EDDYLINE_LAKE_IDLE_S": "0"}
    lake = Path(env["EDDYLINE_LAKE_PATH"])
    worker = _worker(env, tmp_path, 0)
    sim, sent = TrafficSimulator(users=500, seed=33), []
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        for event in sim.interactions(5_000):
            producer.emit(event)
            sent.append(str(event.event_id))
        assert producer.flush(60) == 0

    def privatised() -> float:
        text = worker.metrics() or ""
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("eddyline_worker_events_private_total{")
        )

    wait_for(lambda: privatised() >= len(sent), 60, "every event privatised")
    time.sleep(2)  # the private envelopes reach the lake agent, which holds them
    assert delta_ids(lake, "interaction") == []  # nothing was due yet
    assert worker.stop() == 0  # SIGTERM
    written = delta_ids(lake, "interaction")
    assert len(written) == len(sent) and set(written) == set(sent)
