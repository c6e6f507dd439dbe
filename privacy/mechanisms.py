"""Local differential-privacy mechanisms, vectorised over numpy arrays.

Numbers: Laplace (pure ε) or Gaussian ((ε, δ)), both on a discrete grid. Categories: k-ary
randomised response, or optimised unary encoding when k is large.

Examples:
    >>> import numpy as np
    >>> m = LaplaceMechanism(epsilon=1.0, lower=0.0, upper=10.0)
    >>> out = m.apply(np.array([1.0, 5.0, 50.0]), np.random.default_rng(7))
    >>> out.shape, m.scale
    ((3,), 10.0)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pyarrow as pa
from dp_accounting.pld import privacy_loss_distribution as pldlib

from eddyline.privacy.draws import Draws, as_draws, exponential, integers

#: What a mechanism draws its randomness from: a numpy generator, or draws by row.
Randomness = np.random.Generator | Draws


class Mechanism(Protocol):
    """A randomised map from true values to released values with a privacy cost."""

    epsilon: float

    def apply(self, values: np.ndarray, rng: Randomness) -> np.ndarray: ...


@dataclass(frozen=True)
class _GridMechanism:
    """A number clamped to ``[lower, upper]`` and snapped to a grid whose step is a power of
    two, so every output ``lower + m * grid`` is a deterministic function of the integer m."""

    epsilon: float
    lower: float
    upper: float

    #: about this many grid steps across the declared range
    GRID_STEPS: ClassVar[int] = 2**16

    @property
    def grid(self) -> float:
        return float(2.0 ** math.floor(math.log2((self.upper - self.lower) / self.GRID_STEPS)))

    @property
    def steps(self) -> int:
        """The declared range in grid steps: the sensitivity of the snapped value."""
        return math.ceil((self.upper - self.lower) / self.grid)

    def _snap(self, values: np.ndarray) -> np.ndarray:
        clamped = np.clip(values.astype(np.float64), self.lower, self.upper)
        snapped: np.ndarray = np.rint((clamped - self.lower) / self.grid)
        return snapped

    def _release(self, snapped: np.ndarray, noise: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.lower + (snapped + noise) * self.grid
        return out


def _discrete_laplace(parameter: float, draws: Draws) -> np.ndarray:
    """One draw per row of P(k) ∝ exp(-parameter |k|) on the integers: the difference of two
    geometric draws.

    floor(E / a) with E standard exponential is geometric on {0, 1, ...} with success
    probability 1 - e^-a; the difference of two is discrete Laplace.
    """
    g = np.floor(exponential(draws, 2) / parameter)
    out: np.ndarray = (g[:, 0] - g[:, 1]).astype(np.int64)
    return out


@dataclass(frozen=True)
class LaplaceMechanism(_GridMechanism):
    """ε-DP for one value in ``[lower, upper]``, on a discrete grid.

    The value is clamped, snapped to a grid of about 2^16 steps across the range, and moved
    by discrete Laplace noise in grid steps, P(k) ∝ exp(-a|k|) with a = ε / steps: the
    difference of two geometric draws. No continuous sample is ever drawn, so the
    floating-point artefacts of naive Laplace (Mironov 2012) cannot reveal the input; the
    sensitivity in grid steps is ``steps``, and ε = a * steps exactly.
    """

    @property
    def scale(self) -> float:
        """The noise's scale in value units, (upper - lower) / ε, as for continuous Laplace."""
        return (self.upper - self.lower) / self.epsilon

    @property
    def parameter(self) -> float:
        """The discrete Laplace parameter a, per grid step."""
        return self.epsilon / self.steps

    def apply(self, values: np.ndarray, rng: Randomness) -> np.ndarray:
        snapped = self._snap(values)
        draws = as_draws(rng, snapped.size)
        return self._release(snapped, _discrete_laplace(self.parameter, draws))


@functools.lru_cache(maxsize=64)
def gaussian_sigma(sensitivity: int, epsilon: float, delta: float) -> float:
    """The smallest σ (in grid steps, to 0.1%) for which dp-accounting's discrete Gaussian
    privacy loss distribution with this ``sensitivity`` is (``epsilon``, ``delta``)-DP.

    Bracketed by the continuous Gaussian's calibration, then bisected on the discrete one.
    """

    def eps(sigma: float) -> float:
        pld = pldlib.from_discrete_gaussian_mechanism(sigma, sensitivity=sensitivity)
        return float(pld.get_epsilon_for_delta(delta))

    lo, hi = (
        0.5 * sensitivity / epsilon,
        2.0 * sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon,
    )
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= epsilon else (mid, hi)
    return hi


@dataclass(frozen=True)
class GaussianMechanism(_GridMechanism):
    """(ε, δ)-DP for one value in ``[lower, upper]``: the discrete Gaussian on a grid.

    The value is clamped and snapped to a grid of about 2^10 steps (the Gaussian's noise is
    hundreds of steps wide, so a finer grid only makes the accounting slower), then moved by
    discrete Gaussian noise N_Z(0, σ²) in grid steps, sampled as Canonne, Kamath & Steinke
    (2020) do: discrete Laplace proposals accepted with probability
    exp(-(|y| - σ²/t)² / 2σ²). σ is calibrated by dp-accounting's discrete Gaussian PLD.
    The acceptance test uses floating point: it perturbs the output distribution by far less
    than δ, and every output is still an exact grid point (no Mironov artefacts).
    """

    delta: float = 1e-6

    GRID_STEPS: ClassVar[int] = 2**10

    @property
    def sigma(self) -> float:
        """The noise's standard deviation in grid steps."""
        return gaussian_sigma(self.steps, self.epsilon, self.delta)

    @property
    def scale(self) -> float:
        """The noise's standard deviation in value units."""
        return self.sigma * self.grid

    def apply(self, values: np.ndarray, rng: Randomness) -> np.ndarray:
        snapped = self._snap(values)
        return self._release(snapped, discrete_gaussian(self.sigma, as_draws(rng, snapped.size)))


def discrete_gaussian(sigma: float, draws: Draws) -> np.ndarray:
    """One draw per row of N_Z(0, σ²), P(k) ∝ exp(-k² / 2σ²), by rejection from discrete
    Laplace: each row retries until its proposal is accepted (~0.7 of proposals are, for a
    large σ), reading its own next draws."""
    t = math.floor(sigma) + 1
    out = np.empty(draws.n, dtype=np.int64)
    pending = np.arange(draws.n)
    while len(pending):
        attempt = draws.rows(pending)
        y = _discrete_laplace(1.0 / t, attempt)
        keep = attempt.random() < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out[pending[keep]] = y[keep]
        pending = pending[~keep]
    return out


@dataclass(frozen=True)
class RandomizedResponseMechanism:
    """k-ary randomised response: ε-DP for one categorical value among ``categories``.

    Keeps the true category with probability p = e^ε / (e^ε + k - 1); otherwise reports
    one of the other k - 1 uniformly. Works on category indices, vectorised.
    """

    epsilon: float
    categories: tuple[str, ...]

    @property
    def keep_probability(self) -> float:
        k = len(self.categories)
        return float(np.exp(self.epsilon) / (np.exp(self.epsilon) + k - 1))

    def apply(self, values: np.ndarray, rng: Randomness) -> np.ndarray:
        """``values`` are indices into ``categories``; returns reported indices."""
        k = len(self.categories)
        draws = as_draws(rng, len(values))
        keep = draws.random() < self.keep_probability
        # A uniform draw over the k - 1 other categories: shift by 1..k-1, modulo k.
        other = (values + integers(draws, 1, k)) % k
        return np.where(keep, values, other)


@dataclass(frozen=True)
class UnaryEncodingMechanism:
    """Optimised unary encoding (Wang et al. 2017): ε-DP for one category among many.

    The value becomes k bits, one per category: the true category's bit is reported 1 with
    probability p = 1/2, every other bit with probability q = 1 / (e^ε + 1). Its estimates'
    variance does not grow with k, so it beats k-ary randomised response when
    k > 3 e^ε + 2. The release is the list of categories whose bit is 1.
    """

    epsilon: float
    categories: tuple[str, ...]

    p: ClassVar[float] = 0.5

    @property
    def q(self) -> float:
        return float(1.0 / (math.exp(self.epsilon) + 1.0))

    def bits(self, values: np.ndarray, rng: Randomness) -> np.ndarray:
        """``values`` are indices into ``categories``; an (n, k) boolean matrix of reports."""
        n, k = len(values), len(self.categories)
        draws = as_draws(rng, n)
        out: np.ndarray = draws.random(k) < self.q
        out[np.arange(n), values] = draws.random() < self.p
        return out

    def apply(self, values: np.ndarray, rng: Randomness) -> np.ndarray:
        return self.bits(values, rng)

    def to_arrow(self, bits: np.ndarray) -> pa.ListArray:
        """The reports as a list<string> column: each row the categories reported 1."""
        rows, cols = np.nonzero(bits)
        offsets = np.zeros(len(bits) + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=len(bits)), out=offsets[1:])
        names = pa.array(self.categories, pa.string()).take(pa.array(cols))
        return pa.ListArray.from_arrays(pa.array(offsets), names)


def prefers_unary(k: int, epsilon: float) -> bool:
    """Whether optimised unary encoding estimates frequencies with less variance than
    k-ary randomised response for ``k`` categories at ``epsilon`` (Wang et al. 2017)."""
    return k - 2 > 3 * math.exp(epsilon)
