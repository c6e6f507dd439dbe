from __future__ import annotations

import pyarrow as pa

from eddyline.simulate import TrafficSimulator
from online_learning.checkpoint import ModelStore
from online_learning.learner import ClickModel


def _batch(sim: TrafficSimulator, n: int) -> pa.Table:
    return pa.Table.from_pylist([e.model_dump() for e in sim.interactions(n)]).select(
        ["item_category", "position", "dwell_time_s", "action"]
    )


def test_a_restored_model_predicts_and_detects_exactly_as_the_original(tmp_path) -> None:
    sim = TrafficSimulator(users=50, seed=4, drift_at=3_000)
    model = ClickModel()
    for _ in range(4):
        model.process(_batch(sim, 500))
    store = ModelStore(tmp_path)
    store.save("click", model, {0: 17, 2: 5})
    restored = store.load("click")
    assert restored is not None and restored.offsets == {0: 17, 2: 5}
    clone = restored.model
    assert clone.seen == model.seen == 2_000
    probe = _batch(sim, 2_000)  # crosses the drift: detectors must agree too
    a, b = model.process(probe), clone.process(probe)
    assert (a.errors == b.errors).all()
    assert [x.index for x in a.alarms] == [x.index for x in b.alarms]
    x = model.features(probe)
    assert model.pipeline.predict_proba_many(x).equals(clone.pipeline.predict_proba_many(x))


def test_no_checkpoint_is_none(tmp_path) -> None:
    assert ModelStore(tmp_path).load("missing") is None
