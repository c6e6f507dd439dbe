"""The error detector (online_learning/cusum.py): it never goes deaf after an alarm, its
warm-up follows the learning curve, it is quiet on a steady error and while a model
relearns, and its alarms do not depend on how the values are batched. Fixed seeds: every
test is deterministic (the error rates quoted are the mechanisms', for other seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from eddyline.online_learning.cusum import CusumDetector


def _errors(rate: np.ndarray, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(len(rate)) < rate).astype(np.float64)


def _steps(*parts: tuple[int, float]) -> np.ndarray:
    return np.concatenate([np.full(n, p) for n, p in parts])


def test_a_second_larger_change_inside_the_cooldown_still_alarms() -> None:
    # 0.10 -> 0.20 at 8,000, then 0.20 -> 0.50 at 8,800: 800 values later, well inside the
    # 2,000-value cooldown that used to swallow it
    detector = CusumDetector(cooldown=2_000)
    alarms = detector.update_many(_errors(_steps((8_000, 0.1), (800, 0.2), (3_200, 0.5))))
    assert len(alarms) == 2
    first, second = alarms
    assert 8_000 < first.index < 8_800 and abs(first.change_index - 8_000) < 150
    assert 8_800 < second.index < 9_000 and second.after > 0.3


def test_a_model_relearning_after_a_change_raises_one_alarm() -> None:
    # the error jumps to 0.4, then falls back to 0.1 over 3,000 values as the model relearns
    relearn = np.linspace(0.4, 0.1, 3_000)
    rate = np.concatenate([np.full(8_000, 0.1), relearn, np.full(9_000, 0.1)])
    [alarm] = CusumDetector().update_many(_errors(rate, seed=1))
    assert 8_000 < alarm.index < 8_100


def test_the_warm_up_lasts_as_long_as_the_learning_curve_falls() -> None:
    flat = CusumDetector()
    flat.update_many(_errors(np.full(10_000, 0.2)))
    assert flat.warm_end == 4_000  # flat from the start: the rule's earliest point
    learning = CusumDetector()
    curve = 0.1 + 0.4 * np.exp(-np.arange(20_000) / 2_000)  # still falling until ~8,000
    assert learning.update_many(_errors(curve, seed=2)) == []
    assert learning.warm_end is not None and 7_000 <= learning.warm_end <= 12_000
    capped = CusumDetector(warmup_max=5_000)
    capped.update_many(_errors(curve, seed=2))
    assert capped.warm_end == 5_000
    assert CusumDetector(warmup=0).update_many(np.zeros(10)) == []  # no warm-up: tested at once


def test_a_change_inside_the_warm_up_is_tested_not_absorbed() -> None:
    # the model learns fast (its error settles by ~1,000) and the error jumps by 0.3 at
    # 3,000, before the 4,000 values the rule needs: the error rose across the rule's
    # windows, so the warm-up ends before the rise and the rise alarms. (A change while the
    # error is still falling can be absorbed: docs/learning.md says so.)
    i = np.arange(12_000)
    curve = 0.1 + 0.3 * np.exp(-i / 300) + np.where(i < 3_000, 0.0, 0.3)
    for seed in (9, 10, 11):
        detector = CusumDetector()
        alarms = detector.update_many(_errors(curve, seed=seed))
        assert detector.warm_end is not None and detector.warm_end < 3_000
        assert alarms and 3_000 <= alarms[0].index < 3_200
        assert abs(alarms[0].change_index - 3_000) < 100


def test_a_steady_error_rarely_alarms() -> None:
    # Each CUSUM's mean run to a false alarm on independent errors is at least e^threshold
    # (Wald), so with three of them at least e^13.5 / 3 ~ 240,000 values: over 1.2 million
    # values at three error rates, ~5 alarms at most are expected; these seeds give 1.
    alarms = [
        a
        for rate, seed in ((0.05, 3), (0.2, 4), (0.45, 5))
        for a in CusumDetector().update_many(_errors(np.full(400_000, rate), seed))
    ]
    assert len(alarms) <= 5


@pytest.mark.parametrize("batch", [1, 37, 250, 5_000])
def test_alarms_do_not_depend_on_the_batching(batch: int) -> None:
    values = _errors(_steps((8_000, 0.1), (4_000, 0.3), (6_000, 0.6)), seed=6)
    whole = CusumDetector().update_many(values)
    detector = CusumDetector()
    pieces = [
        a for i in range(0, len(values), batch) for a in detector.update_many(values[i : i + batch])
    ]
    assert [(a.index, a.change_index) for a in pieces] == [(a.index, a.change_index) for a in whole]
    assert len(whole) == 2


def test_direction_and_minimum_move() -> None:
    down = _errors(_steps((8_000, 0.4), (4_000, 0.1)), seed=7)
    assert CusumDetector(direction="up").update_many(down) == []
    falls = CusumDetector(direction="down").update_many(down)
    assert all(a.after < a.before for a in falls) and 8_000 < falls[-1].index < 8_200
    both = CusumDetector(direction="both").update_many(down)
    assert [a.index for a in both] == [a.index for a in falls]
    small = _errors(_steps((8_000, 0.1), (4_000, 0.25)), seed=8)
    assert len(CusumDetector().update_many(small)) == 1
    assert CusumDetector(min_change=0.5).update_many(small) == []
