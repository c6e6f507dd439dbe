"""A new stream and a regression model from configuration only: an app's own event module
(a .py file), a YAML learner spec, and ``EDDYLINE_*`` settings; no Python in the worker or
the retraining job. Events arrive as single JSON messages from a plain Kafka producer (as an
app in any language sends them); the fare model drifts when the price per km changes; the
retraining job (``eddyline retrain run``, its own process) trains the linear family with
Opacus; the worker shadows and promotes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from confluent_kafka import Producer

from eddyline.online_learning.registry import ModelRegistry
from eddyline.schemas.events import DriftEvent, ModelEvent
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics, read_all
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import delta_ids, wait_for

pytestmark = pytest.mark.integration

RIDES = '''
"""A ride-hailing app's event type: defined by the app, not by eddyline."""
from typing import Annotated, ClassVar

from pydantic import Field

from eddyline import BaseEvent


class RideEvent(BaseEvent):
    event_name: ClassVar[str] = "ride"
    event_version: ClassVar[int] = 1

    distance_km: Annotated[float, Field(ge=0, le=500)]
    fare: Annotated[float, Field(ge=0, le=5_000)]
'''

FARE = """
name: fare
stream: ride
kind: regression
description: the fare of a ride from its distance
features: [{column: distance_km}]
target: [{column: fare}]
pipeline:
  - preprocessing.StandardScaler: {}
  - linear_model.LinearRegression: {optimizer: {optim.SGD: {lr: 0.1}}, intercept_lr: 0.1}
metrics: [mae, rmse]
"""


class Rides:
    """Rides as JSON messages, one per Kafka message, keyed by user: fare = 3 + per_km x
    distance + N(0, 1)."""

    def __init__(self, kafka: KafkaSettings, seed: int) -> None:
        self.producer = Producer(kafka.librdkafka({"partitioner": "murmur2_random"}))
        self.topic = Topics(kafka.namespace).raw("ride")
        self.rng = np.random.default_rng(seed)

    def send(self, n: int, per_km: float) -> None:
        for start in range(0, n, 200):  # small runs: many learning steps, as live traffic
            for _ in range(min(200, n - start)):
                km = float(self.rng.uniform(0, 20))
                user = f"rider-{self.rng.integers(300)}"
                ride = {
                    "event_id": str(uuid4()),
                    "user_id": user,
                    "app_id": "rides",
                    "distance_km": round(km, 3),
                    "fare": round(3 + per_km * km + float(self.rng.normal(0, 1)), 2),
                }
                self.producer.produce(self.topic, json.dumps(ride).encode(), key=user.encode())
            self.producer.flush(10)
            time.sleep(0.05)


def test_a_stream_and_a_regression_spec_from_configuration_drift_retrain_and_promote(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "rides.py").write_text(RIDES)
    (tmp_path / "fare.yaml").write_text(FARE)
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    env = {
        **worker_env,
        "EDDYLINE_STREAMS": "ride",
        "EDDYLINE_EVENT_MODULES": str(tmp_path / "rides.py"),
        "EDDYLINE_LEARNERS": str(tmp_path / "fare.yaml"),
        "EDDYLINE_SHADOW_WINDOW": "1000",
        "EDDYLINE_SHADOW_MIN_EVENTS": "1000",
    }
    # a data scientist checks the spec before any worker runs it
    eddyline = [sys.executable, "-m", "eddyline"]
    module = ["--module", str(tmp_path / "rides.py")]
    check = subprocess.run(
        [*eddyline, "learners", "check", str(tmp_path / "fare.yaml"), *module],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert "fare v1 (regression) over ride" in check.stdout
    unknown = subprocess.run(
        [*eddyline, "learners", "check", str(tmp_path / "fare.yaml")],
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 2 and "no event type 'ride'" in unknown.stderr
    worker = WorkerProcess(env, tmp_path / "worker.log", free_port()).start()
    registry_at, small = [str(lake / "_registry")], ["--epsilon", "3", "--min-rows", "2000"]
    retrain = subprocess.Popen(
        [*eddyline, "retrain", "run", "--lake", str(lake), "--registry", *registry_at, *small],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "retrain.log").open("w"),
    )
    registry = ModelRegistry(lake / "_registry")
    try:
        rides = Rides(kafka, seed=5)
        # as live traffic does: a first ride once the worker is up, then a steady flow the
        # worker keeps up with (a backlog would reach the model in a few large batches, few
        # learning steps: it would still be learning at the change, inside its warm-up);
        # the lake commits the old prices before the change arrives, so a Delta version
        # holds only them (the drift event names it)
        rides.send(200, per_km=2.0)
        wait_for(lambda: len(delta_ids(lake, "ride")) >= 200, 60, "the first rides in Delta")
        rides.send(5_800, per_km=2.0)
        wait_for(lambda: len(delta_ids(lake, "ride")) >= 6_000, 120, "6,000 rides in Delta")
        rides.send(6_000, per_km=5.0)  # prices per km go up
        wait_for(lambda: len(delta_ids(lake, "ride")) >= 12_000, 120, "12,000 rides in Delta")

        def drifts() -> list[DriftEvent]:
            found = read_all(kafka, Topics(kafka.namespace).drift)
            return [DriftEvent.model_validate_json(v) for v, _ in found]

        wait_for(lambda: bool(drifts()), 60, "a drift event")
        [drift] = drifts()  # one change, one event
        assert (drift.model, drift.stream, drift.signal) == ("fare", "ride", "residual")
        assert drift.stat_after > drift.stat_before + 5  # the absolute residual jumped
        assert drift.lake_version_before is not None
        wait_for(
            lambda: registry.alias("fare", "challenger") is not None,
            240,
            "a retrained challenger",
            status=lambda: (tmp_path / "retrain.log").read_text()[-2000:],
        )
        deadline = time.monotonic() + 180
        while registry.alias("fare", "champion") == 1 and time.monotonic() < deadline:
            rides.send(1_000, per_km=5.0)  # live traffic at the new prices, for the shadow
            time.sleep(0.5)
        assert registry.alias("fare", "champion") == 2
        challenger = registry.get("fare", 2)
        assert challenger.metrics["holdout_mse"] < challenger.metrics["champion_holdout_loss"]
        assert challenger.lineage["trained_on"]["after_version"] == drift.lake_version_before
        models = [
            ModelEvent.model_validate_json(v)
            for v, _ in read_all(kafka, Topics(kafka.namespace).models)
        ]
        changes = [
            (m.kind, m.model_version)
            for m in sorted(models, key=lambda m: m.created_at)
            if m.kind != "checkpoint" and m.model == "fare"
        ]
        assert changes == [("promoted", 1), ("registered", 2), ("promoted", 2)]
        # the online model answers with a number, at the new price (3 + 5 x 10 = 53)
        answer = json.loads(worker.get("/predict/fare?distance_km=10") or "{}")
        assert abs(answer["value"] - 53) < 5, answer
        assert 'eddyline_worker_model_mae{model="fare"}' in (worker.metrics() or "")
    finally:
        retrain.terminate()
        retrain.wait(30)
        worker.stop()
