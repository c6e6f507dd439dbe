"""The retraining job on real Delta tables and a real registry (no Kafka): DP training with
Opacus, the ε it records, the total budget, idempotency, atomic registration, and the
shadow evaluator's promotion and rollback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from eddyline.consumers.retrain import RetrainBudgetError, RetrainJob
from eddyline.consumers.training import TrainConfig, composed_epsilon, train_dp
from eddyline.online_learning.registry import CHALLENGER, CHAMPION, ModelRegistry
from eddyline.online_learning.scoring import SpecScorer, evaluate
from eddyline.online_learning.shadow import ShadowEvaluator
from eddyline.online_learning.spec import load_spec
from eddyline.schemas.events import DriftEvent, ModelEvent
from eddyline.simulate import TrafficSimulator
from tests.factories import drift_event

DRIFT_AT = 6_000
CLICK = load_spec("click")


def _rows(n: int, start: int = 0, seed: int = 3) -> pa.Table:
    """Interaction rows as the lake holds them (user ids left out), drift at DRIFT_AT."""
    sim = TrafficSimulator(users=500, seed=seed, drift_at=DRIFT_AT - start)
    t0 = datetime(2026, 11, 29, tzinfo=UTC) + timedelta(seconds=start)
    out = []
    for i, e in enumerate(sim.interactions(n)):
        out.append(
            {
                "event_id": str(e.event_id),
                "occurred_at": t0 + timedelta(milliseconds=i),
                "item_category": e.item_category,
                "position": e.position,
                "dwell_time_s": e.dwell_time_s,
                "action": e.action,
            }
        )
    return pa.Table.from_pylist(out)


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """Version 0: 6,000 rows before the drift; version 1: 6,000 after it."""
    uri = tmp_path / "lake" / "interaction"
    write_deltalake(str(uri), _rows(DRIFT_AT), mode="append")
    write_deltalake(str(uri), _rows(6_000, start=DRIFT_AT, seed=4), mode="append")
    assert DeltaTable(str(uri)).version() == 1
    return tmp_path / "lake"


def _drift(key: str = "click:1:error_rate:0:100", at: datetime | None = None) -> DriftEvent:
    """A drift detected at ``at`` whose "before" window is version 0, "after" version 1."""
    return drift_event(
        key,
        events_seen=DRIFT_AT + 300,
        lake_version=1,
        lake_version_before=0,
        detected_at=at or datetime.now(UTC),
    )


def _job(lake: Path, tmp_path: Path, events: list[ModelEvent], **kw: object) -> RetrainJob:
    return RetrainJob(
        lake,
        ModelRegistry(tmp_path / "registry"),
        publish=events.append,
        **kw,  # type: ignore[arg-type]
    )


def test_the_recorded_epsilon_is_opacus_accountants_for_the_run() -> None:
    cfg = TrainConfig(epsilon=2.0, delta=1e-5, epochs=2)
    result = train_dp(CLICK, _rows(4_000), cfg)
    assert result.epsilon == pytest.approx(composed_epsilon(result.history, cfg.delta))
    assert cfg.epsilon * 0.9 <= result.epsilon <= cfg.epsilon * 1.01  # Opacus hit the target
    assert result.history and result.history[0][1] == pytest.approx(1 / np.ceil(4_000 / 256))


def test_a_drift_event_retrains_from_the_named_window_and_registers_a_better_challenger(
    lake: Path, tmp_path: Path
) -> None:
    events: list[ModelEvent] = []
    job = _job(lake, tmp_path, events)
    version = job.handle(_drift())
    assert version is not None and version.version == 2  # v1: the bootstrap champion
    reg = job.registry
    assert reg.alias("click", CHAMPION) == 1 and reg.alias("click", CHALLENGER) == 2
    champion = reg.get("click", 1)
    assert champion.lineage["bootstrap"] and champion.lineage["trained_on"]["to_version"] == 0
    assert version.lineage["trained_on"] == {"after_version": 0, "to_version": 1}
    assert (
        version.drift_key == "click:1:error_rate:0:100"
        and version.lineage["table"] == "interaction"
    )
    # on post-drift data the new model beats the pre-drift one
    assert version.metrics["holdout_loss"] < version.metrics["champion_holdout_loss"]
    assert version.epsilon == pytest.approx(composed_epsilon(version.accountant_history, 1e-5))
    assert [(e.kind, e.alias, e.model_version) for e in events] == [
        ("promoted", CHAMPION, 1),
        ("registered", CHALLENGER, 2),
    ]


def test_duplicate_and_out_of_order_drift_events_retrain_once(lake: Path, tmp_path: Path) -> None:
    events: list[ModelEvent] = []
    job = _job(lake, tmp_path, events)
    now = datetime.now(UTC)
    assert job.handle(_drift("k-new", now)) is not None
    assert job.handle(_drift("k-new", now)) is None  # redelivered
    assert job.handle(_drift("k-old", now - timedelta(minutes=5))) is None  # older, late
    assert [v.version for v in job.registry.versions("click")] == [1, 2]


def test_the_total_budget_is_enforced_with_a_clear_message(lake: Path, tmp_path: Path) -> None:
    events: list[ModelEvent] = []
    job = _job(lake, tmp_path, events, total_epsilon=2.5)  # one ε = 2 run fits, two do not
    with pytest.raises(RetrainBudgetError, match=r"past the total of 2.5: 1 earlier training runs"):
        job.handle(_drift())
    assert [v.version for v in job.registry.versions("click")] == [1]  # the bootstrap only
    assert job.registry.spent("interaction")  # its history is what the refusal composed


def test_a_crash_while_registering_leaves_no_half_registered_model(
    lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[ModelEvent] = []
    job = _job(lake, tmp_path, events)
    job.handle(_drift("first"))  # a champion exists now
    real_save = SpecScorer.save

    def crash(self: SpecScorer, folder: Path) -> None:
        real_save(self, folder)
        raise OSError("disk full")  # the artifact half written, the handler dies

    monkeypatch.setattr(SpecScorer, "save", crash)
    with pytest.raises(OSError):
        job.handle(_drift("second", datetime.now(UTC) + timedelta(seconds=1)))
    assert [v.version for v in job.registry.versions("click")] == [1, 2]
    assert job.registry.orphans() == []  # the failed artifact folder was removed
    monkeypatch.setattr(SpecScorer, "save", real_save)
    version = job.handle(_drift("second", datetime.now(UTC) + timedelta(seconds=1)))  # retry
    assert version is not None and version.version == 3
    assert job.registry.by_drift_key("second") == version


def _register(reg: ModelRegistry, table: pa.Table, seed: int = 0) -> int:
    result = train_dp(CLICK, table, TrainConfig(epsilon=5.0, seed=seed))
    v = reg.register(
        "click",
        result.scorer.save,
        metrics=evaluate(result.scorer, table),
        epsilon=result.epsilon,
        delta=result.delta,
        accountant_history=result.history,
        data_key="interaction",
        lineage={},
    )
    return v.version


def _batches(table: pa.Table, size: int = 500) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def test_shadow_promotes_a_better_challenger_and_rolls_back_when_it_degrades(
    tmp_path: Path,
) -> None:
    reg = ModelRegistry(tmp_path / "registry")
    pre, post = _rows(DRIFT_AT), _rows(6_000, start=DRIFT_AT, seed=4)
    old, new = _register(reg, pre), _register(reg, post)
    reg.set_alias("click", CHAMPION, old, "test")
    reg.set_alias("click", CHALLENGER, new, "test")
    events: list[ModelEvent] = []
    shadow = ShadowEvaluator(reg, window=1_000, min_events=1_000, publish=events.append)
    for batch in _batches(_rows(3_000, start=DRIFT_AT, seed=7)):  # live traffic, drifted
        shadow.observe(batch)
    assert [(e.kind, e.model_version, e.previous_version) for e in events] == [
        ("promoted", new, old)
    ]
    assert reg.alias("click", CHAMPION) == new and reg.alias("click", CHALLENGER) is None
    # the world swings back: the promoted model's live loss falls behind the one it replaced
    for batch in _batches(_rows(3_000, seed=8)):
        shadow.observe(batch)
    assert [e.kind for e in events] == ["promoted", "rolled_back"]
    assert reg.alias("click", CHAMPION) == old and events[-1].previous_version == new


def test_a_worse_challenger_is_never_promoted(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "registry")
    post = _rows(6_000, start=DRIFT_AT, seed=4)
    good = _register(reg, post)
    flipped = post.set_column(
        post.schema.get_field_index("action"),
        "action",
        pa.array(
            np.where(
                np.isin(post["action"].to_numpy(zero_copy_only=False), ["click", "purchase"]),
                "skip",
                "click",
            )
        ),
    )
    bad = _register(reg, flipped)  # learned the opposite
    reg.set_alias("click", CHAMPION, good, "test")
    reg.set_alias("click", CHALLENGER, bad, "test")
    events: list[ModelEvent] = []
    shadow = ShadowEvaluator(reg, window=1_000, min_events=1_000, publish=events.append)
    for batch in _batches(_rows(5_000, start=DRIFT_AT, seed=9)):
        shadow.observe(batch)
    assert events == [] and reg.alias("click", CHAMPION) == good
    assert shadow.live_loss(CHALLENGER) > shadow.live_loss(CHAMPION)  # type: ignore[operator]


def test_a_click_scorer_registered_before_spec_kinds_still_loads_and_scores(tmp_path) -> None:
    # the pre-kinds artifact: categories, means and deviations of (position, dwell time),
    # one weight per input, one bias
    old = {
        "categories": ["music", "news"],
        "means": [5.0, 30.0],
        "stds": [2.0, 10.0],
        "weights": [0.5, -0.5, 0.2, 0.1],
        "bias": -0.3,
    }
    (tmp_path / "scorer.json").write_text(json.dumps(old))
    rows = _rows(50)
    scorer = SpecScorer.load(tmp_path)
    cats = rows["item_category"].to_numpy(zero_copy_only=False)
    z = (
        0.5 * (cats == "music")
        - 0.5 * (cats == "news")
        + 0.2 * (rows["position"].to_numpy() - 5.0) / 2.0
        + 0.1 * (rows["dwell_time_s"].to_numpy() - 30.0) / 10.0
        - 0.3
    )
    assert np.allclose(scorer.predict(rows), 1 / (1 + np.exp(-z)), atol=1e-6)
