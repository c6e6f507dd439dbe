"""The privacy stage without a broker: message bytes in, private batch and dead letters out."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from privacy.pseudonymize import HmacPseudonymizer
from schemas.arrow import arrow_schema
from schemas.envelope import encode_arrow, encode_json
from schemas.events import InteractionEvent
from streams.processing import Privatizer, SourceRef

SRC = SourceRef("events.interaction", 2, 41)
CANARY = "canary-user-7f3a@example.com"


@pytest.fixture
def privatizer() -> Privatizer:
    return Privatizer(HmacPseudonymizer(b"k" * 32, key_id="k1"), np.random.default_rng(3))


def _event(**kw: object) -> InteractionEvent:
    base = dict(
        user_id=CANARY,
        app_id="a",
        item_id="i",
        item_category="news",
        action="click",
        dwell_time_s=3.0,
    )
    return InteractionEvent(**{**base, **kw})


def _envelope(rows: list[dict[str, object]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    table = pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent))
    return encode_arrow(table, "interaction:1")


def _row(e: InteractionEvent, **kw: object) -> dict[str, object]:
    return {**e.__dict__, "event_id": str(e.event_id), **kw}


def test_valid_batch_crosses_the_boundary_without_raw_ids(privatizer: Privatizer) -> None:
    events = [_event() for _ in range(5)]
    out = privatizer.process(*_envelope([_row(e) for e in events]), SRC, "interaction")
    assert out.dead == [] and out.received == 5
    assert out.private is not None and out.private.num_rows == 5
    assert CANARY not in str(out.private.to_pylist())


def test_bad_rows_are_dead_lettered_with_ids_and_the_rest_pass(privatizer: Privatizer) -> None:
    good, bad = _event(), _event()
    rows = [_row(good), _row(bad, dwell_time_s=-5.0)]
    out = privatizer.process(*_envelope(rows), SRC, "interaction")
    assert out.private is not None and out.private["event_id"].to_pylist() == [str(good.event_id)]
    [letter] = out.dead
    assert (letter.reason, letter.field, letter.event_ids) == (
        "row.invalid",
        "dwell_time_s",
        [str(bad.event_id)],
    )
    assert letter.source == SRC
    assert CANARY not in letter.to_json().decode()


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (
            b"\x00garbage\xff" * 10,
            [("content-type", b"application/vnd.apache.arrow.stream")],
            "envelope.corrupt",
        ),
        (b"random bytes", [], "envelope.content_type"),
        (
            b"{}",
            [("content-type", b"application/json"), ("eddyline-schema", b"nope:3")],
            "schema.unknown",
        ),
        (
            b"{}",
            [("content-type", b"application/json"), ("eddyline-schema", b"feedback:1")],
            "schema.wrong_stream",
        ),
    ],
)
def test_undecodable_messages_get_a_reason(
    privatizer: Privatizer, value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    out = privatizer.process(value, headers, SRC, "interaction")
    assert out.private is None and [d.reason for d in out.dead] == [reason]


def test_arrow_with_the_wrong_columns_is_a_schema_mismatch(privatizer: Privatizer) -> None:
    value, headers = encode_arrow(pa.table({"surprise": [1, 2]}), "interaction:1")
    out = privatizer.process(value, headers, SRC, "interaction")
    assert [(d.reason, d.count) for d in out.dead] == [("envelope.schema_mismatch", 2)]


def test_single_json_events_are_validated_like_batches(privatizer: Privatizer) -> None:
    e = _event()
    ok = json.loads(e.model_dump_json())
    value, headers = encode_json(ok, "interaction:1")
    out = privatizer.process(value, headers, SRC, "interaction")
    assert out.private is not None and out.private.num_rows == 1 and not out.dead
    value, headers = encode_json({**ok, "action": "teleport"}, "interaction:1")
    out = privatizer.process(value, headers, SRC, "interaction")
    assert out.private is None
    assert [(d.reason, d.field, d.event_ids) for d in out.dead] == [
        ("row.invalid", "action", [str(e.event_id)])
    ]
    assert CANARY not in out.dead[0].to_json().decode()


def test_json_without_a_schema_header_uses_the_streams_latest_version(
    privatizer: Privatizer,
) -> None:
    value = _event().model_dump_json().encode()
    out = privatizer.process(value, [], SRC, "interaction")
    assert out.schema_id == "interaction:1" and out.private is not None


def test_a_replayed_message_is_noised_exactly_as_the_first_time() -> None:
    rows = [_row(_event(user_id=f"u{i}", dwell_time_s=float(i))) for i in range(50)]
    value, headers = _envelope(rows)

    def run(source: SourceRef) -> list[float]:
        privatizer = Privatizer(
            HmacPseudonymizer(b"k" * 32), np.random.default_rng(), noise_key=b"n" * 32
        )
        out = privatizer.process(value, headers, source, "interaction")
        assert out.private is not None
        return out.private["dwell_time_s"].to_pylist()

    first = run(SRC)
    assert run(SRC) == first  # a fresh worker replaying the same message: same noise
    assert run(SourceRef(SRC.topic, SRC.partition, SRC.offset + 1)) != first
    assert first != [float(i) for i in range(50)]
