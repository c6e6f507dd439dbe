"""The producer SDK: typed ``emit``, per-partition columnar batches, Arrow envelopes.

``emit`` takes a validated event model (pydantic validated it when it was built) or a dict
plus its model, which is validated here; either way a bad event raises at the call, naming
the field. ``emit_many`` takes a whole batch of one event type as columns (an Arrow table,
a polars or pandas frame, a dict of lists) and validates it column by column with the rules
the worker uses (``schemas.arrow.validate_table``): all rows or none. Accepted events are
buffered per (topic, partition) as columns; each buffer goes to Kafka as one Arrow envelope
when it reaches ``batch_max_events`` or ``batch_max_bytes``, when it is older than
``linger_ms``, or on ``flush``/``close``/interpreter exit.

Nothing accepted is lost. An envelope Kafka does not acknowledge within
``delivery_timeout_ms`` (broker down, network gone) goes to the durable on-disk spool
(``streams.spool``), and so does every later envelope for the same partition, so per-user
order holds. A background thread sends the spool, oldest first, once Kafka answers again;
a process restarted on the same spool folder sends what its predecessor left.

Examples:
    >>> producer = EventProducer()          # no network call until the first emit
    >>> producer.close()
"""

from __future__ import annotations

import atexit
import json
import logging
import operator
import os
import re
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from eddyline.schemas.arrow import (
    arrow_schema,
    conform,
    lossless_cast,
    new_uuid_column,
    unwrap_optional,
    uuid_column_of_ints,
    validate_table,
)
from eddyline.schemas.envelope import Headers, KafkaHeaders, encode_arrow
from eddyline.schemas.errors import (
    BrokerError,
    EventValidationError,
    ProducerClosedError,
    SchemaError,
    TopicNotFoundError,
)
from eddyline.schemas.events import BaseEvent, FeedbackEvent
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.sdk.metrics import ProducerMetrics
from eddyline.streams.sdk.partitioner import partition_for
from eddyline.streams.sdk.spool import Spool, SpoolFullError

log = logging.getLogger("eddyline.producer")

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,  # implies acks=all and ordered, de-duplicated retries
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 5,  # we batch events ourselves; this only groups envelopes
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 2_000,
    "queue.buffering.max.kbytes": 64 * 1024,  # beyond 64 MiB in memory, envelopes spool
}
_EMPTY: dict[str, int] = {}
_DRAIN_CHUNK = 50  # spooled envelopes in flight per partition while draining


@dataclass(frozen=True)
class DeliveryReport:
    """The fate of one envelope, passed to ``on_delivery``."""

    stream: str
    topic: str
    partition: int
    count: int
    error: str | None
    latency_s: float
    spooled: bool = False


_LIBRDKAFKA_MESSAGE_MAX = 1_000_000  # librdkafka's default message.max.bytes
_HEADERS_ROOM = 4_096  # an envelope's headers and Kafka's record overhead, generously


@dataclass(frozen=True)
class _Plan:
    """How one model's events become columns: the topic, the schema, the row layout."""

    stream: str
    topic: str
    schema_id: str
    schema: pa.Schema
    #: an event's ``__dict__`` -> its buffered row: the UUID fields first, as ints (or
    #: None), then the other fields in ``names`` order
    row: Callable[[dict[str, Any]], tuple[Any, ...]]
    uuids: tuple[str, ...]  # the UUID fields, in row order
    names: tuple[str, ...]  # the other fields, in row order


@dataclass
class _Buffer:
    """Events waiting for one (topic, partition): rows from ``emit`` and Arrow chunks from
    ``emit_many``, kept in the order they were accepted.

    A row is a tuple of the event's field values, ids as ints: atoms only, so the cyclic
    GC stops tracking it at its first pass and the event object itself is freed when the
    app lets go of it (keeping the pydantic instances, four GC-tracked objects each, cost
    ~25% of ``emit`` in collections over the buffered thousands)."""

    plan: _Plan
    partition: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    chunks: list[pa.Table] = field(default_factory=list)
    chunk_rows: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def count(self) -> int:
        return len(self.rows) + self.chunk_rows

    def seal(self) -> None:
        """Turn the pending rows into a chunk (before a later chunk arrives)."""
        if self.rows:
            self.chunks.append(self._rows_table())
            self.chunk_rows += len(self.rows)
            self.rows = []

    def add(self, chunk: pa.Table) -> None:
        self.seal()
        self.chunks.append(chunk)
        self.chunk_rows += chunk.num_rows

    def table(self) -> pa.Table:
        """Everything buffered, as one table in acceptance order."""
        self.seal()
        return self.chunks[0] if len(self.chunks) == 1 else pa.concat_tables(self.chunks)

    def _rows_table(self) -> pa.Table:
        """The buffered rows as columns, one comprehension per field (~2x faster than a
        ``zip(*rows)`` transposition of thousands of rows)."""
        plan, rows = self.plan, self.rows
        columns = [[r[i] for r in rows] for i in range(len(plan.uuids) + len(plan.names))]
        k = len(plan.uuids)
        ids = {n: uuid_column_of_ints(c) for n, c in zip(plan.uuids, columns[:k], strict=True)}
        rest = dict(zip(plan.names, columns[k:], strict=True))
        return pa.table({**ids, **rest}, schema=plan.schema)


@dataclass(frozen=True)
class _Envelope:
    seq: int
    stream: str
    topic: str
    partition: int
    value: bytes
    headers: Headers
    count: int
    created: float

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.partition)


def _plan_for(model: type[BaseEvent], topics: Topics) -> _Plan:
    uuids = tuple(
        n for n, info in model.model_fields.items() if unwrap_optional(info.annotation)[0] is UUID
    )
    names = tuple(n for n in model.model_fields if n not in uuids)
    # a tuple: BaseEvent's own fields give every model more than one name
    rest = operator.itemgetter(*names)
    if uuids == ("event_id",) and model.model_fields["event_id"].annotation is UUID:
        # every built-in model: the hot path, one id that is never None

        def row(d: dict[str, Any]) -> tuple[Any, ...]:
            return (d["event_id"].int, *rest(d))

    else:

        def row(d: dict[str, Any]) -> tuple[Any, ...]:
            ids = [None if (u := d[n]) is None else u.int for n in uuids]
            return (*ids, *rest(d))

    return _Plan(
        model.event_name,
        topics.raw(model.event_name),
        model.schema_id(),
        arrow_schema(model),
        row,
        uuids,
        names,
    )


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


def _validation_error(exc: ValidationError, model: type[BaseEvent]) -> EventValidationError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or None
    return EventValidationError(
        f"invalid {model.event_name} event: {where or 'event'}: {first['msg']}",
        field=where,
        reason=first["type"],
    )


def _encode(
    table: pa.Table, schema_id: str, max_bytes: int
) -> list[tuple[pa.Table, bytes, Headers]]:
    """Encode ``table``, halving it until every envelope fits ``max_bytes``."""
    value, headers = encode_arrow(table, schema_id)
    if len(value) <= max_bytes or table.num_rows == 1:
        return [(table, value, headers)]
    half = table.num_rows // 2
    return _encode(table.slice(0, half), schema_id, max_bytes) + _encode(
        table.slice(half), schema_id, max_bytes
    )


def _columns(rows: Any) -> pa.Table:
    """An Arrow table from what ``emit_many`` accepts."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, Mapping):
        return pa.table(dict(rows))
    if hasattr(rows, "to_arrow"):  # polars
        table: pa.Table = rows.to_arrow()
        return table
    if hasattr(rows, "iloc"):  # pandas
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise TypeError(
        "emit_many takes a pyarrow.Table, a polars or pandas DataFrame, or a dict of columns"
    )


def _with_defaults(model: type[BaseEvent], table: pa.Table) -> pa.Table:
    """``table`` with each left-out column that has a default filled in: a new id per row
    for ``event_id``, the default (or its factory's one value: ``occurred_at`` = now)
    for the rest. Columns without a default are left for ``conform`` to report."""
    schema = arrow_schema(model)
    for name, info in model.model_fields.items():
        if name in table.column_names or info.is_required():
            continue
        if info.annotation is UUID:
            column = new_uuid_column(table.num_rows)
        else:
            value = info.get_default(call_default_factory=True)
            column = pa.array([value] * table.num_rows, schema.field(name).type)
        table = table.append_column(name, column)
    return table


def _vectorised(model: type[BaseEvent]) -> bool:
    """Whether ``validate_table`` knows every rule of ``model`` (no custom validators
    beyond the built-in feedback rule it implements)."""
    decorators = model.__pydantic_decorators__
    model_rules = set(decorators.model_validators)
    if issubclass(model, FeedbackEvent):
        model_rules.discard("_rating_or_label")
    return not model_rules and not decorators.field_validators


def _checked(model: type[BaseEvent], table: pa.Table) -> pa.Table:
    """``table`` conformed to the model's Arrow schema and validated; else raise."""
    name = model.event_name
    for f in table.schema:
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            raise EventValidationError(
                f"invalid {name} batch: {f.name}: timestamps need a time zone",
                field=f.name,
                reason="timezone_aware",
            )
    schema = arrow_schema(model)
    unknown = sorted(set(table.column_names) - set(schema.names))
    if unknown:  # named here: the app's own columns, in the app's own process
        raise EventValidationError(
            f"invalid {name} batch: unknown columns {unknown}", field=None, reason="columns"
        )
    for f in schema:
        sent = table[f.name].type if f.name in table.column_names else f.type
        if sent != f.type and not lossless_cast(sent, f.type):
            raise EventValidationError(
                f"invalid {name} batch: {f.name}: {sent} is not {f.type} (only lossless "
                "casts are made: wider numbers, other string layouts, aware timestamps)",
                field=f.name,
                reason="wrong_type",
            )
    try:
        table = conform(model, table)
    except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EventValidationError(
            f"invalid {name} batch: {exc}", field=None, reason="columns"
        ) from None
    if not _vectorised(model):  # custom validators: pydantic row by row
        for i, row in enumerate(table.to_pylist()):
            try:
                model.model_validate(row)
            except ValidationError as exc:
                err = _validation_error(exc, model)
                raise EventValidationError(
                    f"{err} (row {i})", field=err.field, reason=err.reason
                ) from None
        return table
    _, violations = validate_table(model, table)
    if violations:
        v = violations[0]
        first = v.rows.to_pylist()[:5]
        raise EventValidationError(
            f"invalid {name} batch: {v.field}: {v.reason} in {len(v.rows)} row(s), "
            f"first {first}; nothing of the batch was accepted",
            field=v.field,
            reason=v.reason,
        )
    return table


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
        self._on_delivery = on_delivery
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._plans: dict[type[BaseEvent], _Plan] = {}
        self._partitions: dict[str, int] = {}
        self._part_cache: dict[str, dict[str, int]] = {}
        self._max_events = self.settings.batch_max_events
        self._max_bytes = self.settings.batch_max_bytes
        self._spool_high = int(self.settings.spool_max_bytes * 0.9)
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._inflight: dict[tuple[str, int], int] = defaultdict(int)
        self._draining: dict[int, tuple[str, int]] = {}
        self._avg_event_bytes = 0.0
        self._producer: Producer | None = None
        self._spool: Spool | None = None
        self._seq = 0
        self._offline = False
        # The error that made librdkafka's producer unusable (None: it is fine), and when
        # the background thread may next replace it (backing off if it keeps failing).
        self._fatal: KafkaError | None = None
        self._restart_at = 0.0
        self._restart_backoff = _RESTART_BACKOFF_S
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.spooled = 0
        atexit.register(_close_at_exit, weakref.ref(self))

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
                buf = self._buffers[(plan.topic, partition)] = _Buffer(plan, partition)
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
        table = _columns(rows)
        if table.num_rows == 0:
            return 0
        plan = self._plans.get(schema) or self._plan(schema)
        table = _checked(schema, _with_defaults(schema, table))
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

    def _add_chunk(self, plan: _Plan, partition: int, chunk: pa.Table) -> None:
        """Buffer ``chunk`` for one partition, sending whole envelopes as they fill."""
        while chunk.num_rows:
            buf = self._buffers.get((plan.topic, partition))
            if buf is None:
                buf = self._buffers[(plan.topic, partition)] = _Buffer(plan, partition)
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
            self._client()  # opens the spool too: a new process sends what a dead one left
            for buf in list(self._buffers.values()):
                self._send(buf)
        while True:
            producer = self._producer
            if producer is not None:
                producer.flush(max(0.0, min(0.2, deadline - time.monotonic())))
            self._drain()
            pending = self.pending()
            if pending == 0 or time.monotonic() >= deadline:
                return pending
            time.sleep(0.05)

    def pending(self) -> int:
        """Envelopes not yet acknowledged: in flight, or waiting in the spool."""
        with self._lock:
            spooled = len(self._spool) if self._spool is not None else 0
            return sum(self._inflight.values()) + spooled

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop. What Kafka has not acknowledged by ``timeout`` stays in the spool
        for the next producer on the same spool folder. Idempotent."""
        if self._closed:
            return
        if self._producer is not None:  # never used: nothing to send, no reason to connect
            self.flush(timeout)
        with self._lock:
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        producer = self._producer
        if producer is not None and any(self._inflight.values()):
            _take_back(producer, 1.0)
        if self._spool is not None:
            if len(self._spool):
                log.warning(
                    "%d envelopes wait in %s; a producer on the same spool folder will send them",
                    len(self._spool),
                    self._spool.directory,
                )
            self._spool.close()

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
            raise _validation_error(exc, schema) from None

    def _plan(self, model: type[BaseEvent]) -> _Plan:
        if not model.event_name:
            raise SchemaError(f"{model.__name__} has no event_name: it cannot be emitted")
        plan = _plan_for(model, self._topics)
        self._plans[model] = plan
        return plan

    def _admit(self) -> None:
        """Before accepting events (the caller holds the lock): refuse after ``close``; when
        the spool is nearly full (Kafka away for long), backpressure: wait or refuse."""
        if self._closed:
            raise ProducerClosedError("emit after close: create a new EventProducer")
        spool = self._spool
        if spool is None or spool.size < self._spool_high:
            return
        if self.settings.on_full == "raise":
            raise SpoolFullError(spool.directory, spool.max_bytes)
        ok = self._room.wait_for(
            lambda: spool.size < self._spool_high, timeout=self.settings.block_timeout_s
        )
        if not ok:
            raise SpoolFullError(spool.directory, spool.max_bytes)

    def _partition(self, topic: str, user_id: str) -> int:
        """murmur2 partition of a user not in the cache (the cache is bounded per topic)."""
        count = self._partitions.get(topic) or self._partition_count(topic)
        cache = self._part_cache.setdefault(topic, {})
        if len(cache) > 100_000:  # bound memory for apps with many users
            cache.clear()
        part = cache[user_id] = partition_for(user_id.encode(), count)
        return part

    def _partition_count(self, topic: str) -> int:
        self._client()
        if topic in self._partitions:  # learnt from the spool folder's cache
            return self._partitions[topic]
        try:
            md = self._client().list_topics(topic, timeout=self.settings.metadata_timeout_s)
        except KafkaException as exc:
            raise BrokerError(
                f"cannot reach Kafka at {self.kafka.bootstrap} to learn the "
                f"partitions of {topic!r}: {exc}"
            ) from exc
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise TopicNotFoundError(topic)
        self._partitions[topic] = len(meta.partitions)
        self._save_partitions()
        return len(meta.partitions)

    # -- starting -------------------------------------------------------------------------

    def _client(self) -> Producer:
        if self._producer is None:
            self._spool = Spool.open(self._spool_root(), max_bytes=self.settings.spool_max_bytes)
            self._seq = self._spool.max_seq() + 1
            self._partitions.update(self._load_partitions())
            self._producer = self._new_client()
            self._thread = threading.Thread(
                target=self._background, name="eddyline-producer", daemon=True
            )
            self._thread.start()
        return self._producer

    def _new_client(self) -> Producer:
        conf = self.kafka.librdkafka(
            {
                **_PRODUCER_DEFAULTS,
                "delivery.timeout.ms": self.settings.delivery_timeout_ms,
                "error_cb": self._on_error,
            }
        )
        return Producer(conf)

    def _spool_root(self) -> Path:
        """One spool root per cluster: a spool is never sent to another cluster."""
        cluster = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.kafka.bootstrap)
        return Path(self.settings.spool_dir) / cluster

    def _partitions_file(self) -> Path:
        return self._spool_root() / "partitions.json"

    def _load_partitions(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self._partitions_file().read_text()).items()}
        except (OSError, ValueError):
            return {}

    def _save_partitions(self) -> None:
        known = {**self._load_partitions(), **self._partitions}
        path = self._partitions_file()
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # shared folder
        tmp.write_text(json.dumps(known))
        tmp.replace(path)

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._offline = True
        elif _is_fatal(err):
            self._fatal = err

    def _replace_client(self) -> None:
        """A new librdkafka producer in place of one a fatal error made unusable.

        After a fatal error (idempotence: librdkafka can no longer promise order without
        duplicates) every ``produce`` fails, for good, on that instance. What it still holds
        is purged: each purged envelope reports back and is spooled. Then a new instance
        (a new producer id) takes over and the drain resends the spool, oldest first per
        partition. An envelope the broker had stored before the error may be sent twice:
        at least once, rather than lost. Caller: the background thread."""
        old, reason = self._producer, self._fatal
        if old is None or reason is None:
            return
        log.error(
            "Kafka client hit a fatal error (%s); replacing it, its envelopes are resent "
            "from the spool",
            reason.str(),
        )
        _take_back(old, 5.0)
        with self._lock:
            self._fatal = None
            self._producer = self._new_client()
            self._offline = True  # the drain checks the new client reaches Kafka first
        self._metrics.client_restarts.inc()
        # If the new client fails at once as well (a setting or an ACL the broker refuses),
        # replace it less and less often, up to once a minute.
        self._restart_at = time.monotonic() + self._restart_backoff
        self._restart_backoff = min(self._restart_backoff * 2, 60.0)

    # -- sending --------------------------------------------------------------------------

    def _send(self, buf: _Buffer) -> None:
        """Encode ``buf`` (split to fit ``batch_max_bytes``) and route it. Caller holds the lock."""
        del self._buffers[(buf.plan.topic, buf.partition)]
        table = buf.table()
        self._metrics.emitted.labels(buf.plan.stream).inc(table.num_rows)
        for piece, value, headers in _encode(
            table, buf.plan.schema_id, self.settings.batch_max_bytes
        ):
            self._avg_event_bytes = len(value) / piece.num_rows
            env = _Envelope(
                self._seq,
                buf.plan.stream,
                buf.plan.topic,
                buf.partition,
                value,
                headers,
                piece.num_rows,
                time.monotonic(),
            )
            self._seq += 1
            self._metrics.batch_events.observe(piece.num_rows)
            self._route(env)

    def _route(self, env: _Envelope) -> None:
        """Straight to Kafka, unless Kafka is away or older envelopes of the partition wait
        in the spool, or the client awaits replacement after a fatal error: then behind
        them, to keep per-user order."""
        assert self._spool is not None
        waiting = self._spool.has(*env.key) or env.key in self._draining.values()
        if self._offline or self._fatal is not None or waiting:
            self._to_spool(env)
            return
        try:
            self._produce(env, from_spool=False)
        except BufferError:  # 64 MiB already queued in librdkafka: spill to disk
            self._to_spool(env)
        except KafkaException as exc:  # refused before sending: keep it, retry from disk
            self._note_fatal(exc)
            log.warning(
                "Kafka did not take %d %s events for %s/%d (%s); spooled, retried later",
                env.count,
                env.stream,
                env.topic,
                env.partition,
                exc,
            )
            self._to_spool(env)

    def _note_fatal(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and _is_fatal(err):
            self._fatal = err

    def _produce(self, env: _Envelope, *, from_spool: bool) -> None:
        kafka_headers: KafkaHeaders = [*env.headers]
        self._client().produce(
            env.topic,
            value=env.value,
            partition=env.partition,
            headers=kafka_headers,
            on_delivery=lambda err, msg: self._delivered(env, from_spool, err, msg),
        )
        if from_spool:
            self._draining[env.seq] = env.key
        else:
            self._inflight[env.key] += 1

    def _to_spool(self, env: _Envelope) -> None:
        assert self._spool is not None
        try:
            self._spool.put(env.seq, env.topic, env.partition, env.value, env.headers)
        except SpoolFullError:
            # Admission control keeps 10% headroom, so this is a disk-full corner case.
            self.failed += env.count
            self._metrics.failed.labels(env.stream).inc(env.count)
            log.error("spool full: %d %s events could not be kept", env.count, env.stream)
            return
        self.spooled += env.count
        self._metrics.spooled.labels(env.stream).inc(env.count)

    def _delivered(
        self, env: _Envelope, from_spool: bool, err: KafkaError | None, msg: Message
    ) -> None:
        latency = time.monotonic() - env.created
        with self._lock:
            if from_spool:
                self._draining.pop(env.seq, None)
            else:
                self._inflight[env.key] -= 1
            if err is None:
                self._offline = False
                self._restart_backoff = _RESTART_BACKOFF_S
                if from_spool and self._spool is not None:
                    self._spool.remove(env.seq)
                self.delivered += env.count
                self._metrics.delivered.labels(env.stream).inc(env.count)
                self._metrics.delivery_latency.observe(latency)
            elif (fatal := _is_fatal(err)) or err.retriable() or err.code() in _RETRY_LATER:
                if fatal:
                    self._fatal = err  # the background thread replaces the client
                else:
                    self._offline = True
                if not from_spool:  # a spooled one simply stays on disk
                    self._to_spool(env)
            else:
                self._refused(env, err, from_spool)
            self._room.notify_all()
        if self._on_delivery is not None:
            error = None if err is None else err.str()
            self._on_delivery(
                DeliveryReport(
                    env.stream,
                    env.topic,
                    env.partition,
                    env.count,
                    error,
                    latency,
                    spooled=err is not None,
                )
            )

    def _refused(self, env: _Envelope, err: KafkaError, from_spool: bool) -> None:
        """Kafka refused the envelope for good (too large, not authorised): report it loudly."""
        self.failed += env.count
        self._metrics.failed.labels(env.stream).inc(env.count)
        log.error(
            "Kafka refused %d %s events for %s/%d: %s",
            env.count,
            env.stream,
            env.topic,
            env.partition,
            err.str(),
        )
        if from_spool and self._spool is not None:
            self._spool.remove(env.seq)

    # -- background: linger and drain ------------------------------------------------------

    def _background(self) -> None:
        linger = self.settings.linger_ms / 1000
        next_drain = 0.0
        while not self._stop.is_set():
            try:
                if self._fatal is not None and time.monotonic() >= self._restart_at:
                    self._replace_client()
                producer = self._producer
                if producer is not None:
                    producer.poll(min(linger / 2, 0.05) or 0.01)
                now = time.monotonic()
                with self._lock:
                    for buf in [b for b in self._buffers.values() if now - b.started >= linger]:
                        self._send(buf)
                if now >= next_drain:
                    self._drain()
                    next_drain = now + 0.5
            except Exception:  # this thread sends every lingering buffer: it must not die
                log.exception("eddyline producer thread: unexpected error; carrying on")
                self._stop.wait(0.5)

    def _drain(self) -> None:
        """Send spooled envelopes, oldest first, for partitions with nothing else in flight."""
        spool, producer = self._spool, self._producer
        if spool is None or producer is None or not len(spool) or self._fatal is not None:
            return
        if self._offline:
            try:
                producer.list_topics(timeout=1.0)
            except KafkaException:
                return
            self._offline = False
        with self._lock:
            busy = set(self._draining.values())
            for key in spool.keys():
                if key in busy or self._inflight[key]:
                    continue
                for entry in spool.entries(*key)[:_DRAIN_CHUNK]:
                    value, headers = entry.read()
                    env = _Envelope(
                        entry.seq,
                        _stream_of(headers),
                        entry.topic,
                        entry.partition,
                        value,
                        headers,
                        _count_of(headers),
                        time.monotonic(),
                    )
                    try:
                        self._produce(env, from_spool=True)
                    except BufferError:
                        return
                    except KafkaException as exc:  # it stays on disk for the next drain
                        self._note_fatal(exc)
                        log.warning("cannot send spooled envelopes of %s/%d: %s", *key, exc)
                        break


_RETRY_LATER = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._TIMED_OUT,
}


_RESTART_BACKOFF_S = 1.0  # the first wait before replacing a client that failed fatally again


def _take_back(producer: Producer, timeout: float) -> None:
    """Purge what librdkafka still holds and serve the purged envelopes' reports, so that
    each is spooled (``_delivered``: a purge is a retry-later error)."""
    producer.purge(in_queue=True, in_flight=True)
    deadline = time.monotonic() + timeout
    while len(producer) and time.monotonic() < deadline:
        producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))


def _is_fatal(err: KafkaError) -> bool:
    """Whether ``err`` leaves librdkafka's producer unusable (only a new one can send)."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def _stream_of(headers: Headers) -> str:
    schema = dict(headers).get("eddyline-schema", b"")
    return schema.decode().split(":")[0]


def _count_of(headers: Headers) -> int:
    return int(dict(headers).get("eddyline-count", b"0") or 0)


def _close_at_exit(ref: weakref.ref[EventProducer]) -> None:
    producer = ref()
    if producer is not None:
        producer.close()
