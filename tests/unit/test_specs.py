"""Learner specs: loading (built-in names, YAML files), the checks at load time, the
satisfaction model, a custom spec on the per-row path, and predictions from query values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.spec import LearnerSpec, LearnerSpecError, load_spec, load_specs
from eddyline.simulate import TrafficSimulator


def _feedback(sim: TrafficSimulator, n: int) -> pa.Table:
    return pa.Table.from_pylist([e.model_dump() for e in sim.feedback(n)])


def test_the_satisfaction_model_learns_and_catches_the_change() -> None:
    # Fixed seed: deterministic. Satisfaction depends on the item's category (0.85/0.25/0.80/
    # 0.30, a Bayes error of ~0.22); at 60,000 feedback events the categories swap.
    sim = TrafficSimulator(users=500, seed=11, drift_at=1)
    model = OnlineModel.builtin("satisfaction")
    errors, alarms = [], []
    sim._emitted = 0  # feedback drifts once `drift_at` interactions were emitted
    for i in range(24):
        if i == 12:
            sim._emitted = 1  # the world changes at feedback event 60,000
        out = model.process(_feedback(sim, 5_000))
        errors.append(out.errors.mean())
        alarms += out.alarms
    assert np.mean(errors[6:12]) < 0.26  # near the Bayes error before the change
    assert np.mean(errors[12:14]) > 0.6  # the swap: most predictions turn wrong
    # Adam takes one step per 5,000-row batch: relearned within eight batches
    assert np.mean(errors[20:24]) < 0.26
    assert alarms and 60_000 < alarms[0].index < 60_500  # within 500 events of the change
    assert all(a.index > 60_000 for a in alarms)  # nothing before it
    m = model.rolling_metrics()
    assert set(m) == {"error_rate", "accuracy", "log_loss", "brier", "events"}
    assert 0.1 < m["brier"] < 0.25


def test_the_label_wins_over_the_rating_and_unlabelled_rows_are_not_learned() -> None:
    model = OnlineModel.builtin("satisfaction")
    t = pa.table(
        {
            "item_id": ["a", "b", "c", "d"],
            "app_id": ["x"] * 4,
            "occurred_at": pa.array([0, 0, 0, 0], pa.timestamp("us", tz="UTC")),
            "label": pa.array([False, None, True, None], pa.bool_()),
            "rating": pa.array([5, 4, 1, None], pa.int64()),
        }
    )
    assert model.target(t).to_list() == [False, True, True, None]
    assert len(model.process(t).errors) == 3 and model.seen == 3


def test_a_yaml_spec_with_a_per_row_estimator_runs(tmp_path) -> None:
    # A Hoeffding tree has no mini-batch API: the model falls back to a per-row loop.
    path = tmp_path / "tree.yaml"
    path.write_text(
        """
name: click_tree
stream: interaction
features:
  - {column: item_category, kind: one_hot, categories: [news, sports, music, tech]}
  - {column: position}
target:
  - {column: action, is_in: [click, purchase]}
pipeline:
  - tree.HoeffdingTreeClassifier: {grace_period: 100}
metrics: [error_rate, brier]
drift:
  watch:
    - {signal: feature, column: position, scale: 1000}
"""
    )
    [spec] = load_specs(f"{path}")
    model = OnlineModel.from_spec(spec)
    assert not model.minibatch and list(model.watchers) == ["feature:position"]
    sim = TrafficSimulator(users=100, seed=2)
    errors = [
        model.process(
            pa.Table.from_pylist([e.model_dump() for e in sim.interactions(1_000)])
        ).errors.mean()
        for _ in range(10)
    ]
    assert np.mean(errors[5:]) < 0.3  # Bayes error ~0.27
    assert set(model.rolling_metrics()) == {"error_rate", "brier", "events"}


def _spec(**change: object) -> dict[str, object]:
    return {**load_spec("click").model_dump(), **change}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stream": "nope"}, "no event type 'nope'"),
        ({"features": [{"column": "colour"}]}, "feature 'colour' is not a field of interaction"),
        ({"features": [{"column": "item_id"}]}, "'item_id' (str) cannot be used as numeric"),
        (
            {"stream": "feedback", "features": [{"column": "comment", "kind": "hashed"}]},
            "'comment' is redacted by the privacy stage",
        ),
        ({"pipeline": [{"linear_model.Nope": {}}]}, "no River class river.linear_model.Nope"),
        ({"pipeline": [{"preprocessing.StandardScaler": {}}]}, "must be a River classifier"),
        (
            {"pipeline": [{"linear_model.LogisticRegression": {"speed": 3}}]},
            "river.linear_model.LogisticRegression: ",
        ),
        (
            {"drift": {"watch": [{"signal": "feature", "column": "item_category"}]}},
            "watched column 'item_category' (str) cannot be used as numeric",
        ),
    ],
)
def test_a_spec_that_cannot_work_is_refused_with_the_reason(change, message) -> None:
    with pytest.raises(LearnerSpecError) as err:
        LearnerSpec.model_validate(_spec(**change))
    assert message in str(err.value)


def test_yaml_mistakes_name_the_file_and_the_field(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nstream: interaction\nfeatures: [{column: position}]\n"
        "target: [{column: action, is_in: [click], at_least: 1}]\n"
        "pipeline: [{linear_model.LogisticRegression: {}}]\n"
    )
    with pytest.raises(LearnerSpecError, match=r"bad.yaml: .*exactly one of is_in, at_least"):
        load_spec(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(LearnerSpecError, match="cannot read learner spec"):
        load_spec(bad)
    with pytest.raises(LearnerSpecError, match="neither a built-in"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(LearnerSpecError, match="two learner specs are named 'click'"):
        load_specs("click, click")


def test_predictions_take_query_strings_and_refuse_what_they_cannot_use() -> None:
    click = OnlineModel.builtin("click")
    p = click.predict_one({"item_category": "news", "position": "3", "dwell_time_s": "12.5"})
    assert p == pytest.approx(0.5)  # an untrained logistic regression
    with pytest.raises(LearnerSpecError, match="missing feature 'dwell_time_s'"):
        click.predict_one({"item_category": "news", "position": "3"})
    with pytest.raises(LearnerSpecError, match="unknown feature 'colour'"):
        click.predict_one({"item_category": "news", "position": 3, "dwell_time_s": 1, "colour": 1})
    with pytest.raises(LearnerSpecError, match="'position' needs a numeric int value, got 'x'"):
        click.predict_one({"item_category": "news", "position": "x", "dwell_time_s": "1"})
    satisfaction = OnlineModel.builtin("satisfaction")
    assert 0 <= satisfaction.predict_one({"item_id": "sku-1", "app_id": "shop"}) <= 1
    at = {"item_id": "sku-1", "app_id": "shop", "occurred_at": "2026-11-29T23:59:00+00:00"}
    assert 0 <= satisfaction.predict_one(at) <= 1


def test_the_fingerprint_changes_with_the_spec() -> None:
    spec = load_spec("click")
    same = LearnerSpec.model_validate(spec.model_dump())
    other = LearnerSpec.model_validate(_spec(metrics=["error_rate"]))
    assert spec.fingerprint() == same.fingerprint() != other.fingerprint()
