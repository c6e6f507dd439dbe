"""Drift detectors over a stream of numbers (errors, feature values, labels).

``AdwinDetector`` wraps River's ADWIN with what a retraining job needs from an alarm:
a warm-up (no alarm while the model is still learning), a cooldown (one alarm per change),
and a direction (an error rate that *improves* is not an alarm). It watches the label rate
and features (``BlockWatcher``), and a spec's error when the spec says ``method: adwin``;
the error's default detector is ``online_learning.cusum.CusumDetector``.

Examples:
    >>> import numpy as np
    >>> d = AdwinDetector(warmup=100, cooldown=500)
    >>> rng = np.random.default_rng(0)
    >>> before = (rng.random(2000) < 0.1).astype(float)
    >>> after = (rng.random(2000) < 0.6).astype(float)
    >>> [a.index > 2000 for a in d.update_many(np.concatenate([before, after]))]
    [True]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress, count
from typing import Literal

import numpy as np
from river import drift


@dataclass(frozen=True)
class Alarm:
    """A detected change: when it fired (count of values seen), where the change most likely
    began (``change_index``, same count), and the means before/after."""

    index: int
    before: float
    after: float
    change_index: int = 0

    @property
    def severity(self) -> float:
        return abs(self.after - self.before)


@dataclass
class AdwinDetector:
    """River's ADWIN with warm-up, cooldown and a direction filter."""

    # Tuned with bench/drift.py against River's default ADWIN (delta=0.002, clock=32):
    # faster, and quieter behind the warm-up and direction gates (bench/RESULTS.md).
    delta: float = 0.01
    clock: int = 2  # how often ADWIN checks for a cut: every `clock` values
    warmup: int = 1_000
    cooldown: int = 2_000
    direction: Literal["up", "down", "both"] = "up"
    #: the smallest move of the mean (across the located change) worth an alarm: ADWIN
    #: finds tiny but real shifts in long streams, which tell a retraining job nothing it
    #: can act on. A shift too small still starts the cooldown.
    min_change: float = 0.0
    #: "unit": the values are in [0, 1] already (0/1 errors, rates), as ADWIN's bound
    #: assumes. "warmup": unbounded values (a regression's absolute residuals, heavy-tailed
    #: when the target is noised): ADWIN starts after the warm-up and sees each value
    #: divided by the warm-up values' 99th percentile, clipped to 1; alarms report means
    #: in the values' own units (of the clipped values).
    bound: Literal["unit", "warmup"] = "unit"
    seen: int = 0
    _adwin: drift.ADWIN = field(init=False, repr=False)
    _scale: float = field(default=1.0, init=False, repr=False)
    _pending: list[float] | None = field(default=None, init=False, repr=False)
    _last_alarm: int = field(default=-(10**12), init=False, repr=False)
    _recent: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _previous_alarm: int = field(default=0, init=False, repr=False)
    recent_size: int = 5_000  # values kept to locate a change once it is detected

    def __post_init__(self) -> None:
        self._adwin = drift.ADWIN(delta=self.delta, clock=self.clock)  # type: ignore[no-untyped-call]  # River is untyped
        if self.bound == "warmup":
            self._pending = []

    def update_many(self, values: np.ndarray) -> list[Alarm]:
        """Feed values in order; return the alarms they raise."""
        if self._pending is not None:  # still measuring the warm-up's scale
            room = max(self.warmup - self.seen, 0)
            self._pending += values[:room].tolist()
            self.seen += min(room, len(values))
            values = values[room:]
            if self.seen < self.warmup or not len(values):
                return []
            high = float(np.quantile(self._pending, 0.99)) if self._pending else 1.0
            self._scale, self._pending = high if high > 0 else 1.0, None
        if self.bound == "warmup":
            values = np.minimum(values / self._scale, 1.0)
        return [
            Alarm(a.index, a.before * self._scale, a.after * self._scale, a.change_index)
            for a in self._update_unit(values)
        ]

    def _update_unit(self, values: np.ndarray) -> list[Alarm]:
        first = self.seen  # values seen before this call
        alarms = self._unlocated(values)
        self._recent = np.concatenate([self._recent, values])[-self.recent_size :]
        located = [self._locate(a, first, len(values)) for a in alarms]
        return [a for a in located if abs(a.after - a.before) * self._scale >= self.min_change]

    def _unlocated(self, values: np.ndarray) -> list[Alarm]:
        """Feed values to ADWIN; the alarms with ADWIN's own window means, not located."""
        alarms: list[Alarm] = []
        adwin = self._adwin
        first = self.seen
        # ADWIN is sequential by nature. This is River's ADWIN.update with the Python layers
        # peeled off: one call into River's Rust window per value, nothing else. ADWIN's
        # window only shrinks when it detects (a cut), so between detections its width and
        # total before value i are those read at the last detection plus the values added
        # since: taken from a prefix sum, not asked of the window per value (asking cost as
        # much as the update). river is pinned to 0.26; bench/drift.py checks the detections
        # and tests/unit/test_learning.py checks this against River's own ADWIN.update.
        rest = iter(values.tolist())  # consumed in order across the detections below
        prefix = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        pos, n = 0, len(values)
        while pos < n:
            if adwin._drift_detected:  # River resets the window after a detection
                adwin._reset()  # type: ignore[no-untyped-call]  # River is untyped
            helper = adwin._helper
            width, total = helper.get_width(), helper.get_total()
            # Feed values until one detects, iterating in C (map, compress): the index of
            # that value, with nothing after it consumed; None once all are fed.
            hit = next(compress(count(pos), map(helper.update, rest)), None)
            if hit is None:
                break
            adwin._drift_detected = True
            added = hit - pos  # values in the window before the detecting one
            before = (total + prefix[hit] - prefix[pos]) / (width + added) if width + added else 0.0
            after = helper.get_total() / helper.get_width()
            self.seen = first + hit + 1
            pos = hit + 1
            if not self._should_alarm(before, after):
                continue
            alarms.append(Alarm(self.seen, float(before), after))
            self._previous_alarm = self._last_alarm if self._last_alarm > 0 else 0
            self._last_alarm = self.seen
        self.seen = first + n
        return alarms

    def _locate(self, alarm: Alarm, first: int, batch: int) -> Alarm:
        """Where the change most likely began: the split of the recent values (after the
        warm-up and the previous alarm, up to this one) that best separates two means in the
        alarm's direction: the maximum-likelihood single change point."""
        end = len(self._recent) - (first + batch - alarm.index)
        earliest = max(self.warmup, self._previous_alarm, alarm.index - end)
        x = self._recent[end - (alarm.index - earliest) : end]
        n = len(x)
        if n < 4:
            return Alarm(alarm.index, alarm.before, alarm.after, alarm.index)
        k = np.arange(1, n)
        csum = np.cumsum(x)[:-1]
        gap = (x.sum() - csum) / (n - k) - csum / k  # mean after the split minus before
        if self.direction != "both":
            gap = np.maximum(gap if self.direction == "up" else -gap, 0.0)
        split = int(np.argmax(k * (n - k) / n * gap**2)) + 1
        # the statistics on either side of the located change, not ADWIN's window means
        before = float(csum[split - 1] / split)
        after = float((x.sum() - csum[split - 1]) / (n - split))
        return Alarm(alarm.index, before, after, alarm.index - (n - split))

    @property
    def estimate(self) -> float:
        """ADWIN's current mean of the watched values (e.g. the recent error rate)."""
        return float(self._adwin.estimation)

    @property
    def window(self) -> int:
        """How many recent values ADWIN keeps: after an alarm, the post-change window."""
        return int(self._adwin.width)

    def _should_alarm(self, before: float, after: float) -> bool:
        if self.seen < self.warmup or self.seen - self._last_alarm < self.cooldown:
            return False
        if self.direction == "up":
            return after > before
        if self.direction == "down":
            return after < before
        return True


@dataclass
class BlockWatcher:
    """An ``AdwinDetector`` fed the means of blocks of ``block`` values, not each value.

    For a shift in the mean of a signal (the label rate, a feature), the block means carry
    the same information up to one block of delay, at 1/``block`` of the per-value cost:
    the watchers then cost little beside the model. Warm-up and cooldown are given in
    values; alarms come back in values (``index`` and ``change_index`` to the block).
    """

    detector: AdwinDetector
    block: int = 8
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)

    def __post_init__(self) -> None:
        self.detector.warmup //= self.block
        self.detector.cooldown //= self.block

    def update_many(self, values: np.ndarray) -> list[Alarm]:
        data = np.concatenate([self._pending, values.astype(np.float64)])
        whole = len(data) // self.block * self.block
        self._pending = data[whole:]
        means = data[:whole].reshape(-1, self.block).mean(axis=1)
        return [
            Alarm(a.index * self.block, a.before, a.after, a.change_index * self.block)
            for a in self.detector.update_many(means)
        ]
