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

import logging
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
from eddyline.privacy.repeats import RepeatFilter, event_keys
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.registry import SchemaRegistry
from eddyline.schemas.source import SourceRef

log = logging.getLogger("eddyline.worker")


@dataclass
class Charged:
    """What charging one batch decided."""

    new_epoch: bool = False  # the raw topic was recreated: the ledger's offsets started afresh
    over_budget: int = 0  # rows suppressed because their user's budget is spent
    replayed: int = 0  # rows charged by an earlier run (a replay after a crash): dropped
    coarsened: int = 0  # over-budget rows released with their protected fields nulled
    repeated: int = 0  # rows repeating an event_id of the same user (a client's retry)
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
        repeats: tuple[int, int] = (86_400, 4_000_000),
    ) -> None:
        self._pseudonymizer, self._policy, self._registry = pseudonymizer, policy, registry
        self.budget, self.clock, self.suppression = budget, clock, suppression
        # (event name, raw partition) -> its budget ledger; saved by the worker (state.py)
        self.ledgers: dict[tuple[str, int], BudgetLedger] = {}
        # (event name, raw partition) -> the keys of its events released (privacy.repeats);
        # ``repeats``: (window seconds, 0 for none; most keys kept per filter)
        self.repeat_window_s, self.repeat_max_keys = repeats
        self.repeats: dict[tuple[str, int], RepeatFilter] = {}
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
        encoded = encoded or Encoding.of(users)
        first = self._first_sends(model, source.partition, raw, encoded, ledger, offsets, now)
        if first is not None:  # some rows repeat an earlier event: they go before the charge
            out.repeated = int(len(first) - first.sum())
            mask = pa.array(first)
            raw, private, users = raw.filter(mask), private.filter(mask), users.filter(mask)
            encoded = Encoding(encoded.names, encoded.indices.filter(mask))
            offsets = offsets if np.ndim(offsets) == 0 else np.asarray(offsets)[first]
        private, out = self._charge(model, ledger, users, encoded, private, offsets, now, out)
        if first is not None:  # ``kept`` says which of the rows given were kept
            kept = first.copy()
            kept[first] = True if out.kept is None else out.kept
            out.kept = kept
        return private, out

    def _charge(
        self,
        model: type[BaseEvent],
        ledger: BudgetLedger,
        users: pa.Array | pa.ChunkedArray,
        encoded: Encoding,
        private: pa.Table,
        offsets: int | np.ndarray,
        now: float,
        out: Charged,
    ) -> tuple[pa.Table, Charged]:
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

    def _first_sends(
        self,
        model: type[BaseEvent],
        partition: int,
        raw: pa.Table,
        encoded: Encoding,
        ledger: BudgetLedger,
        offsets: int | np.ndarray,
        now: float,
    ) -> np.ndarray | None:
        """Which rows are not repeats of an event released before (None: all are). Replays
        (rows the ledger charged before a crash) are the ledger's to drop, not checked."""
        if not self.repeat_window_s or "event_id" not in raw.column_names:
            return None
        repeats = self.repeat_filter(model.event_name, partition)
        fresh = ledger.fresh(encoded, offsets)
        indices = encoded.indices.to_numpy(zero_copy_only=False)[fresh]
        keys = event_keys(encoded.names, indices, raw["event_id"].filter(pa.array(fresh)))
        repeat = repeats.check(keys, repeats.window_of(now))
        if not repeat.any():
            return None
        first = np.ones(raw.num_rows, bool)
        first[np.flatnonzero(fresh)[repeat]] = False
        return first

    def repeat_filter(self, stream: str, partition: int) -> RepeatFilter:
        """The repeat filter of one event type in one raw partition."""
        found = self.repeats.get((stream, partition))
        if found is None:
            found = RepeatFilter(self.repeat_window_s, self.repeat_max_keys)
            self.repeats[(stream, partition)] = found
        return found

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

    def restore_repeats(
        self, stream: str, partition: int, chunks: list[tuple[str, dict[str, Any]]]
    ) -> int:
        """Saved repeat-filter chunks (``RepeatFilter.chunks``: (name, chunk)) of one raw
        partition: they replace its filter. How many keys were loaded."""
        self.repeats.pop((stream, partition), None)
        if not chunks or not self.repeat_window_s:
            return 0
        found = self.repeat_filter(stream, partition)
        window = found.window_of(self.clock())
        return sum(found.restore_chunk(name, chunk, window) for name, chunk in chunks)

    def repeat_chunks(self) -> list[tuple[str, int, str, dict[str, Any] | None]]:
        """Every filter's keys added since the last call and its expired chunks, as
        (stream, raw partition, chunk name, chunk or None to delete)."""
        out: list[tuple[str, int, str, dict[str, Any] | None]] = []
        for (stream, partition), found in self.repeats.items():
            if found.truncated > found.reported:
                found.reported = found.truncated
                log.warning(
                    "repeat filter %s/%d: over EDDYLINE_REPEAT_MAX_KEYS (%d keys): its older "
                    "window went early, so repeats are caught for less than a window",
                    stream,
                    partition,
                    self.repeat_max_keys,
                )
            new, gone = found.chunks(found.window_of(self.clock()))
            out += [(stream, partition, name, None) for name in gone]
            out += [(stream, partition, name, chunk) for name, chunk in new.items()]
        return out
