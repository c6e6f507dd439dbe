"""The worker's models come from the learner specs, and resume only from a checkpoint of the
same spec (unit test of streams.app.Pipeline; no broker: the pipeline connects lazily)."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from eddyline.online_learning.checkpoint import ModelStore
from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.spec import LearnerSpec, LearnerSpecError, load_spec
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import STREAMS
from eddyline.streams.worker.pipeline import Pipeline


def _settings(tmp_path, learners: str = "click,satisfaction") -> WorkerSettings:
    return WorkerSettings(
        state_dir=tmp_path / "state",
        lake_path=str(tmp_path / "lake"),
        learners=learners,
        shadow=False,
        seed=1,
    )


def _trained(spec: LearnerSpec) -> OnlineModel:
    model = OnlineModel.from_spec(spec)
    sim = TrafficSimulator(users=20, seed=1)
    model.process(pa.Table.from_pylist([e.model_dump() for e in sim.interactions(500)]))
    return model


def test_every_spec_runs_and_a_checkpoint_of_the_same_spec_resumes(tmp_path) -> None:
    ws = _settings(tmp_path)
    ModelStore(ws.state_dir / "models").save("click", _trained(load_spec("click")), {3: 41})
    p = Pipeline(ws, KafkaSettings(), STREAMS)
    assert set(p.learn.models) == {"click", "satisfaction"}
    assert [m.name for m in p.learn.models_of["feedback"]] == ["satisfaction"]
    assert p.learn.models["click"].seen == 500 and p.learn.offsets["click"] == {3: 41}
    assert p.learn.models["satisfaction"].seen == 0 and p.learn.offsets["satisfaction"] == {}


def test_a_checkpoint_of_another_spec_or_an_unreadable_one_starts_fresh(tmp_path, caplog) -> None:
    ws = _settings(tmp_path, learners="click")
    store = ModelStore(ws.state_dir / "models")
    changed = LearnerSpec.model_validate({**load_spec("click").model_dump(), "metrics": ["brier"]})
    store.save("click", _trained(changed), {0: 9})
    with caplog.at_level(logging.WARNING, "eddyline.learn"):
        p = Pipeline(ws, KafkaSettings(), STREAMS)
    assert p.learn.models["click"].seen == 0 and p.learn.offsets["click"] == {}
    assert "taken of another spec" in caplog.text
    store.folder.put(store.name_of("click"), b"not a pickle")
    with caplog.at_level(logging.WARNING, "eddyline.learn"):
        p = Pipeline(ws, KafkaSettings(), STREAMS)
    assert p.learn.models["click"].seen == 0 and "checkpoint unreadable" in caplog.text


def test_a_spec_for_a_stream_the_worker_does_not_process_stops_it(tmp_path) -> None:
    with pytest.raises(LearnerSpecError, match="which this worker does not process"):
        Pipeline(_settings(tmp_path, learners="satisfaction"), KafkaSettings(), ["interaction"])
