"""The estimators recover planted truths within their intervals at the stated rate.

Each test runs 200 seeded trials of a 95% interval. Coverage is Binomial(200, 0.95): the
chance of fewer than 180 covers is about 0.3%, so the threshold below fails a correct
estimator with probability ~0.003 per seed, and the seeds are fixed (deterministic).
"""

from __future__ import annotations

import numpy as np
import pytest

from eddyline.privacy.estimators import laplace_mean, laplace_sum, oue_frequencies, rr_frequencies
from eddyline.privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    RandomizedResponseMechanism,
    UnaryEncodingMechanism,
)

TRIALS, MIN_COVERS = 200, 180


@pytest.mark.parametrize(
    "mech",
    [
        LaplaceMechanism(epsilon=1.0, lower=0.0, upper=300.0),
        GaussianMechanism(epsilon=1.0, lower=0.0, upper=300.0, delta=1e-6),
    ],
)
def test_noised_mean_and_sum_cover_the_truth(mech: LaplaceMechanism | GaussianMechanism) -> None:
    mean_covers = sum_covers = 0
    for seed in range(TRIALS):
        rng = np.random.default_rng(seed)
        truth = np.clip(rng.exponential(30.0, 5_000), 0, 300)
        noised = mech.apply(truth, rng)
        mean_covers += laplace_mean(noised).covers(truth.mean())
        sum_covers += laplace_sum(noised).covers(truth.sum())
    assert mean_covers >= MIN_COVERS and sum_covers >= MIN_COVERS


def test_rr_frequencies_cover_the_planted_shares() -> None:
    cats = ("news", "sports", "music", "tech")
    planted = np.array([0.5, 0.3, 0.15, 0.05])
    mech = RandomizedResponseMechanism(1.0, cats)
    covers = np.zeros(len(cats))
    for seed in range(TRIALS):
        rng = np.random.default_rng(seed)
        truth = rng.choice(len(cats), size=20_000, p=planted)
        reported = np.array(cats)[mech.apply(truth, rng)]
        est = rr_frequencies(reported.tolist(), cats, 1.0)
        shares = np.bincount(truth, minlength=len(cats)) / len(truth)
        covers += [est[c].covers(shares[i]) for i, c in enumerate(cats)]
    assert (covers >= MIN_COVERS).all(), covers


def test_rr_is_far_from_the_raw_reported_share() -> None:
    cats = ("a", "b")
    rng = np.random.default_rng(1)
    truth = (rng.random(50_000) < 0.9).astype(int)  # 90% "b"
    reported = np.array(cats)[RandomizedResponseMechanism(0.5, cats).apply(truth, rng)]
    naive = (reported == "b").mean()
    assert abs(naive - 0.9) > 0.15  # the noise is real ...
    assert (
        abs(rr_frequencies(reported.tolist(), cats, 0.5)["b"].value - 0.9) < 0.02
    )  # ... and undone


def test_oue_frequencies_cover_the_planted_shares() -> None:
    cats = tuple(f"c{i}" for i in range(20))
    planted = np.random.default_rng(99).dirichlet(np.ones(20))
    mech = UnaryEncodingMechanism(1.0, cats)
    covers = np.zeros(len(cats))
    for seed in range(TRIALS):
        rng = np.random.default_rng(seed)
        truth = rng.choice(len(cats), size=5_000, p=planted)
        reports = mech.to_arrow(mech.bits(truth, rng)).to_pylist()
        est = oue_frequencies(reports, cats, 1.0)
        shares = np.bincount(truth, minlength=len(cats)) / len(truth)
        covers += [est[c].covers(shares[i]) for i, c in enumerate(cats)]
    assert (covers >= MIN_COVERS).all(), covers
