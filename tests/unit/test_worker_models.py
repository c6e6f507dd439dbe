"""The worker's models come from the learner specs, and resume only from a checkpoint of the
same spec (unit test of streams.app.Pipeline; no broker: the pipeline connects lazily)."""

from __future__ import annotations

import asyncio
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


def test_a_follower_takes_the_owners_checkpoints_and_an_owner_never_takes_a_copy(
    tmp_path,
) -> None:
    """Ownership of a stream's models (docs/architecture.md, "Scale-out"): a worker that does
    not hold the learn partition reloads the owner's newer checkpoints; one that holds it and
    has reloaded never has its live models replaced by a refresh (it would lose what it
    learned since), and saves only while it owns them."""
    import os
    import time

    ws = _settings(tmp_path, learners="click")
    store = ModelStore(ws.state_dir / "models")
    p = Pipeline(ws, KafkaSettings(), STREAMS)
    learn = p.learn

    def owner_saves(seen_offset: int) -> None:  # another worker's checkpoint, newer
        store.save("click", _trained(load_spec("click")), {0: seen_offset})
        later = time.time() + 1 + seen_offset
        os.utime(store.folder.local(store.name_of("click")), (later, later))

    learn.assign(set())  # the group gave this worker no learn partition: a follower
    owner_saves(1)
    assert learn.refresh_followed() == ["interaction"]
    assert learn.models["click"].seen == 500 and learn.offsets["click"] == {0: 1}
    assert learn.refresh_followed() == []  # nothing newer

    learn.assign({"interaction"})  # now the owner: it reloads before its next message
    assert learn.reload_due("interaction")
    learn.reload("interaction")
    live = learn.models["click"]
    owner_saves(2)  # e.g. the previous owner's last checkpoint, racing the hand-over
    assert learn.refresh_followed() == []
    assert learn.models["click"] is live

    learn.revoke({"interaction"})
    assert asyncio.run(learn.maybe_checkpoint("interaction")) == []  # never saves a copy


def test_a_refresh_racing_an_assignment_leaves_the_models_to_the_new_owner(tmp_path) -> None:
    ws = _settings(tmp_path, learners="click")
    store = ModelStore(ws.state_dir / "models")
    learn = Pipeline(ws, KafkaSettings(), STREAMS).learn
    learn.assign(set())
    store.save("click", _trained(load_spec("click")), {0: 7})
    modified = learn.store.modified

    def assigned_meanwhile(name: str) -> float | None:  # the rebalance lands mid-refresh
        learn.assign({"interaction"})
        return modified(name)

    learn.store.modified = assigned_meanwhile  # type: ignore[method-assign]
    assert learn.refresh_followed() == []  # it is the owner's to load, on its next message
    assert learn.reload_due("interaction") and learn.models["click"].seen == 0


def test_a_drift_event_names_the_data_after_the_change_and_the_detector_that_fired(
    tmp_path,
) -> None:
    """``LearnStage.drift_event``: the messages learned mostly after the located change, per
    raw partition (first..last offset); a change located late in the last message learned
    still names that message (never an event without data to retrain on); the detector is
    the spec's error method for the error, ADWIN for a watched signal."""
    from eddyline.online_learning.detectors import Alarm

    learn = Pipeline(_settings(tmp_path, learners="click"), KafkaSettings(), STREAMS).learn
    model = learn.models["click"]
    # (events seen before, after, raw partition, first offset, last offset, source key)
    for row in [(0, 100, 0, 0, 9, "a"), (100, 200, 1, 0, 4, "b"), (200, 300, 0, 10, 19, "a")]:
        learn.learned["click"].append(row)

    event = learn.drift_event(model, Alarm(index=260, before=0.2, after=0.5, change_index=120))
    assert event.offsets_after == {1: (0, 4), 0: (10, 19)}  # midpoints 150 and 250 > 120
    assert event.idempotency_key == "click:1:error_rate:0:10,1:0"
    assert event.detector == "cusum" and event.severity == pytest.approx(0.3)

    late = learn.drift_event(model, Alarm(index=300, before=0.2, after=0.5, change_index=290))
    assert late.offsets_after == {0: (10, 19)}  # past every midpoint: the last message
    assert late.idempotency_key == "click:1:error_rate:0:10"

    watched = learn.drift_event(
        model, Alarm(300, 0.1, 0.4, change_index=120), "feature", "feature:position"
    )
    assert watched.detector == "adwin" and watched.feature == "position"
