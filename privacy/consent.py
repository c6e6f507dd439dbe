"""Consent: which rows an event's own flags allow to be stored, or learned from.

Every event carries ``consent_store`` and ``consent_learn`` (``schemas.events.BaseEvent``);
the privacy stage drops rows allowing neither, the lake stores only ``consent_store`` rows,
the models learn only ``consent_learn`` rows. A null flag is no consent.

Examples:
    >>> import pyarrow as pa
    >>> t = pa.table({"x": [1, 2, 3], "consent_store": [True, False, None]})
    >>> consented(t, "store")["x"].to_pylist()
    [1]
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

Purpose = Literal["store", "learn"]


def consented(table: pa.Table, purpose: Purpose) -> pa.Table:
    """The rows whose consent flags allow ``purpose`` (all rows if the table has no flags)."""
    column = f"consent_{purpose}"
    if column not in table.column_names:
        return table
    return keep(table, pc.fill_null(table[column], False))


def allowing_any(table: pa.Table) -> pa.Table:
    """The rows allowing storage or learning (or both)."""
    either = pc.or_(table["consent_store"], table["consent_learn"])
    return keep(table, pc.fill_null(either, False))


def keep(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> pa.Table:
    """``table.filter(mask)`` (a mask without nulls), skipping the copy of every column when
    every row stays: the common case, and a copy costs ~0.3 ms per 5,000 rows."""
    return table if pc.all(mask).as_py() else table.filter(mask)
