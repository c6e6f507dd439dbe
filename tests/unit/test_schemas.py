from __future__ import annotations

from typing import Annotated, ClassVar

import pyarrow as pa
import pytest
from pydantic import ValidationError

from eddyline.schemas.annotations import Noise, Pseudonymize
from eddyline.schemas.arrow import arrow_schema, conform
from eddyline.schemas.envelope import ARROW, JSON, decode, encode_arrow, encode_json
from eddyline.schemas.errors import EnvelopeError, SchemaError, UnknownSchemaError
from eddyline.schemas.events import BaseEvent, FeedbackEvent, InteractionEvent
from eddyline.schemas.registry import REGISTRY
from eddyline.schemas.validation import validate_table


def _interaction(**kw: object) -> InteractionEvent:
    base = dict(
        user_id="u1",
        app_id="a",
        item_id="i",
        item_category="news",
        action="click",
        dwell_time_s=1.5,
    )
    return InteractionEvent(**{**base, **kw})


def test_noise_on_a_string_fails_when_the_model_is_defined() -> None:
    with pytest.raises(SchemaError, match="Noise needs a field of type int, float"):

        class Bad(BaseEvent):
            event_name: ClassVar[str] = "bad_noise"
            name: Annotated[str, Noise(lower=0, upper=1, epsilon=1)]


def test_noise_without_sensible_bounds_fails_when_the_model_is_defined() -> None:
    with pytest.raises(SchemaError, match="lower < upper"):

        class Bad(BaseEvent):
            event_name: ClassVar[str] = "bad_bounds"
            x: Annotated[float, Noise(lower=5, upper=5, epsilon=1)]


def test_pseudonymize_on_a_number_fails() -> None:
    with pytest.raises(SchemaError, match="Pseudonymize"):

        class Bad(BaseEvent):
            event_name: ClassVar[str] = "bad_pseud"
            n: Annotated[int, Pseudonymize()]


def test_registry_knows_the_built_in_events_and_refuses_unknown_ids() -> None:
    assert REGISTRY.get("interaction:1") is InteractionEvent
    assert REGISTRY.latest("feedback") is FeedbackEvent
    with pytest.raises(UnknownSchemaError):
        REGISTRY.get("nope:9")


def test_arrow_schema_follows_the_model() -> None:
    schema = arrow_schema(FeedbackEvent)
    assert schema.field("occurred_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("label").type == pa.bool_()
    assert schema.field("rating").type == pa.int64() and schema.field("rating").nullable
    assert not schema.field("user_id").nullable


def test_feedback_needs_a_rating_or_a_label() -> None:
    with pytest.raises(ValidationError, match="rating or a label"):
        FeedbackEvent(user_id="u", app_id="a", item_id="i")


def _table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent))


def _row(**kw: object) -> dict[str, object]:
    e = _interaction()
    row = {**e.__dict__, "event_id": str(e.event_id)}
    row.update(kw)
    return row


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"dwell_time_s": -1.0}, "dwell_time_s", "below_minimum"),
        ({"dwell_time_s": float("nan")}, "dwell_time_s", "not_finite"),
        ({"position": 5000}, "position", "above_maximum"),
        ({"action": "teleport"}, "action", "not_allowed"),
        ({"user_id": ""}, "user_id", "too_short"),
        ({"user_id": None}, "user_id", "missing"),
        ({"event_id": "not-a-uuid"}, "event_id", "bad_format"),
    ],
)
def test_vectorised_validation_names_field_and_reason(
    bad: dict[str, object], field: str, reason: str
) -> None:
    table = _table([_row(), _row(**bad), _row()])
    good, violations = validate_table(InteractionEvent, table)
    assert good.num_rows == 2
    assert [(v.field, v.reason, v.rows.to_pylist()) for v in violations] == [(field, reason, [1])]


def test_vectorised_validation_agrees_with_pydantic_on_feedback() -> None:
    e = FeedbackEvent(user_id="u", app_id="a", item_id="i", rating=3)
    ok = {**e.__dict__, "event_id": str(e.event_id)}
    table = pa.Table.from_pylist([ok, {**ok, "rating": None}], schema=arrow_schema(FeedbackEvent))
    good, violations = validate_table(FeedbackEvent, table)
    assert good.num_rows == 1 and violations[0].reason == "rating_or_label_required"


def test_conform_rejects_unknown_columns_and_fills_missing_nullable_ones() -> None:
    t = _table([_row()])
    with pytest.raises(ValueError, match="1 column\\(s\\) not in the schema"):
        conform(InteractionEvent, t.append_column("ssn", pa.array(["x"])))
    e = FeedbackEvent(user_id="u", app_id="a", item_id="i", label=True)
    partial = pa.table(
        {k: [str(v) if k == "event_id" else v] for k, v in e.__dict__.items() if k != "comment"}
    )
    assert conform(FeedbackEvent, partial)["comment"].null_count == 1


def test_arrow_envelope_round_trip() -> None:
    table = _table([_row(), _row()])
    value, headers = encode_arrow(table, "interaction:1")
    env = decode(value, headers)
    assert env.content_type == ARROW and env.schema_id == "interaction:1"
    assert env.table is not None and env.table.equals(table)
    assert dict(headers)["eddyline-count"] == b"2"


def test_json_envelope_round_trip() -> None:
    value, headers = encode_json({"user_id": "u"}, "interaction:1")
    env = decode(value, headers)
    assert env.content_type == JSON and env.json_event == {"user_id": "u"}


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"", [], "envelope.empty"),
        (b"\x00\x01garbage", [("content-type", ARROW.encode())], "envelope.corrupt"),
        (b"{not json", [], "envelope.corrupt"),
        (b"[1, 2]", [("content-type", b"application/json")], "envelope.corrupt"),
        (b"\x89PNG", [("content-type", b"image/png")], "envelope.content_type"),
        (b"\x89PNG", [], "envelope.content_type"),
    ],
)
def test_bad_messages_raise_a_reason_code(
    value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(value, headers)
    assert info.value.reason == reason
