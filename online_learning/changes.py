"""One drift report per change, however the stream's partitions interleave.

A model learns its stream an envelope at a time, one raw partition after another, and the
partitions are not learned in step: after a crash, a hand-over or under uneven load, one
partition's rows can run thousands of events ahead of another's. A change that happens at
one moment (a new release, a new season) then reaches the model once per partition: its
error rises as the first partition's post-change rows arrive, falls back while older rows
of the other partitions follow, and rises again as each of them crosses the change. Each
rise is a true alarm of the detector, and each would be a drift event for the same change.

``ChangeReports`` places each alarm in **event time** (the rows' ``occurred_at``): where the
change began (the row at the alarm's ``change_index``) and when it was detected (the row it
fired on). An alarm in the same direction as the change last reported, whose change began
before that change was detected (plus one detection delay of slack, and at least
``MIN_SLACK_US``), is the same change reaching the model through another partition: it is
merged, not reported. A change that begins later than that is reported, however soon after
it is learned.

The floor: a detector places a change to within a few thousand rows, and a row's event
time is interpolated within its envelope (rows ``first``..``last`` ``occurred_at``), so a
change seen again through a lagging partition is placed seconds after where it was first
placed (measured: 5-10 s when a worker was killed and its partitions waited out a 6 s
session timeout, tests/integration/test_scale_out.py under load), while the first
detection delay can be a tenth of a second. So one report per direction per 30 s of event
time at most: a retraining job takes minutes, and trains on everything after the report.

A partition that lags far (its worker died and the group waited out the session timeout:
tens of thousands of rows) shows the change so late, and the model adapts meanwhile, that
the place found for it can be later still. Such an alarm is told by where its change lies
against what the model had already learned: every batch remembers the latest event time
learned before it (the frontier), and a change beginning more than the slack behind the
frontier of its own rows is old news, seen through a partition behind the others. In the
direction of the last report, and beginning no earlier than it, it is merged. (A change
confined to one lagging partition's users is merged with it too: the report already names
the data after it, and a retraining job trains on what follows.)

Examples:
    >>> r = ChangeReports()
    >>> r.learned(0, 1_000, 0, 1_000_000)  # 1,000 rows over one second (µs)
    >>> [a.index for a in r.new([Alarm(900, 0.1, 0.5, 800)])]
    [900]
    >>> r.new([Alarm(990, 0.2, 0.5, 810)])  # began before the first was detected: merged
    []
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from eddyline.online_learning.detectors import Alarm

_KEEP_ROWS = 30_000  # how far back a change is placed (the detector locates within 5,000)
MIN_SLACK_US = 30_000_000  # changes placed within 30 s (event time) of the last: one change


@dataclass
class ChangeReports:
    """Which alarms report a new change (see the module docstring)."""

    #: per learned batch: (first count, end count, first and last occurred_at, and the
    #: latest occurred_at learned before it; µs)
    batches: deque[tuple[int, ...]] = field(default_factory=deque)
    #: the last reported change: (direction, began at, detected at), event time in µs
    reported: tuple[bool, int, int] | None = None
    merged: int = 0
    #: the latest occurred_at learned so far (µs)
    high_water: int | None = None

    def learned(self, start: int, end: int, first_us: int, last_us: int) -> None:
        """Rows ``start``..``end - 1`` (the detector's counts) spanned these event times."""
        if end > start:
            before = getattr(self, "high_water", None)  # (checkpoints from before it)
            frontier = first_us if before is None else before
            self.batches.append((start, end, first_us, last_us, frontier))
            self.high_water = last_us if before is None else max(before, last_us)
        while self.batches and self.batches[-1][1] - self.batches[0][1] > _KEEP_ROWS:
            self.batches.popleft()

    def _batch(self, count: int) -> tuple[int, ...] | None:
        for batch in reversed(self.batches):
            if batch[0] <= count < batch[1]:
                return batch
        return None

    def at(self, count: int) -> int | None:
        """The event time (µs) of the row with this count, interpolated within its batch;
        None if it is no longer known."""
        batch = self._batch(count)
        if batch is None:
            return None
        start, end, first, last = batch[:4]
        return first + (last - first) * (count - start) // max(end - start - 1, 1)

    def frontier(self, count: int) -> int | None:
        """The latest event time (µs) learned before the batch holding this count."""
        batch = self._batch(count)
        return None if batch is None else batch[4] if len(batch) > 4 else batch[2]

    def new(self, alarms: list[Alarm]) -> list[Alarm]:
        """The alarms that report a new change; the others are counted in ``merged``."""
        out = []
        for alarm in alarms:
            rising = alarm.after > alarm.before
            began, detected = self.at(alarm.change_index), self.at(alarm.index - 1)
            if began is None or detected is None:  # not placeable: report it
                out.append(alarm)
                self.reported = None
                continue
            last = self.reported
            if last is not None and rising == last[0]:
                slack = max(last[2] - last[1], MIN_SLACK_US)  # one detection delay, or more
                frontier = self.frontier(alarm.change_index)
                behind = frontier is not None and began + slack < frontier
                if began <= last[2] + slack or (behind and began >= last[1] - slack):
                    self.merged += 1
                    continue
            self.reported = (rising, began, detected)
            out.append(alarm)
        return out
