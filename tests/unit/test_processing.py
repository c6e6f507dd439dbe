"""The privacy stage without a broker: message bytes in, private batch and dead letters out.

Includes the regression tests of the outside audit (issue 18): dead letters bounded and
free of the sender's text, dates that would break the lake, silent casts, nulls under
mechanisms, empty and multi-batch envelopes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import Field

from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.schemas.annotations import Noise, RandomizedResponse
from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.deadletter import MAX_BYTES, Reason
from eddyline.schemas.envelope import ARROW, encode_arrow, encode_json
from eddyline.schemas.events import BaseEvent, InteractionEvent
from eddyline.schemas.registry import SchemaRegistry
from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.privatizer import Privatizer

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


def _at(column: str) -> int:
    return arrow_schema(InteractionEvent).get_field_index(column)


def _letters(out: object) -> str:
    return " ".join(d.to_json().decode() for d in out.dead)  # type: ignore[attr-defined]


def test_valid_batch_crosses_the_boundary_without_raw_ids(privatizer: Privatizer) -> None:
    events = [_event() for _ in range(5)]
    out = privatizer.process(*_envelope([_row(e) for e in events]), SRC, "interaction")
    assert out.dead == [] and out.received == 5
    assert out.private is not None and out.private.num_rows == 5
    assert CANARY not in str(out.private.to_pylist())


def test_bad_rows_are_dead_lettered_by_row_and_the_rest_pass(privatizer: Privatizer) -> None:
    good, bad = _event(), _event()
    rows = [_row(good), _row(bad, dwell_time_s=-5.0), _row(_event()), _row(bad, dwell_time_s=-1.0)]
    out = privatizer.process(*_envelope(rows), SRC, "interaction")
    assert out.private is not None and out.private.num_rows == 2
    [letter] = out.dead
    assert (letter.reason, letter.field, letter.rows, letter.count) == (
        Reason.ROW_INVALID,
        "dwell_time_s",
        "1,3",
        2,
    )
    assert letter.source == SRC
    assert CANARY not in letter.to_json().decode()


def test_a_poison_envelope_gives_one_bounded_dead_letter_naming_its_rows(
    privatizer: Privatizer,
) -> None:
    """The audit's poison message: 2,500 rows whose long event ids fail validation made a
    ~20 MB dead letter that Kafka refused, crashing the agent on the same message forever."""
    # 3 kB ids that JSON escapes to 9 kB each: 7.5 MB of envelope, ~23 MB of event ids
    long_ids = [f"{CANARY}-{i}-" + "é" * 1_500 for i in range(2_500)]
    rows = [_row(_event(), event_id=eid) for eid in long_ids]
    value, headers = _envelope(rows)
    assert len(value) < privatizer.max_bytes  # under the envelope limit, as in the audit
    out = privatizer.process(value, headers, SRC, "interaction")
    [letter] = out.dead
    text = letter.to_json()
    assert len(text) <= MAX_BYTES
    assert (letter.reason, letter.field, letter.rows, letter.count) == (
        Reason.ROW_INVALID,
        "event_id",
        "0-2499",
        2_500,
    )
    assert CANARY.encode() not in text and out.private is None  # no row crossed


def test_scattered_bad_rows_are_cut_to_fit_and_say_so(privatizer: Privatizer) -> None:
    rows = [_row(_event(), position=5_000 if i % 2 else 1) for i in range(20_000)]
    out = privatizer.process(*_envelope(rows), SRC, "interaction")
    [letter] = out.dead
    assert letter.truncated and letter.count == 10_000
    assert len(letter.to_json()) <= MAX_BYTES and letter.rows.startswith("1,3,5,")


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (
            b"\x00garbage\xff" * 10,
            [("content-type", b"application/vnd.apache.arrow.stream")],
            Reason.ENVELOPE_CORRUPT,
        ),
        (b"random bytes", [], Reason.ENVELOPE_CONTENT_TYPE),
        (
            b"{}",
            [("content-type", b"application/json"), ("eddyline-schema", b"nope:3")],
            Reason.SCHEMA_UNKNOWN,
        ),
        (
            b"{}",
            [("content-type", b"application/json"), ("eddyline-schema", b"feedback:1")],
            Reason.SCHEMA_WRONG_STREAM,
        ),
    ],
)
def test_undecodable_messages_get_a_reason(
    privatizer: Privatizer, value: bytes, headers: list[tuple[str, bytes]], reason: Reason
) -> None:
    out = privatizer.process(value, headers, SRC, "interaction")
    assert out.private is None and [d.reason for d in out.dead] == [reason]


def test_no_text_the_sender_chose_reaches_a_dead_letter(privatizer: Privatizer) -> None:
    """Every hostile input carries the canary where the sender chooses text: values, keys,
    column names, headers, time zones, struct field names. No dead letter repeats it."""
    ok = json.loads(_event().model_dump_json())
    schema = arrow_schema(InteractionEvent)
    table = pa.Table.from_pylist([_row(_event())], schema=schema)
    inputs = [
        encode_json({**ok, CANARY: 1}, "interaction:1"),  # an unknown key
        encode_json({**ok, "event_id": CANARY}, "interaction:1"),  # an invalid id
        encode_json({**ok, "position": CANARY}, "interaction:1"),  # a wrong type
        encode_json({**ok, "dwell_time_s": {CANARY: [CANARY]}}, "interaction:1"),
        encode_json(ok, CANARY),  # the schema header
        (json.dumps(ok).encode(), [("content-type", CANARY.encode())]),
        # Arrow: a string where a number goes, swapped ids, an unknown column, a struct
        encode_arrow(
            table.set_column(_at("dwell_time_s"), "dwell_time_s", pa.array([CANARY])),
            "interaction:1",
        ),
        encode_arrow(
            table.set_column(_at("event_id"), "event_id", pa.array([CANARY])).set_column(
                _at("user_id"), "user_id", pa.array([str(_event().event_id)])
            ),
            "interaction:1",
        ),
        encode_arrow(table.append_column(CANARY, pa.array([1])), "interaction:1"),
        encode_arrow(
            table.set_column(
                _at("occurred_at"), "occurred_at", pa.array([0], pa.timestamp("us", tz=CANARY[:20]))
            ),
            "interaction:1",
        ),
        encode_arrow(
            table.set_column(_at("dwell_time_s"), "dwell_time_s", pa.array([{CANARY: 1.0}])),
            "interaction:1",
        ),
    ]
    for value, headers in inputs:
        out = privatizer.process(value, headers, SRC, "interaction")
        assert out.dead, f"not dead-lettered: {headers}"
        assert CANARY[:20] not in _letters(out)
        for letter in out.dead:
            assert letter.field is None or letter.field in InteractionEvent.model_fields


def test_an_unknown_json_key_is_counted_not_named(privatizer: Privatizer) -> None:
    ok = json.loads(_event().model_dump_json())
    out = privatizer.process(*encode_json({**ok, CANARY: 1}, "interaction:1"), SRC, "interaction")
    [letter] = out.dead
    assert letter.field is None and "1 key(s) not in the schema" in letter.detail


@pytest.mark.parametrize(
    "when",
    [
        "9999-12-31T23:59:59-23:59",  # past 9999-12-31 in UTC
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "2001-01-01T00:00:00Z",  # older than the accepted age
        (datetime.now(UTC) + timedelta(days=3)).isoformat(),  # ahead of the clock
    ],
)
def test_dates_outside_the_accepted_window_are_dead_lettered(
    privatizer: Privatizer, when: str
) -> None:
    ok = json.loads(_event().model_dump_json())
    out = privatizer.process(
        *encode_json({**ok, "occurred_at": when}, "interaction:1"), SRC, "interaction"
    )
    assert out.private is None
    assert [(d.reason, d.field) for d in out.dead] == [(Reason.ROW_INVALID, "occurred_at")]


def test_arrow_timestamps_outside_the_window_are_dead_lettered(privatizer: Privatizer) -> None:
    now = datetime.now(UTC)
    year_18029 = (datetime(9999, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) * 1.8
    micros = [
        int(now.timestamp() * 1e6),
        int(year_18029.total_seconds() * 1e6),
        -(2**62),
        int((now - timedelta(days=400)).timestamp() * 1e6),
    ]
    table = pa.Table.from_pylist(
        [_row(_event()) for _ in micros], schema=arrow_schema(InteractionEvent)
    )
    table = table.set_column(
        _at("occurred_at"), "occurred_at", pa.array(micros, pa.timestamp("us", tz="UTC"))
    )
    out = privatizer.process(*encode_arrow(table, "interaction:1"), SRC, "interaction")
    assert out.private is not None and out.private.num_rows == 1
    assert sorted((d.field, d.detail, d.rows) for d in out.dead) == [
        ("occurred_at", "occurred_at: in_the_future", "1"),
        ("occurred_at", "occurred_at: too_old", "2-3"),
    ]


def test_a_worker_may_accept_older_events_than_the_default(privatizer: Privatizer) -> None:
    from eddyline.schemas.events import TimeWindow

    privatizer.window = TimeWindow(max_age=timedelta(days=10_000))
    ok = json.loads(_event().model_dump_json())
    old = {**ok, "occurred_at": "2001-01-01T00:00:00Z"}
    out = privatizer.process(*encode_json(old, "interaction:1"), SRC, "interaction")
    assert out.dead == [] and out.private is not None and out.private.num_rows == 1


@pytest.mark.parametrize(
    ("column", "values", "arrow_type"),
    [
        ("occurred_at", [1_764_000_000], pa.int64()),  # epoch seconds, read as microseconds
        ("user_id", [12345], pa.int64()),  # a number pseudonymised as a number
        ("dwell_time_s", ["3.5"], pa.string()),  # text that parses as a number
        ("position", [3.0], pa.float64()),  # a float where an int goes
        ("occurred_at", [datetime.now(UTC).replace(tzinfo=None)], pa.timestamp("us")),  # naive
    ],
)
def test_castable_wrong_types_are_a_schema_mismatch_not_a_cast(
    privatizer: Privatizer, column: str, values: list[object], arrow_type: pa.DataType
) -> None:
    table = pa.Table.from_pylist([_row(_event())], schema=arrow_schema(InteractionEvent))
    index = table.schema.get_field_index(column)
    table = table.set_column(index, column, pa.array(values, arrow_type))
    out = privatizer.process(*encode_arrow(table, "interaction:1"), SRC, "interaction")
    assert out.private is None
    [letter] = out.dead
    assert letter.reason == Reason.ENVELOPE_SCHEMA_MISMATCH and column in letter.detail


def test_lossless_casts_are_documented_and_taken(privatizer: Privatizer) -> None:
    table = pa.Table.from_pylist([_row(_event())], schema=arrow_schema(InteractionEvent))
    ms = pc.cast(table["occurred_at"], pa.timestamp("ms", tz="Europe/Paris"), safe=False)
    table = (
        table.set_column(_at("position"), "position", pc.cast(table["position"], pa.int16()))
        .set_column(_at("app_id"), "app_id", pc.cast(table["app_id"], pa.large_string()))
        .set_column(_at("occurred_at"), "occurred_at", ms)
        .set_column(_at("dwell_time_s"), "dwell_time_s", pa.array([3], pa.int32()))
    )
    out = privatizer.process(*encode_arrow(table, "interaction:1"), SRC, "interaction")
    assert out.dead == [] and out.private is not None and out.private.num_rows == 1


def test_an_empty_envelope_is_counted_as_a_dead_letter_of_no_events(
    privatizer: Privatizer,
) -> None:
    empty = pa.Table.from_pylist([], schema=arrow_schema(InteractionEvent))
    out = privatizer.process(*encode_arrow(empty, "interaction:1"), SRC, "interaction")
    assert [(d.reason, d.count) for d in out.dead] == [(Reason.ENVELOPE_EMPTY, 0)]


def test_an_envelope_of_several_record_batches_is_read_whole(privatizer: Privatizer) -> None:
    schema = arrow_schema(InteractionEvent)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for _ in range(3):
            rows = [_row(_event()), _row(_event())]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    headers = [("content-type", ARROW.encode()), ("eddyline-schema", b"interaction:1")]
    out = privatizer.process(sink.getvalue().to_pybytes(), headers, SRC, "interaction")
    assert out.dead == [] and out.private is not None and out.private.num_rows == 6


class _Optional(BaseEvent):
    event_name: ClassVar[str] = "optional_test"
    event_registry: ClassVar[SchemaRegistry] = SchemaRegistry()
    score: Annotated[float | None, Field(ge=0, le=1), Noise(lower=0, upper=1, epsilon=1.0)] = None
    mood: Annotated[str | None, RandomizedResponse(("up", "down"), epsilon=1.0)] = None
    tags: Annotated[
        str | None, RandomizedResponse(tuple("abcdefghijklmnop"), epsilon=0.5, encoding="unary")
    ] = None


def test_nulls_under_noise_and_randomised_response_stay_null() -> None:
    privatizer = Privatizer(
        HmacPseudonymizer(b"k" * 32), np.random.default_rng(1), registry=_Optional.event_registry
    )
    rows = [
        _Optional(user_id="u", app_id="a", score=s, mood=m, tags=t).model_dump()
        for s, m, t in [(0.5, "up", "a"), (None, None, None), (0.1, "down", None)]
    ]
    for r in rows:
        r["event_id"] = str(r["event_id"])
    table = pa.Table.from_pylist(rows, schema=arrow_schema(_Optional))
    out = privatizer.process(*encode_arrow(table, "optional_test:1"), SRC, "optional_test")
    assert out.dead == [] and out.private is not None
    score, mood, tags = (out.private[c].to_pylist() for c in ("score", "mood", "tags"))
    assert score[1] is None and mood[1] is None and tags[1] is None and tags[2] is None
    assert score[0] is not None and not np.isnan(score[0]) and mood[0] in ("up", "down")


def test_single_json_events_are_validated_like_batches(privatizer: Privatizer) -> None:
    e = _event()
    ok = json.loads(e.model_dump_json())
    value, headers = encode_json(ok, "interaction:1")
    out = privatizer.process(value, headers, SRC, "interaction")
    assert out.private is not None and out.private.num_rows == 1 and not out.dead
    value, headers = encode_json({**ok, "action": "teleport"}, "interaction:1")
    out = privatizer.process(value, headers, SRC, "interaction")
    assert out.private is None
    assert [(d.reason, d.field, d.rows) for d in out.dead] == [(Reason.ROW_INVALID, "action", "0")]
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

    def run(source: SourceRef, key: bytes = b"n" * 32) -> list[float]:
        privatizer = Privatizer(HmacPseudonymizer(b"k" * 32), np.random.default_rng())
        out = privatizer.process(value, headers, source, "interaction", noise_key=key)
        assert out.private is not None
        return out.private["dwell_time_s"].to_pylist()

    first = run(SRC)
    assert run(SRC) == first  # a fresh worker replaying the same message: same noise
    assert run(SourceRef(SRC.topic, SRC.partition, SRC.offset + 1)) != first
    assert run(SRC, key=b"m" * 32) != first  # another secret, other noise
    assert first != [float(i) for i in range(50)]
