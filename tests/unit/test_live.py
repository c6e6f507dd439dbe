"""What the live page and the report are built from: calibration bins, budget use, cost
samples and the page's state, on the real stages (no broker)."""

from __future__ import annotations

import asyncio
import json

import pyarrow as pa
import pytest

from eddyline.online_learning.learner import OnlineModel
from eddyline.privacy.ledger import BudgetLedger
from eddyline.schemas.tables import costs_table
from eddyline.streams.worker.pipeline import Pipeline
from tests.unit.test_stages import _private


def test_calibration_bins_hold_the_windows_predictions_and_their_outcomes() -> None:
    model = OnlineModel.builtin("click")
    assert model.calibration() == []
    # Predictions and errors as process() records them: 0.15 twice (one positive), 0.95
    # three times (all positive), 0.55 once (negative: an error).
    proba = [0.15, 0.15, 0.95, 0.95, 0.95, 0.55]
    truth = [True, False, True, True, True, False]
    model.recent_proba.extend(proba)
    model.recent_errors.extend(float((q > 0.5) != t) for q, t in zip(proba, truth, strict=True))
    bins = model.calibration()
    assert len(bins) == 10 and sum(b[0] for b in bins) == 6
    assert bins[1] == pytest.approx([2, 0.15, 0.5])
    assert bins[9] == pytest.approx([3, 0.95, 1.0])
    assert bins[5] == pytest.approx([1, 0.55, 0.0])
    assert bins[0] == [0.0, 0.0, 0.0]


def test_budget_use_counts_users_by_the_share_of_their_allowance_spent(p: Pipeline) -> None:
    budgets = p.privatize.privatizer.budgets
    ledger = budgets.ledgers[("interaction", 0)] = BudgetLedger(allowance=10)
    now = ledger.window_of(budgets.clock())
    users = ["a"] * 10 + ["b"] * 5 + ["c"]  # all of it, half, a tenth
    ledger.charge(pa.array(users), window=now, offset=1)
    names, counts = ledger.charged_in(now)
    assert dict(zip(names, counts.tolist(), strict=True)) == {"a": 10, "b": 5, "c": 1}
    assert ledger.charged_in(now + 1)[0] == []
    use = budgets.usage()
    assert use["spent"] == {"interaction": [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]}
    assert (use["active_users"], use["events"]) == (3, 16)


def test_the_pages_state_follows_the_stages(p: Pipeline) -> None:
    envelope = _private(p, 300, offset=4)  # privatised: charged to 20 users' budgets
    learned = asyncio.run(p.learn.learn("interaction", *envelope))
    checkpoints = asyncio.run(p.learn.maybe_checkpoint("interaction"))
    p.live.saw(learned.drift, checkpoints)
    asyncio.run(p.live.sample())
    asyncio.run(p.live.sample())
    state = p.live.state()
    assert state["budget"]["active_users"] == 20 and state["budget"]["events"] == 300
    assert sum(state["budget"]["spent"]["interaction"]) == 20
    click = state["models"]["click"]
    assert click["seen"] == 300 and len(click["history"]) == 1
    assert sum(b[0] for b in click["calibration"]) == 300
    assert len(state["times"]) == 1 and state["rates"]["decoded"] == [0.0]  # nothing new
    assert state["cost"]["cpu_s_per_1000"]["privatize"] > 0
    per_user = p.metrics.registry.get_sample_value("eddyline_worker_cost_per_active_user")
    assert per_user == pytest.approx(
        sum(p.metrics.cost_of(s) for s in ("privatize", "lake", "learn")) / 1e6 * 300 / 20
    )
    assert json.dumps(state)  # the page's JSON


def test_a_cost_sample_becomes_one_row_per_stage(p: Pipeline) -> None:
    _private(p, 50, offset=1)
    sample = p.live.cost_sample()
    rows = costs_table([sample]).to_pylist()
    assert [r["stage"] for r in rows] == ["privatize"]
    assert rows[0]["rows"] == 50 and rows[0]["cpu_seconds"] > 0
    assert rows[0]["worker"] == p.live.worker and rows[0]["price_per_core_hour"] == 0.05
