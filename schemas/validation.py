"""Vectorised row validation: the model's rules checked on Arrow columns.

The SDK validates each event with pydantic at ``emit``. The worker cannot trust that (any
Kafka client may write to a raw topic), so it re-checks every row here, on columns, with
the same constraints read off the model: required fields, numeric bounds, string lengths,
allowed literal values, UUID format, and times (years 1-9999; ``occurred_at`` within the
accepted window).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import annotated_types as at
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eddyline.schemas.annotations import RandomizedResponse
from eddyline.schemas.arrow import TIMESTAMP, UUID_DASHES, arrow_type, unwrap_optional
from eddyline.schemas.events import EPOCH, BaseEvent, FeedbackEvent, TimeWindow

_UUID_RE = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"

# Every timestamp must be a date of years 1-9999 in UTC (Python's, Delta's and ISO 8601's
# range): outside it, a row breaks every reader of its table.
_EARLIEST_US = int((datetime(1, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()) * 1_000_000
_LATEST_US = int((datetime(9999, 12, 31, tzinfo=UTC) - EPOCH).total_seconds() + 86_400) * 10**6 - 1


@dataclass(frozen=True)
class RowViolation:
    """Rows of a batch that break one constraint of one field."""

    field: str
    reason: str
    rows: pa.Array  # indices into the batch


@dataclass
class _FieldRule:
    name: str
    required: bool
    lower: float | int | None = None  # an int for timestamps (float64 loses microseconds)
    lower_strict: bool = False
    upper: float | int | None = None
    upper_strict: bool = False
    min_len: int | None = None
    max_len: int | None = None
    allowed: list[Any] = field(default_factory=list)
    pattern: str | None = None
    is_time: bool = False  # a timestamp: bounds are microseconds since the epoch (UTC)
    low_reason: str = "below_minimum"
    high_reason: str = "above_maximum"


@functools.cache
def _rules(model: type[BaseEvent]) -> tuple[_FieldRule, ...]:
    rules = []
    for name, info in model.model_fields.items():
        inner, nullable = unwrap_optional(info.annotation)
        rule = _FieldRule(name, required=not nullable)
        if typing.get_origin(inner) is Literal:
            rule.allowed = list(typing.get_args(inner))
        if inner is UUID:
            rule.pattern = _UUID_RE
        if arrow_type(inner) == TIMESTAMP:
            rule.is_time, rule.lower, rule.upper = True, _EARLIEST_US, _LATEST_US
            rule.low_reason, rule.high_reason = "before_earliest_time", "after_latest_time"
        for m in info.metadata:
            if isinstance(m, at.Ge):
                rule.lower = float(m.ge)  # type: ignore[arg-type]  # numeric bound by construction
            elif isinstance(m, at.Gt):
                rule.lower, rule.lower_strict = float(m.gt), True  # type: ignore[arg-type]
            elif isinstance(m, at.Le):
                rule.upper = float(m.le)  # type: ignore[arg-type]
            elif isinstance(m, at.Lt):
                rule.upper, rule.upper_strict = float(m.lt), True  # type: ignore[arg-type]
            elif isinstance(m, at.MinLen):
                rule.min_len = m.min_length
            elif isinstance(m, at.MaxLen):
                rule.max_len = m.max_length
            elif isinstance(m, RandomizedResponse):
                rule.allowed = list(m.categories)
        rules.append(rule)
    return tuple(rules)


def _clean(col: pa.ChunkedArray, rule: _FieldRule) -> bool:
    """Whether no row of ``col`` can break ``rule``, from a few summaries (null count,
    min/max, all-finite) instead of one mask per check: ~3x fewer Arrow calls, each ~20 µs
    whatever the batch size. False means "look row by row" (``_bad_mask``), never "bad"."""
    nulls = col.null_count
    if nulls == len(col):  # no value at all (or no row)
        return not (rule.required and nulls)
    if rule.required and nulls:
        return False
    if pa.types.is_floating(col.type) and not pc.all(pc.is_finite(col)).as_py():
        return False  # (NaN would slip past min/max)
    if rule.lower is not None or rule.upper is not None:
        low, high = pc.min_max(col).values()
        if rule.lower is not None and (
            low.as_py() <= rule.lower if rule.lower_strict else low.as_py() < rule.lower
        ):
            return False
        if rule.upper is not None and (
            high.as_py() >= rule.upper if rule.upper_strict else high.as_py() > rule.upper
        ):
            return False
    if rule.min_len is not None or rule.max_len is not None:
        shortest, longest = pc.min_max(pc.utf8_length(col)).values()
        if rule.min_len is not None and shortest.as_py() < rule.min_len:
            return False
        if rule.max_len is not None and longest.as_py() > rule.max_len:
            return False
    if rule.pattern is not None and not (rule.pattern == _UUID_RE and _canonical_uuids(col)):
        return False
    if rule.allowed:  # nulls pass here as in ``_bad_mask`` (is_in says false for them)
        allowed = pc.is_in(col, pa.array(rule.allowed))
        return bool(pc.all(pc.or_(allowed, pc.is_null(col))).as_py())
    return True


def _bad_mask(col: pa.ChunkedArray, rule: _FieldRule) -> list[tuple[str, pa.ChunkedArray]]:
    """(reason, boolean mask of failing rows) for each check of ``rule`` on ``col``."""
    checks: list[tuple[str, pa.ChunkedArray]] = []
    if rule.required:
        checks.append(("missing", pc.is_null(col)))
    if rule.lower is not None:
        op = pc.less_equal if rule.lower_strict else pc.less
        checks.append((rule.low_reason, op(col, rule.lower)))
    if rule.upper is not None:
        op = pc.greater_equal if rule.upper_strict else pc.greater
        checks.append((rule.high_reason, op(col, rule.upper)))
    if pa.types.is_floating(col.type):
        checks.append(("not_finite", pc.invert(pc.is_finite(col))))
    if rule.min_len is not None or rule.max_len is not None:
        length = pc.utf8_length(col)
        if rule.min_len is not None:
            checks.append(("too_short", pc.less(length, rule.min_len)))
        if rule.max_len is not None:
            checks.append(("too_long", pc.greater(length, rule.max_len)))
    if rule.pattern is not None and not (rule.pattern == _UUID_RE and _canonical_uuids(col)):
        checks.append(("bad_format", pc.invert(pc.match_substring_regex(col, rule.pattern))))
    if rule.allowed:  # a null is no value, not a wrong one ("missing" when required)
        allowed = pc.is_in(col, pa.array(rule.allowed))
        checks.append(("not_allowed", pc.and_(pc.is_valid(col), pc.invert(allowed))))
    return checks


def _canonical_uuids(col: pa.ChunkedArray) -> bool:
    """Whether every value is a UUID in its canonical 36-character form (what the SDK
    sends): a byte-level numpy check ~10x cheaper than the regex, which then runs only for
    batches holding another form or a bad id. Nulls fail here (the regex path sees them)."""
    if col.null_count or not pa.types.is_string(col.type):
        return False
    for chunk in col.chunks:
        n = len(chunk)
        if n == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], np.int32)[chunk.offset : chunk.offset + n + 1]
        start = int(offsets[0])
        if int(offsets[-1]) - start != 36 * n or not (np.diff(offsets) == 36).all():
            return False
        data = np.frombuffer(chunk.buffers()[2], np.uint8)[start : start + 36 * n]
        dash = data == ord("-")
        if np.count_nonzero(dash) != 4 * n or not dash.reshape(n, 36)[:, UUID_DASHES].all():
            return False  # a dash out of place
        lower = data | 0x20  # A-F -> a-f (digits and the dash are unchanged by it)
        digit = (data >= ord("0")) & (data <= ord("9"))
        if not (digit | dash | ((lower >= ord("a")) & (lower <= ord("f")))).all():
            return False
    return True


def _model_checks(model: type[BaseEvent], table: pa.Table) -> list[tuple[str, str, Any]]:
    """Cross-field rules that pydantic expresses as model validators."""
    if issubclass(model, FeedbackEvent):
        both_null = pc.and_(pc.is_null(table["rating"]), pc.is_null(table["label"]))
        return [("rating", "rating_or_label_required", both_null)]
    return []


def validate_table(
    model: type[BaseEvent], table: pa.Table, *, window: TimeWindow | None = None
) -> tuple[pa.Table, list[RowViolation]]:
    """Split ``table`` into (valid rows, violations). One violation per failing field/reason.

    A row that breaks several rules is reported once, under the first rule it breaks.
    ``occurred_at`` must fall in ``window`` (default: ``TimeWindow()``, now minus the
    longest accepted age to now plus the accepted clock skew).
    """
    rules = _rules_now(model, window or TimeWindow())
    columns = {rule.name: _checkable(table[rule.name], rule) for rule in rules}
    model_checks = _model_checks(model, table)
    # The common case, no bad row, is settled from per-column summaries (``_clean``); only
    # a batch that may hold bad rows pays for a mask per check and for attributing each
    # row to its first failing check.
    if all(_clean(columns[rule.name], rule) for rule in rules) and not any(
        pc.any(mask).as_py() for _, _, mask in model_checks
    ):
        return table, []
    checks = [
        (rule.name, reason, mask)
        for rule in rules
        for reason, mask in _bad_mask(columns[rule.name], rule)
    ] + model_checks
    # One OR per check (Kleene: a null mask value, from a null cell, does not hide a true
    # one; ``any`` skips nulls) before the row-by-row attribution.
    if (
        not checks
        or not pc.any(functools.reduce(pc.or_kleene, [mask for _, _, mask in checks])).as_py()
    ):
        return table, []
    bad_any: Any = pa.scalar(False)
    violations: list[RowViolation] = []
    for name, reason, mask in checks:
        new = pc.and_(pc.fill_null(mask, False), pc.invert(bad_any))
        if pc.any(new).as_py():
            violations.append(RowViolation(name, reason, pc.indices_nonzero(new)))
            bad_any = pc.or_(bad_any, new)
    good = table.filter(pc.invert(bad_any)) if violations else table
    return good, violations


def _rules_now(model: type[BaseEvent], window: TimeWindow) -> tuple[_FieldRule, ...]:
    """The model's rules, ``occurred_at``'s bounds narrowed to ``window`` (as of now)."""
    earliest, latest = window.bounds_us()
    return tuple(
        dataclasses.replace(
            rule,
            lower=max(earliest, _EARLIEST_US),
            upper=min(latest, _LATEST_US),
            low_reason="too_old",
            high_reason="in_the_future",
        )
        if rule.name == "occurred_at"
        else rule
        for rule in _rules(model)
    )


def _checkable(col: pa.ChunkedArray, rule: _FieldRule) -> pa.ChunkedArray:
    """The column as the rule compares it: a timestamp as its int64 microseconds (a year
    past 9999 has no Python ``datetime`` for ``min_max`` to return)."""
    return col.cast(pa.int64()) if rule.is_time else col
