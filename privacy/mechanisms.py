"""Local differential-privacy mechanisms, vectorised over numpy arrays.

Examples:
    >>> import numpy as np
    >>> m = LaplaceMechanism(epsilon=1.0, lower=0.0, upper=10.0)
    >>> out = m.apply(np.array([1.0, 5.0, 50.0]), np.random.default_rng(7))
    >>> out.shape, m.scale
    ((3,), 10.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Mechanism(Protocol):
    """A randomised map from true values to released values with a privacy cost."""

    epsilon: float

    def apply(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class LaplaceMechanism:
    """ε-DP for one value in ``[lower, upper]``: clamp, then add Laplace((upper-lower)/ε).

    The skeleton samples continuous Laplace noise with numpy; the discrete-grid sampler
    that closes the floating-point side channel (Mironov 2012) is tracked in issue #4.
    """

    epsilon: float
    lower: float
    upper: float

    @property
    def scale(self) -> float:
        return (self.upper - self.lower) / self.epsilon

    def apply(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clamped = np.clip(values.astype(np.float64), self.lower, self.upper)
        return clamped + rng.laplace(0.0, self.scale, size=clamped.shape)


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
