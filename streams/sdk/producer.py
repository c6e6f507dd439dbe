"""The producer SDK: typed ``emit``, per-partition columnar batches, Arrow envelopes.

``emit`` takes a validated event model (pydantic validated it when it was built) or a dict
plus its model, which is validated here; either way a bad event raises at the call, naming
the field. ``emit_many`` takes a whole batch of one event type as columns (an Arrow table,
a polars or pandas frame, a dict of lists) and validates it column by column with the rules
the worker uses (``schemas.arrow.validate_table``): all rows or none. Accepted events are
buffered per (topic, partition) as columns (``streams.sdk.columns``); each buffer goes to
Kafka as one Arrow envelope when it reaches ``batch_max_events`` or ``batch_max_bytes``,
when it is older than ``linger_ms``, or on ``flush``/``close``/interpreter exit.

Nothing accepted is lost (``streams.sdk.delivery``): an envelope Kafka does not acknowledge
within ``delivery_timeout_ms`` goes to the durable on-disk spool, and so does every later
envelope for the same partition, so per-user order holds; a background thread sends the
spool, oldest first, once Kafka answers again; a process restarted on the same spool folder
sends what its predecessor left.

Examples:
    >>> producer = EventProducer()          # no network call until the first emit
    >>> producer.close()
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from eddyline.schemas.errors import ProducerClosedError, SchemaError
from eddyline.schemas.events import BaseEvent
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.sdk.columns import (
    Buffer,
    Plan,
    checked,
    encode_split,
    plan_for,
    to_table,
    validation_error,
    with_defaults,
)
from eddyline.streams.sdk.delivery import Delivery
from eddyline.streams.sdk.metrics import ProducerMetrics
from eddyline.streams.sdk.outgoing import DeliveryReport, Outgoing
from eddyline.streams.sdk.partitioner import partition_for

_EMPTY: dict[str, int] = {}
_LIBRDKAFKA_MESSAGE_MAX = 1_000_000  # librdkafka's default message.max.bytes
_HEADERS_ROOM = 4_096  # an envelope's headers and Kafka's record overhead, generously


class EventProducer:
    """Sends events to Kafka in batched Arrow envelopes. Thread-safe; a context manager.

    Args:
        settings: batching, delivery and spool settings; default from ``EDDYLINE_*``.
        kafka: where Kafka is; default from ``EDDYLINE_*`` variables.
        registry: the Prometheus registry for the SDK metrics; default the global one.
        on_delivery: called (from a background thread) with a :class:`DeliveryReport`
            for every envelope acknowledged, spooled, or refused.
    """

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        kafka: KafkaSettings | None = None,
        registry: CollectorRegistry | None = None,
        on_delivery: Callable[[DeliveryReport], None] | None = None,
    ) -> None:
        self.settings = settings or ProducerSettings()
        self.kafka = kafka or KafkaSettings()
        _check_envelope_fits(self.settings, self.kafka)
        self._topics = Topics(self.kafka.namespace)
        self._metrics = ProducerMetrics.on(registry)
        self._lock = threading.RLock()
        self._delivery = Delivery(
            self.settings,
            self.kafka,
            self._metrics,
            self._lock,
            on_tick=self._send_lingering,
            on_delivery=on_delivery,
        )
        self._plans: dict[type[BaseEvent], Plan] = {}
        self._part_cache: dict[str, dict[str, int]] = {}
        self._max_events = self.settings.batch_max_events
        self._max_bytes = self.settings.batch_max_bytes
        self._linger_s = self.settings.linger_ms / 1000
        self._buffers: dict[tuple[str, int], Buffer] = {}
        self._avg_event_bytes = 0.0
        self._closed = False
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def connected(self) -> bool:
        """Whether the Kafka client (and the spool) were opened: at the first emit."""
        return self._delivery.started

    @property
    def delivered(self) -> int:
        """Events Kafka acknowledged."""
        return self._delivery.delivered

    @property
    def spooled(self) -> int:
        """Events that went to the spool (Kafka away, slow or refusing for now)."""
        return self._delivery.spooled

    @property
    def failed(self) -> int:
        """Events Kafka refused for good (too large, not authorised), or a full disk."""
        return self._delivery.failed

    # -- public surface -------------------------------------------------------------------

    def emit(
        self, event: BaseEvent | Mapping[str, Any], *, schema: type[BaseEvent] | None = None
    ) -> None:
        """Accept one event for delivery, or raise at once.

        Args:
            event: an event model instance, or a dict of its fields with ``schema`` set.
            schema: the model to validate a dict against.

        Raises:
            EventValidationError: the dict breaks the schema (``.field``, ``.reason``).
            SpoolFullError: Kafka is unreachable and the spool is full (after waiting
                ``block_timeout_s`` when ``on_full="block"``).
            ProducerClosedError: after ``close``.
        """
        event = self._as_event(event, schema)
        plan = self._plans.get(type(event)) or self._plan(type(event))
        with self._lock:
            self._admit()
            # the hot path: a dict hit per event; _partition only runs for a new user
            partition = self._part_cache.get(plan.topic, _EMPTY).get(event.user_id)
            if partition is None:
                partition = self._partition(plan.topic, event.user_id)
            buf = self._buffers.get((plan.topic, partition))
            if buf is None:
                buf = self._buffers[(plan.topic, partition)] = Buffer(plan, partition)
            buf.rows.append(plan.row(event.__dict__))  # columns are built at send time
            count = len(buf.rows) + buf.chunk_rows
            if count >= self._max_events or count * self._avg_event_bytes >= self._max_bytes:
                self._send(buf)

    def emit_many(self, schema: type[BaseEvent], rows: Any) -> int:
        """Accept a batch of ``schema`` events given as columns; all of them, or none.

        Args:
            schema: the event model every row follows.
            rows: a ``pyarrow.Table``, a polars or pandas ``DataFrame``, or a dict of
                equal-length columns. Columns may be left out where the model has a default
                (``event_id``: a new id per row; ``occurred_at``: now; consents: true);
                timestamps must carry a time zone, as in ``emit``.

        Returns:
            How many events were accepted.

        Raises:
            EventValidationError: a column is missing, unknown or of the wrong type, or
                rows break the schema (``.field``, ``.reason``; the message counts the rows
                and names the first few): nothing of the batch is accepted.
            SpoolFullError, ProducerClosedError: as for ``emit``.
        """
        table = to_table(rows)
        if table.num_rows == 0:
            return 0
        plan = self._plans.get(schema) or self._plan(schema)
        table = checked(schema, with_defaults(schema, table))
        with self._lock:
            self._admit()
            parts = self._partitions_of(plan.topic, table["user_id"])
            order = np.argsort(parts, kind="stable")  # keeps each user's rows in order
            grouped, start = table.take(pa.array(order)), 0
            for partition, count in enumerate(np.bincount(parts).tolist()):
                if count:
                    self._add_chunk(plan, partition, grouped.slice(start, count))
                    start += count
        accepted: int = table.num_rows
        return accepted

    def _add_chunk(self, plan: Plan, partition: int, chunk: pa.Table) -> None:
        """Buffer ``chunk`` for one partition, sending whole envelopes as they fill."""
        while chunk.num_rows:
            buf = self._buffers.get((plan.topic, partition))
            if buf is None:
                buf = self._buffers[(plan.topic, partition)] = Buffer(plan, partition)
            room = self._max_events - buf.count
            if self._avg_event_bytes:
                room = min(room, int(self._max_bytes / self._avg_event_bytes) - buf.count)
            room = max(room, 1)
            buf.add(chunk.slice(0, room))
            chunk = chunk.slice(room)
            count = buf.count
            if count >= self._max_events or count * self._avg_event_bytes >= self._max_bytes:
                self._send(buf)

    def _partitions_of(self, topic: str, users: pa.ChunkedArray) -> np.ndarray:
        """The murmur2 partition of each row's user: one hash per distinct new user."""
        encoded = pc.dictionary_encode(users).combine_chunks()
        cache = self._part_cache.get(topic, _EMPTY)
        distinct = [
            cache.get(u) if u in cache else self._partition(topic, u)
            for u in encoded.dictionary.to_pylist()
        ]
        parts: np.ndarray = np.asarray(distinct, dtype=np.int64)[encoded.indices.to_numpy()]
        return parts

    def flush(self, timeout: float = 30.0) -> int:
        """Send every buffered and spooled event; return how many envelopes are still pending
        (0: all acknowledged). Pending envelopes stay safe in the spool."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._delivery.client()  # opens the spool: a new process sends what a dead one left
            for buf in list(self._buffers.values()):
                self._send(buf)
        return self._delivery.wait(deadline)

    def seal(self) -> int:
        """Send every buffered event now (without waiting) and return a mark for
        ``wait_durable``: what a server answers "accepted" on once it is durable."""
        with self._lock:
            for buf in list(self._buffers.values()):
                self._send(buf)
            return self._delivery.durable.sequence

    def wait_durable(self, mark: int, timeout: float = 30.0) -> bool:
        """Wait until every event sealed before ``mark`` (``seal``) is acknowledged by Kafka
        or written to the spool; False if ``timeout`` passed first."""
        return self._delivery.durable.wait(mark, time.monotonic() + timeout)

    def when_durable(self, mark: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every event sealed before ``mark`` is acknowledged by
        Kafka or written to the spool (``wait_durable`` without a waiting thread; it runs
        on the producer's reporting thread, or at once if they already are)."""
        self._delivery.durable.when(mark, callback)

    def pending(self) -> int:
        """Envelopes not yet acknowledged: in flight, or waiting in the spool."""
        return self._delivery.pending()

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop. What Kafka has not acknowledged by ``timeout`` stays in the spool
        for the next producer on the same spool folder. Idempotent."""
        if self._closed:
            return
        if self._delivery.started:  # never used: nothing to send, no reason to connect
            self.flush(timeout)
        with self._lock:
            self._closed = True
        self._delivery.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accepting events -----------------------------------------------------------------

    def _as_event(
        self, event: BaseEvent | Mapping[str, Any], schema: type[BaseEvent] | None
    ) -> BaseEvent:
        if isinstance(event, BaseEvent):
            return event
        if schema is None or not isinstance(event, Mapping):
            raise TypeError(
                "emit takes an event model (e.g. InteractionEvent(...)) or a dict with schema="
            )
        try:
            return schema.model_validate(event)
        except ValidationError as exc:
            raise validation_error(exc, schema) from None

    def _plan(self, model: type[BaseEvent]) -> Plan:
        if not model.event_name:
            raise SchemaError(f"{model.__name__} has no event_name: it cannot be emitted")
        plan = plan_for(model, self._topics)
        self._plans[model] = plan
        return plan

    def _admit(self) -> None:
        """Before accepting events (the caller holds the lock): refuse after ``close``; wait
        or refuse while the spool is nearly full."""
        if self._closed:
            raise ProducerClosedError("emit after close: create a new EventProducer")
        self._delivery.admit()

    def _partition(self, topic: str, user_id: str) -> int:
        """murmur2 partition of a user not in the cache (the cache is bounded per topic)."""
        count = self._delivery.partition_count(topic)
        cache = self._part_cache.setdefault(topic, {})
        if len(cache) > 100_000:  # bound memory for apps with many users
            cache.clear()
        part = cache[user_id] = partition_for(user_id.encode(), count)
        return part

    # -- sending --------------------------------------------------------------------------

    def _send_lingering(self, now: float) -> None:
        """Send the buffers older than ``linger_ms`` (the delivery thread calls this)."""
        with self._lock:
            for buf in [b for b in self._buffers.values() if now - b.started >= self._linger_s]:
                self._send(buf)

    def _send(self, buf: Buffer) -> None:
        """Encode ``buf`` (split to fit ``batch_max_bytes``) and route it. Caller holds the lock."""
        del self._buffers[(buf.plan.topic, buf.partition)]
        table = buf.table()
        self._metrics.emitted.labels(buf.plan.stream).inc(table.num_rows)
        for piece, value, headers in encode_split(
            table, buf.plan.schema_id, self.settings.batch_max_bytes
        ):
            self._avg_event_bytes = len(value) / piece.num_rows
            env = Outgoing(
                self._delivery.next_seq(),
                buf.plan.stream,
                buf.plan.topic,
                buf.partition,
                value,
                headers,
                piece.num_rows,
                time.monotonic(),
            )
            self._metrics.batch_events.observe(piece.num_rows)
            self._delivery.route(env)


def _check_envelope_fits(settings: ProducerSettings, kafka: KafkaSettings) -> None:
    """Refuse, when the producer is made, envelopes larger than librdkafka's
    ``message.max.bytes``: every one would fail at send time (MSG_SIZE_TOO_LARGE)."""
    limit = int(kafka.librdkafka().get("message.max.bytes", _LIBRDKAFKA_MESSAGE_MAX))
    if settings.batch_max_bytes + _HEADERS_ROOM > limit:
        raise ValueError(
            f"batch_max_bytes {settings.batch_max_bytes:,} leaves no room under Kafka's "
            f"message.max.bytes {limit:,} (headers need ~{_HEADERS_ROOM:,}): lower "
            "batch_max_bytes, or raise message.max.bytes in extra_config and on the broker"
        )


def _close_at_exit(ref: weakref.ref[EventProducer]) -> None:
    producer = ref()
    if producer is not None:
        producer.close()


__all__ = ["DeliveryReport", "EventProducer"]
