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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
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


# dp-accounting's default grid for privacy loss values: the accountant's answers.
FINE = 1e-4
# A grid 10x coarser (a multiple of FINE) for the allowance search: composing on it is ~10x
# faster, and since the pessimistic estimate rounds every loss up to its grid, its ε is never
# below FINE's. Measured: the interaction policy's allowance took 8.2 s on FINE alone (run
# lazily at a worker's first event, it stalled the event loop for that long); 2.4 s so,
# of which 1.2 s are the two exact checks at the boundary.
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
    #: window index -> user pseudonym -> events charged
    windows: dict[int, dict[str, int]] = field(default_factory=dict)
    last_offset: dict[str, int] = field(default_factory=dict)
    #: users changed since the last ``drain_dirty``
    dirty: set[str] = field(default_factory=set)

    @property
    def counts(self) -> dict[tuple[str, int], int]:
        """Every (user, window) -> events charged (a copy, for reading)."""
        return {(u, w): c for w, users in self.windows.items() for u, c in users.items()}

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
            return Charge(np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
        micros = pc.cast(at, pa.int64()).to_numpy(zero_copy_only=False)
        windows = micros // (self.window_s * 1_000_000)
        low, high = int(windows.min()), int(windows.max())
        if low == high:  # the common case: one window per batch
            return self._charge_window(users, low, offset)
        # The message spans a window boundary. Whether a user's rows are replays is decided
        # once for the whole message, before any window is charged: charging a window
        # records the message's offset for its users, which made their rows in the next
        # window look replayed (found: events across midnight UTC silently dropped).
        replay = np.zeros(n, dtype=bool)
        if offset is not None:
            ids = pc.cast(users, pa.string()).to_pylist()
            replay = (
                np.fromiter(map(self.last_offset.get, ids, repeat(-1, n)), np.int64, n) >= offset
            )
        allowed, over = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for w in range(low, high + 1):
            rows = np.flatnonzero((windows == w) & ~replay)
            if len(rows):
                part = self._charge_window(pc.take(users, pa.array(rows)), w, None)
                allowed[rows], over[rows] = part.allowed, part.over
        if offset is not None:
            fresh = {u for u, r in zip(ids, replay.tolist(), strict=True) if not r}
            self.last_offset.update(dict.fromkeys(fresh, offset))
        return Charge(allowed, over)

    def _charge_window(
        self, users: pa.Array | pa.ChunkedArray, window: int, offset: int | None
    ) -> Charge:
        encoded = pc.dictionary_encode(users)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries().combine_chunks()
        inverse = encoded.indices.to_numpy().astype(np.int64)
        names = encoded.dictionary.to_pylist()
        counts = self.windows.setdefault(window, {})
        # One C-level look-up per user in the batch (missing: the default), none per event.
        k = len(names)
        prior = np.fromiter(map(counts.get, names, repeat(0, k)), np.int64, k)
        if offset is None:
            fresh = np.ones(k, dtype=bool)
        else:  # never seen: -1, before any offset
            fresh = (
                np.fromiter(map(self.last_offset.get, names, repeat(-1, k)), np.int64, k) < offset
            )
        sizes = np.bincount(inverse, minlength=len(names))
        if (prior + sizes <= self.allowance).all():  # nobody reaches the limit: no ranks
            allowed = fresh[inverse]
        else:
            allowed = fresh[inverse] & (prior[inverse] + _ranks(inverse, sizes) < self.allowance)
        kept = np.bincount(inverse, weights=allowed, minlength=len(names)).astype(np.int64)
        changed = np.flatnonzero(kept)
        if len(changed):
            counts.update(
                zip(
                    [names[i] for i in changed.tolist()],
                    (prior[changed] + kept[changed]).tolist(),
                    strict=True,
                )
            )
        new_users = names if fresh.all() else [names[i] for i in np.flatnonzero(fresh).tolist()]
        if offset is not None:
            self.last_offset.update(dict.fromkeys(new_users, offset))
        self.dirty.update(new_users)
        return Charge(allowed, fresh[inverse] & ~allowed)

    def spent(self, user: str, window: int) -> int:
        """Events charged to ``user`` (a pseudonym) in ``window``."""
        return self.windows.get(window, {}).get(user, 0)

    def forget_before(self, window: int) -> int:
        """Drop windows older than ``window`` (they can no longer be charged); how many
        (user, window) entries went."""
        gone = 0
        for w in [w for w in self.windows if w < window]:
            users = self.windows.pop(w)
            self.dirty.update(users)
            gone += len(users)
        return gone

    def entry(self, user: str) -> dict[str, Any] | None:
        """One user's state as JSON-able data (None once nothing is left to remember)."""
        windows = {str(w): users[user] for w, users in self.windows.items() if user in users}
        if not windows:
            return None
        return {"offset": self.last_offset.get(user, -1), "windows": windows}

    def take_dirty(self) -> set[str]:
        """The users changed since the last call (whose saved state is now stale)."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def drain_dirty(self) -> dict[str, dict[str, Any] | None]:
        """The entries of the users changed since the last call (None: forget the user)."""
        out: dict[str, dict[str, Any] | None] = {}
        for user in self.take_dirty():
            out[user] = found = self.entry(user)
            if found is None:  # nothing left in any live window: the offset can go too
                self.last_offset.pop(user, None)
        return out

    def users(self) -> set[str]:
        """Every user the ledger remembers."""
        out = set(self.last_offset)
        for users in self.windows.values():
            out.update(users)
        return out

    def shards(
        self, wanted: set[int], shard_of: Callable[[str], int]
    ) -> dict[int, dict[str, Any] | None]:
        """Every user of the ``wanted`` shards (``shard_of(user)``), by shard, in columns:
        ``{"users": [...], "offsets": [...], "windows": {"<window>": [count, ...]}}`` (a
        count of 0: nothing charged in that window); None for a wanted shard with no user.

        Columns, not one object per user: a save rewrites every user of a dirty shard, and
        at high rates every shard is dirty, so its cost is per user remembered; lists of
        strings and ints keep that cost in C (map, json). Users with nothing left in any
        live window are forgotten here (their offset too), as in ``drain_dirty``."""
        live: set[str] = set()
        for counts in self.windows.values():
            live.update(counts)
        for user in set(self.last_offset) - live:
            del self.last_offset[user]
        groups: dict[int, list[str]] = {s: [] for s in wanted}
        for user in live:  # the one per-user Python step: which shard
            group = groups.get(shard_of(user))
            if group is not None:
                group.append(user)
        out: dict[int, dict[str, Any] | None] = {}
        for shard, users in groups.items():
            n = len(users)
            out[shard] = (
                {
                    "users": users,
                    "offsets": [*map(self.last_offset.get, users, repeat(-1, n))],
                    "windows": {
                        str(w): [*map(counts.get, users, repeat(0, n))]
                        for w, counts in self.windows.items()
                    },
                }
                if users
                else None
            )
        return out

    def restore(self, user: str, entry: dict[str, Any]) -> None:
        """Load one user's saved entry (from ``drain_dirty``)."""
        self.last_offset[user] = int(entry["offset"])
        for w, c in entry["windows"].items():
            self.windows.setdefault(int(w), {})[user] = int(c)

    def restore_shard(self, shard: dict[str, Any]) -> int:
        """Load a saved shard (either form, ``shard_columns``); how many users it held."""
        shard = shard_columns(shard)
        users = shard["users"]
        self.last_offset.update(zip(users, shard["offsets"], strict=True))
        for w, counts in shard["windows"].items():
            charged = self.windows.setdefault(int(w), {})
            charged.update((u, c) for u, c in zip(users, counts, strict=True) if c)
        return len(users)


def shard_columns(shard: dict[str, Any]) -> dict[str, Any]:
    """A saved shard in ``BudgetLedger.shards``' columns; shards saved before that format
    held one object per user (``BudgetLedger.entry``), converted here, and only here."""
    if "users" in shard:
        return shard
    users = list(shard)
    windows = sorted({w for entry in shard.values() for w in entry["windows"]})
    return {
        "users": users,
        "offsets": [int(shard[u]["offset"]) for u in users],
        "windows": {w: [int(shard[u]["windows"].get(w, 0)) for u in users] for w in windows},
    }


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
    over: np.ndarray  # rows past their user's budget (suppressed or coarsened)

    @property
    def over_budget(self) -> int:
        return int(self.over.sum())

    @property
    def replayed(self) -> int:
        """Rows already charged by an earlier run (dropped, not charged)."""
        return int(len(self.allowed) - self.allowed.sum() - self.over.sum())
