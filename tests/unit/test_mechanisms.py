"""Gaussian, randomised response and unary encoding: their output distributions against a
reference (scipy, exact probabilities, or OpenDP's samplers), their output domains, and an
empirical privacy audit of every mechanism.

The samplers are tested with both sources of randomness: a numpy generator and the
worker's keyed draws by row (``privacy.draws``).

Error rates: each goodness-of-fit test rejects at alpha = 0.001, each audit bound holds with
probability >= 1 - 2e-4 (two one-sided Clopper-Pearson bounds at 1e-4), for a correct
mechanism and a random seed; the seeds are fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pytest
from scipy import stats

from eddyline.privacy.draws import Draws, GeneratorDraws, KeyedDraws
from eddyline.privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    RandomizedResponseMechanism,
    UnaryEncodingMechanism,
    discrete_gaussian,
    prefers_unary,
)

dp.enable_features("contrib")
ALPHA = 0.001


def _opendp_integers(kind: str, scale: float, n: int) -> np.ndarray:
    """``n`` draws of OpenDP's discrete Laplace or Gaussian noise (its secure samplers)."""
    space = (
        dp.vector_domain(dp.atom_domain(T=int)),
        (dp.l1_distance(T=int) if kind == "laplace" else dp.l2_distance(T=int)),
    )
    make = dp.m.make_laplace if kind == "laplace" else dp.m.make_gaussian
    return np.array(make(*space, scale=scale)([0] * n))


def _draws(kind: str, seed: int, n: int) -> Draws:
    """``n`` rows' draws: a seeded numpy generator, or the worker's keyed draws (a key made
    from the seed; rows at offsets 0..n-1)."""
    if kind == "generator":
        return GeneratorDraws(np.random.default_rng(seed), n)
    return KeyedDraws(seed.to_bytes(32, "big"), np.arange(n), np.zeros(n, np.int64))


DRAWS = pytest.mark.parametrize("kind", ["generator", "keyed"])


def _two_sample_chi2(a: np.ndarray, b: np.ndarray, bins: int = 20) -> float:
    """p-value that integer samples ``a`` and ``b`` share one distribution (equal-mass bins)."""
    edges = np.unique(np.quantile(np.concatenate([a, b]), np.linspace(0, 1, bins + 1)[1:-1]))
    ca = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
    cb = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1)
    return float(stats.chi2_contingency(np.vstack([ca, cb]))[1])


@DRAWS
def test_discrete_gaussian_matches_its_pmf_and_opendps_sampler(kind: str) -> None:
    sigma, n = 7.3, 60_000
    ours = discrete_gaussian(sigma, _draws(kind, 11, n))
    support = np.arange(-80, 81)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    observed = np.bincount(np.clip(ours, -12, 12) + 12, minlength=25)
    expected = np.array(
        [
            pmf[support <= -12].sum(),
            *pmf[(support > -12) & (support < 12)],
            pmf[support >= 12].sum(),
        ]
    )
    assert stats.chisquare(observed, expected * n).pvalue > ALPHA
    assert _two_sample_chi2(ours, _opendp_integers("gaussian", sigma, n)) > ALPHA


@DRAWS
def test_discrete_laplace_matches_opendps_sampler(kind: str) -> None:
    mech = LaplaceMechanism(epsilon=1.0, lower=0.0, upper=0.01)  # a few grid steps wide
    n = 60_000
    ours = np.rint(mech.apply(np.zeros(n), _draws(kind, 12, n)) / mech.grid).astype(int)
    reference = _opendp_integers("laplace", 1.0 / mech.parameter, n)
    assert _two_sample_chi2(ours, reference) > ALPHA


def test_gaussian_outputs_lie_on_the_grid_and_ignore_the_inputs_low_bits() -> None:
    mech = GaussianMechanism(1.0, -5.0, 300.0, delta=1e-6)
    values = np.random.default_rng(0).uniform(-10, 310, 10_000)
    out = mech.apply(values, np.random.default_rng(42))
    units = (out - mech.lower) / mech.grid
    assert np.array_equal(units, np.rint(units))
    nudged = mech.apply(values + mech.grid / 8, np.random.default_rng(42))
    snapped = np.rint((np.clip(values, -5, 300) + 5) / mech.grid)
    same = np.rint((np.clip(values + mech.grid / 8, -5, 300) + 5) / mech.grid) == snapped
    assert same.mean() > 0.5 and np.array_equal(out[same], nudged[same])
    # the noise has the calibrated spread (std within 2% at n = 10,000)
    noise = out - (mech.lower + snapped * mech.grid)
    assert abs(noise.std() / mech.scale - 1) < 0.02


@DRAWS
def test_randomized_response_reports_each_category_with_its_probability(kind: str) -> None:
    mech = RandomizedResponseMechanism(1.0, ("a", "b", "c", "d"))
    n = 40_000
    out = mech.apply(np.full(n, 2), _draws(kind, 13, n))
    assert set(np.unique(out).tolist()) <= {0, 1, 2, 3}  # only declared categories
    p = mech.keep_probability
    expected = np.array([(1 - p) / 3, (1 - p) / 3, p, (1 - p) / 3]) * n
    assert stats.chisquare(np.bincount(out, minlength=4), expected).pvalue > ALPHA


@DRAWS
def test_unary_encoding_reports_each_bit_with_p_or_q(kind: str) -> None:
    cats = tuple(f"c{i}" for i in range(30))
    mech = UnaryEncodingMechanism(1.0, cats)
    n = 20_000
    bits = mech.bits(np.full(n, 4), _draws(kind, 14, n))
    ones = bits.sum(axis=0)
    # true bit ~ Binomial(n, 1/2); each other ~ Binomial(n, q): two-sided binomial tests,
    # Bonferroni over the 30 bits
    assert stats.binomtest(int(ones[4]), n, mech.p).pvalue > ALPHA / 30
    for j in (j for j in range(30) if j != 4):
        assert stats.binomtest(int(ones[j]), n, mech.q).pvalue > ALPHA / 30
    reported = mech.to_arrow(bits[:100]).to_pylist()
    assert all(set(r) <= set(cats) for r in reported)
    assert [len(r) for r in reported] == bits[:100].sum(axis=1).tolist()
    assert prefers_unary(30, 1.0) and not prefers_unary(4, 1.0)


# --- empirical audit -------------------------------------------------------------------
# Run the mechanism many times on two neighbouring inputs, and bound from below how much
# more likely one output event is under the first: ln(P_lo(S | x) - δ) - ln(P_hi(S | x')).
# A correct mechanism keeps the bound at or below its declared ε.

TRIALS = 200_000


def _empirical_epsilon(hits_x: int, hits_y: int, n: int, delta: float = 0.0) -> float:
    lo = stats.beta.ppf(1e-4, hits_x, n - hits_x + 1)  # Clopper-Pearson, one-sided
    hi = stats.beta.ppf(1 - 1e-4, hits_y + 1, n - hits_y)
    return math.log(max(lo - delta, 1e-300) / hi)


def _audit_rr(mech: RandomizedResponseMechanism, seed: int) -> float:
    rng = np.random.default_rng(seed)
    x = mech.apply(np.zeros(TRIALS, dtype=np.int64), rng)
    y = mech.apply(np.ones(TRIALS, dtype=np.int64), rng)
    return _empirical_epsilon(int((x == 0).sum()), int((y == 0).sum()), TRIALS)


def test_audit_of_randomized_response_stays_within_its_epsilon() -> None:
    mech = RandomizedResponseMechanism(1.0, ("a", "b", "c"))
    eps = _audit_rr(mech, 21)
    assert 0.9 < eps <= 1.0  # tight: the audit has the power to see a leak


def test_the_audit_catches_a_mechanism_leaking_more_than_it_declares() -> None:
    class Leaky(RandomizedResponseMechanism):
        @property
        def keep_probability(self) -> float:  # what ε = 1.5 would keep, declared as 1
            return float(np.exp(1.5) / (np.exp(1.5) + 2))

    assert _audit_rr(Leaky(1.0, ("a", "b", "c")), 21) > 1.0


def test_audit_of_unary_encoding_stays_within_its_epsilon() -> None:
    mech = UnaryEncodingMechanism(1.0, tuple("abcdefgh"))
    rng = np.random.default_rng(22)
    x = mech.bits(np.zeros(TRIALS, dtype=np.int64), rng)
    y = mech.bits(np.ones(TRIALS, dtype=np.int64), rng)
    # the most telling event: bit 0 set and bit 1 clear
    sx, sy = int((x[:, 0] & ~x[:, 1]).sum()), int((y[:, 0] & ~y[:, 1]).sum())
    assert 0.9 < _empirical_epsilon(sx, sy, TRIALS) <= 1.0


@pytest.mark.parametrize(
    ("mech", "delta"),
    [
        (LaplaceMechanism(1.0, 0.0, 1.0), 0.0),
        (GaussianMechanism(1.0, 0.0, 1.0, delta=1e-3), 1e-3),
    ],
)
def test_audit_of_numeric_noise_stays_within_its_epsilon(
    mech: LaplaceMechanism | GaussianMechanism, delta: float
) -> None:
    rng = np.random.default_rng(23)
    x = mech.apply(np.full(TRIALS, mech.upper), rng)
    y = mech.apply(np.full(TRIALS, mech.lower), rng)
    # threshold events "output >= t" over a range of t; every one must respect ε
    best = max(
        _empirical_epsilon(int((x >= t).sum()), int((y >= t).sum()), TRIALS, delta)
        for t in np.linspace(mech.lower, mech.upper + 3 * mech.scale, 25)
    )
    assert best <= mech.epsilon
    if delta == 0.0:
        assert best > 0.85  # Laplace's tails reach the bound: the audit is not vacuous
