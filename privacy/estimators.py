"""Estimators that undo the privacy noise in aggregate, each with a confidence interval.

Single noised rows are meant to be useless; sums, means and frequencies over many rows are
not. Each estimator is unbiased for the quantity the mechanism protected (the value clamped
to its declared bounds; the true category) and gives a normal-approximation interval.

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noised = 20.0 + rng.laplace(0, 30.0, 50_000)     # true mean 20, Laplace scale 30
    >>> est = laplace_mean(noised)
    >>> bool(est.low < 20.0 < est.high)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its two-sided confidence interval."""

    value: float
    low: float
    high: float
    confidence: float

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def laplace_mean(noised: np.ndarray, confidence: float = 0.95) -> Estimate:
    """Mean of values released with zero-mean noise (Laplace or Gaussian).

    The noise has mean zero, so the sample mean is unbiased; its sample variance already
    includes the noise variance, so the interval is honest without knowing the scale.
    """
    values = np.asarray(noised, dtype=np.float64)
    n = len(values)
    if n < 2:
        raise ValueError("need at least two values")
    mean, half = float(values.mean()), _z(confidence) * float(values.std(ddof=1)) / np.sqrt(n)
    return Estimate(mean, mean - half, mean + half, confidence)


def laplace_sum(noised: np.ndarray, confidence: float = 0.95) -> Estimate:
    """Sum of the true (clamped) values: n times the mean estimate."""
    n = len(noised)
    m = laplace_mean(noised, confidence)
    return Estimate(m.value * n, m.low * n, m.high * n, confidence)


def rr_frequencies(
    reported: Sequence[str], categories: Sequence[str], epsilon: float, confidence: float = 0.95
) -> dict[str, Estimate]:
    """True share of each category from k-ary randomised responses with budget ``epsilon``.

    With p = e^ε / (e^ε + k - 1) (keep) and q = 1 / (e^ε + k - 1) (each other category),
    a reported share r_j has expectation q + (p - q) f_j, so f_j = (r_j - q) / (p - q);
    its variance is r_j (1 - r_j) / (n (p - q)^2).
    """
    k, n = len(categories), len(reported)
    if n == 0:
        raise ValueError("no responses")
    p = np.exp(epsilon) / (np.exp(epsilon) + k - 1)
    q = 1.0 / (np.exp(epsilon) + k - 1)
    values, counts = np.unique(np.asarray(reported), return_counts=True)
    share = dict(zip(values.tolist(), (counts / n).tolist(), strict=True))
    z, out = _z(confidence), {}
    for cat in categories:
        r = share.get(cat, 0.0)
        f = (r - q) / (p - q)
        half = z * np.sqrt(r * (1 - r) / n) / (p - q)
        out[cat] = Estimate(float(f), float(f - half), float(f + half), confidence)
    return out


def oue_frequencies(
    reports: Sequence[Sequence[str]],
    categories: Sequence[str],
    epsilon: float,
    confidence: float = 0.95,
) -> dict[str, Estimate]:
    """True share of each category from optimised unary encoding reports (each report: the
    categories whose noisy bit is 1) with budget ``epsilon``.

    Each bit is 1 with probability p = 1/2 for the true category and q = 1 / (e^ε + 1)
    otherwise, so a category's share of reports r_j has expectation q + (p - q) f_j:
    f_j = (r_j - q) / (p - q), with variance r_j (1 - r_j) / (n (p - q)^2).
    """
    n = len(reports)
    if n == 0:
        raise ValueError("no reports")
    p, q = 0.5, 1.0 / (np.exp(epsilon) + 1.0)
    index = {c: i for i, c in enumerate(categories)}
    ones = np.zeros(len(categories))
    for report in reports:
        for cat in report:
            ones[index[cat]] += 1
    z, out = _z(confidence), {}
    for cat, count in zip(categories, ones.tolist(), strict=True):
        r = count / n
        f = (r - q) / (p - q)
        half = z * np.sqrt(r * (1 - r) / n) / (p - q)
        out[cat] = Estimate(float(f), float(f - half), float(f + half), confidence)
    return out
