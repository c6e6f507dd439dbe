"""The intake: raw topics -> the privacy stage -> private (and learn) topics, in batches.

Faust costs ~60 µs a message here (a no-op agent drains ~16.8k msg/s), so a raw topic of
one JSON event per message cannot go through a Faust agent at batch speed. The intake reads
the raw topics with its own confluent-kafka consumer (``consume(num_messages)``: librdkafka
fetches and parses on its own threads, ~1.4 µs a message on ours, against ~4.3 µs for
aiokafka's ``getmany``; bench/RESULTS.md), in its own consumer group
(``<app id>-intake``), on its own thread. Each fetch is cut into units
(``streams.worker.units``): an Arrow envelope alone, or a run of single-event JSON messages
read as one table (``schemas.json_batch``) and privatised as one batch: one private envelope
per run, holding each row's raw offset, sent to the private topic (the lake) and, for a stream
with models, to its one-partition learn topic (the models' owner).

Exactly once: the budget ledger charges rows by their own raw offsets, the noise of a row is
a function of its identity (``privacy.draws``), and the lake and the models keep only rows
past the offsets they committed (``schemas.source.rows_after``), so a crash between any two
steps, and a replay cut differently, neither loses nor doubles a row. The intake commits its
raw offsets only after a save: outputs flushed, then the changed ledger shards written and
flushed (``streams.worker.state``), every ``checkpoint_every_s``, when partitions are revoked,
and at a stop.

Partitions move with the group (cooperative rebalancing): an assigned partition's state is
read before its first message; a revoked one is saved and committed; a lost one dropped."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from eddyline.schemas.envelope import H_CONTENT_TYPE, JSON
from eddyline.streams.kafka.logs import OncePerInterval
from eddyline.streams.worker.budget_state import app_id
from eddyline.streams.worker.pipeline import Pipeline
from eddyline.streams.worker.privatize import Privatized, RawMessage
from eddyline.streams.worker.state import StateTopics
from eddyline.streams.worker.units import Fetched, Unit, faust_offsets, json_run, plan

log = logging.getLogger("eddyline.intake")
_consumer_log = logging.getLogger("eddyline.intake.consumer")  # one line a minute per kind
_consumer_log.addFilter(OncePerInterval(60.0))
_JSON_HEADERS = [(H_CONTENT_TYPE, JSON.encode())]


class Intake:
    """The raw topics' consumer and the privacy stage's driver (module docstring)."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        ks, ws = p.ks, p.ws
        self.group = f"{app_id(ws, ks)}-intake"
        self.topics = [p.topics.raw(s) for s in p.streams]
        self.producer = Producer(
            ks.librdkafka(
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "message.max.bytes": 16 * 1024 * 1024,
                    "message.timeout.ms": 0,  # never give up: a broker outage stalls, loses nothing
                    "on_delivery": self._delivered,
                }
            )
        )
        self.topics_state = StateTopics(ws, ks, self._produce_state)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self._delivery_error: str | None = None
        self._done: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset done
        self._committed: dict[tuple[str, int], int] = {}
        self._owned: set[tuple[str, int]] = set()
        self._lag = 0
        self._last_save = time.monotonic()
        self._next_upkeep = 0.0
        self.consumer: Consumer | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="eddyline-intake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Save, commit and leave the group (waits up to ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> dict[str, Any]:
        """What /status shows of the intake: its partitions, where each stands, its lag."""
        done, committed = dict(self._done), dict(self._committed)  # copies: another thread
        failed = None if self.failed is None else type(self.failed).__name__
        return {"alive": self.alive, "failed": failed, "lag": self._lag} | {
            "assigned": sorted(f"{t}/{n}" for t, n in set(self._owned)),
            "done": {f"{t}/{n}": o for (t, n), o in sorted(done.items())},
            "committed": {f"{t}/{n}": o for (t, n), o in sorted(committed.items())},
        }

    def qsize(self) -> int:
        """Raw messages waiting (the lag at the last fetch): what learning yields to."""
        return self._lag

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # the worker notices (``failed``) and exits
            self.failed = exc
            log.exception("the intake stopped")

    def _run(self) -> None:
        p = self.p
        self.topics_state.ensure()
        p.feed.start()  # who is forgotten, before any event
        stage = p.privatize
        log.info(
            "budget allowances per user per %ss window: %s (the accountant took %.1fs)",
            p.ws.budget_window_s,
            ", ".join(
                f"{k} {v if v < 2**62 else 'unlimited'}" for k, v in stage.allowances.items()
            ),
            stage.allowances_s,
        )
        p.epochs.refresh_now(self.topics)
        p.progress.reads("privatize", self.topics)
        consumer = self.consumer = Consumer(
            p.ks.librdkafka(
                {
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": int(p.ws.session_timeout_s * 1000),
                    "heartbeat.interval.ms": int(min(3.0, p.ws.session_timeout_s / 3) * 1000),
                    "fetch.wait.max.ms": p.ws.fetch_max_wait_ms,
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    "max.partition.fetch.bytes": 16 * 1024 * 1024,
                    "queued.min.messages": 200_000,
                }
            )
        )
        consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            while not self._stop.is_set():
                messages = consumer.consume(p.ws.intake_max_messages, p.ws.intake_max_wait_s)
                self._take(messages)
                self._behind()  # what learning yields to (``qsize``)
                self._upkeep()
            self._save()
        finally:
            consumer.close()  # leaves the group (its revocation saves and commits first)
            self.producer.flush(5.0)

    # -- messages -------------------------------------------------------------------------

    def _take(self, messages: list[Any]) -> None:
        by_partition: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for message in messages:
            if message.error() is not None:
                self._consume_error(message.error())
                continue
            by_partition[(message.topic(), message.partition())].append(message)
        stage = self.p.privatize
        for (topic, partition), messages in by_partition.items():
            if (topic, partition) not in self._owned:
                continue  # revoked since the fetch: its next owner reads it
            epochs, fetched = self.p.epochs, Fetched.of(messages)
            if epochs.regressed(topic, partition, int(fetched.offsets[0])):
                epochs.refresh_now([topic])
            windows = stage.noise.windows_for(fetched.timestamps, stage.privatizer.clock())
            for unit in plan(fetched, windows, self.p.ws.intake_max_run):
                self._privatise(topic, partition, fetched, unit)
            last = int(fetched.offsets[-1])
            epochs.regressed(topic, partition, last)
            self._done[(topic, partition)] = last
            self.p.progress.advanced("privatize", topic, partition, last)

    def _privatise(self, topic: str, partition: int, fetched: Fetched, unit: Unit) -> None:
        p, stage = self.p, self.p.privatize
        first = fetched.messages[unit.start]
        src = p.epochs.source(topic, partition, int(fetched.offsets[unit.stop - 1]))
        stamp = float(fetched.timestamps[unit.start])
        message = RawMessage(first.value(), first.headers(), src, stamp)
        key = self._noise_key(message)
        if unit.json:
            out = stage.process_json(json_run(fetched, unit, src), key)
        else:
            out = stage.process(message, key)
        self._send(out, p.topics.private(out.stream), partition)

    def _noise_key(self, message: RawMessage) -> bytes:
        """The noise secret of a message: the one its partition's owners used before, else
        a new one, in the noise topic (flushed) before it is used."""
        keys = self.p.privatize.noise
        name = self.p.privatize.noise_name(message)
        found = keys.get(name)
        if found is None:
            found = keys.new()
            self.topics_state.put_noise(name, found.hex(), message.source.partition)
            self._flush()
            keys.store[name] = found.hex()
        return found

    def _send(self, out: Privatized, topic: str, partition: int) -> None:
        for letter in out.dead:
            self._produce(self.p.topics.deadletter, letter.to_json(), _JSON_HEADERS, None)
        if out.private is not None:  # to the lake, and to the owner of the stream's models
            self._produce(topic, *out.private, partition)
            if self.p.learn.models_of.get(out.stream):
                self._produce(self.p.topics.learn(out.stream), *out.private, 0)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        headers: Any,
        partition: int | None,
        key: bytes | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"headers": headers} if headers else {}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:  # the client's queue is full: let it drain
                self.producer.poll(0.05)
        self.producer.poll(0)

    def _produce_state(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        self._produce(topic, value, None, partition, key)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_error = f"{msg.topic()}: {err}"

    def _flush(self) -> None:
        """Until every output is delivered (an outage waits here); a refusal stops the intake."""
        while self.producer.flush(1.0):
            if self._stop.is_set() and self._thread is not threading.current_thread():
                break
        if self._delivery_error is not None:
            raise RuntimeError(f"a private output was refused: {self._delivery_error}")

    def _consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise RuntimeError(f"the intake's consumer failed: {error}")
        _consumer_log.warning("intake: %s", error)

    # -- saves and commits ----------------------------------------------------------------

    def _upkeep(self) -> None:
        p = self.p
        if time.monotonic() - self._last_save >= p.ws.checkpoint_every_s:
            self._save()
        if time.monotonic() >= self._next_upkeep:
            self._next_upkeep = time.monotonic() + 5.0
            self._destroy_noise()
            self._report()

    def _save(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Flush outputs, write changed ledger shards, flush, commit what they cover."""
        self._last_save = time.monotonic()
        self._flush()
        for key, partition, columns in self.p.privatize.dirty_shards():
            self.topics_state.put_budget(key, columns, partition)
        self._flush()
        owned = self._owned if partitions is None else partitions & self._owned
        offsets = [
            TopicPartition(topic, part, done + 1)
            for (topic, part), done in self._done.items()
            if (topic, part) in owned and done + 1 > self._committed.get((topic, part), -1)
        ]
        try:  # refused mid-rebalance: the next save retries; a replay meanwhile is dropped
            if offsets and self.consumer is not None:
                self.consumer.commit(offsets=offsets, asynchronous=False)
                self._committed.update({(tp.topic, tp.partition): tp.offset for tp in offsets})
        except KafkaException as exc:
            log.warning("intake: offsets not committed this time (%s)", exc.args[0].name())

    def _destroy_noise(self) -> None:
        keys = self.p.privatize.noise
        gone = keys.expired(self.p.privatize.privatizer.clock())
        for name in gone:
            self.topics_state.put_noise(name, None, int(name.split("/")[1]))
            keys.store.pop(name, None)
        if gone:
            log.info("noise secrets destroyed: %d (their windows are past replay)", len(gone))

    def _behind(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(high watermark, messages behind it) per partition owned (cached: no round trip)."""
        out: dict[tuple[str, int], tuple[int, int]] = {}
        consumer = self.consumer
        for topic, partition in sorted(self._owned):
            assert consumer is not None  # partitions are owned only once it subscribed
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high >= 0:
                at = self._done.get(
                    (topic, partition), self._committed.get((topic, partition), 0) - 1
                )
                out[(topic, partition)] = (high, max(0, high - at - 1))
        self._lag = sum(behind for _, behind in out.values())
        return out

    def _report(self) -> None:
        """Lag and stalls of the partitions owned (metrics, /status)."""
        p = self.p
        for (topic, partition), (high, behind) in self._behind().items():
            p.metrics.lag.labels(topic, str(partition)).set(behind)
            committed = self._committed.get((topic, partition))
            stalled = p.progress.check(
                topic, partition, end=high, committed=committed, position=high - behind
            )
            for agent, seconds in stalled.items():
                p.metrics.stalled.labels(agent, topic, str(partition)).set(seconds)

    # -- rebalances (called by the consumer, on this thread, inside ``consume``) ----------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            consumer.incremental_assign(partitions)
            return
        stage = self.p.privatize
        numbers = {tp.partition for tp in partitions}
        saved, noise = self.topics_state.load(numbers)
        for tp in partitions:
            stage.load_ledger(saved, self.p.stream_of[tp.topic], tp.partition)
            self._owned.add((tp.topic, tp.partition))
        stage.noise.store.update(noise)
        starts = self._starts(consumer, partitions)
        consumer.incremental_assign(starts)
        log.info(
            "intake: assigned %s",
            ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in starts),
        )

    def _starts(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Where each partition starts: the intake group's committed offset; else, for a
        worker upgraded from the Faust privatize agent, that group's; else the earliest."""
        committed = consumer.committed(partitions, timeout=30)
        missing = [tp for tp in committed if tp.offset < 0]
        if missing:
            earlier = faust_offsets(self.p.ks, app_id(self.p.ws, self.p.ks), missing)
            committed = [
                TopicPartition(
                    tp.topic, tp.partition, earlier.get((tp.topic, tp.partition), tp.offset)
                )
                for tp in committed
            ]
        for tp in committed:
            if tp.offset >= 0:
                self._committed[(tp.topic, tp.partition)] = tp.offset
                self._done[(tp.topic, tp.partition)] = tp.offset - 1
        return committed

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        if revoked & self._owned:
            self._save(revoked)
        self._drop(revoked)
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another worker owns them now: nothing is committed for them, their charges since
        # the last save are replayed there.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        log.warning("intake: partitions lost (session expired): %s", sorted(lost))
        self._flush()
        self._drop(lost)
        consumer.incremental_unassign(partitions)

    def _drop(self, partitions: set[tuple[str, int]]) -> None:
        stage = self.p.privatize
        for topic, partition in partitions:
            self._owned.discard((topic, partition))
            self._done.pop((topic, partition), None)
            self._committed.pop((topic, partition), None)
            stage.forget_ledger(self.p.stream_of[topic], partition)
            self.p.progress.forget(topic, partition)
        numbers = {part for _, part in self._owned}
        for name in [n for n in stage.noise.store if int(n.split("/")[1]) not in numbers]:
            stage.noise.store.pop(name, None)


__all__ = ["Intake"]
