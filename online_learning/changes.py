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

The floor: a row's event time is interpolated within its envelope (rows ``first``..
``last`` ``occurred_at``), and envelopes spanned 0.6-2.6 s of event time in
tests/integration/test_scale_out.py, so a change seen again through another partition can
be placed that far from where it was first placed, while the first detection delay was
0.05 s of event time there.

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
MIN_SLACK_US = 5_000_000  # changes placed within 5 s (event time) of the last are one change


@dataclass
class ChangeReports:
    """Which alarms report a new change (see the module docstring)."""

    #: per learned batch: (first count, end count, first and last occurred_at in µs)
    batches: deque[tuple[int, int, int, int]] = field(default_factory=deque)
    #: the last reported change: (direction, began at, detected at), event time in µs
    reported: tuple[bool, int, int] | None = None
    merged: int = 0

    def learned(self, start: int, end: int, first_us: int, last_us: int) -> None:
        """Rows ``start``..``end - 1`` (the detector's counts) spanned these event times."""
        if end > start:
            self.batches.append((start, end, first_us, last_us))
        while self.batches and self.batches[-1][1] - self.batches[0][1] > _KEEP_ROWS:
            self.batches.popleft()

    def at(self, count: int) -> int | None:
        """The event time (µs) of the row with this count, interpolated within its batch;
        None if it is no longer known."""
        for start, end, first, last in reversed(self.batches):
            if start <= count < end:
                span = max(end - start - 1, 1)
                return first + (last - first) * (count - start) // span
        return None

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
                if began <= last[2] + slack:
                    self.merged += 1
                    continue
            self.reported = (rising, began, detected)
            out.append(alarm)
        return out
