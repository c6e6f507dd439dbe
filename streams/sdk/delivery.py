"""The SDK's delivery engine: sealed envelopes to Kafka, or to the spool, never lost.

An envelope goes straight to librdkafka (an idempotent producer, ``acks=all``) unless Kafka
is away, the client awaits replacement after a fatal error, or older envelopes of its
partition wait in the spool (per-user order). An envelope not acknowledged within
``delivery_timeout_ms``, or refused for a reason that may pass, goes to the durable spool
(``streams.sdk.spool``). A background thread lingers the producer's buffers (``on_tick``),
serves librdkafka's delivery reports, sends the spool oldest first once Kafka answers, and
replaces a client that a fatal error made unusable (backing off 1 s doubling to 60 s).

The engine knows nothing of events (``EventProducer`` hands it ``Outgoing`` envelopes);
its librdkafka client comes from ``client_factory`` (a fake one in the unit tests).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from eddyline.schemas.envelope import KafkaHeaders
from eddyline.streams.kafka.clients import RETRY_LATER, ClientErrors, is_fatal, take_back
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.sdk.durable import Durability
from eddyline.streams.sdk.metrics import ProducerMetrics
from eddyline.streams.sdk.outgoing import ClientStats, DeliveryReport, Outgoing
from eddyline.streams.sdk.partitions import PartitionCounts
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
_DRAIN_CHUNK = 50  # spooled envelopes in flight per partition while draining
_RESTART_BACKOFF_S = 1.0  # the first wait before replacing a client that failed fatally again


class Delivery:
    """Delivers ``Outgoing`` envelopes; shares the producer's lock (``route``'s caller
    holds it)."""

    def __init__(
        self,
        settings: ProducerSettings,
        kafka: KafkaSettings,
        metrics: ProducerMetrics,
        lock: threading.RLock,
        *,
        on_tick: Callable[[float], None],
        on_delivery: Callable[[DeliveryReport], None] | None = None,
        client_factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        self.settings, self.kafka, self._metrics = settings, kafka, metrics
        self._lock, self.room = lock, threading.Condition(lock)
        self._on_tick, self._on_delivery = on_tick, on_delivery
        self._client_factory = client_factory
        self._spool_high = int(settings.spool_max_bytes * 0.9)
        self._inflight: dict[tuple[str, int], int] = defaultdict(int)
        self._draining: dict[int, tuple[str, int]] = {}
        self.durable = Durability(lock)  # numbers envelopes; who waits for which
        self._producer: Any = None
        self._spool: Spool | None = None
        self._offline = False
        # The error that made librdkafka's producer unusable (None: it is fine), and when
        # the background thread may next replace it (backing off if it keeps failing).
        self._fatal: KafkaError | None = None
        self._restart_at = 0.0
        self._restart_backoff = _RESTART_BACKOFF_S
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors = ClientErrors()  # errors no retry fixes (credentials, TLS)
        self._stats = ClientStats(metrics)
        self.partitions = PartitionCounts(
            self.spool_root, settings.metadata_timeout_s, kafka.bootstrap
        )
        self.delivered = self.failed = self.spooled = 0

    # -- starting -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._producer is not None

    def client(self) -> Any:
        """The librdkafka producer, made (with the spool and the thread) on first use."""
        if self._producer is None:
            self._spool = Spool.open(self.spool_root(), max_bytes=self.settings.spool_max_bytes)
            self.durable.sequence = self._spool.max_seq() + 1
            self.partitions.load()
            self._producer = self._new_client()
            self._thread = threading.Thread(
                target=self._background, name="eddyline-producer", daemon=True
            )
            self._thread.start()
        return self._producer

    def _new_client(self) -> Any:
        conf = self.kafka.librdkafka(
            {
                **_PRODUCER_DEFAULTS,
                "delivery.timeout.ms": self.settings.delivery_timeout_ms,
                "error_cb": self._on_error,
                "statistics.interval.ms": 5_000,  # brokers up and retries, as metrics
                "stats_cb": self._stats.update,
            }
        )
        return self._client_factory(conf)

    def spool_root(self) -> Path:
        """One spool root per cluster: a spool is never sent to another cluster."""
        cluster = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.kafka.bootstrap)
        return Path(self.settings.spool_dir) / cluster

    def next_seq(self) -> int:
        return self.durable.number()

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (``streams.sdk.partitions``)."""
        return self.partitions.count(topic, self.client(), self._errors)

    # -- admission and routing (the caller holds the lock) ---------------------------------

    def admit(self) -> None:
        """Backpressure while the spool is nearly full (Kafka away for long): wait for room
        up to ``block_timeout_s``, or refuse at once (``on_full="raise"``)."""
        spool = self._spool
        if spool is None or spool.size < self._spool_high:
            return
        if self.settings.on_full == "raise":
            raise SpoolFullError(spool.directory, spool.max_bytes)
        ok = self.room.wait_for(
            lambda: spool.size < self._spool_high, timeout=self.settings.block_timeout_s
        )
        if not ok:
            raise SpoolFullError(spool.directory, spool.max_bytes)

    def route(self, env: Outgoing) -> None:
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

    def _produce(self, env: Outgoing, *, from_spool: bool) -> None:
        kafka_headers: KafkaHeaders = [*env.headers]
        self.client().produce(
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
            self.durable.expose(env.seq)

    def _to_spool(self, env: Outgoing) -> None:
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

    # -- delivery reports (librdkafka's thread: the background one) ------------------------

    def _delivered(
        self, env: Outgoing, from_spool: bool, err: KafkaError | None, msg: Message
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
            elif (fatal := is_fatal(err)) or err.retriable() or err.code() in RETRY_LATER:
                if fatal:
                    self._fatal = err  # the background thread replaces the client
                else:
                    self._offline = True
                if not from_spool:  # a spooled one simply stays on disk
                    self._to_spool(env)
            else:
                self._refused(env, err, from_spool)
            due = self.durable.settle(env.seq)  # acknowledged, spooled, or refused for good
            self.room.notify_all()
        for callback in due:
            callback()
        if self._on_delivery is not None:
            error = None if err is None else err.str()
            self._on_delivery(
                DeliveryReport(
                    env.stream, env.topic, env.partition, env.count, error, latency, err is not None
                )
            )

    def _refused(self, env: Outgoing, err: KafkaError, from_spool: bool) -> None:
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

    def _on_error(self, err: KafkaError) -> None:
        self._errors(err)
        if err.code() == KafkaError._ALL_BROKERS_DOWN:  # one broker away: librdkafka fails over
            self._offline = True
        elif is_fatal(err):
            self._fatal = err

    def _note_fatal(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and is_fatal(err):
            self._fatal = err

    # -- the background thread ------------------------------------------------------------

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
                self._on_tick(now)
                if now >= next_drain:
                    self.drain()
                    next_drain = now + 0.5
            except Exception:  # this thread sends every lingering buffer: it must not die
                log.exception("eddyline producer thread: unexpected error; carrying on")
                self._stop.wait(0.5)

    def _replace_client(self) -> None:
        """A new librdkafka producer in place of one a fatal error made unusable.

        After a fatal error (idempotence: librdkafka can no longer promise order without
        duplicates) every ``produce`` fails, for good, on that instance. What it still holds
        is purged: each purged envelope reports back and is spooled. Then a new instance
        (a new producer id) takes over and the drain resends the spool, oldest first per
        partition. An envelope the broker had stored before the error may be sent twice:
        at least once, rather than lost."""
        old, reason = self._producer, self._fatal
        if old is None or reason is None:
            return
        log.error(
            "Kafka client hit a fatal error (%s); replacing it, its envelopes are resent "
            "from the spool",
            reason.str(),
        )
        take_back(old, 5.0)
        with self._lock:
            self._fatal = None
            self._producer = self._new_client()
            self._offline = True  # the drain checks the new client reaches Kafka first
        self._metrics.client_restarts.inc()
        # A new client that fails at once as well (a setting or an ACL the broker refuses)
        # is replaced less and less often, up to once a minute.
        self._restart_at = time.monotonic() + self._restart_backoff
        self._restart_backoff = min(self._restart_backoff * 2, 60.0)

    def drain(self) -> None:
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
                    env = Outgoing.from_spool(
                        entry.seq, entry.topic, entry.partition, value, headers
                    )
                    try:
                        self._produce(env, from_spool=True)
                    except BufferError:
                        return
                    except KafkaException as exc:  # it stays on disk for the next drain
                        self._note_fatal(exc)
                        log.warning("cannot send spooled envelopes of %s/%d: %s", *key, exc)
                        break

    # -- flushing and closing -------------------------------------------------------------

    def wait(self, deadline: float) -> int:
        """Serve reports and drain until nothing is pending or ``deadline``; what is left."""
        while True:
            producer = self._producer
            if producer is not None:
                producer.flush(max(0.0, min(0.2, deadline - time.monotonic())))
            self.drain()
            pending = self.pending()
            if pending == 0 or time.monotonic() >= deadline:
                return pending
            time.sleep(0.05)

    def pending(self) -> int:
        """Envelopes not yet acknowledged: in flight, or waiting in the spool."""
        with self._lock:
            spooled = len(self._spool) if self._spool is not None else 0
            return sum(self._inflight.values()) + spooled

    def close(self) -> None:
        """Stop the thread, take back what librdkafka still holds (to the spool), close the
        spool (what it holds waits for the next producer on the same folder)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        producer = self._producer
        if producer is not None and any(self._inflight.values()):
            take_back(producer, 1.0)
        if self._spool is not None:
            if len(self._spool):
                log.warning(
                    "%d envelopes wait in %s; a producer on the same spool folder will send them",
                    len(self._spool),
                    self._spool.directory,
                )
            self._spool.close()
