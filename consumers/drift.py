"""``DriftSubscriber``: how a retraining job receives typed drift events.

Examples:
    >>> sub = DriftSubscriber(group_id="retrainer")   # no network call until iteration
    >>> sub.close()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError
from pydantic import ValidationError

from schemas.events import DriftEvent
from streams.settings import KafkaSettings
from streams.topics import Topics

log = logging.getLogger("eddyline.drift")


class DriftSubscriber:
    """Iterate drift events from ``signals.drift`` in its own consumer group.

    Args:
        group_id: the consumer group; each retraining job uses its own.
        kafka: where Kafka is; default from ``EDDYLINE_*`` variables.
        from_beginning: start at the oldest drift event when the group is new.
    """

    def __init__(
        self, *, group_id: str, kafka: KafkaSettings | None = None, from_beginning: bool = True
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.group_id = group_id
        self.topic = Topics(self.kafka.namespace).drift
        self._reset = "earliest" if from_beginning else "latest"
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                self.kafka.librdkafka(
                    {
                        "group.id": self.group_id,
                        "auto.offset.reset": self._reset,
                        "enable.auto.commit": False,
                    }
                )
            )
            self._consumer.subscribe([self.topic])
        return self._consumer

    def poll(self, timeout: float = 1.0) -> DriftEvent | None:
        """The next drift event within ``timeout`` seconds, or None. Commits what it returns;
        a malformed message is logged and skipped."""
        deadline = time.monotonic() + timeout
        consumer = self._client()
        while (left := deadline - time.monotonic()) > 0:
            msg = consumer.poll(left)
            if msg is None:
                return None
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("drift topic error: %s", error)
                continue
            consumer.commit(message=msg, asynchronous=False)
            try:
                return DriftEvent.model_validate_json(msg.value() or b"")
            except ValidationError:
                log.error("skipped a malformed drift event at offset %s", msg.offset())
        return None

    def __iter__(self) -> Iterator[DriftEvent]:
        while True:
            event = self.poll(1.0)
            if event is not None:
                yield event

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> DriftSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
