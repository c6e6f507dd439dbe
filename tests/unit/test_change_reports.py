"""One drift report per change (online_learning/changes.py): alarms are placed in event time,
and an alarm that is the last reported change reaching the model through another partition
is merged; a change that begins after the last one was detected is reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from eddyline.online_learning.changes import ChangeReports
from eddyline.online_learning.detectors import Alarm
from eddyline.online_learning.learner import OnlineModel

S = 1_000_000  # µs


def _partitions_out_of_step() -> ChangeReports:
    """A change at t = 100 s, learned through three partitions that are out of step: P2's
    rows around it first, then older rows of P0, then P0 and P1 crossing it."""
    r = ChangeReports()
    r.learned(0, 1_000, 95 * S, 105 * S)  # P2, crossing t = 100 s at count 500
    r.learned(1_000, 2_000, 80 * S, 90 * S)  # P0, before the change
    r.learned(2_000, 3_000, 95 * S, 105 * S)  # P0, crossing it at count 2,500
    r.learned(3_000, 4_000, 95 * S, 105 * S)  # P1, crossing it at count 3,500
    return r


def test_a_change_reaching_the_model_through_each_partition_is_reported_once() -> None:
    r = _partitions_out_of_step()
    first = Alarm(700, 0.23, 0.69, 500)  # detected at t = 102 s, began at 100 s
    again = [Alarm(2_700, 0.30, 0.70, 2_510), Alarm(3_650, 0.35, 0.70, 3_490)]
    assert r.new([first]) == [first]
    assert r.new(again) == []
    assert r.merged == 2


def test_a_change_that_begins_after_the_last_was_detected_is_reported() -> None:
    r = _partitions_out_of_step()
    first = Alarm(700, 0.23, 0.69, 500)
    r.learned(4_000, 5_000, 150 * S, 160 * S)
    second = Alarm(4_800, 0.30, 0.90, 4_600)  # began at ~156 s: a new change
    falling = Alarm(3_700, 0.70, 0.30, 3_520)  # the other way: a new change too
    assert r.new([first, falling, second]) == [first, falling, second]
    assert r.merged == 0


def test_an_alarm_that_cannot_be_placed_is_reported() -> None:
    r = ChangeReports()
    r.learned(100_000, 101_000, 0, S)
    assert r.new([Alarm(500, 0.1, 0.5, 400)]) == [Alarm(500, 0.1, 0.5, 400)]


def test_the_model_places_its_batches_by_their_occurred_at() -> None:
    model = OnlineModel.builtin("click")
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    rows = pa.table(
        {
            "item_category": ["news"] * 4,
            "position": [1, 2, 3, 4],
            "dwell_time_s": [1.0, 2.0, 3.0, 4.0],
            "action": ["click", "view", "click", "view"],
            "occurred_at": pa.array(
                [t0 + timedelta(seconds=i) for i in range(4)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    model.process(rows)
    start, end, first, last = model.reports.batches[-1]
    assert (end - start, last - first) == (4, 3 * S)
    assert model.reports.at(start + 2) == first + 2 * S


def test_a_change_placed_a_little_late_through_another_partition_is_merged() -> None:
    """The first detection came 0.1 s (event time) after the change; the same change seen
    through another partition is placed 1 s later than that (times are interpolated within
    an envelope, which spans seconds): within MIN_SLACK_US, one change. One placed 6 s after
    the first detection is a new change."""
    r = ChangeReports()
    r.learned(0, 1_000, 99 * S, 101 * S)  # P2 crossing t = 100 s at count 500
    r.learned(1_000, 2_000, 100 * S, 102 * S)  # P1 crossing it, placed late
    r.learned(2_000, 3_000, 107 * S, 109 * S)  # later rows
    first = Alarm(550, 0.23, 0.69, 500)  # began at 100.0 s, detected at 100.1 s
    again = Alarm(1_700, 0.30, 0.70, 1_550)  # placed at ~101.1 s: 1 s after the detection
    later = Alarm(2_900, 0.30, 0.95, 2_100)  # placed at ~107.2 s: a new change
    assert r.new([first]) == [first]
    assert r.new([again]) == [] and r.merged == 1
    assert r.new([later]) == [later]
