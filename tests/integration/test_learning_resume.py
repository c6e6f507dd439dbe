"""A worker killed with -9 resumes its models from their checkpoints, learning each event
once: the click model (interactions) and the satisfaction model (feedback)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eddyline.simulate import TrafficSimulator
from streams.broker import free_port
from streams.producer import EventProducer
from streams.settings import KafkaSettings
from streams.worker_process import WorkerProcess
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


def test_kill_9_resumes_from_the_checkpoint_without_replaying(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**worker_env, "EDDYLINE_CHECKPOINT_EVERY_S": "1", "EDDYLINE_SESSION_TIMEOUT_S": "6"}
    models = Path(env["EDDYLINE_STATE_DIR"]) / "models"
    sim = TrafficSimulator(users=2_000, seed=17)  # 20 events a user: within budget

    def emit_half() -> None:
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
            for event in sim.interactions(20_000):
                producer.emit(event)
            for feedback in sim.feedback(2_000):
                producer.emit(feedback)

    def checkpointed() -> bool:
        return all((models / f"{m}.ckpt").exists() for m in ("click", "satisfaction"))

    first = WorkerProcess(env, tmp_path / "w0.log", free_port()).start()
    emit_half()
    wait_for(
        lambda: (
            _seen("click", first) >= 20_000
            and _seen("satisfaction", first) >= 2_000
            and checkpointed()
        ),
        60,
        "checkpoints of both models",
    )
    emit_half()
    first.kill()
    second = WorkerProcess(env, tmp_path / "w1.log", free_port()).start()
    try:
        wait_for(
            lambda: _seen("click", second) >= 40_000 and _seen("satisfaction", second) >= 4_000,
            90,
            "the second half learned",
            status=lambda: (
                f"seen: {_seen('click', second)} clicks, {_seen('satisfaction', second)} feedback"
            ),
        )
        # Every event learned exactly once over each model's life, across the crash ...
        assert _seen("click", second) == 40_000
        assert _seen("satisfaction", second) == 4_000
        # ... and the restarted worker did not start from scratch.
        assert _learned("click", second) <= 20_000 + 5_000 * 10
        assert _learned("click", second) < 40_000
        assert _learned("satisfaction", second) < 4_000
    finally:
        second.stop()
