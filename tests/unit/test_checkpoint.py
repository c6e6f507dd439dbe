from __future__ import annotations

import pyarrow as pa
import pytest

from eddyline.online_learning.checkpoint import ModelStore
from eddyline.online_learning.learner import OnlineModel
from eddyline.simulate import TrafficSimulator


def _batch(sim: TrafficSimulator, stream: str, n: int) -> pa.Table:
    events = sim.interactions(n) if stream == "click" else sim.feedback(n)
    return pa.Table.from_pylist([e.model_dump() for e in events])


@pytest.mark.parametrize("spec", ["click", "satisfaction"])
def test_a_restored_model_predicts_and_detects_exactly_as_the_original(tmp_path, spec) -> None:
    sim = TrafficSimulator(users=50, seed=4, drift_at=3_000)
    model = OnlineModel.builtin(spec)
    for _ in range(4):
        model.process(_batch(sim, spec, 500))
    store = ModelStore(tmp_path)
    store.save(spec, model, {0: 17, 2: 5})
    restored = store.load(spec)
    assert restored is not None and restored.offsets == {0: 17, 2: 5}
    clone = restored.model
    assert clone.seen == model.seen == 2_000
    sim.interactions(1_000) and list(sim.interactions(1_000))  # past the drift
    probe = _batch(sim, spec, 2_000)
    a, b = model.process(probe), clone.process(probe)
    assert (a.errors == b.errors).all()
    assert [x.index for x in a.alarms] == [x.index for x in b.alarms]
    x = model.features(probe)
    assert model.pipeline.predict_proba_many(x).equals(clone.pipeline.predict_proba_many(x))
    assert clone.rolling_metrics() == model.rolling_metrics()


def test_no_checkpoint_is_none(tmp_path) -> None:
    assert ModelStore(tmp_path).load("missing") is None
