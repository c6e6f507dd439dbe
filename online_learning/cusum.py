"""The error detector: CUSUM tests against a trailing reference, behind a warm-up that
follows the model's learning curve, and a stricter threshold (not deafness) after an alarm.

Why not ADWIN here: for a known pre- and post-change law, Page's CUSUM is the detector with
the least worst-case delay at a given false-alarm rate (Lorden, 1971); ADWIN pays for not
knowing either. The error rate before a change is estimated (the reference), and the size
of the change is not known, so ``CusumDetector`` runs one CUSUM per candidate rise (the
``shifts``: +0.1, +0.2, +0.4 over the reference) and alarms when any crosses
``threshold``. ``bench/drift.py`` measures it against River's ADWIN and Lorden's bound.

The rules, in order:

* **Warm-up**: no test while the model is still learning. The warm-up ends at the first
  multiple of 250 values, at least ``warmup`` and 4,000 values in, where the mean of the
  last 2,000 values is no lower than the mean of the 2,000 before them by more than two
  standard errors (the learning curve has flattened); at the latest at ``warmup_max``. If
  the last 2,000 are *higher* by more than three standard errors, the error rose inside
  the warm-up (a change): it ends 2,000 values back, before the rise, so the rise is
  tested. ``warmup`` 0: no warm-up at all.
* **Reference**: the mean of the values ``gap`` to ``gap + reference`` back (1,000 to
  9,000), counting from the warm-up's last 1,000 values or from the last alarm: a change
  enters it only ``gap`` values after it began. Less than ``gap + settle`` values from that
  start, the values since the start; less than ``settle``: no test yet.
* **Test**: per rise d, S = max(0, S + x log(p1/p0) + (1-x) log((1-p1)/(1-p0))), p0 the
  reference, p1 = p0 + d; an alarm when any S reaches ``threshold``, the change located
  where that S last left zero. The values are 0/1 errors, or numbers in [0, 1].
* **After an alarm**: every S restarts, and so does the reference (from the values after
  the alarm): a model relearning the new concept (its error falling) raises nothing. For
  ``cooldown`` values the threshold is ``threshold + strict``: a second, larger change
  still alarms; a chance excursion rarely does.

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> i = np.arange(12_000)
    >>> errors = (rng.random(12_000) < np.where(i < 8_000, 0.1, 0.3)).astype(float)
    >>> [(a.index > 8_000, a.change_index) for a in CusumDetector().update_many(errors)]  # at 8,000
    [(True, 8011)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from eddyline.online_learning.detectors import Alarm

_CURVE_WINDOW, _CURVE_BLOCK = 2_000, 250


@dataclass
class CusumDetector:
    """CUSUM tests on a model's error (see the module docstring for the rules)."""

    threshold: float = 13.5  # log-likelihood ratio; tuned with bench/drift.py
    shifts: tuple[float, ...] = (0.1, 0.2, 0.4)
    warmup: int = 1_000  # the fewest values before the learning-curve rule may end it
    warmup_max: int = 20_000
    cooldown: int = 2_000  # values after an alarm tested at threshold + strict
    strict: float = 3.0
    settle: int = 200
    reference: int = 8_000
    gap: int = 1_000
    direction: Literal["up", "down", "both"] = "up"
    min_change: float = 0.0  # the smallest move (in the values' units) worth an alarm
    #: "unit": values in [0, 1]; "warmup": unbounded ones (a regression's absolute
    #: residuals), divided by the warm-up values' 99th percentile and clipped to 1
    bound: Literal["unit", "warmup"] = "unit"
    chunk: int = 1_000  # values tested per reference estimate
    seen: int = 0
    warm_end: int | None = None  # the count at which the warm-up ended
    _values: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _first: int = field(default=0, init=False, repr=False)  # the count of _values[0]
    _next: int = field(default=0, init=False, repr=False)  # the next count to test
    _stats: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _left_zero: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _last_alarm: int | None = field(default=None, init=False, repr=False)
    _scale: float = field(default=1.0, init=False, repr=False)
    #: the chunk under test: (p0, threshold, first count, end count)
    _chunk: tuple[float, float, int, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        width = len(self.shifts) * (2 if self.direction == "both" else 1)
        self._stats, self._left_zero = np.zeros(width), np.zeros(width, dtype=np.int64)

    @property
    def estimate(self) -> float:
        """The mean of the last 1,000 values (e.g. the recent error rate)."""
        recent = self._values[-_CURVE_WINDOW:]
        return float(recent.mean()) * self._scale if len(recent) else 0.0

    def update_many(self, values: np.ndarray) -> list[Alarm]:
        """Feed values in order; return the alarms they raise."""
        values = np.asarray(values, dtype=np.float64)
        if self.warm_end is not None and self.bound == "warmup":
            values = np.minimum(values / self._scale, 1.0)
        self._values = np.concatenate([self._values, values])
        self.seen += len(values)
        if self.warm_end is None and not self._end_warmup():
            self._trim()
            return []
        alarms: list[Alarm] = []
        while self._next < self.seen:
            alarm = self._test()
            if alarm is not None and abs(alarm.after - alarm.before) >= self.min_change:
                alarms.append(alarm)
        self._trim()
        return alarms

    def _at(self, lo: int, hi: int) -> np.ndarray:
        """Values with counts lo..hi-1 (those still kept)."""
        return self._values[max(lo - self._first, 0) : max(hi - self._first, 0)]

    def _end_warmup(self) -> bool:
        if self.warmup == 0:  # no warm-up at all
            self.warm_end = self._next = 0
            return True
        w = _CURVE_WINDOW
        t = max(self.warmup, 2 * w)
        t += -t % _CURVE_BLOCK
        while t <= self.seen:
            last, prev = self._at(t - w, t).mean(), self._at(t - 2 * w, t - w).mean()
            if self.bound == "warmup":  # compare residuals in their own scale's units
                sd = float(self._at(t - 2 * w, t).std())
            else:
                sd = math.sqrt(max(prev * (1 - prev), 1e-4))
            se = sd * math.sqrt(2 / w)
            if last > prev + 3 * se:  # the error rose inside the warm-up (a change):
                t -= w  # test from before the rise
                break
            if last >= prev - 2 * se or t >= self.warmup_max:
                break
            t += _CURVE_BLOCK
        else:
            return False
        self.warm_end = self._next = t
        self._left_zero[:] = t
        if self.bound == "warmup":
            high = float(np.quantile(self._at(0, t), 0.99))
            self._scale = high if high > 0 else 1.0
            self._values = np.minimum(self._values / self._scale, 1.0)
        return True

    def _reference(self, t: int) -> tuple[float, float, int] | None:
        """(p0, threshold, how many values it holds) for values from count t on; None
        while settling."""
        assert self.warm_end is not None
        after_alarm = self._last_alarm is not None
        start = self._last_alarm + 1 if self._last_alarm is not None else self.warm_end - 1_000
        start = max(start, 0)
        if t - start < self.settle:
            return None
        hi = t - self.gap if t - self.gap - start >= self.settle else t
        p0 = float(self._at(max(start, hi - self.reference), hi).mean())
        strict = after_alarm and t - (self._last_alarm or 0) < self.cooldown
        threshold = self.threshold + (self.strict if strict else 0.0)
        return min(max(p0, 0.005), 0.98), threshold, hi - max(start, hi - self.reference)

    def _test(self) -> Alarm | None:
        """Test the values from self._next to the end of its chunk, or to the last value
        seen; stop at an alarm. A chunk's reference is estimated once, at its start, and a
        chunk is never longer than the values that reference holds: the same values give
        the same alarms however they are batched."""
        t = self._next
        if self._chunk is None or t >= self._chunk[3]:
            ref = self._reference(t)
            if ref is None:  # settling after an alarm: nothing accumulates
                settle_end = (self._last_alarm or 0) + 1 + self.settle
                self._next = min(self.seen, max(settle_end, t + 1))
                self._stats[:] = 0.0
                self._left_zero[:] = self._next
                return None
            p0, h, held = ref
            self._chunk = (p0, h, t, t + max(min(self.chunk, held), 1))
        p0, h, _, chunk_end = self._chunk
        end = min(self.seen, chunk_end)
        x = self._at(t, end)
        sides = [(x, p0)] if self.direction != "down" else []
        if self.direction != "up":
            sides.append((1.0 - x, 1.0 - p0))
        rows = []
        for xs, q0 in sides:
            q1 = np.minimum(q0 + np.asarray(self.shifts), 0.995)
            up, down = np.log(q1 / q0), np.log((1 - q1) / (1 - q0))
            rows.append(xs[None, :] * up[:, None] + (1.0 - xs[None, :]) * down[:, None])
        # S_t = max(0, S_{t-1} + l_t), for a whole chunk: the running sum less its lowest
        # point so far (or 0)
        running = self._stats[:, None] + np.cumsum(np.vstack(rows), axis=1)
        stats = running - np.minimum.accumulate(np.minimum(running, 0.0), axis=1)
        at_zero = stats <= 1e-12
        hits = np.flatnonzero((stats >= h).any(axis=0))
        if len(hits) == 0:
            self._remember_zeros(at_zero, t)
            self._stats = stats[:, -1].copy()
            self._next = end
            return None
        j = int(hits[0])
        k = int(np.flatnonzero(stats[:, j] >= h)[0])
        at = t + j
        change = self._locate(at, up=k < len(self.shifts) and self.direction != "down")
        after = float(self._at(change, at + 1).mean())
        self._last_alarm, self._next, self._chunk = at, at + 1, None
        self._stats[:] = 0.0
        self._left_zero[:] = at + 1
        return Alarm(at + 1, p0 * self._scale, after * self._scale, change)

    def _locate(self, at: int, up: bool) -> int:
        """Where the change most likely began: the split of the values tested since the
        warm-up or the last alarm (at most 5,000 back), up to the alarm, that best
        separates two means in the alarm's direction (the maximum-likelihood single change
        point). A CUSUM's last zero is less sure: one that rose slowly before the change
        would place it far too early."""
        assert self.warm_end is not None
        start = self._last_alarm + 1 if self._last_alarm is not None else self.warm_end
        lo = max(start, at - 5_000, self._first)
        x = self._at(lo, at + 1)
        n = len(x)
        if n < 4:
            return lo
        k = np.arange(1, n)
        csum = np.cumsum(x)[:-1]
        gap = (x.sum() - csum) / (n - k) - csum / k  # mean after the split minus before
        gap = np.maximum(gap if up else -gap, 0.0)
        return lo + int(np.argmax(k * (n - k) / n * gap**2)) + 1

    def _remember_zeros(self, at_zero: np.ndarray, t: int) -> None:
        """Per CUSUM, one past the last value where it stood at zero (if it did)."""
        width = at_zero.shape[1]
        last = width - 1 - np.argmax(at_zero[:, ::-1], axis=1)
        hit = at_zero.any(axis=1)
        self._left_zero[hit] = t + last[hit] + 1

    def _trim(self) -> None:
        """Keep what the reference and the warm-up read, and 5,000 values more to locate
        a change (a checkpoint pickles them: ~100-150 KB a model)."""
        keep = max(self.reference + self.gap, 2 * _CURVE_WINDOW) + 5_000
        if len(self._values) > keep + 5_000:
            cut = len(self._values) - keep
            self._values, self._first = self._values[cut:], self._first + cut
