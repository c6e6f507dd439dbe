"""SDK behaviour that needs no broker (delivery is tested in tests/integration)."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

from schemas.errors import BrokerError, EventValidationError, ProducerClosedError
from schemas.events import InteractionEvent
from streams.producer import EventProducer
from streams.settings import KafkaSettings


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        p.emit(
            InteractionEvent(
                user_id="u",
                app_id="a",
                item_id="i",
                item_category="n",
                action="view",
                dwell_time_s=0.0,
            )
        )


def test_an_unreachable_broker_is_a_clear_error_not_a_hang() -> None:
    kafka = KafkaSettings(
        bootstrap=f"127.0.0.1:{_dead_port()}",
        extra_config={"socket.connection.setup.timeout.ms": 1000},
    )
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as p, pytest.raises(BrokerError):
        p.emit(
            InteractionEvent(
                user_id="u",
                app_id="a",
                item_id="i",
                item_category="n",
                action="view",
                dwell_time_s=0.0,
            )
        )


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
