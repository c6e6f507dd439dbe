"""A worker killed with -9 resumes its models from their checkpoints, learning each event
once: the click model (interactions) and the satisfaction model (feedback)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eddyline.consumers.lake import Lake
from eddyline.online_learning.checkpoint import ModelStore
from eddyline.schemas.storage import join
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def _value(metric: str, model: str, worker: WorkerProcess) -> float:
    pattern = rf'^eddyline_worker_{metric}\{{model="{model}"\}} ([0-9.e+]+)$'
    match = re.search(pattern, worker.metrics() or "", re.M)
    return float(match.group(1)) if match else 0.0


def _seen(model: str, worker: WorkerProcess) -> float:
    return _value("model_events_seen", model, worker)


def _learned(model: str, worker: WorkerProcess) -> float:
    return _value("events_learned_total", model, worker)


ON_STORE = "mid-stream, lake and checkpoints on the object store"


@pytest.mark.parametrize("when", ["mid-stream", "right after the first checkpoints", ON_STORE])
def test_kill_9_resumes_from_the_checkpoint_without_replaying(
    kafka: KafkaSettings,
    worker_env: dict[str, str],
    tmp_path: Path,
    when: str,
    request: pytest.FixtureRequest,
) -> None:
    # "right after the first checkpoints" once stalled a restarted worker (~1 run in 4-8)
    # while the budget changelog went through Faust's producer buffer (streams/app.py).
    env = {**worker_env, "EDDYLINE_CHECKPOINT_EVERY_S": "1", "EDDYLINE_SESSION_TIMEOUT_S": "6"}
    if when == ON_STORE:  # as on another machine: nothing of the worker's on its own disk
        container = request.getfixturevalue("object_store")  # sets EDDYLINE_STORAGE_* here
        azurite = request.getfixturevalue("azurite")
        env.update(azurite.env())
        env["EDDYLINE_LAKE_PATH"] = join(container, "lake")
        env["EDDYLINE_CHECKPOINT_PATH"] = join(container, "checkpoints")
    store = ModelStore(
        env.get("EDDYLINE_CHECKPOINT_PATH") or Path(env["EDDYLINE_STATE_DIR"]) / "models"
    )
    total = {"click": 40_000, "satisfaction": 4_000}
    sim = TrafficSimulator(users=2_000, seed=17)  # 20 events a user: within budget

    def emit_half() -> None:
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
            for event in sim.interactions(20_000):
                producer.emit(event)
            for feedback in sim.feedback(2_000):
                producer.emit(feedback)

    def checkpointed() -> bool:
        return all(store.load(m) is not None for m in total)

    first = WorkerProcess(env, tmp_path / "w0.log", free_port()).start()
    emit_half()
    if when != "right after the first checkpoints":
        ready = lambda: (  # noqa: E731
            _seen("click", first) >= 20_000 and _seen("satisfaction", first) >= 2_000
        )
        wait_for(lambda: ready() and checkpointed(), 60, "checkpoints of both models")
    else:
        wait_for(checkpointed, 60, "the first checkpoints")
    emit_half()
    first.kill()
    resumed = {}
    for m in total:
        checkpoint = store.load(m)
        assert checkpoint is not None
        resumed[m] = checkpoint.model.seen
    second = WorkerProcess(env, tmp_path / "w1.log", free_port()).start()
    try:
        # the restarted worker reports what its checkpoints hold from its first scrape on,
        # also for a model whose checkpoint held its whole stream (nothing left to learn)
        wait_for(lambda: second.metrics() is not None, 60, "the restarted worker's metrics")
        assert all(_seen(m, second) >= resumed[m] for m in total), second.metrics()
        try:
            wait_for(
                lambda: all(_seen(m, second) >= n for m, n in total.items()),
                90,
                "the second half learned",
                status=lambda: f"seen: {[_seen(m, second) for m in total]}, resumed at {resumed}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{second.dump()}") from exc
        for m, n in total.items():
            # every event learned exactly once over each model's life, across the crash,
            # and the restarted worker learned exactly what its checkpoint did not hold
            assert _seen(m, second) == n
            assert _learned(m, second) == n - resumed[m]
        if when != "right after the first checkpoints":
            assert resumed["click"] > 0  # it did not start from scratch
        if when == ON_STORE:  # and the lake on the store holds each event once
            lake = Lake(env["EDDYLINE_LAKE_PATH"])
            wait_for(
                lambda: (
                    lake.sql("SELECT count(*) AS n FROM interaction")["n"][0].as_py()
                    >= total["click"]
                ),
                60,
                "the lake",
            )
            ids = lake.read("interaction", columns=["event_id"])["event_id"]
            assert len(ids) == total["click"] == len(set(ids.to_pylist()))
    finally:
        second.stop()
