"""Retraining on the real broker: drift events through the DriftSubscriber (commit after the
handler, retries, dead letters, idempotency), and the whole loop: simulated traffic with a
concept drift -> worker -> drift event -> DP retraining -> shadow -> champion -> ModelEvent."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from eddyline.consumers.drift import DriftSubscriber, HandledKeys
from eddyline.online_learning.registry import ModelRegistry
from eddyline.online_learning.scoring import SpecScorer
from eddyline.predict import Predictor
from eddyline.schemas.events import DriftEvent, ModelEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics, read_all
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.factories import drift_event
from tests.integration.helpers import delta_ids, wait_for

pytestmark = pytest.mark.integration


def _drift(key: str, at: datetime, model: str = "click") -> DriftEvent:
    return drift_event(key, detected_at=at, model=model)


def _publish(kafka: KafkaSettings, events: list[DriftEvent]) -> None:
    producer = Producer(kafka.librdkafka())
    for e in events:
        producer.produce(Topics(kafka.namespace).drift, e.model_dump_json().encode(), key=b"k")
    producer.flush(10)


def test_the_subscriber_commits_after_the_handler_retries_dead_letters_and_deduplicates(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    _publish(
        kafka,
        [
            _drift("a", now),
            _drift("a", now),  # a duplicate
            _drift("other-model", now, model="ranker"),  # filtered out
            _drift("flaky", now + timedelta(seconds=1)),
            _drift("broken", now + timedelta(seconds=2)),
        ],
    )
    handled = HandledKeys(tmp_path / "handled.txt")

    class Crash(BaseException):
        """Stands for the process dying inside the handler."""

    def dies(event: DriftEvent) -> None:
        raise Crash

    # A handler that dies: nothing is committed, so the event comes back to the next run.
    with DriftSubscriber(group_id="job", kafka=kafka, models={"click"}, handled=handled) as sub:
        with pytest.raises(Crash):
            sub.run(dies)
    calls: list[str] = []
    failures = {"flaky": 2, "broken": 99}

    def handler(event: DriftEvent) -> None:
        calls.append(event.idempotency_key)
        if failures.get(event.idempotency_key, 0) > 0:
            failures[event.idempotency_key] -= 1
            raise RuntimeError(f"cannot retrain {event.idempotency_key} yet")

    with DriftSubscriber(group_id="job", kafka=kafka, models={"click"}, handled=handled) as sub:
        done = sub.run(handler, retries=3, backoff_s=0.05, idle_timeout_s=5)
    assert done == 2  # "a" once, "flaky" on its third try
    assert calls == ["a", "flaky", "flaky", "flaky", "broken", "broken", "broken", "broken"]
    [letter] = [json.loads(v) for v, _ in read_all(kafka, Topics(kafka.namespace).drift_deadletter)]
    assert letter["event"]["idempotency_key"] == "broken" and letter["attempts"] == 4
    assert "RuntimeError: cannot retrain broken yet" in letter["error"]
    # Everything was committed: a restarted job (same group, same key file) has nothing to do.
    with DriftSubscriber(
        group_id="job", kafka=kafka, handled=HandledKeys(tmp_path / "handled.txt")
    ) as sub:
        assert sub.run(handler, idle_timeout_s=3) == 0


def test_drift_retrains_shadows_and_promotes_a_better_model(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from eddyline.consumers.retrain import TrainConfig, run_service

    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    # the worker shadows registry models on the events it learns from
    env = {**worker_env, "EDDYLINE_SHADOW_WINDOW": "1000", "EDDYLINE_SHADOW_MIN_EVENTS": "1000"}
    worker = WorkerProcess(env, tmp_path / "worker.log", free_port()).start()
    stop = threading.Event()
    service = threading.Thread(
        target=run_service,
        args=(lake, lake / "_registry"),
        kwargs={
            "kafka": kafka,
            "config": TrainConfig(epsilon=3.0, epochs=3),
            "min_rows": 2_000,
            "stop": stop,
        },
        daemon=True,
    )
    service.start()
    registry = ModelRegistry(lake / "_registry")
    try:
        sim = TrafficSimulator(users=400, seed=31, drift_at=6_000)
        traffic = sim.interactions(12_000)
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
            # as live traffic does: the lake commits the pre-change rows before the change
            # arrives, so a Delta version holds only them (the drift event names it)
            for phase_end in (6_000, 12_000):
                for _ in range(6_000):
                    producer.emit(next(traffic))
                producer.flush()
                wait_for(
                    lambda n=phase_end: len(delta_ids(lake, "interaction")) >= n,
                    120,
                    f"{phase_end} events in Delta",
                )
            wait_for(lambda: registry.alias("click", "challenger") is not None, 180, "a challenger")
            # live traffic (after the change) for the shadow, until the challenger wins
            later = TrafficSimulator(users=400, seed=32, drift_at=0).interactions(100_000)
            deadline = time.monotonic() + 180
            while registry.alias("click", "champion") == 1 and time.monotonic() < deadline:
                for _ in range(1_000):
                    producer.emit(next(later))
                producer.flush()
                time.sleep(0.5)
        assert registry.alias("click", "champion") == 2
        models = [
            ModelEvent.model_validate_json(v)
            for v, _ in read_all(kafka, Topics(kafka.namespace).models)
        ]
        # from two processes (the job and the worker's shadow): in the order they happened
        changes = [
            (m.kind, m.model_version)
            for m in sorted(models, key=lambda m: m.created_at)
            if m.kind != "checkpoint"
        ]
        assert changes == [("promoted", 1), ("registered", 2), ("promoted", 2)]
        new = registry.get("click", 2)
        # the new model beats the pre-drift model on post-drift data, and says why it exists
        assert new.metrics["holdout_loss"] < new.metrics["champion_holdout_loss"]
        assert new.drift_key and new.lineage["trained_on"]["after_version"] >= 0
        # the worker serves the champion (and the version it replaced) beside the online model
        query = "/predict/click?item_category=news&position=2&dwell_time_s=8"
        row = {"item_category": "news", "position": 2, "dwell_time_s": 8.0}
        for alias, version in (("champion", 2), ("previous", 1)):
            wait_for(
                lambda a=alias, v=version: (
                    json.loads(worker.get(f"{query}&version={a}") or "{}").get("model_version") == v
                ),
                15,
                f"the {alias} served",
            )
            served = json.loads(worker.get(f"{query}&version={alias}") or "{}")
            scorer = SpecScorer.load(registry.artifact_dir(registry.get("click", version)))
            expected = float(scorer.predict(pa.Table.from_pylist([row]))[0])
            assert served["probability"] == pytest.approx(expected), served
        online = json.loads(worker.get(query) or "{}")
        assert online["served"] == "online" and online["model_version"] >= 1
        champion = Predictor(f"http://127.0.0.1:{worker.web_port}").predict(
            "click", version="champion", item_category="news", position=2, dwell_time_s=8
        )
        assert (champion.served, champion.model_version, champion.events_seen) == (
            "champion",
            2,
            None,
        )
    finally:
        stop.set()
        service.join(30)
        worker.stop()
