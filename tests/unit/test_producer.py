"""SDK behaviour that needs no broker (delivery is tested in tests/integration)."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from eddyline.schemas.errors import BrokerError, EventValidationError, ProducerClosedError
from eddyline.schemas.events import InteractionEvent
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.sdk.producer import EventProducer


def _dead_port() -> int:
    return free_port()  # nothing listens there


def test_constructing_a_producer_makes_no_network_call() -> None:
    p = EventProducer(kafka=KafkaSettings(bootstrap="127.0.0.1:1"), registry=CollectorRegistry())
    assert p._delivery._producer is None
    p.close()


def test_a_dict_is_validated_and_the_error_names_the_field() -> None:
    with EventProducer(registry=CollectorRegistry()) as p, pytest.raises(EventValidationError) as e:
        p.emit(
            {
                "user_id": "u",
                "app_id": "a",
                "item_id": "i",
                "item_category": "news",
                "action": "teleport",
                "dwell_time_s": 1.0,
            },
            schema=InteractionEvent,
        )
    assert e.value.field == "action" and "action" in str(e.value)


def test_emit_refuses_what_is_not_an_event() -> None:
    with (
        EventProducer(registry=CollectorRegistry()) as p,
        pytest.raises(TypeError, match="event model"),
    ):
        p.emit({"user_id": "u"})  # type: ignore[arg-type]


def test_emit_after_close_raises() -> None:
    p = EventProducer(registry=CollectorRegistry())
    p.close()
    with pytest.raises(ProducerClosedError):
        p.emit(_event(0))


def test_an_unreachable_broker_is_a_clear_error_not_a_hang() -> None:
    kafka = KafkaSettings(
        bootstrap=f"127.0.0.1:{_dead_port()}",
        extra_config={"socket.connection.setup.timeout.ms": 1000},
    )
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as p, pytest.raises(BrokerError):
        p.emit(_event(0))


def test_security_settings_reach_librdkafka_and_secrets_stay_hidden() -> None:
    from pydantic import SecretStr

    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="app",
        sasl_password=SecretStr("hunter2-secret"),
        extra_config={"client.id": "shop", "acks": "1"},
    )
    conf = kafka.librdkafka({"acks": "all"})
    assert conf["sasl.password"] == "hunter2-secret" and conf["security.protocol"] == "SASL_SSL"
    assert conf["acks"] == "1"  # extra_config is applied last
    assert "hunter2-secret" not in repr(kafka) and "hunter2-secret" not in str(kafka.model_dump())
    assert kafka.extra_config == {"client.id": "shop", "acks": "1"}  # never mutated


def _offline_producer(tmp_path, **settings) -> EventProducer:
    """A producer whose broker is gone but whose spool folder knows the partition count."""
    from eddyline.streams.kafka.settings import ProducerSettings

    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{_dead_port()}")
    # Short timeouts, small envelopes, a 64 KiB spool: it fills within seconds.
    base = {
        "delivery_timeout_ms": 1_000,
        "batch_max_events": 100,
        "linger_ms": 10,
        "spool_max_bytes": 1 << 16,
    }
    p = EventProducer(
        ProducerSettings(spool_dir=tmp_path, **{**base, **settings}),
        kafka=kafka,
        registry=CollectorRegistry(),
    )
    root = p._delivery.spool_root()
    root.mkdir(parents=True)
    (root / "partitions.json").write_text('{"events.interaction": 3}')
    return p


def _event(i: int) -> InteractionEvent:
    return InteractionEvent(
        user_id=f"u{i % 7}",
        app_id="a",
        item_id="i",
        item_category="n",
        action="view",
        dwell_time_s=1.0,
    )


def _emit_until_full(p: EventProducer) -> tuple[int, float]:
    """Emit until the spool refuses; (events accepted, seconds the refusing emit took)."""
    import time

    from eddyline.streams.sdk.spool import SpoolFullError

    accepted = 0
    with pytest.raises(SpoolFullError) as info:
        for i in range(100_000):
            started = time.monotonic()
            p.emit(_event(i))
            accepted += 1
            if i % 100 == 0:
                p.flush(0.05)  # let the delivery timeouts fire and the envelopes spool
    assert info.value.retry_after > 0
    return accepted, time.monotonic() - started


def test_with_kafka_gone_events_are_spooled_and_a_full_spool_refuses_new_ones(tmp_path) -> None:
    p = _offline_producer(tmp_path, on_full="raise")
    accepted, _ = _emit_until_full(p)
    assert p.spooled > 0 and p.failed == 0  # nothing accepted was dropped
    p.close(0.1)
    assert p.spooled + sum(b.count for b in p._buffers.values()) <= accepted


def test_block_policy_waits_then_raises(tmp_path) -> None:
    p = _offline_producer(tmp_path, block_timeout_s=0.5)
    _, waited = _emit_until_full(p)
    assert waited >= 0.5  # it waited for room before refusing
    p.close(0.1)


def _columns(n: int = 4, **change: object) -> dict[str, list]:
    cols: dict[str, list] = {
        "user_id": [f"u{i}" for i in range(n)],
        "app_id": ["shop"] * n,
        "item_id": [f"sku-{i}" for i in range(n)],
        "item_category": ["news"] * n,
        "action": ["click"] * n,
        "dwell_time_s": [1.5] * n,
    }
    cols.update(change)  # type: ignore[arg-type]
    return cols


@pytest.mark.parametrize(
    ("change", "field", "reason", "words"),
    [
        ({"dwell_time_s": [1.0, -2.0, 3.0, -1.0]}, "dwell_time_s", "below_minimum", "2 row(s)"),
        ({"action": ["click", "buy", "view", "view"]}, "action", "not_allowed", "first [1]"),
        ({"colour": ["red"] * 4}, None, "columns", "unknown columns ['colour']"),
        ({"item_id": None}, None, "columns", "column 'item_id' is missing"),
        ({"position": ["1", "2", "x", "4"]}, "position", "wrong_type", "string is not int64"),
    ],
)
def test_emit_many_refuses_a_bad_batch_whole_naming_field_and_rows(
    change, field, reason, words
) -> None:
    cols = _columns(**{k: v for k, v in change.items() if v is not None})
    if change.get("item_id", 0) is None:
        del cols["item_id"]
    with EventProducer(registry=CollectorRegistry()) as p:
        with pytest.raises(EventValidationError) as err:
            p.emit_many(InteractionEvent, cols)
        assert (err.value.field, err.value.reason) == (field, reason)
        assert words in str(err.value)
        assert not p._buffers  # nothing of the batch was accepted


def test_emit_many_needs_time_zones_and_runs_custom_validators() -> None:
    import pyarrow as pa
    from pydantic import field_validator

    from eddyline.schemas.events import BaseEvent, FeedbackEvent
    from eddyline.schemas.registry import SchemaRegistry

    naive = pa.array([0, 0, 0, 0], pa.timestamp("us"))
    with EventProducer(registry=CollectorRegistry()) as p:
        with pytest.raises(EventValidationError, match="timestamps need a time zone"):
            p.emit_many(InteractionEvent, {**_columns(), "occurred_at": naive})
        # the feedback rule (a rating or a label) is checked column-wise ...
        neither = {"user_id": ["u"], "app_id": ["a"], "item_id": ["i"]}
        with pytest.raises(EventValidationError) as err:
            p.emit_many(FeedbackEvent, neither)
        assert err.value.reason == "rating_or_label_required"

        # ... and an app's own validator runs row by row through pydantic
        class Rated(BaseEvent):
            event_name = "rated_test"
            event_registry = SchemaRegistry()
            score: int

            @field_validator("score")
            @classmethod
            def _even(cls, v: int) -> int:
                if v % 2:
                    raise ValueError("score must be even")
                return v

        with pytest.raises(EventValidationError, match=r"score must be even \(row 1\)"):
            p.emit_many(Rated, {"user_id": ["a", "b"], "app_id": ["x", "x"], "score": [2, 3]})
        assert not p._buffers


def test_emit_many_fills_defaults_one_new_id_per_row() -> None:
    import pyarrow as pa

    from eddyline.streams.sdk.columns import checked as _checked
    from eddyline.streams.sdk.columns import with_defaults as _with_defaults

    table = _checked(InteractionEvent, _with_defaults(InteractionEvent, pa.table(_columns(500))))
    ids = table["event_id"].to_pylist()
    assert len(set(ids)) == 500 and all(len(i) == 36 for i in ids)
    assert table["position"].to_pylist() == [0] * 500  # the model's default
    assert table["consent_store"].to_pylist() == [True] * 500
    assert table["occurred_at"].null_count == 0


def test_buffered_events_become_the_columns_of_their_fields_ids_included() -> None:
    """emit keeps each event as a row of its values (ids as ints) and builds the columns at
    send time: they must equal the events' fields, for an app's model with an optional id
    of its own too (an id given as None is a null, not an error at send time)."""
    from uuid import UUID, uuid4

    from eddyline.schemas.events import BaseEvent
    from eddyline.schemas.registry import SchemaRegistry
    from eddyline.streams.kafka.topics import Topics
    from eddyline.streams.sdk.columns import Buffer as _Buffer
    from eddyline.streams.sdk.columns import plan_for as _plan_for

    class Reply(BaseEvent):
        event_name = "reply_test"
        event_registry = SchemaRegistry()
        parent_id: UUID | None = None
        text_len: int

    for model, events in [
        (
            InteractionEvent,
            [
                InteractionEvent(
                    user_id=f"u{i}",
                    app_id="shop",
                    item_id=f"sku-{i}",
                    item_category="news",
                    action="view",
                    dwell_time_s=i / 2,
                )
                for i in range(5)
            ],
        ),
        (
            Reply,
            [
                Reply(user_id="u", app_id="a", parent_id=p, text_len=i)
                for i, p in enumerate([uuid4(), None, uuid4()])
            ],
        ),
    ]:
        buf = _Buffer(_plan_for(model, Topics("t")), partition=0)
        for e in events:
            buf.rows.append(buf.plan.row(e.__dict__))
        table = buf.table()
        assert table.schema == buf.plan.schema
        expected = [
            {k: str(v) if isinstance(v, UUID) else v for k, v in e.model_dump().items()}
            for e in events
        ]
        assert table.to_pylist() == expected


def test_envelopes_larger_than_kafka_allows_are_refused_when_the_producer_is_made() -> None:
    from eddyline.streams.kafka.settings import ProducerSettings

    with pytest.raises(ValueError, match=r"batch_max_bytes 1,400,000 .* message.max.bytes"):
        EventProducer(ProducerSettings(batch_max_bytes=1_400_000), registry=CollectorRegistry())
    raised = KafkaSettings(extra_config={"message.max.bytes": 2_000_000})
    EventProducer(
        ProducerSettings(batch_max_bytes=1_400_000), kafka=raised, registry=CollectorRegistry()
    ).close(0.1)


class _RefusingClient:
    """A librdkafka producer stand-in whose ``produce`` raises, as librdkafka does for an
    unknown partition or after a fatal idempotence error."""

    def __init__(self) -> None:
        from confluent_kafka import KafkaError, KafkaException

        self.error = KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        self.calls = 0

    def produce(self, *args: object, **kwargs: object) -> None:
        self.calls += 1
        raise self.error

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def list_topics(self, *args: object, **kwargs: object) -> None:
        return None

    def purge(self, **kwargs: object) -> None:
        return None


def test_an_envelope_kafka_will_not_take_is_spooled_not_lost(tmp_path) -> None:
    """``produce`` raising (not BufferError) once lost the buffer it was sending: the
    accepted events vanished, the exception reached ``emit``'s caller, and in the
    linger thread it killed the thread that sends every lingering buffer."""
    p = _offline_producer(tmp_path, batch_max_events=50, linger_ms=20)
    p._delivery.client()
    fake = p._delivery._producer = _RefusingClient()  # type: ignore[assignment]
    p._delivery._offline = False
    for i in range(120):  # two envelopes by count from emit, the rest by linger
        p.emit(_event(i))
    deadline = time.monotonic() + 5
    while p.spooled < 120 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.spooled == 120 and p.failed == 0  # every accepted event is kept on disk
    assert p._delivery._thread is not None and p._delivery._thread.is_alive()
    tries, envelopes = fake.calls, len(p._delivery._spool or [])
    time.sleep(1.2)  # the drain retries from the spool, and keeps them there
    assert fake.calls > tries and len(p._delivery._spool or []) == envelopes >= 3
    p.close(0.2)


def test_events_outside_the_accepted_time_window_are_refused_at_the_call() -> None:
    from datetime import UTC, datetime, timedelta

    from pydantic import ValidationError

    long_ago = datetime.now(UTC) - timedelta(days=400)
    with pytest.raises(ValidationError, match="older than the accepted 365 days"):
        InteractionEvent(**{**_one_dict(), "occurred_at": long_ago})
    with EventProducer(registry=CollectorRegistry()) as p:
        with pytest.raises(EventValidationError) as err:
            p.emit_many(InteractionEvent, {**_columns(), "occurred_at": [long_ago] * 4})
        assert (err.value.field, err.value.reason) == ("occurred_at", "too_old")
        with pytest.raises(EventValidationError, match="years 1-9999"):
            bad = {**_one_dict(), "occurred_at": "9999-12-31T23:59:59-23:59"}
            p.emit(bad, schema=InteractionEvent)


def _one_dict() -> dict[str, object]:
    return {k: v[0] for k, v in _columns(1).items()}
