"""The privacy stage as a pure function: raw Kafka message in, private Arrow batch out.

No broker needed: hand ``Privatizer.process`` a message value and headers, get back the
private table and the dead letters. The Faust agent in ``streams.app`` only moves bytes.

Nothing the sender chose reaches a dead letter or a log line: a dead letter names schema
fields, reason codes, type names, counts and row indices (``schemas.deadletter``).
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any
from uuid import UUID

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from eddyline.privacy.accountant import allowance
from eddyline.privacy.consent import allowing_any
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
from eddyline.schemas.arrow import SchemaMismatchError, arrow_schema, conform
from eddyline.schemas.deadletter import DeadLetter, Reason, row_ranges
from eddyline.schemas.envelope import Envelope, decode
from eddyline.schemas.errors import EnvelopeError, UnknownSchemaError
from eddyline.schemas.events import BaseEvent, TimeWindow
from eddyline.schemas.registry import REGISTRY, SchemaRegistry
from eddyline.schemas.source import SourceRef
from eddyline.schemas.validation import validate_table
from eddyline.streams.kafka.settings import WorkerSettings


@dataclass
class Outcome:
    """What the privacy stage made of one message."""

    schema_id: str | None = None
    private: pa.Table | None = None
    dead: list[DeadLetter] = _field(default_factory=list)
    received: int = 0  # rows that decoded, valid or not
    suppressed: int = 0  # valid rows whose consent allows neither storage nor learning
    over_budget: int = 0  # valid rows suppressed because their user's budget is spent
    replayed: int = 0  # rows charged by an earlier run (a replay after a crash): dropped
    coarsened: int = 0  # over-budget rows released with their protected fields nulled
    forgotten: int = 0  # valid rows of a forgotten user: dropped before anything else
    new_epoch: bool = False  # the raw topic was recreated: the ledger's offsets started afresh
    masked: Counter[str] = _field(default_factory=Counter)  # sensitive strings scrubbed


def noise_rng(noise_key: bytes, source: SourceRef) -> np.random.Generator:
    """The generator of one message's noise: seeded by HMAC(noise key, its position), so a
    replay of the message is noised exactly as the first time (``privacy.noise``)."""
    seed = hmac.digest(noise_key, source.header(), "sha256")
    return np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))


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
    ) -> None:
        self.budget = budget  # (epsilon, delta, window seconds) per user per stream
        # (event name, raw partition) -> its budget ledger; saved by the worker (streams/app.py)
        self.ledgers: dict[tuple[str, int], BudgetLedger] = {}
        self.window = window or TimeWindow()
        self.clock = clock
        self.suppression = suppression or Suppression()
        self._forgot = 0  # the suppression version the ledgers have forgotten
        self._saved: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.max_bytes, self.max_rows = max_bytes, max_rows
        self._pseudonymizer = pseudonymizer
        self._rng = rng
        self._registry = registry
        self._policies: dict[type[BaseEvent], PrivacyPolicy] = {}

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
    ) -> Outcome:
        """Never raises for bad input: every problem becomes a dead letter.

        ``noise_key``: the secret that seeds this message's noise (``privacy.noise``);
        without one, the shared generator (a replay is then noised afresh)."""
        self.forget_users()  # the ledgers forget whoever was forgotten since the last message
        try:
            env = self._envelope(value, headers)
            model = self._model(env, stream)
        except EnvelopeError as exc:
            return Outcome(dead=[DeadLetter(Reason(exc.reason), exc.detail, source)])
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
        good, violations = validate_table(model, table, window=self.window)
        for v in violations:
            out.dead.append(
                DeadLetter(
                    Reason.ROW_INVALID,
                    f"{v.field}: {v.reason}",
                    source,
                    out.schema_id,
                    v.field,
                    row_ranges(v.rows.to_numpy().tolist()),
                )
            )
        good = self._drop_forgotten(good, out)
        kept = allowing_any(good)
        out.suppressed = good.num_rows - kept.num_rows
        rng = self._rng if noise_key is None else noise_rng(noise_key, source)
        encodings: dict[str, Encoding] = {}
        private = self.policy(model).apply(kept, self._pseudonymizer, rng, out.masked, encodings)
        if private.num_rows and "user_pid" in private.column_names:
            private = self._charge(model, kept, private, encodings, source, out)
        out.private = private
        return out

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

    def forget_users(self) -> int:
        """Forget, in every ledger, the users of the forget requests not yet applied."""
        if self.suppression.version == self._forgot:
            return 0
        self._forgot = self.suppression.version
        pids = self.suppression.pids("privatize")
        return sum(ledger.forget_users(pids) for ledger in self.ledgers.values())

    def _charge(
        self,
        model: type[BaseEvent],
        raw: pa.Table,
        private: pa.Table,
        encodings: dict[str, Encoding],
        source: SourceRef,
        out: Outcome,
    ) -> pa.Table:
        """Charge the batch to its users' budgets in the window of the worker's clock;
        drop (or coarsen) what is over budget and what a replay already released."""
        now = self.clock()
        ledger = self.ledger(model, source.partition)
        out.new_epoch = ledger.follow_epoch(source.epoch)
        users, encoded = self._budget_identity(raw, private, encodings, now)
        charge = ledger.charge(users, ledger.window_of(now), source.offset, encoded=encoded)
        out.over_budget, out.replayed = charge.over_budget, charge.replayed
        keep = charge.allowed
        if out.over_budget and model.over_budget == "coarsen":
            private = self._coarsen(model, private, charge.allowed)
            keep = charge.allowed | charge.over
            out.coarsened, out.over_budget = out.over_budget, 0
        return private if keep.all() else private.filter(pa.array(keep))

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
        policy = self.policy(model)
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
        return allowance(self.policy(model).mechanisms, epsilon=epsilon, delta=delta)

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

    def restore(self, stream: str, partition: int, saved: list[dict[str, Any]]) -> None:
        """Saved ledger shards (``BudgetLedger.shards`` values) of one raw partition: they
        replace its ledger, which is rebuilt on its next event."""
        self.ledgers.pop((stream, partition), None)
        self._saved[(stream, partition)] = saved

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

    def _model(self, env: Envelope, stream: str) -> type[BaseEvent]:
        try:
            model = (
                self._registry.get(env.schema_id)
                if env.schema_id
                else self._registry.latest(stream)
            )
        except UnknownSchemaError:
            # the header's text is the sender's, so it is not repeated
            raise EnvelopeError(
                Reason.SCHEMA_UNKNOWN,
                "the eddyline-schema header names no registered schema"
                if env.schema_id
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
        if env.json_event is not None:
            return self._json_table(env.json_event, model, source, out)
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

    def _json_table(
        self, event: dict[str, Any], model: type[BaseEvent], source: SourceRef, out: Outcome
    ) -> pa.Table | None:
        """One JSON event, validated by pydantic (per message: this is not the batched path)."""
        try:
            obj = model.model_validate(event, context={"time_window": self.window})
        except ValidationError as exc:
            out.received = 1
            where, rule = _first_error(exc, model)
            out.dead.append(
                DeadLetter(
                    Reason.ROW_INVALID,
                    f"{where or 'event'}: {rule}",
                    source,
                    out.schema_id,
                    where,
                    "0",
                )
            )
            return None
        row = {k: str(v) if isinstance(v, UUID) else v for k, v in obj.__dict__.items()}
        return pa.Table.from_pylist([row], schema=arrow_schema(model))


def _first_error(exc: ValidationError, model: type[BaseEvent]) -> tuple[str | None, str]:
    """(the schema field at fault, or None; pydantic's error type) of a validation error.

    A key the model does not know is not named: it is the sender's text (it may be an
    e-mail address)."""
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    loc = first["loc"]
    field = loc[0] if loc and isinstance(loc[0], str) and loc[0] in model.model_fields else None
    if first["type"] == "extra_forbidden":
        unknown = sum(e["type"] == "extra_forbidden" for e in exc.errors(include_input=False))
        return None, f"unknown_field ({unknown} key(s) not in the schema)"
    return field, str(first["type"])


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
