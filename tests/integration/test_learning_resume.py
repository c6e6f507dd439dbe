"""A worker killed with -9 resumes its model from the checkpoint, learning each event once."""

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
SEEN = re.compile(r'^eddyline_worker_model_events_seen\{model="click"\} ([0-9.e+]+)$', re.M)
LEARNED = re.compile(r'^eddyline_worker_events_learned_total\{model="click"\} ([0-9.e+]+)$', re.M)


def _value(pattern: re.Pattern[str], worker: WorkerProcess) -> float:
    match = pattern.search(worker.metrics() or "")
    return float(match.group(1)) if match else 0.0


def test_kill_9_resumes_from_the_checkpoint_without_replaying(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**worker_env, "EDDYLINE_CHECKPOINT_EVERY_S": "1", "EDDYLINE_SESSION_TIMEOUT_S": "6"}
    checkpoint = Path(env["EDDYLINE_STATE_DIR"]) / "models" / "click.ckpt"
    sim = TrafficSimulator(users=2_000, seed=17)  # 20 events a user: within budget
    first = WorkerProcess(env, tmp_path / "w0.log", free_port()).start()
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        for event in sim.interactions(20_000):
            producer.emit(event)
    wait_for(lambda: _value(SEEN, first) >= 20_000 and checkpoint.exists(), 60, "a checkpoint")
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        for event in sim.interactions(20_000):
            producer.emit(event)
    first.kill()
    second = WorkerProcess(env, tmp_path / "w1.log", free_port()).start()
    try:
        wait_for(lambda: _value(SEEN, second) >= 40_000, 90, "the second half learned")
        # Every event learned exactly once over the model's life, across the crash ...
        assert _value(SEEN, second) == 40_000
        # ... and the restarted worker did not start from scratch.
        assert _value(LEARNED, second) <= 20_000 + 5_000 * 10
        assert _value(LEARNED, second) < 40_000
    finally:
        second.stop()
