"""Reaching Kafka, or saying in one line why not.

librdkafka retries a broker it cannot reach, or that refuses its credentials or its TLS
handshake, forever, logging each attempt. ``ClientErrors`` (a client's ``error_cb``) keeps
the first error a retry cannot fix; ``metadata`` waits for the cluster's metadata in short
steps (so Ctrl-C is honoured at once) and raises :class:`BrokerError` as soon as such an
error shows, with what to check, instead of waiting out its timeout.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from eddyline.schemas.errors import BrokerError

_HINTS = {
    KafkaError._AUTHENTICATION: (
        "authentication failed: check EDDYLINE_SASL_USERNAME, EDDYLINE_SASL_PASSWORD and "
        "EDDYLINE_SASL_MECHANISM"
    ),
    KafkaError._SSL: (
        "the TLS handshake failed: is the broker's certificate signed by the CA in "
        "EDDYLINE_SSL_CA_LOCATION, and is EDDYLINE_SECURITY_PROTOCOL right?"
    ),
}


class ClientErrors:
    """A librdkafka ``error_cb`` that keeps the first error no retry can fix."""

    def __init__(self) -> None:
        self.fatal: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        if self.fatal is None and (err.code() in _HINTS or err.fatal()):
            self.fatal = err

    def raise_if_fatal(self, bootstrap: str) -> None:
        if self.fatal is not None:
            raise BrokerError(explain(self.fatal, bootstrap))


#: delivery errors that may pass: the SDK spools the envelope and sends it again later
RETRY_LATER = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._TIMED_OUT,
}


def is_fatal(err: KafkaError) -> bool:
    """Whether ``err`` leaves a librdkafka producer unusable (only a new one can send)."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def explain(err: KafkaError, bootstrap: str) -> str:
    """One line: what went wrong reaching Kafka, and what to check."""
    hint = _HINTS.get(err.code(), err.str())
    return f"Kafka at {bootstrap}: {hint}"


def metadata(
    client: Any, errors: ClientErrors, bootstrap: str, timeout: float, topic: str | None = None
) -> Any:
    """The cluster's (or ``topic``'s) metadata; :class:`BrokerError` as soon as ``errors``
    holds an error a retry cannot fix, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        step = max(0.1, min(1.0, deadline - time.monotonic()))
        try:
            return client.list_topics(topic, timeout=step)
        except KafkaException as exc:
            client.poll(0)  # serves the error callback (and the log lines)
            errors.raise_if_fatal(bootstrap)
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"cannot reach Kafka at {bootstrap} within {timeout:.0f}s ({exc}); is it "
                    "running, and is EDDYLINE_BOOTSTRAP right?"
                ) from exc


def take_back(producer: Any, timeout: float) -> None:
    """Purge what librdkafka still holds and serve the purged envelopes' reports, so that
    each is spooled (the SDK's delivery reports: a purge is a retry-later error)."""
    producer.purge(in_queue=True, in_flight=True)
    deadline = time.monotonic() + timeout
    while len(producer) and time.monotonic() < deadline:
        producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
