"""The traffic simulator: its columnar form is the same traffic as its event form."""

from __future__ import annotations

from datetime import UTC, datetime

from eddyline.schemas.events import InteractionEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.sdk.columns import checked as _checked  # the SDK's own columnar checks
from eddyline.streams.sdk.columns import with_defaults as _with_defaults

FIELDS = ("user_id", "occurred_at", "app_id", "item_id", "item_category", "action")


def test_interaction_columns_hold_the_same_draws_as_the_events() -> None:
    events = list(TrafficSimulator(users=500, seed=7, drift_at=300).interactions(1_000))
    sim = TrafficSimulator(users=500, seed=7, drift_at=300)
    sim._t0 = events[0].occurred_at  # both count milliseconds from their own start
    rows = sim.interaction_columns(1_000).to_pylist()
    for event, row in zip(events, rows, strict=True):
        for name in (*FIELDS, "dwell_time_s", "position"):
            assert getattr(event, name) == row[name], name


def test_interaction_columns_pass_the_sdks_validation_with_one_timestamp() -> None:
    now = datetime.now(UTC)
    table = TrafficSimulator(users=50, seed=1).interaction_columns(200, occurred_at=now)
    checked = _checked(InteractionEvent, _with_defaults(InteractionEvent, table))
    assert checked.num_rows == 200
    assert set(checked["occurred_at"].to_pylist()) == {now}
    assert checked["event_id"].null_count == 0
