"""A raw topic deleted and created again under a kept lake, ledger and model checkpoints
(docker compose without a Kafka volume does it): offsets restart at 0, and every new event
must still land once. Keyed by topic name alone, the new topic's first messages looked
already written, charged and learned, and vanished without a trace."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import STREAMS, Topics, ensure_topics, topic_ids
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import delta_ids, wait_for

pytestmark = pytest.mark.integration


def _emit(kafka: KafkaSettings, n: int, seed: int) -> set[str]:
    events = list(TrafficSimulator(users=200, seed=seed).interactions(n))
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        for e in events:
            producer.emit(e)
        assert producer.flush(30) == 0
    return {str(e.event_id) for e in events}


def _metric(worker: WorkerProcess, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in (worker.metrics() or "").splitlines()
        if line.startswith(prefix)
    )


def test_a_raw_topic_created_again_under_a_kept_lake_loses_nothing(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    raw = Topics(kafka.namespace).raw("interaction")
    worker = WorkerProcess(worker_env, tmp_path / "w1.log", free_port()).start()
    try:
        first = _emit(kafka, 3_000, seed=1)
        wait_for(lambda: len(delta_ids(lake, "interaction")) == 3_000, 90, "the first events")
        wait_for(
            lambda: _metric(worker, 'eddyline_worker_events_learned_total{model="click"}') == 3_000,
            30,
            "the first events learned",
        )
        time.sleep(2)  # a checkpoint and a ledger save cover them
    finally:
        worker.stop()
    before = topic_ids(kafka, [raw])[raw]
    admin = AdminClient(kafka.librdkafka())
    for future in admin.delete_topics([raw], operation_timeout=30).values():
        future.result(30)
    wait_for(lambda: raw not in admin.list_topics(timeout=10).topics, 30, "the topic gone")
    ensure_topics(kafka, STREAMS)
    assert topic_ids(kafka, [raw])[raw] != before  # a new incarnation, offsets from 0

    worker = WorkerProcess(worker_env, tmp_path / "w2.log", free_port()).start()
    try:
        second = _emit(kafka, 3_000, seed=2)  # offsets 0.. again, under the old offsets
        wait_for(
            lambda: len(delta_ids(lake, "interaction")) == 6_000,
            90,
            "the new topic's events",
            status=lambda: f"{len(delta_ids(lake, 'interaction'))} rows",
        )
        written = delta_ids(lake, "interaction")
        assert len(written) == 6_000 and set(written) == first | second  # each once
        wait_for(
            lambda: _metric(worker, 'eddyline_worker_model_events_seen{model="click"}') == 6_000,
            30,
            "the new events learned",
        )
        changes = _metric(worker, "eddyline_worker_source_epochs_total")
        assert changes >= 1  # noticed, counted (and logged)
        assert "is a new topic" in (tmp_path / "w2.log").read_text()
    finally:
        worker.stop()
