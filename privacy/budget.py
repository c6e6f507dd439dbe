"""The per-user privacy budget: ε composed by an accountant, enforced per batch, vectorised.

Every event of one type goes through the same mechanisms, so its privacy loss is the same
DP event each time. The loss of n events by one user is the n-fold composition of that
event, computed by dp-accounting's PLD accountant (local DP: the neighbouring relation is
"replace one user's values"). So a budget (ε, δ) per user per window is exactly "at most
``allowance`` events", where ``allowance`` is the largest n whose composed ε stays within
budget: found once, by search over the accountant. Charging a batch is then counting
events per (pseudonymous user, window), in numpy.

Only fields with a privacy mechanism are accounted for; fields a schema releases as they
are (no annotation) are outside any budget, by the schema author's choice (docs/privacy.md).

Examples:
    >>> from privacy.mechanisms import LaplaceMechanism
    >>> allowance([LaplaceMechanism(1.0, 0.0, 1.0)], epsilon=10.0, delta=1e-6)
    10
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dp_accounting.pld import privacy_loss_distribution as pldlib
from dp_accounting.pld.common import DifferentialPrivacyParameters

from privacy.mechanisms import (
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
MAX_ALLOWANCE = (
    1_000  # measured: composing 1,000-fold takes ~1 s and ~0.3 GB; 10,000-fold 10 s, 2.5 GB
)


def _loss(m: Mechanism) -> pldlib.PrivacyLossDistribution:
    if isinstance(m, LaplaceMechanism):
        return pldlib.from_discrete_laplace_mechanism(m.parameter, sensitivity=m.steps)
    if isinstance(m, GaussianMechanism):
        return pldlib.from_discrete_gaussian_mechanism(m.sigma, sensitivity=m.steps)
    if isinstance(m, UnaryEncodingMechanism):
        # Pure ε-DP (two bits change, each by a likelihood ratio whose product is e^ε): the
        # worst-case loss distribution of an ε-DP mechanism is exact for it.
        return pldlib.from_privacy_parameters(DifferentialPrivacyParameters(m.epsilon, 0.0))
    k = len(m.categories)
    # Ours keeps the truth w.p. p, else another category uniformly; that equals
    # "replace by a uniform draw over all k" with probability (1 - p) k / (k - 1).
    replace = (1.0 - m.keep_probability) * k / (k - 1)
    return pldlib.from_randomized_response(replace, k)


def loss_distribution(mechanisms: Sequence[Mechanism]) -> pldlib.PrivacyLossDistribution:
    """dp-accounting's privacy loss distribution of releasing one event through
    ``mechanisms`` (one per protected field), for local DP: any value of the user's may be
    replaced by any other, so a numeric field's sensitivity is its whole range, in grid steps."""
    parts = [_loss(m) for m in mechanisms]
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


@functools.lru_cache(maxsize=256)
def _allowance(mechanisms: tuple[Mechanism, ...], epsilon: float, delta: float) -> int:
    if not mechanisms:
        return 2**62  # nothing is protected, so nothing is charged
    lo, hi = 0, 1
    while composed_epsilon(mechanisms, hi, delta) <= epsilon:
        if hi >= MAX_ALLOWANCE:  # composing further costs memory, and no window needs more
            return MAX_ALLOWANCE
        lo, hi = hi, min(hi * 2, MAX_ALLOWANCE)
    while hi - lo > 1:  # composed ε grows with the count: bisect
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if composed_epsilon(mechanisms, mid, delta) <= epsilon else (lo, mid)
    return lo


def allowance(mechanisms: Sequence[Mechanism], *, epsilon: float, delta: float) -> int:
    """The most events one user may send per window within (``epsilon``, ``delta``)."""
    return _allowance(tuple(mechanisms), epsilon, delta)


@dataclass
class BudgetLedger:
    """Events charged per (pseudonymous user, window) for one event type and one raw
    partition, with the last raw offset seen per user.

    The offsets make charging idempotent: a message at or below a user's last offset was
    charged before (and its output delivered: the worker saves the ledger only after
    flushing), so a replay after a crash or a rebalance is skipped for that user instead of
    charged twice. The ledger after a crash therefore equals the ledger without one.
    """

    allowance: int
    window_s: int = 86_400
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    last_offset: dict[str, int] = field(default_factory=dict)
    #: users changed since the last ``drain_dirty``
    dirty: set[str] = field(default_factory=set)

    def charge(
        self,
        users: pa.Array | pa.ChunkedArray,
        at: pa.Array | pa.ChunkedArray,
        offset: int | None = None,
    ) -> Charge:
        """Charge a batch in order (the rows of the message at raw ``offset``, if given).

        Rows within budget are allowed; the rest are suppressed and not charged; rows of a
        user whose last offset is ``offset`` or later are replays, neither allowed nor
        charged. ``at`` are the events' timestamps."""
        n = len(users)
        if n == 0:
            return Charge(np.zeros(0, dtype=bool), 0, 0)
        encoded = (
            pc.dictionary_encode(users).combine_chunks()
            if isinstance(users, pa.ChunkedArray)
            else pc.dictionary_encode(users)
        )
        codes = encoded.indices.to_numpy().astype(np.int64)
        names = encoded.dictionary.to_pylist()
        micros = pc.cast(at, pa.int64()).to_numpy(zero_copy_only=False)
        windows = micros // (self.window_s * 1_000_000)
        low, high = int(windows.min()), int(windows.max())
        if low == high:  # the common case: one window, so a group is a user
            inverse = codes
            group_users = names
            group_windows = [low] * len(names)
        else:
            key = codes * (high - low + 1) + (windows - low)
            groups, inverse = np.unique(key, return_inverse=True)
            first = np.zeros(len(groups), dtype=np.int64)
            first[inverse[::-1]] = np.arange(n)[::-1]
            group_users = [names[c] for c in codes[first].tolist()]
            group_windows = windows[first].tolist()
        # One dict look-up per (user, window) in the batch, not per event; updates in C.
        group_keys = list(zip(group_users, group_windows, strict=True))
        get = self.counts.get
        prior = np.array([get(k, 0) for k in group_keys], dtype=np.int64)
        if offset is None:
            fresh = np.ones(len(group_keys), dtype=bool)
        else:
            last = self.last_offset.get
            fresh = np.array([last(u, -1) < offset for u in group_users], dtype=bool)
        sizes = np.bincount(inverse, minlength=len(group_keys))
        if (prior + sizes <= self.allowance).all():  # nobody reaches the limit: no ranks
            allowed = fresh[inverse]
        else:
            allowed = fresh[inverse] & (prior[inverse] + _ranks(inverse, sizes) < self.allowance)
        kept = np.bincount(inverse, weights=allowed, minlength=len(group_keys)).astype(np.int64)
        total = (prior + kept).tolist()
        changed = np.flatnonzero(kept).tolist()
        self.counts.update({group_keys[i]: total[i] for i in changed})
        new_users = group_users if fresh.all() else [group_users[i] for i in np.flatnonzero(fresh)]
        if offset is not None:
            self.last_offset.update(dict.fromkeys(new_users, offset))
        self.dirty.update(new_users)
        replayed = int(n - fresh[inverse].sum())
        return Charge(allowed, replayed, int(n - replayed - allowed.sum()))

    def spent(self, user: str, window: int) -> int:
        """Events charged to ``user`` (a pseudonym) in ``window``."""
        return self.counts.get((user, window), 0)

    def forget_before(self, window: int) -> int:
        """Drop windows older than ``window`` (they can no longer be charged); how many."""
        old = [k for k in self.counts if k[1] < window]
        for k in old:
            del self.counts[k]
            self.dirty.add(k[0])
        return len(old)

    def entry(self, user: str) -> dict[str, Any] | None:
        """One user's state as JSON-able data (None once nothing is left to remember)."""
        windows = {str(w): c for (u, w), c in self.counts.items() if u == user}
        if not windows and user not in self.last_offset:
            return None
        return {"offset": self.last_offset.get(user, -1), "windows": windows}

    def drain_dirty(self) -> dict[str, dict[str, Any] | None]:
        """The entries of the users changed since the last call (None: forget the user)."""
        by_user: dict[str, dict[str, int]] = {u: {} for u in self.dirty}
        for (u, w), c in self.counts.items():
            if u in by_user:
                by_user[u][str(w)] = c
        out: dict[str, dict[str, Any] | None] = {}
        for u, windows in by_user.items():
            if windows:
                out[u] = {"offset": self.last_offset.get(u, -1), "windows": windows}
            else:  # nothing left in any live window: the user's offset can go too
                self.last_offset.pop(u, None)
                out[u] = None
        self.dirty.clear()
        return out

    def restore(self, user: str, entry: dict[str, Any]) -> None:
        """Load one user's saved entry (from ``drain_dirty``)."""
        self.last_offset[user] = int(entry["offset"])
        for w, c in entry["windows"].items():
            self.counts[(user, int(w))] = int(c)


def _ranks(inverse: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each row's rank among the rows of its group (``inverse``), in batch order."""
    order = np.argsort(inverse, kind="stable")
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    rank = np.empty(len(inverse), dtype=np.int64)
    rank[order] = np.arange(len(inverse)) - starts
    return rank


@dataclass(frozen=True)
class Charge:
    """What charging a batch decided."""

    allowed: np.ndarray  # rows within budget (these are released)
    replayed: int  # rows already charged by an earlier run (dropped, not charged)
    over_budget: int  # rows suppressed because their user's budget is spent
