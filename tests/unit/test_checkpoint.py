from __future__ import annotations

import pyarrow as pa
import pytest

from eddyline.online_learning.checkpoint import ModelStore
from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.spec import BUILTIN, load_spec
from eddyline.simulate import TrafficSimulator


def _batch(sim: TrafficSimulator, spec: str, n: int) -> pa.Table:
    stream = load_spec(spec).stream
    events = sim.interactions(n) if stream == "interaction" else sim.feedback(n)
    return pa.Table.from_pylist([e.model_dump() for e in events])


@pytest.mark.parametrize("spec", BUILTIN)  # every shipped spec, so every spec kind
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
    row = {c: probe[c][0].as_py() for c in {f.column for f in model.spec.features}}
    assert model.predict(row) == clone.predict(row)
    assert clone.rolling_metrics() == model.rolling_metrics()


def test_no_checkpoint_is_none(tmp_path) -> None:
    assert ModelStore(tmp_path).load("missing") is None
