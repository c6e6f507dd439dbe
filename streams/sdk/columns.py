"""How the SDK turns events into columns: buffers per partition, batch validation,
envelopes that fit Kafka.

``Plan`` says how one event type becomes a row and a schema; ``Buffer`` holds the rows
(from ``emit``) and Arrow chunks (from ``emit_many``) of one (topic, partition) in the order
they were accepted; ``checked`` validates a whole batch column by column with the worker's
rules (all rows or none); ``encode_split`` halves a table until each envelope fits.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pyarrow as pa
from pydantic import ValidationError

from eddyline.schemas.arrow import (
    arrow_schema,
    conform,
    lossless_cast,
    new_uuid_column,
    unwrap_optional,
    uuid_column_of_ints,
)
from eddyline.schemas.envelope import Headers, encode_arrow
from eddyline.schemas.errors import EventValidationError
from eddyline.schemas.events import BaseEvent, FeedbackEvent
from eddyline.schemas.validation import validate_table
from eddyline.streams.kafka.topics import Topics


@dataclass(frozen=True)
class Plan:
    """How one model's events become columns: the topic, the schema, the row layout."""

    stream: str
    topic: str
    schema_id: str
    schema: pa.Schema
    #: an event's ``__dict__`` -> its buffered row: the UUID fields first, as ints (or
    #: None), then the other fields in ``names`` order
    row: Callable[[dict[str, Any]], tuple[Any, ...]]
    uuids: tuple[str, ...]  # the UUID fields, in row order
    names: tuple[str, ...]  # the other fields, in row order


@dataclass
class Buffer:
    """Events waiting for one (topic, partition): rows from ``emit`` and Arrow chunks from
    ``emit_many``, kept in the order they were accepted.

    A row is a tuple of the event's field values, ids as ints: atoms only, so the cyclic
    GC stops tracking it at its first pass and the event object itself is freed when the
    app lets go of it (keeping the pydantic instances, four GC-tracked objects each, cost
    ~25% of ``emit`` in collections over the buffered thousands)."""

    plan: Plan
    partition: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    chunks: list[pa.Table] = field(default_factory=list)
    chunk_rows: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def count(self) -> int:
        return len(self.rows) + self.chunk_rows

    def seal(self) -> None:
        """Turn the pending rows into a chunk (before a later chunk arrives)."""
        if self.rows:
            self.chunks.append(self._rows_table())
            self.chunk_rows += len(self.rows)
            self.rows = []

    def add(self, chunk: pa.Table) -> None:
        self.seal()
        self.chunks.append(chunk)
        self.chunk_rows += chunk.num_rows

    def table(self) -> pa.Table:
        """Everything buffered, as one table in acceptance order."""
        self.seal()
        return self.chunks[0] if len(self.chunks) == 1 else pa.concat_tables(self.chunks)

    def _rows_table(self) -> pa.Table:
        """The buffered rows as columns, one comprehension per field (~2x faster than a
        ``zip(*rows)`` transposition of thousands of rows)."""
        plan, rows = self.plan, self.rows
        columns = [[r[i] for r in rows] for i in range(len(plan.uuids) + len(plan.names))]
        k = len(plan.uuids)
        ids = {n: uuid_column_of_ints(c) for n, c in zip(plan.uuids, columns[:k], strict=True)}
        rest = dict(zip(plan.names, columns[k:], strict=True))
        return pa.table({**ids, **rest}, schema=plan.schema)


def plan_for(model: type[BaseEvent], topics: Topics) -> Plan:
    uuids = tuple(
        n for n, info in model.model_fields.items() if unwrap_optional(info.annotation)[0] is UUID
    )
    names = tuple(n for n in model.model_fields if n not in uuids)
    # a tuple: BaseEvent's own fields give every model more than one name
    rest = operator.itemgetter(*names)
    if uuids == ("event_id",) and model.model_fields["event_id"].annotation is UUID:
        # every built-in model: the hot path, one id that is never None

        def row(d: dict[str, Any]) -> tuple[Any, ...]:
            return (d["event_id"].int, *rest(d))

    else:

        def row(d: dict[str, Any]) -> tuple[Any, ...]:
            ids = [None if (u := d[n]) is None else u.int for n in uuids]
            return (*ids, *rest(d))

    return Plan(
        model.event_name,
        topics.raw(model.event_name),
        model.schema_id(),
        arrow_schema(model),
        row,
        uuids,
        names,
    )


def validation_error(exc: ValidationError, model: type[BaseEvent]) -> EventValidationError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or None
    return EventValidationError(
        f"invalid {model.event_name} event: {where or 'event'}: {first['msg']}",
        field=where,
        reason=first["type"],
    )


def encode_split(
    table: pa.Table, schema_id: str, max_bytes: int
) -> list[tuple[pa.Table, bytes, Headers]]:
    """Encode ``table``, halving it until every envelope fits ``max_bytes``."""
    value, headers = encode_arrow(table, schema_id)
    if len(value) <= max_bytes or table.num_rows == 1:
        return [(table, value, headers)]
    half = table.num_rows // 2
    return encode_split(table.slice(0, half), schema_id, max_bytes) + encode_split(
        table.slice(half), schema_id, max_bytes
    )


def to_table(rows: Any) -> pa.Table:
    """An Arrow table from what ``emit_many`` accepts."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, Mapping):
        return pa.table(dict(rows))
    if hasattr(rows, "to_arrow"):  # polars
        table: pa.Table = rows.to_arrow()
        return table
    if hasattr(rows, "iloc"):  # pandas
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise TypeError(
        "emit_many takes a pyarrow.Table, a polars or pandas DataFrame, or a dict of columns"
    )


def with_defaults(model: type[BaseEvent], table: pa.Table) -> pa.Table:
    """``table`` with each left-out column that has a default filled in: a new id per row
    for ``event_id``, the default (or its factory's one value: ``occurred_at`` = now)
    for the rest. Columns without a default are left for ``conform`` to report."""
    schema = arrow_schema(model)
    if table.num_columns == len(schema) and table.schema.equals(schema):
        return table  # every column there (what the collector sends): nothing to fill
    for name, info in model.model_fields.items():
        if name in table.column_names or info.is_required():
            continue
        if info.annotation is UUID:
            column = new_uuid_column(table.num_rows)
        else:
            value = info.get_default(call_default_factory=True)
            column = pa.array([value] * table.num_rows, schema.field(name).type)
        table = table.append_column(name, column)
    return table


def vectorised(model: type[BaseEvent]) -> bool:
    """Whether ``validate_table`` knows every rule of ``model`` (no custom validators
    beyond the built-in feedback rule it implements)."""
    decorators = model.__pydantic_decorators__
    model_rules = set(decorators.model_validators)
    if issubclass(model, FeedbackEvent):
        model_rules.discard("_rating_or_label")
    return not model_rules and not decorators.field_validators


def checked(model: type[BaseEvent], table: pa.Table) -> pa.Table:
    """``table`` conformed to the model's Arrow schema and validated; else raise."""
    name = model.event_name
    schema = arrow_schema(model)
    if table.schema.equals(schema):  # the model's own types: nothing to check or cast
        return _validated(model, table)
    for f in table.schema:
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            raise EventValidationError(
                f"invalid {name} batch: {f.name}: timestamps need a time zone",
                field=f.name,
                reason="timezone_aware",
            )
    unknown = sorted(set(table.column_names) - set(schema.names))
    if unknown:  # named here: the app's own columns, in the app's own process
        raise EventValidationError(
            f"invalid {name} batch: unknown columns {unknown}", field=None, reason="columns"
        )
    for f in schema:
        sent = table[f.name].type if f.name in table.column_names else f.type
        if sent != f.type and not lossless_cast(sent, f.type):
            raise EventValidationError(
                f"invalid {name} batch: {f.name}: {sent} is not {f.type} (only lossless "
                "casts are made: wider numbers, other string layouts, aware timestamps)",
                field=f.name,
                reason="wrong_type",
            )
    try:
        table = conform(model, table)
    except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EventValidationError(
            f"invalid {name} batch: {exc}", field=None, reason="columns"
        ) from None
    return _validated(model, table)


def _validated(model: type[BaseEvent], table: pa.Table) -> pa.Table:
    """``table`` (in the model's schema) if every row keeps the model's rules; else raise."""
    name = model.event_name
    if not vectorised(model):  # custom validators: pydantic row by row
        for i, row in enumerate(table.to_pylist()):
            try:
                model.model_validate(row)
            except ValidationError as exc:
                err = validation_error(exc, model)
                raise EventValidationError(
                    f"{err} (row {i})", field=err.field, reason=err.reason
                ) from None
        return table
    _, violations = validate_table(model, table)
    if violations:
        v = violations[0]
        first = v.rows.to_pylist()[:5]
        raise EventValidationError(
            f"invalid {name} batch: {v.field}: {v.reason} in {len(v.rows)} row(s), "
            f"first {first}; nothing of the batch was accepted",
            field=v.field,
            reason=v.reason,
        )
    return table
