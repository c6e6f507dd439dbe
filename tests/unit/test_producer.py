"""SDK behaviour that needs no broker (delivery is tested in tests/integration)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from schemas.errors import BrokerError, EventValidationError, ProducerClosedError
from schemas.events import InteractionEvent
from streams.broker import free_port
from streams.producer import EventProducer
from streams.settings import KafkaSettings


def _dead_port() -> int:
    return free_port()  # nothing listens there


def test_constructing_a_producer_makes_no_network_call() -> None:
    p = EventProducer(kafka=KafkaSettings(bootstrap="127.0.0.1:1"), registry=CollectorRegistry())
    assert p._producer is None
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
    from streams.settings import ProducerSettings

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
    root = p._spool_root()
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

    from streams.spool import SpoolFullError

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
