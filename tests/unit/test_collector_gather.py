"""The collector's columnar hot path (``gather`` + ``table``) against its reference, the
call-by-call ``segment.convert``: on every kind of call, the same events with the same
values (ids, clock-corrected times, fields, defaults), the same rejections, the same drops."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.deadletter import Reason
from eddyline.schemas.events import BaseEvent, InteractionEvent
from eddyline.streams.collector.gather import Gathered, gather, table
from eddyline.streams.collector.mapping import load_mapping
from eddyline.streams.collector.segment import Converted, Rejected, convert

NOW = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
TIMES: list[Any] = [
    "2026-12-01T11:00:00Z",
    "2026-12-01T11:00:00.5+02:00",
    "2026-12-01T11:00:00.1234567Z",  # nanoseconds: Arrow refuses, Python reads
    "2026-12-01 11:00:00+0130",
    "2026-12-01T11:00:00",  # no zone: ignored
    "garbage",
    17,
    None,
]
EVENTS = ["Product Clicked", "Product Viewed", "Feedback Given", "Unknown Thing", 5, None]


def _call(rng: random.Random, n: int) -> Any:
    kind = rng.choice(["track"] * 6 + ["page", "screen", "identify", "alias", "bogus"])
    if rng.random() < 0.02:
        return rng.choice(["not a call", 3, None, ["x"], {"type": ["track"]}, {"type": {}}])
    call: dict[str, Any] = {"type": kind}
    if kind == "track":
        call["event"] = rng.choice(EVENTS)
    user = rng.choice(["u-1", "u-2", 42, 4.5, "", None, True])
    if user is not None:
        call["userId"] = user
    if rng.random() < 0.3:
        call["anonymousId"] = rng.choice(["anon-1", None, 7])
    if rng.random() < 0.9:
        call["messageId"] = rng.choice([f"m-{n}", f"m-{n}", 99, ""])
    stamp = rng.choice(TIMES)
    if stamp is not None:
        call["timestamp"] = stamp
    if rng.random() < 0.2:
        call["sentAt"] = rng.choice(TIMES)
    props: dict[str, Any] = {}
    for name, values in {
        "product_id": ["sku-1", "sku-2", None],
        "category": ["news", None],
        "position": [0, 3, None],
        "dwell_time_s": [1.5, 0, None],
        "item_id": ["a-1", None],
        "rating": [1, 5, None],
        "helpful": [True, False, None],
        "comment": ["nice", None],
        "path": ["/docs", None],
        "email": ["a@b.c"],
    }.items():
        if rng.random() < 0.7:
            props[name] = rng.choice(values)
    if rng.random() < 0.95:
        call["properties"] = props if rng.random() < 0.97 else "not an object"
    if kind == "screen":
        call["name"] = rng.choice(["Home", None])
    if rng.random() < 0.5:
        call["category"] = rng.choice(["docs", None])
    call["context"] = {"ip": "203.0.113.9"}
    return call


def _filled(model: type[BaseEvent], values: dict[str, Any]) -> dict[str, Any]:
    """``convert``'s values as a row of the table: what it leaves out, the model fills."""
    out = {}
    for name, info in model.model_fields.items():
        if name in values:
            out[name] = values[name]
        else:
            out[name] = None if info.is_required() else info.get_default(call_default_factory=True)
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("batch_sent", ["2026-12-01T11:00:03Z", None, "nonsense"])
def test_gather_makes_what_convert_makes_call_by_call(
    monkeypatch: pytest.MonkeyPatch, seed: int, batch_sent: str | None
) -> None:
    monkeypatch.setenv("EDDYLINE_COLLECTOR_WRITE_KEY", "k")
    mapping = load_mapping()
    key = mapping.write_keys[0]
    rng = random.Random(seed)
    calls = [_call(rng, n) for n in range(300)]
    gathered, rejected, dropped = gather(calls, key, mapping, batch_sent, NOW)

    expected: dict[type[BaseEvent], list[tuple[int, dict[str, Any]]]] = {}
    expected_rejected: list[tuple[int, Rejected]] = []
    expected_dropped: dict[str, int] = {}
    for i, call in enumerate(calls):
        kind = call.get("type") if isinstance(call, dict) else None
        if not isinstance(kind, str) or kind not in {
            "track",
            "page",
            "screen",
            "identify",
            "alias",
            "group",
        }:
            expected_rejected.append((i, Rejected(Reason.EVENT_UNMAPPED, "not a Segment call")))
            continue
        made = convert(call, call["type"], key, mapping, batch_sent, NOW)
        if made is None:
            expected_dropped[call["type"]] = expected_dropped.get(call["type"], 0) + 1
        elif isinstance(made, Converted):
            expected.setdefault(made.model, []).append((i, made.values))
        else:
            expected_rejected.append((i, made))

    assert sorted(rejected, key=lambda r: r[0]) == expected_rejected
    assert dict(dropped) == expected_dropped
    assert set(gathered) == set(expected) and expected  # the seeds make events
    for model, rows in expected.items():
        part = gathered[model]
        assert part.index == [i for i, _ in rows]
        made = table([part]).to_pylist()
        for (i, values), got in zip(rows, made, strict=True):
            want = _filled(model, values)
            if not isinstance(calls[i].get("messageId"), str) or not calls[i]["messageId"]:
                # a random id (version 4) each time: its form, not its value
                assert got["event_id"][14] == "4" and len(got["event_id"]) == 36
                got["event_id"] = want["event_id"]
            assert got == want, f"call {i}: {calls[i]}"


def test_a_window_of_requests_is_one_table_in_request_order(monkeypatch) -> None:
    monkeypatch.setenv("EDDYLINE_COLLECTOR_WRITE_KEY", "k")
    mapping = load_mapping()
    key = mapping.write_keys[0]
    parts: list[Gathered] = []
    for r in range(3):
        calls = [
            {
                "type": "track",
                "event": "Product Clicked",
                "userId": f"u-{r}-{i}",
                "messageId": f"m-{r}-{i}",
                "properties": {"product_id": "sku", "position": i},
            }
            for i in range(4)
        ]
        (part,) = gather(calls, key, mapping, None, NOW)[0].values()
        parts.append(part)
    made = table(parts)
    assert made.num_rows == 12
    assert made["user_id"].to_pylist() == [f"u-{r}-{i}" for r in range(3) for i in range(4)]
    # built in the model's schema, metadata and all: emit_many's fast path
    assert made.schema.equals(arrow_schema(InteractionEvent), check_metadata=True)


def test_a_value_arrow_cannot_hold_is_left_to_the_call_by_call_path(monkeypatch) -> None:
    monkeypatch.setenv("EDDYLINE_COLLECTOR_WRITE_KEY", "k")
    mapping = load_mapping()
    key = mapping.write_keys[0]
    calls = [
        {
            "type": "track",
            "event": "Product Clicked",
            "userId": "u",
            "messageId": "m",
            "properties": {"product_id": {"nested": 1}},
        },
    ]
    gathered, _, _ = gather(calls, key, mapping, None, NOW)
    (part,) = gathered.values()
    with pytest.raises((pa.ArrowException, TypeError)):
        table([part])
    rows, rejected = part.rows()  # what the committer falls back to
    assert rows[0][1]["item_id"] == {"nested": 1} and not rejected  # pydantic refuses it
