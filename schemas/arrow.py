"""Arrow schemas derived from event models, the only casts taken, and UUID columns.

``arrow_schema`` reads a model's Arrow schema off its fields; ``conform`` brings a sent table
to it with lossless casts only (``lossless_cast``), or refuses with a message that names
schema fields and type names, never what the sender chose; the UUID helpers format ids as
canonical text in numpy. Row rules are ``schemas.validation``.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import numpy as np
import pyarrow as pa
from pydantic import AwareDatetime

from eddyline.schemas.errors import UserError
from eddyline.schemas.events import BaseEvent, random_id_bytes

TIMESTAMP = pa.timestamp("us", tz="UTC")
_SCALARS: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    UUID: pa.string(),
    datetime: TIMESTAMP,
    AwareDatetime: TIMESTAMP,
}


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(inner annotation, nullable) for ``X | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def arrow_type(annotation: Any) -> pa.DataType:
    if typing.get_origin(annotation) is Literal:
        return _SCALARS[type(typing.get_args(annotation)[0])]
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if isinstance(annotation, type):
        for kind, arrow_type in _SCALARS.items():
            if issubclass(annotation, kind):
                return arrow_type
    raise TypeError(f"no Arrow type for {annotation!r}")


@functools.cache  # a model class never changes once defined; every envelope asks
def arrow_schema(model: type[BaseEvent]) -> pa.Schema:
    """The Arrow schema of ``model``'s raw events (before the privacy stage)."""
    fields = []
    for name, info in model.model_fields.items():
        inner, nullable = unwrap_optional(info.annotation)
        fields.append(pa.field(name, arrow_type(inner), nullable=nullable))
    return pa.schema(fields, metadata={"eddyline.schema": model.schema_id()})


UUID_DASHES = np.array([8, 13, 18, 23])


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_UUID_DIGITS = np.setdiff1d(np.arange(36), UUID_DASHES)  # where the 32 hex digits go


def _uuid_text(raw: np.ndarray) -> pa.Array:
    """UUIDs given as an ``(n, 16)`` uint8 array, as their canonical 36-character strings
    (``str(UUID)``), formatted in numpy and handed to Arrow as buffers."""
    n = len(raw)
    nibbles = np.empty((n, 32), np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    text = np.full((n, 36), ord("-"), np.uint8)
    text[:, _UUID_DIGITS] = _HEX[nibbles]
    offsets = np.arange(0, 36 * n + 1, 36, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def uuid_text(raw: np.ndarray, version: int | np.ndarray) -> pa.Array:
    """UUIDs from an ``(n, 16)`` uint8 array of hashed or random bytes, stamped (in place)
    with ``version`` (one for all, or one a row) and the RFC 4122 variant, as canonical
    strings.

    Examples:
        >>> import uuid
        >>> raw = np.frombuffer(bytes(range(16)), np.uint8).reshape(1, 16).copy()
        >>> uuid_text(raw, 5)[0].as_py() == str(uuid.UUID(bytes=bytes(range(16)), version=5))
        True
    """
    raw[:, 6] = (raw[:, 6] & 0x0F) | (np.asarray(version, np.uint8) << 4)
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return _uuid_text(raw)


def uuid_column_of_ints(values: Sequence[int | None]) -> pa.Array:
    """UUIDs given by their ``.int`` (None for null) as canonical strings: what
    ``pa.array([str(UUID(int=v)) ...])`` gives, ~5x cheaper (``str(UUID)`` is Python
    string formatting, ~1 µs a value, and the SDK pays it for every event's id)."""
    valid = None
    if None in values:
        valid = pa.array([v is not None for v in values]).buffers()[1]
        values = [0 if v is None else v for v in values]
    joined = b"".join([v.to_bytes(16, "big") for v in values])  # type: ignore[union-attr]
    text = _uuid_text(np.frombuffer(joined, np.uint8).reshape(len(values), 16))
    return pa.Array.from_buffers(pa.string(), len(values), [valid, *text.buffers()[1:]])


def new_uuid_column(n: int) -> pa.Array:
    """``n`` new random (version 4) UUIDs as strings: the ids ``emit_many`` gives rows
    sent without one."""
    return uuid_text(np.frombuffer(random_id_bytes(n), np.uint8).reshape(n, 16).copy(), 4)


class SchemaMismatchError(UserError, ValueError):
    """Columns that are not the model's: unknown or missing names, or types that differ.

    Its message names only fields of the model and Arrow type names, never a value or a
    column name the sender chose (``envelope.schema_mismatch`` dead letters carry it)."""


def lossless_cast(sent: pa.DataType, wanted: pa.DataType) -> bool:
    """Whether ``sent`` may be cast to ``wanted`` (then with ``safe=True``, which refuses a
    value that would change): wider integers and floats, other string layouts, time zones
    and units of an aware timestamp, an all-null column. A string is never a number, a
    number never a string or a time (epoch seconds are not microseconds)."""
    t = pa.types
    if t.is_null(sent):
        return True
    if t.is_integer(wanted):
        return bool(t.is_integer(sent))
    if t.is_floating(wanted):
        return bool(t.is_floating(sent) or t.is_integer(sent))
    if t.is_string(wanted):
        if t.is_dictionary(sent):
            return bool(t.is_string(sent.value_type) or t.is_large_string(sent.value_type))
        return bool(t.is_large_string(sent) or t.is_string_view(sent))
    if t.is_timestamp(wanted):
        return bool(t.is_timestamp(sent) and sent.tz is not None)
    return False


def conform(model: type[BaseEvent], table: pa.Table) -> pa.Table:
    """``table`` in ``model``'s Arrow schema, or :class:`SchemaMismatchError`.

    Types must be the schema's, or cast losslessly (``lossless_cast``); missing nullable
    columns are added as nulls; unknown columns are an error.
    """
    schema = arrow_schema(model)
    if table.schema.equals(schema, check_metadata=True):  # what the SDK sends
        return table
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise SchemaMismatchError(f"{len(extra)} column(s) not in the schema")
    if len(set(table.column_names)) != len(table.column_names):
        raise SchemaMismatchError("a column appears twice")
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            if not f.nullable:
                raise SchemaMismatchError(f"column {f.name!r} is missing")
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table[f.name]
        if col.type != f.type:
            if not lossless_cast(col.type, f.type):
                raise SchemaMismatchError(
                    f"column {f.name!r} is {_type_name(col.type)}, the schema says "
                    f"{_type_name(f.type)}"
                )
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SchemaMismatchError(
                    f"column {f.name!r}: {_type_name(col.type)} values do not fit "
                    f"{_type_name(f.type)} exactly"
                ) from None
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _type_name(t: pa.DataType) -> str:
    """An Arrow type's name without anything the sender chose (a time zone, the field
    names inside a struct, an extension's name may all be arbitrary text)."""
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}{', tz' if t.tz else ', no tz'}]"
    for family, check in _FAMILIES:
        if check(t):
            return family
    if isinstance(t, pa.ExtensionType) or pa.types.is_nested(t):
        return "a nested or extension type"
    return str(t)


_FAMILIES = (
    ("a struct", pa.types.is_struct),
    ("a list", lambda t: pa.types.is_list(t) or pa.types.is_large_list(t)),
    ("a map", pa.types.is_map),
    ("a dictionary", pa.types.is_dictionary),
    ("a union", pa.types.is_union),
)
