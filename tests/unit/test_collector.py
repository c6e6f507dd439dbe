"""The collector's pure parts: the mapping's validation, Segment calls as events, limits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from eddyline.schemas.deadletter import Reason
from eddyline.schemas.events import InteractionEvent
from eddyline.streams.collector.limits import Bucket, HttpError, parse_json
from eddyline.streams.collector.mapping import (
    DEFAULT_MAPPING,
    MappingError,
    WriteKey,
    load_mapping,
)
from eddyline.streams.collector.segment import Converted, Rejected, convert, event_id

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def mapping(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EDDYLINE_COLLECTOR_WRITE_KEY", "k")
    return load_mapping()


def _write(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(DEFAULT_MAPPING.read_text())
    data["write_keys"][0]["key"] = "literal"
    change(data)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "m.yaml"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["routes"][0].update(stream="nope"), "no stream 'nope'"),
        (lambda d: d["routes"][0]["fields"].update(colour="properties.c"), "no field 'colour'"),
        (lambda d: d["routes"][0]["fields"].update(user_id="userId"), "set by the collector"),
        (lambda d: d["routes"][5].update(event="x"), "only track calls have event names"),
        (lambda d: d["write_keys"][0].update(key="env:NOT_SET_ANYWHERE"), "is not set"),
        (lambda d: d.update(routes=[]), "routes"),
    ],
)
def test_a_bad_mapping_fails_at_start_naming_the_file_and_the_problem(
    tmp_path: Path, change, message: str
) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_track_call_becomes_an_interaction_with_only_its_mapped_fields(mapping) -> None:
    key = mapping.write_keys[0]
    call = {
        "type": "track",
        "event": "Product Clicked",
        "userId": "u-1",
        "messageId": "m-1",
        "timestamp": "2026-12-01T11:00:00Z",
        "properties": {"product_id": "sku-9", "category": "news", "email": "a@b.c"},
        "context": {"ip": "203.0.113.9", "userAgent": "x"},
    }
    out = convert(call, "track", key, mapping, "2026-12-01T11:00:02Z", NOW)
    assert isinstance(out, Converted) and out.model is InteractionEvent
    assert out.values["occurred_at"] == datetime(2026, 12, 1, 11, 59, 58, tzinfo=UTC)  # skew
    assert out.values["event_id"] == event_id(key, "m-1")  # a retry is the same event
    assert out.values["action"] == "click" and out.values["dwell_time_s"] == 0.0
    assert set(out.values) == {
        "event_id", "user_id", "occurred_at", "app_id", "action", "item_id", "item_category",
        "dwell_time_s",
    }  # fmt: skip
    assert "a@b.c" not in repr(out.values) and "203.0.113.9" not in repr(out.values)
    InteractionEvent(**out.values)  # valid


def test_identify_is_dropped_and_unmapped_or_anonymous_less_calls_are_rejected(mapping) -> None:
    key = mapping.write_keys[0]
    assert convert({"traits": {"email": "x"}}, "identify", key, mapping, None, NOW) is None
    unmapped = convert({"event": "Nope", "userId": "u"}, "track", key, mapping, None, NOW)
    assert isinstance(unmapped, Rejected) and unmapped.reason is Reason.EVENT_UNMAPPED
    assert "Nope" not in unmapped.detail
    nobody = convert({"event": "Product Clicked"}, "track", key, mapping, None, NOW)
    assert isinstance(nobody, Rejected) and nobody.field == "user_id"
    page = convert(
        {"anonymousId": "a-1", "properties": {"path": "/x"}}, "page", key, mapping, None, NOW
    )
    assert isinstance(page, Converted) and page.values["user_id"] == "a-1"
    assert page.values["item_id"] == "/x" and page.values["occurred_at"] == NOW


def test_event_ids_differ_by_write_key_and_message_id() -> None:
    a, b = (WriteKey(name=n, key="k", app_id="x") for n in ("a", "b"))
    assert event_id(a, "m") == event_id(a, "m") != event_id(b, "m") != event_id(a, "n")
    assert event_id(a, None) != event_id(a, None)  # no message id: a new event each time


def test_limits_refuse_deep_json_and_keep_a_rate() -> None:
    with pytest.raises(HttpError) as caught:
        parse_json(b"[" * 50_000 + b"]" * 50_000)
    assert (caught.value.status, caught.value.code) == (400, "too_deep")
    with pytest.raises(HttpError) as caught:
        parse_json(b'{"a": "\xff"}')
    assert caught.value.code == "bad_encoding"
    bucket = Bucket(rate=100)
    assert bucket.take(200) == 0  # the burst: twice the rate
    assert bucket.take(50) == pytest.approx(0.5, abs=0.05)  # half a second until 50 more
