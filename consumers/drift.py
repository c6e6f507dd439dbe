"""``DriftSubscriber``: how a retraining job receives typed drift events.

Two ways to use it: iterate (``poll`` / ``for event in sub``: commits what it returns), or
hand it a handler (``run``): the offset is committed only after the handler returned, a
failing handler is retried with exponential backoff, a handler that keeps failing sends the
event to ``signals.drift.deadletter`` with the error (and the subscriber moves on), and an
event whose idempotency key was already handled (a redelivery, a duplicate) is skipped.

Examples:
    >>> sub = DriftSubscriber(group_id="retrainer", models={"click"})  # no network call yet
    >>> sub.close()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from pydantic import ValidationError

from eddyline.schemas.events import DriftEvent
from eddyline.streams.kafka.clients import ClientErrors, metadata
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics

log = logging.getLogger("eddyline.drift")


class HandledKeys:
    """Idempotency keys of drift events already handled, kept in a JSON-lines file so a
    restarted job remembers them. ``None`` path: in memory only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._keys: set[str] = set()
        if path is not None and path.exists():
            self._keys = {line.strip() for line in path.read_text().splitlines() if line.strip()}

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys.add(key)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(key + "\n")
                f.flush()


class DriftSubscriber:
    """Drift events from ``signals.drift`` in its own consumer group, filtered.

    Args:
        group_id: the consumer group; each retraining job uses its own.
        kafka: where Kafka is; default from ``EDDYLINE_*`` variables.
        from_beginning: start at the oldest drift event when the group is new.
        models, signals: only events of these models / signals (None: all).
        min_severity: only events at least this severe.
        handled: the idempotency keys already handled (``run`` adds to it).
    """

    def __init__(
        self,
        *,
        group_id: str,
        kafka: KafkaSettings | None = None,
        from_beginning: bool = True,
        models: set[str] | None = None,
        signals: set[str] | None = None,
        min_severity: float = 0.0,
        handled: HandledKeys | None = None,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.group_id = group_id
        self.topics = Topics(self.kafka.namespace)
        self.topic = self.topics.drift
        self.models, self.signals, self.min_severity = models, signals, min_severity
        self.handled = handled or HandledKeys()
        self._reset = "earliest" if from_beginning else "latest"
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._errors = ClientErrors()

    def _client(self) -> Consumer:
        if self._consumer is None:
            consumer = Consumer(
                self.kafka.librdkafka(
                    {
                        "group.id": self.group_id,
                        "auto.offset.reset": self._reset,
                        "enable.auto.commit": False,
                        "error_cb": self._errors,
                    }
                )
            )
            # Kafka answers, and takes our credentials, before we wait on it: a wrong
            # password or CA is one clear error now, not silence.
            metadata(consumer, self._errors, self.kafka.bootstrap, 30.0, self.topic)
            consumer.subscribe([self.topic])
            self._consumer = consumer
        return self._consumer

    def wanted(self, event: DriftEvent) -> bool:
        """Whether ``event`` passes the filters."""
        return (
            (self.models is None or event.model in self.models)
            and (self.signals is None or event.signal in self.signals)
            and event.severity >= self.min_severity
        )

    def _next(self, timeout: float) -> tuple[Any, DriftEvent] | None:
        """The next wanted event (and its message), uncommitted; unwanted and malformed
        messages are committed and skipped."""
        deadline = time.monotonic() + timeout
        consumer = self._client()
        while (left := deadline - time.monotonic()) > 0:
            msg = consumer.poll(left)
            self._errors.raise_if_fatal(self.kafka.bootstrap)
            if msg is None:
                return None
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("drift topic error: %s", error)
                continue
            try:
                event = DriftEvent.model_validate_json(msg.value() or b"")
            except ValidationError:
                log.error("skipped a malformed drift event at offset %s", msg.offset())
                consumer.commit(message=msg, asynchronous=False)
                continue
            if not self.wanted(event):
                consumer.commit(message=msg, asynchronous=False)
                continue
            return msg, event
        return None

    def poll(self, timeout: float = 1.0) -> DriftEvent | None:
        """The next wanted drift event within ``timeout`` seconds, or None. Commits what it
        returns (use ``run`` to commit only after handling)."""
        found = self._next(timeout)
        if found is None:
            return None
        msg, event = found
        self._client().commit(message=msg, asynchronous=False)
        return event

    def __iter__(self) -> Iterator[DriftEvent]:
        while True:
            event = self.poll(1.0)
            if event is not None:
                yield event

    def run(
        self,
        handler: Callable[[DriftEvent], object],
        *,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        stop: threading.Event | None = None,
        idle_timeout_s: float | None = None,
    ) -> int:
        """Handle drift events until ``stop`` is set (or nothing arrives for
        ``idle_timeout_s``); how many the handler completed.

        Each event's offset is committed only once its handler returned (or it was
        dead-lettered after ``retries`` failed attempts): a crash mid-handler redelivers
        it. Events whose idempotency key is in ``handled`` are skipped."""
        stop = stop or threading.Event()  # never set: run until idle (or forever)
        done = 0
        idle_since = time.monotonic()
        while not stop.is_set():
            found = self._next(1.0)
            if found is None:
                if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                    break
                continue
            idle_since = time.monotonic()
            msg, event = found
            if event.idempotency_key in self.handled:
                log.info("drift %s already handled: skipped", event.idempotency_key)
            else:
                delay = backoff_s
                for attempt in range(1, retries + 2):
                    try:
                        handler(event)
                    except Exception as exc:
                        if attempt > retries:
                            self._dead_letter(event, exc, attempt)
                            break
                        log.warning(
                            "drift handler failed (attempt %d of %d): %s; retrying in %.1fs",
                            attempt,
                            retries + 1,
                            exc,
                            delay,
                        )
                        if stop.wait(delay):
                            return done
                        delay = min(delay * 2, max_backoff_s)
                    else:
                        self.handled.add(event.idempotency_key)
                        done += 1
                        break
            self._client().commit(message=msg, asynchronous=False)
        return done

    def _dead_letter(self, event: DriftEvent, exc: Exception, attempts: int) -> None:
        log.error(
            "drift handler gave up on %s after %d attempts: %s", event.drift_id, attempts, exc
        )
        if self._producer is None:
            self._producer = Producer(self.kafka.librdkafka({"enable.idempotence": True}))
        value = json.dumps(
            {
                "event": json.loads(event.model_dump_json()),
                "error": f"{type(exc).__name__}: {exc}"[:1000],
                "attempts": attempts,
                "group": self.group_id,
            }
        )
        self._producer.produce(self.topics.drift_deadletter, value.encode())
        self._producer.flush(30)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None

    def __enter__(self) -> DriftSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
