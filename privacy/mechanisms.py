"""Local differential-privacy mechanisms, vectorised over numpy arrays.

Examples:
    >>> import numpy as np
    >>> m = LaplaceMechanism(epsilon=1.0, lower=0.0, upper=10.0)
    >>> out = m.apply(np.array([1.0, 5.0, 50.0]), np.random.default_rng(7))
    >>> out.shape, m.scale
    ((3,), 10.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Mechanism(Protocol):
    """A randomised map from true values to released values with a privacy cost."""

    epsilon: float

    def apply(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class LaplaceMechanism:
    """ε-DP for one value in ``[lower, upper]``, on a discrete grid.

    The value is clamped, snapped to a grid of about 2^16 steps across the range (the step a
    power of two, so every output ``lower + m * grid`` is a deterministic function of the
    integer m), and moved by discrete Laplace noise in grid steps, P(k) ∝ exp(-a|k|) with
    a = ε / steps: the difference of two geometric draws. No continuous sample is ever
    drawn, so the floating-point artefacts of naive Laplace (Mironov 2012) cannot reveal the
    input; the sensitivity in grid steps is ``steps``, and ε = a * steps exactly.
    """

    epsilon: float
    lower: float
    upper: float

    @property
    def scale(self) -> float:
        """The noise's scale in value units, (upper - lower) / ε, as for continuous Laplace."""
        return (self.upper - self.lower) / self.epsilon

    @property
    def grid(self) -> float:
        return float(2.0 ** math.floor(math.log2((self.upper - self.lower) / 2**16)))

    @property
    def steps(self) -> int:
        """The declared range in grid steps: the sensitivity of the snapped value."""
        return math.ceil((self.upper - self.lower) / self.grid)

    @property
    def parameter(self) -> float:
        """The discrete Laplace parameter a, per grid step."""
        return self.epsilon / self.steps

    def apply(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clamped = np.clip(values.astype(np.float64), self.lower, self.upper)
        snapped = np.rint((clamped - self.lower) / self.grid)
        success = -math.expm1(-self.parameter)  # 1 - e^-a
        noise = rng.geometric(success, clamped.shape) - rng.geometric(success, clamped.shape)
        out: np.ndarray = self.lower + (snapped + noise) * self.grid
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

    def apply(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``values`` are indices into ``categories``; returns reported indices."""
        k = len(self.categories)
        keep = rng.random(values.shape) < self.keep_probability
        # A uniform draw over the k - 1 other categories: shift by 1..k-1, modulo k.
        other = (values + rng.integers(1, k, size=values.shape)) % k
        return np.where(keep, values, other)
