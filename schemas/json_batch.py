"""Single-event JSON messages read many at once: one Arrow table per run of messages.

Producers that are not ours send one JSON event per Kafka message (docs/wire-format.md). The
worker's intake hands the privacy stage runs of such messages (consecutive, one partition,
one schema); :func:`read_json_events` turns a run into one table in the model's Arrow
schema, so the rows then take the same vectorised path as an Arrow envelope's
(``schemas.validation``, the privacy policy, one budget charge, one private envelope).

How: the values are joined as newline-delimited JSON and parsed by Arrow's JSON reader
against the model's types (timestamps read as text, then cast: Arrow insists on a zone, as
the model does). Arrow refuses a whole block for one bad value (a wrong type, a duplicate
key, bytes that are not JSON), so a refused block is halved until the refused messages are
alone, and each of those is judged by pydantic, as a single message always was: what pydantic
accepts (``"5"`` for an int, say) is kept, what it refuses is a failure with pydantic's error
type. A block of good messages costs one parse; k bad messages cost O(k log n) parses.

Differences from pydantic on the fast path, all toward keeping the message: Arrow cannot
tell a key given as ``null`` from an absent one, so an unknown key whose value is ``null`` is
ignored, and a field with a default given as ``null`` takes its default (``event_id`` and
``occurred_at`` included: they are filled in as when missing). A failure never holds the
sender's text (an unknown key is counted, not named).

Examples:
    >>> import time
    >>> from eddyline.schemas.events import FeedbackEvent
    >>> values = [b'{"user_id": "u1", "app_id": "a", "item_id": "i", "rating": 4}',
    ...           b'{"user_id": "u2", "app_id": "a", "item_id": "i", "rating": "five"}']
    >>> rows = read_json_events(FeedbackEvent, values, times=[time.time()] * 2, ids=_ids)
    >>> rows.table["rating"].to_pylist(), rows.messages.tolist()
    ([4], [0])
    >>> [(f.message, str(f.reason), f.field, f.detail) for f in rows.failures]
    [(1, 'row.invalid', 'rating', 'rating: int_parsing')]
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import ValidationError

from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.deadletter import Reason
from eddyline.schemas.events import BaseEvent, TimeWindow
from eddyline.schemas.source import SourceRef

# Below this many messages a refused block is judged message by message, not halved again.
_SMALLEST_BLOCK = 4
_READ = pj.ReadOptions(block_size=1 << 24, use_threads=True)


@dataclass(frozen=True)
class JsonFailure:
    """Why one message of a run gave no row: a dead-letter reason, a detail made of reason
    codes, schema field names and counts, and the field at fault (a schema field or None)."""

    message: int  # its index in the run
    reason: Reason
    detail: str
    field: str | None = None


@dataclass
class JsonRows:
    """A run read: its rows (in the model's Arrow schema, in message order), the message
    each row came from, and the messages that gave none."""

    table: pa.Table
    messages: np.ndarray  # int64, one per row: an index into the run
    failures: list[JsonFailure] = field(default_factory=list)


@dataclass(frozen=True)
class JsonRun:
    """Consecutive single-event JSON messages of one raw partition, taken at once: their
    values, raw offsets and Kafka timestamps (seconds), the schema their
    ``eddyline-schema`` header names (None: the stream's latest), and their range
    (``source``: ``first``..``offset``)."""

    values: list[bytes | None]
    offsets: np.ndarray
    timestamps: np.ndarray
    schema_id: str | None
    source: SourceRef

    def at(self, offset: int) -> SourceRef:
        """The position of one message of the run."""
        src = self.source
        return SourceRef(src.topic, src.partition, offset, src.epoch)


# Event ids the worker gives JSON events sent without one: a function of the position.
_ID_SPACE = uuid.UUID("6f1d2a43-3c1e-4c55-9a52-0d7f3b8e1c11")


def event_id_at(source: SourceRef, offset: int) -> str:
    """The id of a JSON event sent without one: the same on every replay of its message."""
    return str(uuid.uuid5(_ID_SPACE, f"{source.key}/{offset}"))


def read_json_events(
    model: type[BaseEvent],
    values: Sequence[bytes | None],
    *,
    times: Sequence[float] | np.ndarray,
    ids: Callable[[int], str],
    window: TimeWindow | None = None,
) -> JsonRows:
    """Read a run of single-event JSON messages of ``model`` (module docstring).

    ``times``: each message's Kafka timestamp (seconds), its ``occurred_at`` when it gives
    none; ``ids(i)``: the event id of message ``i`` when it gives none (a stable function of
    its position, so a replay reads the same row); ``window``: the ``occurred_at`` values
    pydantic accepts on the per-message path (the stage checks every row against it too)."""
    reader = _Reader(model, list(values), np.asarray(times, np.float64), ids, window)
    good = [i for i, v in enumerate(reader.values) if v]
    reader.failures += [
        JsonFailure(i, Reason.ENVELOPE_EMPTY, "the message has no value")
        for i, v in enumerate(reader.values)
        if not v
    ]
    reader.read(np.asarray(good, np.int64))
    parts = reader.parts
    schema = arrow_schema(model)
    table = pa.concat_tables([t for t, _ in parts]) if parts else schema.empty_table()
    messages = np.concatenate([m for _, m in parts]) if parts else np.zeros(0, np.int64)
    reader.failures.sort(key=lambda f: f.message)
    return JsonRows(table, messages, reader.failures)


class _Reader:
    """One run being read: the parts read so far, in message order, and the failures."""

    def __init__(
        self,
        model: type[BaseEvent],
        values: list[bytes | None],
        times: np.ndarray,
        ids: Callable[[int], str],
        window: TimeWindow | None,
    ) -> None:
        self.model, self.values, self.times, self.ids = model, values, times, ids
        self.window = window or TimeWindow()
        self.schema = arrow_schema(model)
        # What Arrow's reader is told: every field nullable (a missing key reads as null,
        # which the row rules then report), timestamps as text (cast after: see ``_cast``).
        self.read_schema = pa.schema(
            [
                pa.field(f.name, pa.string() if pa.types.is_timestamp(f.type) else f.type)
                for f in self.schema
            ]
        )
        self.options = pj.ParseOptions(
            explicit_schema=self.read_schema, unexpected_field_behavior="infer"
        )
        self.parts: list[tuple[pa.Table, np.ndarray]] = []
        self.failures: list[JsonFailure] = []

    def read(self, messages: np.ndarray) -> None:
        """Read these messages (indices into the run), halving a refused block."""
        if not len(messages):
            return
        table = self._parse(messages)
        if table is not None:
            self._keep(table, messages)
        elif len(messages) <= _SMALLEST_BLOCK:
            for i in messages.tolist():
                self._one(i)
        else:
            half = len(messages) // 2
            self.read(messages[:half])
            self.read(messages[half:])

    def _parse(self, messages: np.ndarray) -> pa.Table | None:
        """The block as one table with a row per message, or None if Arrow refuses it."""
        lines = [self.values[i] or b"" for i in messages.tolist()]  # empty ones were set aside
        text = b"\n".join(lines)
        if text.count(b"\n") != len(lines) - 1 or b"\r" in text:
            # A line break in a value is whitespace between JSON tokens (inside a string it
            # must be escaped): a space reads the same and keeps one message per line.
            text = b"\n".join(v.replace(b"\n", b" ").replace(b"\r", b" ") for v in lines)
        try:
            table = pj.read_json(io.BytesIO(text), read_options=_READ, parse_options=self.options)
            table = self._cast(table)
        except (pa.ArrowException, UnicodeDecodeError, ValueError):
            return None
        # One object per line: a line of two objects (or of none) breaks the row-message
        # pairing, and the block is read message by message instead.
        return table if table.num_rows == len(lines) else None

    def _cast(self, table: pa.Table) -> pa.Table:
        for f in self.schema:
            if pa.types.is_timestamp(f.type):
                i = table.schema.get_field_index(f.name)
                table = table.set_column(i, f.name, pc.cast(table[f.name], f.type))
        return table

    def _keep(self, table: pa.Table, messages: np.ndarray) -> None:
        """A parsed block: unknown keys fail their message; the rest is kept, defaults
        filled in."""
        unknown = [name for name in table.column_names if name not in self.schema.names]
        if unknown:
            counts = np.zeros(table.num_rows, np.int64)
            for name in unknown:
                counts += pc.is_valid(table[name]).to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(counts).tolist():
                self.failures.append(_unknown_keys(int(messages[row]), int(counts[row])))
            keep = counts == 0
            table, messages = table.filter(pa.array(keep)), messages[keep]
            table = table.drop_columns(unknown)
        table = self._defaults(table, messages)
        columns = [table[f.name] for f in self.schema]
        self.parts.append((pa.Table.from_arrays(columns, schema=self.schema), messages))

    def _defaults(self, table: pa.Table, messages: np.ndarray) -> pa.Table:
        """Missing values as pydantic fills them: a field's default; ``event_id`` from the
        message's position, ``occurred_at`` from its Kafka timestamp (a replay reads the
        same row)."""
        for name, info in self.model.model_fields.items():
            if name in ("event_id", "occurred_at") or info.is_required():
                continue
            col = table[name]
            if not col.null_count:
                continue
            default = info.get_default(call_default_factory=True)
            if default is None:
                continue
            filled = pc.fill_null(col, pa.scalar(default, col.type))
            table = table.set_column(table.schema.get_field_index(name), name, filled)
        if "event_id" in table.column_names and table["event_id"].null_count:
            missing = pc.is_null(table["event_id"]).to_numpy(zero_copy_only=False)
            ids = table["event_id"].to_pylist()
            for row in np.flatnonzero(missing).tolist():  # only the rows without an id
                ids[row] = self.ids(int(messages[row]))
            table = table.set_column(
                table.schema.get_field_index("event_id"), "event_id", pa.array(ids, pa.string())
            )
        if "occurred_at" in table.column_names and table["occurred_at"].null_count:
            at = self.schema.field("occurred_at").type
            kafka = pa.array((self.times[messages] * 1e6).astype(np.int64), pa.int64()).cast(at)
            filled = pc.coalesce(table["occurred_at"], kafka)
            table = table.set_column(
                table.schema.get_field_index("occurred_at"), "occurred_at", filled
            )
        return table

    def _one(self, i: int) -> None:
        """One message Arrow refused, judged by pydantic (the per-message path)."""
        value = self.values[i]
        assert value is not None
        try:
            event = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            self.failures.append(
                JsonFailure(i, Reason.ENVELOPE_CORRUPT, f"not JSON ({type(exc).__name__})")
            )
            return
        if not isinstance(event, dict):
            self.failures.append(
                JsonFailure(i, Reason.ENVELOPE_CORRUPT, "the JSON value is not an object")
            )
            return
        if event.get("event_id") is None:
            event["event_id"] = self.ids(i)
        if event.get("occurred_at") is None:
            event["occurred_at"] = datetime.fromtimestamp(float(self.times[i]), UTC)
        try:
            obj = self.model.model_validate(event, context={"time_window": self.window})
        except ValidationError as exc:
            where, rule = first_error(exc, self.model)
            self.failures.append(
                JsonFailure(i, Reason.ROW_INVALID, f"{where or 'event'}: {rule}", where)
            )
            return
        row = {k: str(v) if isinstance(v, UUID) else v for k, v in obj.__dict__.items()}
        self.parts.append(
            (pa.Table.from_pylist([row], schema=self.schema), np.array([i], np.int64))
        )


def _unknown_keys(message: int, count: int) -> JsonFailure:
    return JsonFailure(message, Reason.ROW_INVALID, f"event: {_unknown_rule(count)}")


def _unknown_rule(count: int) -> str:
    """The rule of a message with keys the model does not know: counted, never named."""
    return f"unknown_field ({count} key(s) not in the schema)"


def first_error(exc: ValidationError, model: type[BaseEvent]) -> tuple[str | None, str]:
    """(the schema field at fault, or None; pydantic's error type) of a validation error.

    A key the model does not know is not named: it is the sender's text (it may be an
    e-mail address)."""
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    loc = first["loc"]
    where = loc[0] if loc and isinstance(loc[0], str) and loc[0] in model.model_fields else None
    if first["type"] == "extra_forbidden":
        unknown = sum(e["type"] == "extra_forbidden" for e in exc.errors(include_input=False))
        return None, _unknown_rule(unknown)
    return where, str(first["type"])


def _ids(i: int) -> str:
    """Event ids for the examples above."""
    return str(UUID(int=i))


__all__ = ["JsonFailure", "JsonRows", "JsonRun", "event_id_at", "first_error", "read_json_events"]
