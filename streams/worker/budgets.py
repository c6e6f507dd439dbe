"""The budgets of the privacy stage: per raw partition and event type, the ledger of what
each user was charged, and the charge of each batch.

The accountant (``privacy.accountant``) turns the worker's (ε, δ) per user per window into
an allowance of events per event type; :meth:`Budgets.charge` charges a privatised batch to
its users' ledgers (``privacy.ledger``) in the window of the worker's clock and drops, or
coarsens, the rows past the allowance and the rows a replay already released. The stage
saves the ledgers (``streams.worker.state``) and restores them after a crash or a
rebalance (:meth:`Budgets.restore`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eddyline.privacy.accountant import allowance
from eddyline.privacy.governance import Suppression
from eddyline.privacy.ledger import BudgetLedger
from eddyline.privacy.policy import PrivacyPolicy
from eddyline.privacy.pseudonymize import Encoding, HmacPseudonymizer
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.registry import SchemaRegistry
from eddyline.schemas.source import SourceRef


@dataclass
class Charged:
    """What charging one batch decided."""

    new_epoch: bool = False  # the raw topic was recreated: the ledger's offsets started afresh
    over_budget: int = 0  # rows suppressed because their user's budget is spent
    replayed: int = 0  # rows charged by an earlier run (a replay after a crash): dropped
    coarsened: int = 0  # over-budget rows released with their protected fields nulled
    kept: np.ndarray | None = None  # which rows were kept (None: all)


class Budgets:
    """Every ledger of one worker, by (event type, raw partition)."""

    def __init__(
        self,
        pseudonymizer: HmacPseudonymizer,
        policy: Callable[[type[BaseEvent]], PrivacyPolicy],
        registry: SchemaRegistry,
        budget: tuple[float, float, int],
        clock: Callable[[], float],
        suppression: Suppression,
    ) -> None:
        self._pseudonymizer, self._policy, self._registry = pseudonymizer, policy, registry
        self.budget, self.clock, self.suppression = budget, clock, suppression
        # (event name, raw partition) -> its budget ledger; saved by the worker (state.py)
        self.ledgers: dict[tuple[str, int], BudgetLedger] = {}
        self._forgot = 0  # the suppression version the ledgers have forgotten
        self._saved: dict[tuple[str, int], list[dict[str, Any]]] = {}

    def forget_users(self) -> int:
        """Forget, in every ledger, the users of the forget requests not yet applied."""
        if self.suppression.version == self._forgot:
            return 0
        self._forgot = self.suppression.version
        pids = self.suppression.pids("privatize")
        return sum(ledger.forget_users(pids) for ledger in self.ledgers.values())

    def charge(
        self,
        model: type[BaseEvent],
        raw: pa.Table,
        private: pa.Table,
        encodings: dict[str, Encoding],
        source: SourceRef,
        offsets: int | np.ndarray,
    ) -> tuple[pa.Table, Charged]:
        """Charge the batch to its users' budgets in the window of the worker's clock (the
        rows' raw ``offsets``: one for a message, one per row for a run of messages); drop
        (or coarsen) what is over budget and what a replay already released. Returns the
        rows kept and what was decided."""
        now = self.clock()
        ledger = self.ledger(model, source.partition)
        out = Charged(new_epoch=ledger.follow_epoch(source.epoch))
        users, encoded = self._budget_identity(raw, private, encodings, now)
        charge = ledger.charge(users, ledger.window_of(now), offsets, encoded=encoded)
        out.over_budget, out.replayed = charge.over_budget, charge.replayed
        keep = charge.allowed
        if out.over_budget and model.over_budget == "coarsen":
            private = self._coarsen(model, private, charge.allowed)
            keep = charge.allowed | charge.over
            out.coarsened, out.over_budget = out.over_budget, 0
        if keep.all():
            return private, out
        out.kept = keep
        return private.filter(pa.array(keep)), out

    def _budget_identity(
        self, raw: pa.Table, private: pa.Table, encodings: dict[str, Encoding], now: float
    ) -> tuple[pa.Array | pa.ChunkedArray, Encoding | None]:
        """Each row's user as the ledger counts them: the pseudonym under the key in force
        *now*. The stored pseudonym follows the event's ``occurred_at``, which the sender
        chooses: dated across a key rotation, one user would have two pseudonyms, so two
        ledger entries and two allowances, in one window."""
        pseudonymizer = self._pseudonymizer
        if len(pseudonymizer.keys) == 1:
            return private["user_pid"], encodings.get("user_pid")
        key = pseudonymizer.key_index_at(now)
        if pc.all(pc.equal(private["key_id"], pseudonymizer.keys[key].key_id)).as_py():
            return private["user_pid"], encodings.get("user_pid")
        pids, encoded = pseudonymizer.encode_under(raw["user_id"], key)
        return pids, encoded

    def _coarsen(self, model: type[BaseEvent], table: pa.Table, allowed: np.ndarray) -> pa.Table:
        """``table`` with every protected field nulled on the rows not ``allowed``."""
        policy = self._policy(model)
        mask = pa.array(allowed)
        for name in [n for n, _ in policy.noised] + [n for n, _ in policy.randomized]:
            col = table[name]
            nulls = pa.nulls(table.num_rows, col.type)
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.if_else(mask, col, nulls)
            )
        return table

    def allowance(self, model: type[BaseEvent]) -> int:
        """Events one user may send of ``model`` per window (from the accountant)."""
        epsilon, delta, _ = self.budget
        return allowance(self._policy(model).mechanisms, epsilon=epsilon, delta=delta)

    def allowances(self) -> dict[str, int]:
        """Every registered event type's allowance (schema id -> events per user per window).

        The accountant's search takes seconds per policy; a worker calls this before it
        consumes, so that no event waits on it."""
        return {model.schema_id(): self.allowance(model) for model in self._registry.models()}

    def ledger(self, model: type[BaseEvent], partition: int = 0) -> BudgetLedger:
        """The budget ledger of one event type in one raw partition."""
        found = self.ledgers.get((model.event_name, partition))
        if found is None:
            found = BudgetLedger(self.allowance(model), self.budget[2])
            for shard in self._saved.pop((model.event_name, partition), []):
                found.restore_shard(shard)
            found.forget_users(self.suppression.pids("privatize"))
            self.ledgers[(model.event_name, partition)] = found
        return found

    def usage(self, bins: int = 10) -> dict[str, Any]:
        """The current window's budget use: per event type, how many users have spent
        each tenth of their allowance (``bins`` equal parts of 0-100%, the last bin holding
        the users who spent all of it); the users charged in the window (active users,
        over every type) and the events charged to them."""
        spent: dict[str, np.ndarray] = {}
        users: set[str] = set()
        events = 0
        for (name, _), ledger in list(self.ledgers.items()):  # a copy: the intake adds
            names, counts = ledger.charged_in(ledger.window_of(self.clock()))
            part = np.minimum(counts * bins // max(ledger.allowance, 1), bins - 1)
            hist = spent.setdefault(name, np.zeros(bins, np.int64))
            hist += np.bincount(part, minlength=bins)[:bins]
            users.update(names)
            events += int(counts.sum())
        return {
            "spent": {name: hist.tolist() for name, hist in sorted(spent.items())},
            "active_users": len(users),
            "events": events,
        }

    def restore(self, stream: str, partition: int, saved: list[dict[str, Any]]) -> None:
        """Saved ledger shards (``BudgetLedger.shards`` values) of one raw partition: they
        replace its ledger, which is rebuilt on its next event."""
        self.ledgers.pop((stream, partition), None)
        self._saved[(stream, partition)] = saved
