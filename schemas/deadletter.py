"""Dead letters: what the worker says about input it cannot use, and never personal data.

A dead letter names the raw message (its source position), a stable reason code, the schema
field at fault and which rows of the message (indices, as ranges), with a sentence built
only from reason codes, schema field names, Arrow type names and counts. It never holds a
value from the message, nor a key or header the sender chose (an unknown key may be an
e-mail address): whoever must see the bad input reads it at its source position, in the raw
topic, under the raw topic's retention and access rules.

Its JSON is bounded (``MAX_BYTES``) by construction: however many rows a message breaks,
the row ranges are cut to fit and ``truncated`` says so, so a dead letter always fits a Kafka
message and never blocks the partition it reports on.

Examples:
    >>> letter = DeadLetter(Reason.ROW_INVALID, "position: above_maximum",
    ...                     SourceRef("events.interaction", 0, 7), rows=row_ranges([0, 1, 2, 9]))
    >>> letter.rows, letter.count
    ('0-2,9', 4)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa

from eddyline.schemas.source import SourceRef

#: The largest a dead letter's JSON may be (well under any Kafka message limit).
MAX_BYTES = 16 * 1024
_MAX_ROWS_TEXT = 4_000
_MAX_DETAIL = 400


class Reason(StrEnum):
    """Every dead-letter reason code (stable: dashboards and alerts match on them)."""

    ENVELOPE_EMPTY = "envelope.empty"
    ENVELOPE_CORRUPT = "envelope.corrupt"
    ENVELOPE_CONTENT_TYPE = "envelope.content_type"
    ENVELOPE_TOO_LARGE = "envelope.too_large"
    ENVELOPE_SCHEMA_MISMATCH = "envelope.schema_mismatch"
    SCHEMA_UNKNOWN = "schema.unknown"
    SCHEMA_WRONG_STREAM = "schema.wrong_stream"
    ROW_INVALID = "row.invalid"
    INTERNAL_ERROR = "internal.error"
    #: the collector (streams.collector): a Segment call no route of the mapping takes, and
    #: an event over Segment's 32 KB
    EVENT_UNMAPPED = "event.unmapped"
    EVENT_TOO_LARGE = "event.too_large"

    @property
    def sentence(self) -> str:
        """What the code means, for people."""
        return _SENTENCES[self]


_SENTENCES = {
    Reason.ENVELOPE_EMPTY: "the message holds no event",
    Reason.ENVELOPE_CORRUPT: "the message cannot be decoded as its content type",
    Reason.ENVELOPE_CONTENT_TYPE: "the content-type header is not one eddyline reads",
    Reason.ENVELOPE_TOO_LARGE: "the message is over the worker's size or row limit",
    Reason.ENVELOPE_SCHEMA_MISMATCH: "the columns are not the schema's (names or exact types)",
    Reason.SCHEMA_UNKNOWN: "the eddyline-schema header names no registered schema",
    Reason.SCHEMA_WRONG_STREAM: "the schema belongs to another stream than the topic's",
    Reason.ROW_INVALID: "rows break a rule of the schema (the field and rule are named)",
    Reason.INTERNAL_ERROR: "the worker failed on this message (a bug: see the worker's log)",
    Reason.EVENT_UNMAPPED: "the collector's mapping has no route for this call or event name",
    Reason.EVENT_TOO_LARGE: "the event is over the collector's 32 KB per event",
}


def row_ranges(rows: Iterable[int]) -> str:
    """Row indices (ascending) as compact ranges: ``[0, 1, 2, 9]`` -> ``"0-2,9"``."""
    parts: list[str] = []
    start = prev = None
    for row in rows:
        if prev is not None and row == prev + 1:
            prev = row
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = row
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def _count_of(ranges: str) -> int:
    total = 0
    for part in filter(None, ranges.split(",")):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


@dataclass(frozen=True)
class DeadLetter:
    """A rejected message, or rows of one, with a stable reason code.

    ``detail`` is composed by the worker from reason codes, schema field names, type names
    and counts only; ``field`` is a field of the registered schema or None; ``rows`` are row
    indices in the source message (empty: the whole message); ``count`` the events it stands
    for (rows, 1 for an undecodable message, 0 for an empty one)."""

    reason: Reason
    detail: str
    source: SourceRef
    schema: str | None = None
    field: str | None = None
    rows: str = ""
    count: int = -1  # -1: the number of rows in ``rows`` (1 if none are named)
    truncated: bool = False

    def __post_init__(self) -> None:
        if self.count < 0:
            object.__setattr__(self, "count", _count_of(self.rows) if self.rows else 1)
        if len(self.detail) > _MAX_DETAIL:
            object.__setattr__(self, "detail", self.detail[: _MAX_DETAIL - 1] + "…")
        if len(self.rows) > _MAX_ROWS_TEXT:
            cut = self.rows.rfind(",", 0, _MAX_ROWS_TEXT)
            object.__setattr__(self, "rows", self.rows[: max(cut, 0)])
            object.__setattr__(self, "truncated", True)

    def to_json(self) -> bytes:
        """The dead-letter message's value (at most ``MAX_BYTES``)."""
        data = asdict(self)
        data["reason"] = str(self.reason)
        return json.dumps(data, separators=(",", ":")).encode()


DEADLETTER_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("field", pa.string()),
        ("schema", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int64()),
        ("source_offset", pa.int64()),
        ("source_epoch", pa.string()),  # the topic's id (schemas.source)
        ("rows", pa.string()),
        ("truncated", pa.bool_()),
        ("count", pa.int64()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
)


def deadletter_table(letters: Sequence[bytes], at: datetime) -> pa.Table:
    """Dead-letter messages (``DeadLetter.to_json``) as rows of the ``deadletters`` Delta
    table; ``occurred_at`` is when the worker stored them."""
    rows: list[dict[str, Any]] = []
    for raw in letters:
        d = json.loads(raw)
        src = d.get("source") or {}
        rows.append(
            {
                "reason": d.get("reason"),
                "detail": d.get("detail"),
                "field": d.get("field"),
                "schema": d.get("schema"),
                "source_topic": src.get("topic"),
                "source_partition": src.get("partition"),
                "source_offset": src.get("offset"),
                "source_epoch": src.get("epoch") or None,
                "rows": d.get("rows") or "",
                "truncated": bool(d.get("truncated")),
                "count": d.get("count", 1),
                "occurred_at": at,
            }
        )
    return pa.Table.from_pylist(rows, schema=DEADLETTER_SCHEMA)
