"""The shipped online models (click, satisfaction) and their drift detectors on seeded
simulator streams."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from eddyline.online_learning.detectors import AdwinDetector
from eddyline.online_learning.learner import OnlineModel
from eddyline.simulate import TrafficSimulator


def _batches(sim: TrafficSimulator, n: int, size: int = 500):
    for _ in range(n // size):
        rows = [e.model_dump() for e in sim.interactions(size)]
        yield pa.Table.from_pylist(rows).select(
            ["item_category", "position", "dwell_time_s", "action"]
        )


def test_model_learns_and_drift_is_caught_soon_after_the_change_only() -> None:
    # Fixed seed: deterministic. Bayes error is ~0.27 before and after the change.
    sim = TrafficSimulator(users=100, seed=3, drift_at=10_000)
    model = OnlineModel.builtin("click", warmup=1_000, cooldown=2_000)
    alarms, errors = [], []
    for batch in _batches(sim, 20_000):
        out = model.process(batch)
        alarms += out.alarms
        errors.append(out.errors.mean())
    assert np.mean(errors[10:20]) < 0.33  # learned before the drift
    assert alarms, "the drift was not detected"
    assert 10_000 < alarms[0].index < 11_000  # within 1,000 events of the change
    assert alarms[0].after > alarms[0].before


def test_features_reach_the_model_in_float64_so_river_scales_them_in_float64() -> None:
    """River 0.26's StandardScaler.transform_many picks its compute dtype from a *set* of
    zero scalars, one per column dtype: float16(0) and float64(0) are equal, so a frame
    whose first column is UInt8 (what to_dummies makes) was scaled in float16, about three
    significant digits, dwell times and positions included."""
    sim = TrafficSimulator(users=100, seed=4)
    model = OnlineModel.builtin("click")
    batches = list(_batches(sim, 3_000))
    for batch in batches[:-1]:
        model.process(batch)
    x = model.features(batches[-1])
    assert set(x.dtypes) == {pl.Float64}
    scaler = model.pipeline.steps["StandardScaler"]
    got = scaler.transform_many(x).to_numpy()
    raw = x.to_numpy()
    means = np.array([scaler.means[c] for c in x.columns])
    stds = np.array([scaler.vars[c] ** 0.5 for c in x.columns])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, (raw - means) / stds, rtol=1e-12, atol=1e-12)


def test_detector_is_quiet_during_warmup_and_on_improvement() -> None:
    d = AdwinDetector(warmup=5_000, cooldown=0)
    rng = np.random.default_rng(0)
    # an error rate that falls 0.5 -> 0.1: learning, not drift
    values = np.concatenate([rng.random(3_000) < 0.5, rng.random(6_000) < 0.1]).astype(float)
    assert d.update_many(values) == []


def test_cooldown_limits_alarms_for_one_change() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.random(3_000) < 0.1, rng.random(3_000) < 0.6]).astype(float)
    assert len(AdwinDetector(warmup=0, cooldown=10_000).update_many(values)) == 1


def test_an_alarm_locates_where_the_change_began() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.random(4_000) < 0.1, rng.random(2_000) < 0.4]).astype(float)
    detector = AdwinDetector(warmup=500, cooldown=10_000)
    alarms = [a for chunk in np.array_split(values, 12) for a in detector.update_many(chunk)]
    assert len(alarms) == 1 and alarms[0].index > 4_000
    assert abs(alarms[0].change_index - 4_000) < 60  # the change was at value 4,000


def test_detector_detects_exactly_where_rivers_own_adwin_update_does() -> None:
    """update_many feeds River's Rust window directly and derives the window's mean before
    each detection from a prefix sum; River's public ADWIN.update is the reference."""
    from river import drift

    rng = np.random.default_rng(7)
    # a stream with several shifts up and down, fed in uneven chunks
    rates = [0.1, 0.5, 0.2, 0.7, 0.3, 0.3, 0.05]
    values = np.concatenate([rng.random(3_000) < r for r in rates]).astype(float)
    ours = AdwinDetector(warmup=0, cooldown=0, direction="both")
    found = [
        (a.index, a.before, a.after)
        for chunk in np.array_split(values, 17)
        for a in ours._unlocated(chunk)
    ]
    river, expected = drift.ADWIN(delta=ours.delta, clock=ours.clock), []
    for i, v in enumerate(values.tolist(), start=1):
        before = river.estimation if not river.drift_detected else 0.0
        river.update(v)
        if river.drift_detected:
            expected.append((i, before, river.estimation))
    assert len(expected) >= 5  # the stream does exercise detection
    assert [i for i, _, _ in found] == [i for i, _, _ in expected]
    assert np.allclose([f[1:] for f in found], [e[1:] for e in expected], rtol=0, atol=1e-9)
    assert ours.seen == len(values) and ours.window == river.width


def test_rolling_metrics_cover_the_last_ten_thousand_events() -> None:
    import json

    from eddyline.online_learning.learner import METRICS_WINDOW
    from eddyline.schemas.events import ModelEvent
    from eddyline.schemas.tables import model_metrics_table

    sim = TrafficSimulator(users=100, seed=3)
    model = OnlineModel.builtin("click")
    assert model.rolling_metrics() == {}
    errors = [model.process(b).errors for b in _batches(sim, 15_000)]
    m = model.rolling_metrics()
    assert m["events"] == METRICS_WINDOW
    assert m["error_rate"] == np.concatenate(errors)[-METRICS_WINDOW:].mean()
    assert m["accuracy"] == 1 - m["error_rate"] and 0.3 < m["log_loss"] < 0.7
    assert set(m) == {"error_rate", "accuracy", "log_loss", "events"}  # the spec's metrics
    # each checkpoint's metrics become a model_metrics row
    event = ModelEvent(model="click", model_version=1, checkpoint=3, events_seen=15_000, metrics=m)
    [row] = model_metrics_table([event.model_dump_json().encode()]).to_pylist()
    assert row["log_loss"] == m["log_loss"] and row["window_events"] == METRICS_WINDOW
    assert row["kind"] == "checkpoint" and json.loads(event.model_dump_json())["metrics"]


def _controlled(n: int, positive: float, positions: tuple[int, int], seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "item_category": rng.choice(["news", "sports", "music", "tech"], n),
            "position": rng.integers(*positions, n),
            "dwell_time_s": rng.exponential(20.0, n),
            "action": np.where(rng.random(n) < positive, "click", "view"),
        }
    )


def test_watchers_catch_a_label_rate_shift_and_a_feature_shift_and_nothing_else() -> None:
    # Fixed seeds: deterministic. 10,000 events, then the label rate moves 0.2 -> 0.45 at
    # 10,000 and the position moves from 0-20 to 100-300 at 20,000.
    model = OnlineModel.builtin("click")
    found = []
    plan = [(0.2, (0, 20))] * 20 + [(0.45, (0, 20))] * 20 + [(0.45, (100, 300))] * 20
    for i, (positive, positions) in enumerate(plan):
        out = model.process(_controlled(500, positive, positions, seed=i))
        found += [(signal, name, alarm.index) for signal, name, alarm in out.watched]
    labels = [f for f in found if f[0] == "label_rate"]
    features = [f for f in found if f[1] == "feature:position"]
    assert labels and 10_000 < labels[0][2] < 11_000  # within 1,000 events
    assert features and 20_000 < features[0][2] < 20_500
    assert all(index > 10_000 for _, _, index in found)  # quiet before the first change
