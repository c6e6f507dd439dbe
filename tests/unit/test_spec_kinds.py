"""Spec kinds beside binary: regression (metrics MAE and RMSE, drift on the residual) and
multi-class (error rate, accuracy, log-loss), online and in the retraining family (linear and
softmax with Opacus); and the checks that refuse a spec whose parts do not fit its kind."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from eddyline.consumers.training import TrainConfig, train_dp
from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.scoring import SpecScorer, evaluate
from eddyline.online_learning.spec import LearnerSpec, LearnerSpecError, load_spec
from eddyline.simulate import TrafficSimulator


def _interactions(n: int, seed: int = 2, drift_at: int | None = None) -> pa.Table:
    return TrafficSimulator(users=100, seed=seed, drift_at=drift_at).interaction_columns(n)


def _with_dwell(t: pa.Table, dwell: np.ndarray) -> pa.Table:
    return t.set_column(t.schema.get_field_index("dwell_time_s"), "dwell_time_s", pa.array(dwell))


def test_a_regression_spec_reports_mae_and_rmse_and_predicts_a_number() -> None:
    model = OnlineModel.builtin("dwell")
    assert model.spec.kind == "regression" and model.minibatch
    t = _interactions(20_000)
    for start in range(0, 20_000, 1_000):
        model.process(t.slice(start, 1_000))
    m = model.rolling_metrics()
    assert set(m) == {"mae", "rmse", "events"}
    # dwell is exponential with mean 30 (sd 30), independent of the features: the model
    # learns the mean, and its errors are those of predicting the mean
    assert 20 < m["mae"] < 26 and 27 < m["rmse"] < 33
    answer = model.predict({"item_category": "news", "position": "3"})
    assert set(answer) == {"value"} and 25 < answer["value"] < 35
    assert model.calibration() == []  # reliability bins are for binary specs


def test_the_residual_detector_finds_a_change_and_ignores_heavy_tailed_noise() -> None:
    # Fixed seeds: deterministic. Noise as the privacy boundary adds it to dwell time
    # (Laplace, scale 300): 200,000 events without a change raise no alarm; then dwell
    # times triple (mean 30 -> 90 s) and the change is found within 300 events.
    rng = np.random.default_rng(0)
    model = OnlineModel.builtin("dwell")
    t = _interactions(200_000, seed=3)
    noisy = t["dwell_time_s"].to_numpy() + rng.laplace(0, 300, t.num_rows)
    quiet = []
    for start in range(0, 200_000, 5_000):
        batch = _with_dwell(t.slice(start, 5_000), noisy[start : start + 5_000])
        quiet += model.process(batch).alarms
    assert quiet == []
    clean = OnlineModel.builtin("dwell")
    t = _interactions(40_000, seed=4)
    dwell = t["dwell_time_s"].to_numpy() * np.where(np.arange(40_000) < 20_000, 1.0, 3.0)
    alarms = []
    for start in range(0, 40_000, 500):
        alarms += clean.process(_with_dwell(t.slice(start, 500), dwell[start : start + 500])).alarms
    alarm = alarms[0]  # nothing before the change; found within 300 events, located at it
    assert 20_000 <= alarm.index < 20_300 and abs(alarm.change_index - 20_000) < 300
    assert alarm.after > 2 * alarm.before  # in seconds of absolute residual


def test_a_multiclass_spec_beats_the_majority_class_and_answers_with_probabilities() -> None:
    model = OnlineModel.builtin("action")
    assert model.spec.kind == "multiclass" and not model.minibatch  # River learns per row
    t = _interactions(30_000)
    errors = np.concatenate(
        [model.process(t.slice(s, 1_000)).errors for s in range(0, 30_000, 1_000)]
    )
    actions = t["action"].to_numpy(zero_copy_only=False)
    majority = max(np.mean(actions == a) for a in set(actions))
    assert 1 - errors[-10_000:].mean() > majority + 0.05  # the category tells clicks apart
    m = model.rolling_metrics()
    assert set(m) == {"error_rate", "accuracy", "log_loss", "events"}
    assert m["log_loss"] < np.log(4)  # better than a uniform guess over four actions
    answer = model.predict({"item_category": "news", "position": "0"})
    assert answer["class"] in {"view", "click", "purchase", "skip"}
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["dwell", "action"])
def test_the_retraining_family_of_a_kind_learns_and_saves(name: str, tmp_path) -> None:
    spec = load_spec(name)
    train, holdout = _interactions(8_000, seed=5), _interactions(2_000, seed=6)
    if name == "dwell":  # the simulator's dwell ignores the features: make the category count
        train, holdout = (
            _with_dwell(t, t["dwell_time_s"].to_numpy() + 60.0 * _is_news(t))
            for t in (train, holdout)
        )
    result = train_dp(spec, train, TrainConfig(epsilon=5.0, epochs=3))
    assert result.scorer.family == {"dwell": "linear", "action": "softmax"}[name]
    untrained = SpecScorer.fit(spec, train)  # weights zero: the mean / a uniform guess
    trained, baseline = evaluate(result.scorer, holdout), evaluate(untrained, holdout)
    assert trained["loss"] < baseline["loss"]
    assert trained["rows"] == 2_000 and 0 < result.epsilon <= 5.0 + 1e-6
    result.scorer.save(tmp_path)
    again = SpecScorer.load(tmp_path)
    assert np.array_equal(again.predict(holdout), result.scorer.predict(holdout))


def _is_news(t: pa.Table) -> np.ndarray:
    return (t["item_category"].to_numpy(zero_copy_only=False) == "news").astype(float)


def _spec(base: str, **change: object) -> dict[str, object]:
    return {**load_spec(base).model_dump(), **change}


@pytest.mark.parametrize(
    ("base", "change", "message"),
    [
        ("dwell", {"target": [{"column": "dwell_time_s", "at_least": 30}]}, "is the value itself"),
        ("dwell", {"target": [{"column": "action"}]}, "'action' (str) cannot be used as numeric"),
        ("dwell", {"metrics": ["log_loss"]}, "metric 'log_loss' is not one of mae, rmse"),
        ("dwell", {"drift": {"watch": [{"signal": "label_rate"}]}}, "label_rate watch needs"),
        (
            "dwell",
            {"pipeline": [{"linear_model.LogisticRegression": {}}]},
            "must be a River regressor",
        ),
        (
            "action",
            {"pipeline": [{"linear_model.LogisticRegression": {}}]},
            "must be a multi-class River classifier",
        ),
        ("click", {"metrics": ["mae"]}, "metric 'mae' is not one of error_rate"),
        ("click", {"kind": "ordinal"}, "kind"),
    ],
)
def test_a_spec_whose_parts_do_not_fit_its_kind_is_refused(base, change, message) -> None:
    with pytest.raises((LearnerSpecError, ValueError)) as err:
        LearnerSpec.model_validate(_spec(base, **change))
    assert message in str(err.value)


def test_a_kind_without_metrics_gets_its_defaults() -> None:
    data = {k: v for k, v in load_spec("dwell").model_dump().items() if k != "metrics"}
    assert LearnerSpec.model_validate(data).metrics == ["mae", "rmse"]
    binary = {k: v for k, v in load_spec("click").model_dump().items() if k != "metrics"}
    assert LearnerSpec.model_validate(binary).metrics == ["error_rate", "accuracy", "log_loss"]
