"""The privacy stage as a pure function: raw Kafka messages in, a private Arrow batch out.

No broker needed: hand ``Privatizer.process`` one message's value and headers (an Arrow
envelope, or one JSON event), or ``Privatizer.process_json`` a run of single-event JSON
messages, and get back the private table and the dead letters. Every row of either travels
with its identity (raw offset, index in its message) until its noise is drawn
(``privacy.draws``: the same event is noised the same however the batches are cut) and its
budget is charged (``streams.worker.budgets``). The intake (``streams.worker.intake``) only
moves bytes.

Nothing the sender chose reaches a dead letter or a log line: a dead letter names schema
fields, reason codes, type names, counts and row indices (``schemas.deadletter``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eddyline.privacy.consent import allowing_any
from eddyline.privacy.draws import KeyedDraws
from eddyline.privacy.governance import Suppression
from eddyline.privacy.ledger import BudgetLedger
from eddyline.privacy.policy import PrivacyPolicy
from eddyline.privacy.pseudonymize import (
    Encoding,
    HmacPseudonymizer,
    PseudonymKey,
    load_keyring,
    load_or_create_key,
)
from eddyline.schemas.arrow import SchemaMismatchError, conform
from eddyline.schemas.deadletter import DeadLetter, Reason, row_ranges
from eddyline.schemas.envelope import Envelope, decode
from eddyline.schemas.errors import EnvelopeError, UnknownSchemaError
from eddyline.schemas.events import BaseEvent, TimeWindow
from eddyline.schemas.json_batch import JsonRun, event_id_at, read_json_events
from eddyline.schemas.registry import REGISTRY, SchemaRegistry
from eddyline.schemas.source import OFFSET_COLUMN, SourceRef
from eddyline.schemas.validation import RowViolation, validate_table
from eddyline.streams.kafka.settings import WorkerSettings
from eddyline.streams.worker.budgets import Budgets


@dataclass
class Outcome:
    """What the privacy stage made of one message."""

    schema_id: str | None = None
    private: pa.Table | None = None  # the rows that crossed (None: none did)
    dead: list[DeadLetter] = _field(default_factory=list)
    received: int = 0  # rows that decoded, valid or not
    suppressed: int = 0  # valid rows whose consent allows neither storage nor learning
    over_budget: int = 0  # valid rows suppressed because their user's budget is spent
    replayed: int = 0  # rows charged by an earlier run (a replay after a crash): dropped
    coarsened: int = 0  # over-budget rows released with their protected fields nulled
    repeated: int = 0  # rows repeating an event_id their user sent before: dropped
    forgotten: int = 0  # valid rows of a forgotten user: dropped before anything else
    new_epoch: bool = False  # the raw topic was recreated: the ledger's offsets started afresh
    masked: Counter[str] = _field(default_factory=Counter)  # sensitive strings scrubbed


_OFFSETS, _INDICES = "__eddyline_offset", "__eddyline_index"  # each row's identity, in flight


class Privatizer:
    """Decode, validate and privatise raw messages for one worker.

    Args:
        pseudonymizer: the keyed pseudonyms of ids.
        rng: the noise generator for messages processed without a noise key.
        registry: the event models raw messages may name.
        max_bytes, max_rows: larger envelopes are dead-lettered, never decoded.
        budget: (epsilon, delta, window seconds) per user per stream.
        window: the ``occurred_at`` values accepted (older or later: ``row.invalid``).
        clock: seconds since the epoch; the budget window is the clock's, never an
            event's own time.
        repeats: (window seconds, most keys per filter): a repeated ``event_id`` of a
            user within the window is dropped (``privacy.repeats``); a window of 0: none.
    """

    def __init__(
        self,
        pseudonymizer: HmacPseudonymizer,
        rng: np.random.Generator,
        registry: SchemaRegistry = REGISTRY,
        *,
        max_bytes: int = 8 << 20,
        max_rows: int = 100_000,
        budget: tuple[float, float, int] = (100.0, 1e-6, 86_400),
        window: TimeWindow | None = None,
        clock: Callable[[], float] = time.time,
        suppression: Suppression | None = None,
        repeats: tuple[int, int] = (86_400, 4_000_000),
    ) -> None:
        self.budget = budget  # (epsilon, delta, window seconds) per user per stream
        self.window = window or TimeWindow()
        self.clock = clock
        self.suppression = suppression or Suppression()
        self.max_bytes, self.max_rows = max_bytes, max_rows
        self._pseudonymizer = pseudonymizer
        self._rng = rng
        self._registry = registry
        self._policies: dict[type[BaseEvent], PrivacyPolicy] = {}
        self.budgets = Budgets(
            pseudonymizer, self.policy, registry, budget, clock, self.suppression, repeats
        )

    def policy(self, model: type[BaseEvent]) -> PrivacyPolicy:
        found = self._policies.get(model)
        if found is None:
            found = self._policies[model] = PrivacyPolicy.for_model(model)
        return found

    def process(
        self,
        value: bytes | None,
        headers: Any,
        source: SourceRef,
        stream: str,
        *,
        noise_key: bytes | None = None,
        timestamp: float | None = None,
    ) -> Outcome:
        """One raw message; never raises for bad input: every problem becomes a dead letter.

        ``noise_key``: the secret the noise is drawn with, by row (``privacy.draws``);
        without one, the shared generator (a replay is then noised afresh).
        ``timestamp``: the message's Kafka timestamp (seconds; default: now), the
        ``occurred_at`` of a JSON event sent without one."""
        self.forget_users()  # the ledgers forget whoever was forgotten since the last message
        try:
            env = self._envelope(value, headers)
            model = self._model(env.schema_id, stream)
        except EnvelopeError as exc:
            return Outcome(dead=[DeadLetter(Reason(exc.reason), exc.detail, source)])
        if env.json_event is not None:
            at = self.clock() if timestamp is None else timestamp
            run = JsonRun([value], np.array([source.offset]), np.array([at]), None, source)
            return self._json(run, model, noise_key)
        out = Outcome(schema_id=model.schema_id())
        table = self._table(env, model, source, out)
        if table is None:
            return out
        out.received = table.num_rows
        if table.num_rows == 0:  # counted, so that every message is accounted for
            out.dead.append(
                DeadLetter(
                    Reason.ENVELOPE_EMPTY,
                    "the envelope holds 0 rows",
                    source,
                    out.schema_id,
                    count=0,
                )
            )
            return out
        offsets = np.full(table.num_rows, source.offset, np.int64)
        return self._rows(model, table, offsets, np.arange(table.num_rows), source, out, noise_key)

    def process_json(self, run: JsonRun, stream: str, *, noise_key: bytes | None = None) -> Outcome:
        """A run of single-event JSON messages as one batch: one table, one budget charge,
        one private batch (holding each row's raw offset when it covers more than one
        message); each bad message is dead-lettered at its own position."""
        self.forget_users()
        try:
            model = self._model(run.schema_id, stream)
        except EnvelopeError as exc:
            return Outcome(
                dead=[
                    DeadLetter(Reason(exc.reason), exc.detail, run.at(int(o)))
                    for o in run.offsets.tolist()
                ]
            )
        return self._json(run, model, noise_key)

    def _json(self, run: JsonRun, model: type[BaseEvent], noise_key: bytes | None) -> Outcome:
        out = Outcome(schema_id=model.schema_id())
        offsets = run.offsets
        read = read_json_events(
            model,
            run.values,
            times=run.timestamps,
            ids=lambda i: event_id_at(run.source, int(offsets[i])),
            window=self.window,
        )
        for f in read.failures:
            rows = "0" if f.reason == Reason.ROW_INVALID else ""
            src = run.at(int(offsets[f.message]))
            out.dead.append(DeadLetter(f.reason, f.detail, src, out.schema_id, f.field, rows))
            out.received += f.reason == Reason.ROW_INVALID  # it decoded, and broke a rule
        table = read.table
        out.received += table.num_rows
        if not table.num_rows:
            return out
        row_offsets = offsets[read.messages]
        zeros = np.zeros(table.num_rows, np.int64)
        return self._rows(model, table, row_offsets, zeros, run.source, out, noise_key, run=run)

    def _rows(
        self,
        model: type[BaseEvent],
        table: pa.Table,
        offsets: np.ndarray,
        indices: np.ndarray,
        source: SourceRef,
        out: Outcome,
        noise_key: bytes | None,
        run: JsonRun | None = None,
    ) -> Outcome:
        """The rows of one message (or of a JSON run) through validation, consent, the
        policy and the budget. Each row carries its identity (raw offset, index in its
        message) until its noise is drawn and its charge is made."""
        table = table.append_column(_OFFSETS, pa.array(offsets, pa.int64()))
        table = table.append_column(_INDICES, pa.array(indices, pa.int64()))
        good, violations = validate_table(model, table, window=self.window)
        out.dead += self._violations(violations, table, source, out, run)
        good = self._drop_forgotten(good, out)
        kept = allowing_any(good)
        out.suppressed = good.num_rows - kept.num_rows
        row_offsets = kept[_OFFSETS].to_numpy()
        row_indices = kept[_INDICES].to_numpy()
        kept = kept.drop_columns([_OFFSETS, _INDICES])
        rng: Any = self._rng
        if noise_key is not None:
            rng = KeyedDraws.for_source(noise_key, source.key, row_offsets, row_indices)
        encodings: dict[str, Encoding] = {}
        private = self.policy(model).apply(kept, self._pseudonymizer, rng, out.masked, encodings)
        many = source.start != source.offset
        if private.num_rows and "user_pid" in private.column_names:
            charged = row_offsets if many else source.offset
            private, c = self.budgets.charge(model, kept, private, encodings, source, charged)
            out.new_epoch, out.over_budget, out.replayed = c.new_epoch, c.over_budget, c.replayed
            out.coarsened, out.repeated = c.coarsened, c.repeated
            row_offsets = row_offsets if c.kept is None else row_offsets[c.kept]
        if many:
            private = private.append_column(OFFSET_COLUMN, pa.array(row_offsets, pa.int64()))
        out.private = private if private.num_rows else None  # None: no row crossed
        return out

    def _violations(
        self,
        violations: list[RowViolation],
        table: pa.Table,
        source: SourceRef,
        out: Outcome,
        run: JsonRun | None,
    ) -> list[DeadLetter]:
        """Dead letters for rows that broke a rule: by row ranges within one message, or,
        for a JSON run, one per message at its own position."""
        letters = []
        for v in violations:
            detail = f"{v.field}: {v.reason}"
            if run is None:
                rows = row_ranges(v.rows.to_numpy().tolist())
                letters.append(
                    DeadLetter(Reason.ROW_INVALID, detail, source, out.schema_id, v.field, rows)
                )
                continue
            for offset in pc.take(table[_OFFSETS], v.rows).to_pylist():
                src = run.at(offset)
                letters.append(
                    DeadLetter(Reason.ROW_INVALID, detail, src, out.schema_id, v.field, "0")
                )
        return letters

    def _drop_forgotten(self, table: pa.Table, out: Outcome) -> pa.Table:
        """A forgotten user's rows go before anything else is done with them."""
        if self.suppression.empty or not table.num_rows:
            return table
        users = Encoding.of(table["user_id"])
        flags = self.suppression.forgotten(self._pseudonymizer, users.names)
        if not any(flags):
            return table
        forgotten = pa.array(flags).take(users.indices)
        out.forgotten = pc.sum(forgotten).as_py()
        return table.filter(pc.invert(forgotten))

    # -- the budgets (``streams.worker.budgets``), for the stage, the CLI and tests ----------

    @property
    def ledgers(self) -> dict[tuple[str, int], BudgetLedger]:
        return self.budgets.ledgers

    def forget_users(self) -> int:
        return self.budgets.forget_users()

    def allowance(self, model: type[BaseEvent]) -> int:
        return self.budgets.allowance(model)

    def allowances(self) -> dict[str, int]:
        return self.budgets.allowances()

    def ledger(self, model: type[BaseEvent], partition: int = 0) -> BudgetLedger:
        return self.budgets.ledger(model, partition)

    def restore(self, stream: str, partition: int, saved: list[dict[str, Any]]) -> None:
        self.budgets.restore(stream, partition, saved)

    def _envelope(self, value: bytes | None, headers: Any) -> Envelope:
        if value is not None and len(value) > self.max_bytes:
            raise EnvelopeError(
                Reason.ENVELOPE_TOO_LARGE,
                f"{len(value):,} bytes > the limit of {self.max_bytes:,}",
            )
        env = decode(value, headers)
        if env.table is not None and env.table.num_rows > self.max_rows:
            raise EnvelopeError(
                Reason.ENVELOPE_TOO_LARGE,
                f"{env.table.num_rows:,} rows > the limit of {self.max_rows:,}",
            )
        return env

    def _model(self, schema_id: str | None, stream: str) -> type[BaseEvent]:
        try:
            model = self._registry.get(schema_id) if schema_id else self._registry.latest(stream)
        except UnknownSchemaError:
            # the header's text is the sender's, so it is not repeated
            raise EnvelopeError(
                Reason.SCHEMA_UNKNOWN,
                "the eddyline-schema header names no registered schema"
                if schema_id
                else f"no schema is registered for the {stream!r} stream",
            ) from None
        if model.event_name != stream:
            raise EnvelopeError(
                Reason.SCHEMA_WRONG_STREAM,
                f"schema {model.schema_id()!r} sent to the {stream!r} stream",
            )
        return model

    def _table(
        self, env: Envelope, model: type[BaseEvent], source: SourceRef, out: Outcome
    ) -> pa.Table | None:
        assert env.table is not None
        try:
            return conform(model, env.table)
        except SchemaMismatchError as exc:
            detail = str(exc)  # names schema fields and type names only
        except (ValueError, pa.ArrowException) as exc:
            detail = f"the columns cannot be read as the schema's ({type(exc).__name__})"
        out.dead.append(
            DeadLetter(
                Reason.ENVELOPE_SCHEMA_MISMATCH,
                detail,
                source,
                out.schema_id,
                count=env.table.num_rows,
            )
        )
        return None


def pseudonymizer_from_settings(ws: WorkerSettings) -> HmacPseudonymizer:
    """The worker's pseudonymizer: the keyring file, else the key setting, else a key made
    once in ``state_dir``; refuses a keyring whose keys start mid budget window."""
    if ws.pseudonym_keyring is not None:
        keys = load_keyring(ws.pseudonym_keyring)
    elif ws.pseudonym_key is not None:
        keys = [PseudonymKey(ws.pseudonym_key_id, ws.pseudonym_key.get_secret_value().encode())]
    else:
        keys = [
            PseudonymKey(ws.pseudonym_key_id, load_or_create_key(ws.state_dir / "pseudonym.key"))
        ]
    for key in keys[1:]:
        # A key starting mid-window would give a user two pseudonyms, and two allowances,
        # in one window: refuse to start.
        if key.not_before % ws.budget_window_s:
            raise ValueError(
                f"pseudonym key {key.key_id!r} starts mid budget window: its not_before "
                f"must be a multiple of {ws.budget_window_s} s after the epoch (UTC midnight "
                "for daily windows)"
            )
    return HmacPseudonymizer(keys=keys)
