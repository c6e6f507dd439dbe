"""The envelope codec: how events travel in Kafka messages (see docs/wire-format.md).

Two forms share the raw topics:

* **Arrow** (``application/vnd.apache.arrow.stream``): an Arrow IPC stream of many events of
  one schema (the SDK writes one record batch; more are read as one table). Faust then pays
  its per-message cost once per batch.
* **JSON** (``application/json``): one event as a JSON object, for producers that are not ours.

Headers: ``content-type``, ``eddyline-schema`` (``name:version``), ``eddyline-count``.

Examples:
    >>> import pyarrow as pa
    >>> value, headers = encode_arrow(pa.table({"x": [1, 2]}), "demo:1")
    >>> env = decode(value, headers)
    >>> env.schema_id, env.table.num_rows
    ('demo:1', 2)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from eddyline.schemas.deadletter import Reason
from eddyline.schemas.errors import EnvelopeError

ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"
H_CONTENT_TYPE = "content-type"
H_SCHEMA = "eddyline-schema"
H_COUNT = "eddyline-count"
# Set by the privacy stage on private messages: the raw message the rows came from.
H_SOURCE = "eddyline-source"

Headers = list[tuple[str, bytes]]
# confluent-kafka's type for the same list (its values may also be str or None).
KafkaHeaders = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class Envelope:
    """A decoded message: its schema id and either an Arrow table or one JSON object."""

    schema_id: str | None
    content_type: str
    table: pa.Table | None = None
    json_event: dict[str, Any] | None = None
    headers: Mapping[str, str] | None = None


def header_map(
    headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | str] | None,
) -> dict[str, str]:
    """Kafka headers (list of pairs, or a mapping) as a str -> str dict; bad bytes replaced."""
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {
        k.lower(): v if isinstance(v, str) else (v or b"").decode("utf-8", "replace")
        for k, v in pairs
    }


def encode_arrow(
    table: pa.Table, schema_id: str, extra: Headers | None = None
) -> tuple[bytes, Headers]:
    """One Arrow IPC stream (a single record batch) and its headers."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    headers: Headers = [
        (H_CONTENT_TYPE, ARROW.encode()),
        (H_SCHEMA, schema_id.encode()),
        (H_COUNT, str(table.num_rows).encode()),
    ]
    return sink.getvalue().to_pybytes(), headers + (extra or [])


def encode_json(event: Mapping[str, Any], schema_id: str) -> tuple[bytes, Headers]:
    """The single-event JSON form and its headers."""
    value = json.dumps(event, default=str, separators=(",", ":")).encode()
    return value, [(H_CONTENT_TYPE, JSON.encode()), (H_SCHEMA, schema_id.encode())]


def _decode_arrow(value: bytes) -> pa.Table:
    try:
        return pa.ipc.open_stream(value).read_all()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        # the type only: Arrow's message may quote bytes of the message
        raise EnvelopeError(
            Reason.ENVELOPE_CORRUPT, f"not an Arrow IPC stream ({type(exc).__name__})"
        ) from None


def _decode_json(value: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(Reason.ENVELOPE_CORRUPT, f"not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise EnvelopeError(Reason.ENVELOPE_CORRUPT, "the JSON value is not an object")
    return obj


def decode(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | str] | None,
) -> Envelope:
    """Decode one Kafka message, or raise :class:`EnvelopeError` with a dead-letter code.

    A message without a content type is taken as JSON when it starts with ``{``.
    """
    h = header_map(headers)
    if not value:
        raise EnvelopeError(Reason.ENVELOPE_EMPTY, "the message has no value")
    content_type = h.get(H_CONTENT_TYPE) or (JSON if value[:1] == b"{" else "")
    schema_id = h.get(H_SCHEMA) or None
    if content_type == ARROW:
        return Envelope(schema_id, ARROW, table=_decode_arrow(value), headers=h)
    if content_type == JSON:
        return Envelope(schema_id, JSON, json_event=_decode_json(value), headers=h)
    # The header's text is the sender's: it is not repeated (a dead letter never holds it).
    raise EnvelopeError(
        Reason.ENVELOPE_CONTENT_TYPE,
        f"content type {'missing' if not content_type else 'not supported'} "
        f"(expected {ARROW} or {JSON})",
    )
