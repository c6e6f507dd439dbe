"""The privacy accountant: how many events of one type a user may send within a budget.

Every event of one type goes through the same mechanisms, so its privacy loss is the same
DP event each time. The loss of n events by one user is the n-fold composition of that
event, computed by dp-accounting's PLD accountant (local DP: the neighbouring relation is
"replace one user's values"). So a budget (ε, δ) per user per window is exactly "at most
``allowance`` events", where ``allowance`` is the largest n whose composed ε stays within
budget: found once, by search over the accountant. ``privacy.ledger`` then only counts.

Only fields with a privacy mechanism are accounted for; fields a schema releases as they
are (no annotation) are outside any budget, by the schema author's choice (docs/privacy.md).

Examples:
    >>> from eddyline.privacy.mechanisms import LaplaceMechanism
    >>> allowance([LaplaceMechanism(1.0, 0.0, 1.0)], epsilon=10.0, delta=1e-6)
    10
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from dp_accounting.pld import privacy_loss_distribution as pldlib
from dp_accounting.pld.common import DifferentialPrivacyParameters

from eddyline.privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    RandomizedResponseMechanism,
    UnaryEncodingMechanism,
)

Mechanism = (
    LaplaceMechanism | GaussianMechanism | RandomizedResponseMechanism | UnaryEncodingMechanism
)
# The largest allowance searched: a budget that allows more is treated as allowing this many
# events per user per window (self-composing a loss distribution further costs memory).
MAX_ALLOWANCE = 1_000  # composing 10x further costs ~10x the seconds and the memory


# dp-accounting's default grid for privacy loss values: the accountant's answers.
FINE = 1e-4
# A grid 10x coarser (a multiple of FINE) for the allowance search: composing on it is ~10x
# faster, and since the pessimistic estimate rounds every loss up to its grid, its ε is never
# below FINE's; FINE then decides the last step or two (bench/RESULTS.md has the timings).
COARSE = 1e-3


def _loss(m: Mechanism, interval: float = FINE) -> pldlib.PrivacyLossDistribution:
    if isinstance(m, LaplaceMechanism):
        return pldlib.from_discrete_laplace_mechanism(
            m.parameter, sensitivity=m.steps, value_discretization_interval=interval
        )
    if isinstance(m, GaussianMechanism):
        return pldlib.from_discrete_gaussian_mechanism(
            m.sigma, sensitivity=m.steps, value_discretization_interval=interval
        )
    if isinstance(m, UnaryEncodingMechanism):
        # Pure ε-DP (two bits change, each by a likelihood ratio whose product is e^ε): the
        # worst-case loss distribution of an ε-DP mechanism is exact for it.
        return pldlib.from_privacy_parameters(
            DifferentialPrivacyParameters(m.epsilon, 0.0), value_discretization_interval=interval
        )
    k = len(m.categories)
    # Ours keeps the truth w.p. p, else another category uniformly; that equals
    # "replace by a uniform draw over all k" with probability (1 - p) k / (k - 1).
    replace = (1.0 - m.keep_probability) * k / (k - 1)
    return pldlib.from_randomized_response(replace, k, value_discretization_interval=interval)


def loss_distribution(
    mechanisms: Sequence[Mechanism], interval: float = FINE
) -> pldlib.PrivacyLossDistribution:
    """dp-accounting's privacy loss distribution of releasing one event through
    ``mechanisms`` (one per protected field), for local DP: any value of the user's may be
    replaced by any other, so a numeric field's sensitivity is its whole range, in grid steps.
    ``interval`` is the grid of loss values (pessimistic: losses are rounded up to it)."""
    parts = [_loss(m, interval) for m in mechanisms]
    out = parts[0]
    for part in parts[1:]:
        out = out.compose(part)
    return out


def composed_epsilon(mechanisms: Sequence[Mechanism], count: int, delta: float) -> float:
    """ε of ``count`` events through ``mechanisms``, at ``delta``, from the PLD accountant."""
    if count == 0 or not mechanisms:
        return 0.0
    loss = loss_distribution(mechanisms)
    return float(loss.self_compose(count).get_epsilon_for_delta(delta))


def _largest_within(epsilon_of: Callable[[int], float], epsilon: float) -> int:
    """The largest count n <= MAX_ALLOWANCE with ``epsilon_of(n) <= epsilon`` (0 if none);
    ``epsilon_of`` grows with the count: gallop, then bisect."""
    lo, hi = 0, 1
    while epsilon_of(hi) <= epsilon:
        if hi >= MAX_ALLOWANCE:  # composing further costs memory, and no window needs more
            return MAX_ALLOWANCE
        lo, hi = hi, min(hi * 2, MAX_ALLOWANCE)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if epsilon_of(mid) <= epsilon else (lo, mid)
    return lo


@functools.lru_cache(maxsize=256)
def _allowance(mechanisms: tuple[Mechanism, ...], epsilon: float, delta: float) -> int:
    if not mechanisms:
        return 2**62  # nothing is protected, so nothing is charged
    coarse, fine = loss_distribution(mechanisms, COARSE), loss_distribution(mechanisms, FINE)

    def composed(loss: pldlib.PrivacyLossDistribution, k: int) -> float:
        return float(loss.self_compose(k).get_epsilon_for_delta(delta)) if k else 0.0

    # The coarse grid's ε bounds the accountant's from above, so the coarse answer is at
    # most the exact one; the accountant's own grid then decides the last step or two.
    n = _largest_within(lambda k: composed(coarse, k), epsilon)
    while n > 0 and composed(fine, n) > epsilon:  # not expected (see COARSE); kept exact
        n -= 1
    while n < MAX_ALLOWANCE and composed(fine, n + 1) <= epsilon:
        n += 1
    return n


def allowance(mechanisms: Sequence[Mechanism], *, epsilon: float, delta: float) -> int:
    """The most events one user may send per window within (``epsilon``, ``delta``)."""
    return _allowance(tuple(mechanisms), epsilon, delta)
