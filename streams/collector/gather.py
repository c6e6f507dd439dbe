"""The collector's hot path: a request's Segment calls gathered into columns, and a window's
columns made into one Arrow table per event type.

``segment.convert`` turns one call into one event's values; it is the reference, and
tests/unit/test_collector_gather.py holds the two equal on every kind of call. Here the
work per call is only what needs Python, in one pass: the call's kind, its route, its user.
The rest is done a column at a time: each mapped field read by one comprehension, the
event ids hashed in one (UUID 5 of the write key's name and the ``messageId``) and
formatted in numpy, the times parsed by Arrow and clock-corrected in numpy (what Arrow
cannot read, ``segment.parse_time`` reads, so the answers are Python's). At 100 calls a
request this took a request's conversion from ~12 to ~3 µs a call, and one window's
requests become one table instead of rows (bench/RESULTS.md, collector).

A window whose table is refused (a value of the wrong type, a rule broken) goes back to
``segment.convert`` call by call, so the invalid calls are dead-lettered one by one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from eddyline.schemas.arrow import arrow_schema, uuid_text
from eddyline.schemas.deadletter import Reason
from eddyline.schemas.events import BaseEvent, micros
from eddyline.streams.collector.mapping import Mapping, RoutePlan, WriteKey
from eddyline.streams.collector.segment import (
    CALLS,
    DROPPED_CALLS,
    ID_NAMESPACE,
    Converted,
    Rejected,
    convert,
    parse_time,
)

_OWN = ("event_id", "occurred_at", "user_id", "app_id")
_TIME = pa.timestamp("us", tz="UTC")


@dataclass
class Gathered:
    """One request's events of one type, as columns: the fields each route found, and what
    the event ids and times are made of (``table`` makes them)."""

    model: type[BaseEvent]
    key: WriteKey
    mapping: Mapping
    batch_sent: Any  # the batch's sentAt, as sent
    received: datetime
    calls: list[dict[str, Any]] = field(default_factory=list)  # as sent (for ``rows``)
    index: list[int] = field(default_factory=list)  # each call's place in the request
    columns: dict[str, list[Any]] = field(default_factory=dict)  # the model's other fields
    ids: list[bytes] = field(default_factory=list)  # 16 bytes a call (see ``_ids``)
    random: list[int] = field(default_factory=list)  # rows without a messageId
    stamps: list[Any] = field(default_factory=list)  # each call's timestamp, as sent
    sent: list[Any] = field(default_factory=list)  # each call's own sentAt, as sent

    def __len__(self) -> int:
        return len(self.index)

    def reorder(self) -> None:
        """Rows in request order (a user's events keep their order), if they are not."""
        index = self.index
        if all(a < b for a, b in itertools.pairwise(index)):
            return
        order = sorted(range(len(index)), key=index.__getitem__)
        where = {row: new for new, row in enumerate(order)}
        self.calls = [self.calls[row] for row in order]
        self.index = [self.index[row] for row in order]
        self.ids = [self.ids[row] for row in order]
        self.stamps = [self.stamps[row] for row in order]
        self.sent = [self.sent[row] for row in order]
        for name, column in self.columns.items():
            self.columns[name] = [column[row] for row in order]
        self.random = sorted(where[row] for row in self.random)

    def rows(self) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, Rejected]]]:
        """The calls one by one through ``segment.convert`` (the slow, exact path): (place,
        values) of each event, and (place, why) of each call whose time is out of range."""
        out, rejected = [], []
        for i, call in zip(self.index, self.calls, strict=True):
            try:
                made = convert(
                    call, call["type"], self.key, self.mapping, self.batch_sent, self.received
                )
            except OverflowError:  # a corrected time before year 1 or after 9999
                why = Rejected(Reason.ROW_INVALID, "occurred_at: out of range", "occurred_at")
                rejected.append((i, why))
                continue
            assert isinstance(made, Converted)  # gather routed it: so does convert
            out.append((i, made.values))
        return out, rejected


def gather(
    messages: list[Any],
    key: WriteKey,
    mapping: Mapping,
    batch_sent: Any,
    received: datetime,
    max_event_bytes: int | None = None,
) -> tuple[dict[type[BaseEvent], Gathered], list[tuple[int, Rejected]], Counter[str]]:
    """A request's calls as (events by type, (place, why) of each call that makes no event,
    dropped calls by kind). ``max_event_bytes``: the limit of one call as JSON (None: the
    whole body is under it, no call needs measuring)."""
    plans: dict[tuple[str, str | None], RoutePlan | None] = {}
    groups: dict[tuple[str, str | None], tuple[list[dict[str, Any]], list[int], list[str]]] = {}
    rejected: list[tuple[int, Rejected]] = []
    dropped: Counter[str] = Counter()
    for i, message in enumerate(messages):
        call = message.get("type") if type(message) is dict else None
        if type(call) is not str or call not in CALLS:  # (a list is no key of a set)
            rejected.append((i, Rejected(Reason.EVENT_UNMAPPED, "not a Segment call")))
            continue
        if max_event_bytes is not None and len(json.dumps(message)) > max_event_bytes:
            why = f"over {max_event_bytes:,} bytes"
            rejected.append((i, Rejected(Reason.EVENT_TOO_LARGE, why)))
            continue
        if call in DROPPED_CALLS:
            dropped[call] += 1
            continue
        event = message.get("event") if call == "track" else None
        route = (call, event if type(event) is str else None)
        plan = plans[route] if route in plans else plans.setdefault(route, mapping.plan(*route))
        if plan is None:
            rejected.append((i, Rejected(Reason.EVENT_UNMAPPED, f"no route for this {call} call")))
            continue
        user = message.get("userId") or message.get("anonymousId")
        if type(user) is not str:
            if isinstance(user, int | float) and not isinstance(user, bool):
                user = str(user)  # Segment accepts numeric ids
            else:
                user = None
        if not user:
            why = "user_id: missing (no userId or anonymousId)"
            rejected.append((i, Rejected(Reason.ROW_INVALID, why, "user_id")))
            continue
        group = groups.get(route)
        if group is None:
            group = groups[route] = ([], [], [])
        group[0].append(message)
        group[1].append(i)
        group[2].append(user)
    out: dict[type[BaseEvent], Gathered] = {}
    for route, (calls, index, users) in groups.items():
        plan = plans[route]
        assert plan is not None
        into = out.get(plan.model)
        if into is None:
            into = out[plan.model] = Gathered(plan.model, key, mapping, batch_sent, received)
        _add(into, plan, calls, index, users)
    if len(groups) > len(out):  # some type got several routes: back into request order
        for into in out.values():
            into.reorder()
    return out, rejected, dropped


def _add(
    into: Gathered,
    plan: RoutePlan,
    calls: list[dict[str, Any]],
    index: list[int],
    users: list[str],
) -> None:
    """Append one route's calls to ``into``, a column at a time."""
    n, before = len(calls), len(into)
    found = {name: _read(calls, parts) for name, parts in plan.fields}
    for name, info in plan.model.model_fields.items():
        if name in _OWN:
            continue
        # as pydantic fills a field ``convert`` leaves out: the route's constant, else its
        # default, else the model's
        model_default = None if info.is_required() else info.get_default(call_default_factory=True)
        fallback = plan.constants.get(name, plan.default.get(name, model_default))
        if name in found:
            values = found[name]
            if fallback is not None:
                values = [fallback if v is None else v for v in values]
        else:
            values = [fallback] * n
        column = into.columns.get(name)
        if column is None:
            column = into.columns[name] = [None] * before
        column.extend(values)
    into.columns.setdefault("user_id", [None] * before).extend(users)
    into.columns.setdefault("app_id", [None] * before).extend([into.key.app_id] * n)
    prefix = ID_NAMESPACE.bytes + into.key.name.encode() + b"\x00"
    sha1 = hashlib.sha1
    ids: list[bytes] = []
    for row, mid in enumerate([c.get("messageId") for c in calls]):
        if type(mid) is str and mid:
            ids.append(sha1(prefix + mid.encode()).digest()[:16])
        else:
            ids.append(os.urandom(16))
            into.random.append(before + row)
    into.ids.extend(ids)
    into.stamps.extend([c.get("timestamp") for c in calls])
    into.sent.extend([c.get("sentAt") for c in calls])
    into.calls.extend(calls)
    into.index.extend(index)


def _read(calls: list[dict[str, Any]], parts: tuple[str, ...]) -> list[Any]:
    """The value at a dot path in each call (None: absent, or null), as ``segment._path``."""
    if len(parts) == 1:
        (a,) = parts
        return [c.get(a) for c in calls]
    if len(parts) == 2:
        a, b = parts
        return [p.get(b) if type(p := c.get(a)) is dict else None for c in calls]
    out = []
    for c in calls:
        node: Any = c
        for part in parts:
            node = node.get(part) if type(node) is dict else None
        out.append(node)
    return out


def table(parts: list[Gathered]) -> pa.Table:
    """The events of ``parts`` (one type, one or more requests) as one table in the type's
    Arrow schema (types not checked here: ``emit_many`` checks and validates). Raises
    ``pa.ArrowException`` (or ``TypeError``, ``OverflowError``) for a value Arrow cannot
    hold as its field's type."""
    model = parts[0].model
    schema = arrow_schema(model)
    arrays: list[pa.Array] = []
    for f in schema:
        if f.name == "event_id":
            arrays.append(_ids(parts))
        elif f.name == "occurred_at":
            arrays.append(_times(parts))
        else:
            values = [v for p in parts for v in p.columns[f.name]]
            if pa.types.is_string(f.type):
                arrays.append(pa.array(values, pa.string()))
                continue
            inferred = pa.array(values)  # emit_many casts only what casts losslessly
            arrays.append(
                pa.nulls(len(values), f.type) if inferred.null_count == len(values) else inferred
            )
    if all(a.type == f.type for a, f in zip(arrays, schema, strict=True)):
        return pa.Table.from_arrays(arrays, schema=schema)  # emit_many's fast path
    return pa.Table.from_arrays(arrays, schema.names)


def _ids(parts: list[Gathered]) -> pa.Array:
    """Each call's 16 bytes as a UUID: version 5 (hashed), or 4 (random, no messageId)."""
    raw = np.frombuffer(b"".join(i for p in parts for i in p.ids), np.uint8)
    raw = raw.reshape(-1, 16).copy()
    versions = np.full(len(raw), 5, np.uint8)
    start = 0
    for p in parts:  # rows without a messageId, across the parts
        versions[[start + r for r in p.random]] = 4
        start += len(p)
    return uuid_text(raw, versions)


def _parsed(values: list[Any]) -> np.ndarray:
    """ISO 8601 times with a zone as int64 microseconds; ``_NONE`` where absent or not
    readable (``segment.parse_time``'s answers: Arrow reads the common forms, Python the
    rest)."""
    text = [v if type(v) is str else None for v in values]
    try:
        parsed = pa.array(text, pa.string()).cast(_TIME)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        times = [parse_time(v) for v in text]
        return np.array([_NONE if t is None else micros(t) for t in times], np.int64)
    out = np.frombuffer(parsed.buffers()[1], np.int64, len(parsed), parsed.offset * 8).copy()
    if parsed.null_count:
        out[np.asarray(parsed.is_null())] = _NONE
    return out


_NONE = np.iinfo(np.int64).min


def _times(parts: list[Gathered]) -> pa.Array:
    """``occurred_at``: ``receivedAt - (sentAt - timestamp)``, the call's sentAt before
    the batch's; the timestamp as sent without a sentAt; the receiving time without a
    timestamp (``segment.corrected_time``)."""
    sizes = [len(p) for p in parts]
    stamps = _parsed([s for p in parts for s in p.stamps])
    received = np.repeat(np.array([micros(p.received) for p in parts], np.int64), sizes)
    sent = np.repeat(np.array([_batch_sent(p) for p in parts], np.int64), sizes)
    own = [s for p in parts for s in p.sent]
    if any(type(s) is str for s in own):  # a call's own sentAt (rare): before the batch's
        parsed = _parsed(own)
        sent = np.where(parsed != _NONE, parsed, sent)
    has_stamp, has_sent = stamps != _NONE, sent != _NONE
    skew = np.where(has_sent, sent, 0) - np.where(has_stamp, stamps, 0)  # no wrap-around
    occurred = np.where(has_stamp, np.where(has_sent, received - skew, stamps), received)
    return pa.array(occurred, _TIME)


def _batch_sent(part: Gathered) -> int:
    sent = part.batch_sent
    parsed = sent if isinstance(sent, datetime) else parse_time(sent)
    return _NONE if parsed is None else micros(parsed)
