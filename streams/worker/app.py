"""The Faust worker: three agents over batched Arrow envelopes.

* ``privatize``: raw ``events.<stream>`` → decode, validate, privatise → ``events.<stream>.private``
  (same partition; the source offset rides in a header); bad input → ``events.deadletter``.
* ``lake``: private topics → Delta, exactly once (``streams.lake``); acks only after commit.
* ``learn``: private events → the online models of their stream (one per learner spec,
  ``EDDYLINE_LEARNERS``); drift → ``signals.drift``; checkpoints → ``signals.models``.

One process is one asyncio loop; scale out with more processes in the same consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import os
import sys
import threading
import time
import traceback
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eddyline.online_learning.checkpoint import ModelStore
from eddyline.online_learning.detectors import Alarm
from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.registry import ModelRegistry
from eddyline.online_learning.shadow import ShadowEvaluator
from eddyline.online_learning.spec import LearnerSpec, LearnerSpecError, load_specs
from eddyline.privacy.budget import shard_columns
from eddyline.privacy.noise import NoiseKeys
from eddyline.schemas.deadletter import DeadLetter, Reason, deadletter_table
from eddyline.schemas.envelope import (
    ARROW,
    H_CONTENT_TYPE,
    H_SCHEMA,
    H_SOURCE,
    decode,
    encode_arrow,
    header_map,
)
from eddyline.schemas.events import DriftEvent, ModelEvent, TimeWindow
from eddyline.schemas.source import SourceRef
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import STREAMS, Topics, noise_keep_windows
from eddyline.streams.kafka.transport import kafka_transport
from eddyline.streams.worker.batching import CommitBatcher, FlushPolicy
from eddyline.streams.worker.budget_state import TABLE as BUDGET_TABLE
from eddyline.streams.worker.budget_state import shard_key, shard_of
from eddyline.streams.worker.continuity import KafkaProbe, OffsetGuard, Seeker
from eddyline.streams.worker.metrics import WorkerMetrics
from eddyline.streams.worker.privatizer import (
    Privatizer,
    consented,
    drift_table,
    model_metrics_table,
    pseudonymizer_from_settings,
)
from eddyline.streams.worker.progress import PartitionProgress
from eddyline.streams.worker.sink import DeltaSink

log = logging.getLogger("eddyline.worker")
_JSON_HEADERS = [(H_CONTENT_TYPE, b"application/json")]
# The worker's producer takes messages up to 16 MiB (``producer_max_request_size``); a
# private envelope leaves room for its headers and the record's framing.
_MAX_PRIVATE_BYTES = 16 * 1024 * 1024 - 64 * 1024
NOISE_TABLE = "noise"
# Compacted, rolled and cleaned within hours, so a destroyed secret is soon gone from disk.
NOISE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(3600 * 1000),
    "delete.retention.ms": str(3600 * 1000),
    "min.cleanable.dirty.ratio": "0.01",
}


def _raw_topic(app: faust.App, *names: str) -> faust.TopicT:
    """A topic of raw bytes: envelopes are decoded by our code, not by Faust's codecs."""
    return app.topic(*names, value_type=bytes, value_serializer="raw", key_serializer="raw")


class Pipeline:
    """The worker's state, built once: privatizer, Delta sink, models, metrics, topics."""

    def __init__(self, ws: WorkerSettings, ks: KafkaSettings, streams: list[str]) -> None:
        self.ws, self.ks, self.streams = ws, ks, streams
        self.topics = Topics(ks.namespace)
        rng = np.random.default_rng(ws.seed)  # None: seeded from the OS CSPRNG
        pseudonymizer = pseudonymizer_from_settings(ws)
        self.privatizer = Privatizer(
            pseudonymizer,
            rng,
            max_bytes=ws.max_envelope_bytes,
            max_rows=ws.max_envelope_rows,
            budget=(ws.budget_epsilon, ws.budget_delta, ws.budget_window_s),
            window=TimeWindow(
                timedelta(seconds=ws.max_event_age_s), timedelta(seconds=ws.max_clock_skew_s)
            ),
        )
        # The noise secrets (privacy/noise.py), in the worker's own Faust table ``noise``:
        # kept while a replay of a raw message could still need them.
        self.noise = NoiseKeys(ws.budget_window_s, noise_keep_windows(ws.budget_window_s), {})
        # Per raw partition, the highest offset whose rows the metrics counted: a message
        # read again (an agent restarted, a rebalance) is processed again, counted once.
        self.counted: dict[tuple[str, int], int] = {}
        self.progress = PartitionProgress(ws.stall_after_s)
        self.queues: dict[str, Any] = {}  # agent -> the queue Faust hands it messages on
        started = time.monotonic()  # the accountant's search, before consuming (seconds)
        self.allowances = self.privatizer.allowances()
        self.allowances_s = time.monotonic() - started
        self.sink = DeltaSink(ws.lake_path)
        self.metrics = WorkerMetrics.create()
        self.store = ModelStore(ws.state_dir / "models")
        self.models: dict[str, OnlineModel] = {}
        # model -> raw partition -> last raw offset it has learned (from its checkpoint)
        self.model_offsets: dict[str, dict[int, int]] = {}
        for spec in load_specs(ws.learners):
            if spec.stream not in streams:
                raise LearnerSpecError(
                    f"learner {spec.name!r} reads {spec.stream!r}, which this worker does not "
                    f"process (streams: {', '.join(streams)})"
                )
            self.models[spec.name], self.model_offsets[spec.name] = self._restore(spec)
            # from the checkpoint, not from the first batch: a model whose checkpoint holds
            # its whole stream learns nothing more and would otherwise show no count at all
            self.metrics.model_seen.labels(spec.name).set(self.models[spec.name].seen)
        self.models_of: dict[str, list[OnlineModel]] = defaultdict(list)
        for model in self.models.values():
            self.models_of[model.stream].append(model)
        self._last_checkpoint = dict.fromkeys(self.models_of, time.monotonic())
        self._last_budget_save = time.monotonic()
        # Raw partitions whose ledgers were loaded from the budget table since the last
        # rebalance; bumped by each rebalance, which drops every in-memory ledger.
        self.ledgers_loaded: set[tuple[str, int]] = set()
        self.rebalances = 0
        # The privatize and lake agents' queues (agent -> queue): the learn agents wait
        # while these hold messages (``learn_yield_below``).
        self.data_path: dict[str, Any] = {}
        self.guards: dict[str, OffsetGuard] = {}  # per agent: offset continuity (continuity.py)
        self.budget_lock = asyncio.Lock()  # ledgers, charging + sending vs saving (privatize)
        # registry models (retrained offline), scored on the live batches of their model
        self.shadows: dict[str, ShadowEvaluator] = {}
        for model in self.models.values():
            if ws.shadow and model.spec.shadow:
                registry = ModelRegistry(ws.registry_path or f"{ws.lake_path}/_registry")
                self.shadows[model.name] = ShadowEvaluator(
                    registry, model.name, window=ws.shadow_window, min_events=ws.shadow_min_events
                )
        self.stream_of = {self.topics.raw(s): s for s in streams}
        self.stream_of.update({self.topics.private(s): s for s in streams})
        # Per model, recent messages learned: (events seen before and after it, raw
        # partition, raw offset); what a drift event's offsets come from.
        self.learned: dict[str, deque[tuple[int, int, int, int]]] = {
            name: deque(maxlen=50_000) for name in self.models
        }

    def _restore(self, spec: LearnerSpec) -> tuple[OnlineModel, dict[int, int]]:
        """The model's last checkpoint if it was taken of this very spec; else a fresh model
        (which learns from the committed offsets on, not from the start of the topic)."""
        ws = self.ws
        fresh = OnlineModel.from_spec(spec, warmup=ws.drift_warmup, cooldown=ws.drift_cooldown)
        try:
            restored = self.store.load(spec.name)
        except Exception as exc:  # an unreadable checkpoint must not stop the worker
            log.warning("model %s: checkpoint unreadable (%s); starting fresh", spec.name, exc)
            return fresh, {}
        if restored is None:
            return fresh, {}
        model = restored.model
        if not isinstance(model, OnlineModel) or model.spec.fingerprint() != spec.fingerprint():
            log.warning(
                "model %s: the checkpoint was taken of another spec; starting fresh (bump "
                "`version` in the spec when you change it)",
                spec.name,
            )
            return fresh, {}
        return model, restored.offsets

    def load_ledger(self, table: Any, stream: str, partition: int) -> None:
        """Restore one raw partition's ledgers from the (recovered) budget table."""
        prefix = f"{stream}/{partition}/"
        saved = [shard for key, shard in table.items() if key.startswith(prefix) and shard]
        self.privatizer.restore(stream, partition, saved)
        self.ledgers_loaded.add((stream, partition))
        users = sum(len(shard_columns(s)["users"]) for s in saved)
        log.info("budget ledger %s/%d: %d users restored", stream, partition, users)

    def forget_ledger(self, stream: str, partition: int) -> None:
        """Drop a partition's in-memory ledgers; the next event reloads them from the table."""
        self.privatizer.ledgers.pop((stream, partition), None)
        self.ledgers_loaded.discard((stream, partition))

    def budget_due(self) -> bool:
        return time.monotonic() - self._last_budget_save >= self.ws.checkpoint_every_s

    async def save_budget(self, app: faust.App, table: Any) -> int:
        """Save the ledger shards holding a user whose ledger changed; how many.

        First every output so far is flushed to Kafka: an entry's offset then promises that
        the user's events up to it are delivered, so a replay can skip them. Then the
        shards are flushed too, before the caller acks what they cover. One changelog
        message per shard (all its users), not per user: a message per user cost a quarter
        of the worker's throughput at 20,000 users."""
        async with self.budget_lock:
            return await self._save_budget(app, table)

    async def noise_key(
        self, app: faust.App, table: Any, stream: str, partition: int, timestamp: float
    ) -> bytes:
        """The noise secret of a raw message (by its partition and Kafka timestamp): the
        one its partition's owners used before, else a new one, in the changelog before
        any noise drawn from it leaves the worker."""
        keys = self.noise
        name = keys.name(stream, partition, keys.window_for(timestamp, time.time()))
        found = keys.get(name)
        if found is None:
            found = keys.new()
            await table.changelog_topic.send(
                key=name,
                value=found.hex(),
                partition=partition,
                key_serializer=table.key_serializer,
                value_serializer=table.value_serializer,
            )
            await app.producer.flush()
            keys.store[name] = found.hex()
        return found

    async def destroy_noise_keys(self, table: Any) -> int:
        """Tombstone the noise secrets no replay can need (compaction then drops them)."""
        gone = self.noise.expired(time.time())
        for name in gone:
            await table.changelog_topic.send(
                key=name,
                value=None,
                partition=int(name.split("/")[1]),
                key_serializer=table.key_serializer,
                value_serializer="raw",
            )
            self.noise.store.pop(name, None)
        if gone:
            log.info("noise secrets destroyed: %d (their windows are past replay)", len(gone))
        return len(gone)

    def not_counted(self, src: SourceRef) -> bool:
        """Whether the rows of this raw message have not been counted yet (a message read
        again after an agent restart or a rebalance is counted once)."""
        return src.offset > self.counted.get((src.topic, src.partition), -1)

    def counted_up_to(self, src: SourceRef) -> None:
        key = (src.topic, src.partition)
        self.counted[key] = max(src.offset, self.counted.get(key, -1))

    async def _save_budget(self, app: faust.App, table: Any) -> int:
        self._last_budget_save = time.monotonic()
        await app.producer.flush()
        saved = 0
        for (stream, partition), ledger in self.privatizer.ledgers.items():
            # windows are the worker clock's, so none before the current one is charged again
            ledger.forget_before(ledger.window_of(self.privatizer.clock()))
            dirty = ledger.dirty_shards(shard_of)  # shards with a changed user: rewritten whole
            if not dirty:
                continue
            for shard, columns in ledger.shards(dirty, shard_of).items():
                key = shard_key(stream, partition, shard)
                # Sent now, not through Table.send_changelog: that queues in Faust's
                # producer buffer, whose flush gives up after 0.1 s without a send, so
                # the flush below could return (and the caller ack) before the shard
                # reached the Kafka client.
                await table.changelog_topic.send(
                    key=key,
                    value=columns,
                    partition=partition,
                    key_serializer=table.key_serializer,
                    value_serializer=table.value_serializer,
                )
                if columns:
                    table.data[key] = columns
                else:
                    table.data.pop(key, None)
                saved += 1
        await app.producer.flush()
        return saved

    async def maybe_checkpoint(self, stream: str) -> list[ModelEvent]:
        """Checkpoint the models of ``stream`` and their offsets if ``checkpoint_every_s``
        has passed; the ``ModelEvent`` announcing each (none if it was not time yet)."""
        if time.monotonic() - self._last_checkpoint[stream] < self.ws.checkpoint_every_s:
            return []
        self._last_checkpoint[stream] = time.monotonic()
        announced = []
        for live in self.models_of[stream]:
            name = live.name
            live.checkpoints += 1
            # A consistent copy, taken on the event loop between batches; written in a thread.
            model, offsets = copy.deepcopy(live), dict(self.model_offsets[name])
            await asyncio.to_thread(self.store.save, name, model, offsets)
            announced.append(
                ModelEvent(
                    model=name,
                    model_version=model.version,
                    checkpoint=model.checkpoints,
                    events_seen=model.seen,
                    offsets=offsets,
                    error_rate=model.detector.estimate,
                    metrics=model.rolling_metrics(),
                )
            )
        return announced

    def drift_event(
        self,
        model: OnlineModel,
        alarm: Alarm,
        signal: str = "error_rate",
        watched: str | None = None,
    ) -> DriftEvent:
        """A drift event naming the offsets of the data after the change. ``signal``:
        error_rate (concept drift), label_rate (prior drift) or feature (data drift, the
        feature named by ``watched``, e.g. ``feature:position``)."""
        start = alarm.change_index
        after: dict[int, tuple[int, int]] = {}
        for seen_before, seen_after, partition, offset in self.learned[model.name]:
            # A message belongs to the "after" window if most of its rows do: envelopes hold
            # thousands of events, and a cut a few values early must not pull in a whole
            # pre-change envelope.
            if (seen_before + seen_after) / 2 > start:
                lo, hi = after.get(partition, (offset, offset))
                after[partition] = (min(lo, offset), max(hi, offset))
        key = ",".join(f"{p}:{lo}" for p, (lo, _) in sorted(after.items()))
        return DriftEvent(
            idempotency_key=f"{model.name}:{model.version}:{watched or signal}:{key}",
            model=model.name,
            model_version=model.version,
            stream=model.stream,
            signal=signal,  # type: ignore[arg-type]  # one of DriftEvent's signals
            feature=watched.split(":", 1)[1]
            if watched and watched.startswith("feature:")
            else None,
            detector="adwin",
            severity=alarm.severity,
            stat_before=alarm.before,
            stat_after=alarm.after,
            events_seen=alarm.index,
            offsets_after=after,
            lake_version=self.sink.version(model.stream),
            lake_version_before=self.sink.version_before(
                model.stream,
                {(self.topics.raw(model.stream), p): lo for p, (lo, _) in after.items()},
            ),
        )


def build_app(
    ws: WorkerSettings | None = None,
    ks: KafkaSettings | None = None,
    streams: list[str] | None = None,
) -> tuple[faust.App, Pipeline]:
    """The Faust app and its pipeline state, for these settings."""
    ws, ks = ws or WorkerSettings(), ks or KafkaSettings()
    p = Pipeline(ws, ks, streams or STREAMS)
    (ws.state_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust's mkdir is not -p
    app = faust.App(
        f"{ks.namespace}.{ws.app_id}" if ks.namespace else ws.app_id,
        broker=[f"kafka://{host}" for host in ks.bootstrap.split(",")],
        store="memory://",
        # Faust's own folder (by default "<app id>-data" in the working directory)
        datadir=str(ws.state_dir / "faust"),
        autodiscover=False,
        web_host=ws.web_host,
        web_bind=ws.web_host,
        web_port=ws.web_port,
        # Exactly-once rests on the offsets in each Delta commit, not on Kafka commits, so a
        # rebalance or shutdown need not wait for in-flight events: they are replayed and
        # de-duplicated. Waiting would hang shutdown whenever an agent holds unacked events.
        stream_wait_empty=False,
        topic_partitions=ks.partitions,
        topic_replication_factor=ks.replication,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=ws.session_timeout_s,
        broker_heartbeat_interval=min(3.0, ws.session_timeout_s / 3),
        producer_max_request_size=16 * 1024 * 1024,
        # Envelopes are ~100-500 kB: Faust's 1 MiB default fetches only a few per round trip.
        consumer_max_fetch_size=16 * 1024 * 1024,
    )
    app.transport = kafka_transport(app, ws.fetch_max_wait_ms)  # before any topic
    raw = _raw_topic(app, *[p.topics.raw(s) for s in p.streams])
    private = _raw_topic(app, *[p.topics.private(s) for s in p.streams])
    out = {s: _raw_topic(app, p.topics.private(s)) for s in p.streams}
    deadletter = _raw_topic(app, p.topics.deadletter)
    drift = _raw_topic(app, p.topics.drift)
    models = _raw_topic(app, p.topics.models)

    # Offsets checked in every agent: Faust can skip messages across a rebalance
    # (streams/continuity.py); the guards share one probe of the broker.
    probe = KafkaProbe(ks, app.conf.id)
    seeker = Seeker(app.consumer)

    def guard(agent: str, stream: Any, topics: list[str]) -> OffsetGuard:
        queue = _queue(stream)
        p.progress.reads(agent, topics)
        p.queues[agent] = queue
        p.guards[agent] = OffsetGuard(
            app,
            probe,
            on_reread=lambda topic, n: p.metrics.rereads.labels(topic).inc(n),
            topics=topics,
            pending=queue.qsize,
            seeker=seeker,
        )
        return p.guards[agent]

    async def admitted(agent: str, offsets: OffsetGuard, message: Any) -> bool:
        """The guard's verdict (``OffsetGuard.admit``); an admitted message is in the
        agent's hands until it reports it finished (``p.progress``)."""
        if not await offsets.admit(message):
            return False
        p.progress.received(agent, message.topic, message.partition, message.offset)
        return True

    async def dead(letters: list[DeadLetter], count: bool = True) -> None:
        for letter in letters:
            if count:
                p.metrics.deadlettered.labels(letter.reason).inc(letter.count)
            await deadletter.send(value=letter.to_json(), headers=_JSON_HEADERS)

    async def _privatize_one(event: Any) -> None:
        """One raw message through the privacy stage. Nothing the message holds can make
        this raise: whatever fails becomes a dead letter, and the partition moves on."""
        msg = event.message
        src = SourceRef(msg.topic, msg.partition, msg.offset)
        name = p.stream_of[msg.topic]
        first = p.not_counted(src)
        try:
            key = await p.noise_key(app, noise, name, msg.partition, msg.timestamp or time.time())
            result = p.privatizer.process(event.value, msg.headers, src, name, noise_key=key)
            if first:
                _count(name, result)
            await dead(result.dead, count=first)
            if result.private is not None and result.private.num_rows:
                await _send_private(name, src, result.private, result.schema_id or "", first)
        except Exception as exc:  # a bug must not block the partition: dead-letter it
            _log_failure("privatize", src, exc)
            await dead([DeadLetter(Reason.INTERNAL_ERROR, type(exc).__name__, src)], count=first)
        p.counted_up_to(src)
        p.progress.advanced("privatize", msg.topic, msg.partition, msg.offset)

    def _count(name: str, result: Any) -> None:
        p.metrics.events_in.labels(name).inc(result.received)
        p.metrics.envelope_rows.observe(result.received)
        p.metrics.suppressed.labels(name, "consent").inc(result.suppressed)
        p.metrics.suppressed.labels(name, "budget").inc(result.over_budget)
        p.metrics.suppressed.labels(name, "budget_coarsened").inc(result.coarsened)
        p.metrics.replayed.labels(name).inc(result.replayed)
        for kind, n in result.masked.items():
            p.metrics.pii_masked.labels(name, kind).inc(n)
        if result.private is not None:
            p.metrics.budget_charged.labels(name).inc(result.private.num_rows)

    async def _send_private(
        name: str, src: SourceRef, private: Any, schema_id: str, first: bool
    ) -> None:
        value, headers = encode_arrow(private, schema_id, [(H_SOURCE, src.header())])
        if len(value) > _MAX_PRIVATE_BYTES:  # Kafka would refuse it, on every retry
            await dead(
                [
                    DeadLetter(
                        Reason.ENVELOPE_TOO_LARGE,
                        f"its private batch would be {len(value):,} bytes, over the "
                        f"{_MAX_PRIVATE_BYTES:,} a Kafka message may hold",
                        src,
                        schema_id,
                        count=private.num_rows,
                    )
                ],
                count=first,
            )
            return
        await out[name].send(value=value, partition=src.partition, headers=headers)
        if first:
            p.metrics.events_private.labels(name).inc(private.num_rows)

    # The budget ledger: changelog-backed Faust table state (streams/budget_state.py).
    budget = app.Table(
        BUDGET_TABLE,
        default=None,
        partitions=ks.partitions,  # keys and values travel as JSON (Faust's default)
        help="Per-user privacy budget: events charged per window, last raw offset",
    )
    # The noise secrets (privacy/noise.py): read by workers only, never by `budget show`.
    noise = app.Table(
        NOISE_TABLE,
        default=None,
        partitions=ks.partitions,
        extra_topic_configs=NOISE_TOPIC_CONFIG,
        help="Noise secrets per raw partition and window, destroyed when past replay",
    )

    @app.on_rebalance_complete.connect
    def on_rebalance(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust re-seeks every partition to its committed offset: whatever was charged
        # since the last save is replayed, so reload the ledgers from the table.
        p.rebalances += 1

    @app.agent(raw)
    async def privatize(stream: faust.StreamT[bytes]) -> None:
        # Acks wait for the budget save that covers them, so Kafka's committed offset never
        # runs ahead of the saved ledger; replays of what a save covers are skipped per user
        # (by offset), so after a crash the ledger equals that of a run without one.
        manual = stream.noack()  # type: ignore[attr-defined]  # on Stream, not StreamT
        processed: list[Any] = []
        generation = p.rebalances
        offsets = guard("privatize", stream, [p.topics.raw(s) for s in p.streams])
        log.info(  # logged here: logging is set up by now
            "budget allowances per user per %ss window: %s (the accountant took %.1fs)",
            p.ws.budget_window_s,
            ", ".join(f"{k} {v if v < 2**62 else 'unlimited'}" for k, v in p.allowances.items()),
            p.allowances_s,
        )
        p.data_path["privatize"] = _queue(stream)
        p.noise.store = noise.data  # recovered by Faust for the partitions assigned
        async for event in manual.events():
            if not await admitted("privatize", offsets, event.message):
                continue  # a skipped offset is being re-read: this comes again after it
            msg = event.message
            name = p.stream_of[msg.topic]
            # One budget lock per message, held while ledgers change and while charging
            # and sending: a save (also the idle timer's) awaits sends while it walks the
            # ledgers (a ledger loaded mid-walk crashed the app: "dictionary changed size
            # during iteration"), and must never see a charge whose output is not sent yet
            # (it promises the outputs of what it covers are in Kafka, so a replay skips
            # them). If this is cut short (a cancelled agent at shutdown or rebalance), the
            # partition's in-memory ledger is dropped, so the half-done charge can never be
            # saved; it reloads from the table.
            async with p.budget_lock:
                if generation != p.rebalances:
                    generation = p.rebalances
                    processed.clear()
                    p.privatizer.ledgers.clear()
                    p.ledgers_loaded.clear()
                if (name, msg.partition) not in p.ledgers_loaded:
                    p.load_ledger(budget, name, msg.partition)
                try:
                    await _privatize_one(event)
                except BaseException:
                    p.forget_ledger(name, msg.partition)
                    raise
            processed.append(event)
            # Every envelope gives the event loop a turn: nothing above need suspend (sends
            # only queue), so with a backlog this could run many envelopes while Faust's
            # fetch loop, the lake, the timers and /metrics waited (1M-event drains, 7
            # interleaved pairs: median 2.85 s to Delta with the turn, 3.13 s without).
            await asyncio.sleep(0)
            if p.budget_due():
                await p.save_budget(app, budget)
                for done in processed:
                    await manual.ack(done)
                processed.clear()

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    @_survives
    async def save_idle_budget() -> None:
        # An idle partition still gets its last charges saved (the agent saves on events).
        if p.budget_due() and any(led.has_changes for led in p.privatizer.ledgers.values()):
            await p.save_budget(app, budget)

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    @_survives
    async def destroy_noise_keys() -> None:
        async with p.budget_lock:  # the privatize agent adds secrets under the same lock
            await p.destroy_noise_keys(noise)

    @app.agent(private)
    async def lake(stream: faust.StreamT[bytes]) -> None:
        # Envelopes gather while the previous commit runs; each commit acks what it holds
        # (streams/batching.py says when a batch is due).
        manual = stream.noack()  # type: ignore[attr-defined]  # on Stream, not StreamT
        offsets = guard("lake", stream, [p.topics.private(s) for s in p.streams])
        p.data_path["lake"] = _queue(stream)

        async def commit(batch: list[tuple[Any, str, Any, SourceRef]]) -> None:
            by_table: dict[str, list[Any]] = defaultdict(list)
            for _, name, stored, src in batch:
                by_table[name].append((stored, src))
            await _commit(p, by_table)
            for event, *_ in batch:
                await manual.ack(event)
                m = event.message
                p.progress.advanced("lake", m.topic, m.partition, m.offset)

        policy = FlushPolicy(
            max_messages=ws.lake_max_messages,
            max_rows=ws.lake_max_rows,
            max_wait_s=ws.lake_max_wait_s,
            idle_s=ws.lake_idle_s,
            idle_min_rows=ws.lake_idle_min_rows,
        )
        batcher = CommitBatcher(commit, policy)
        committer = asyncio.ensure_future(batcher.run())
        try:
            async for event in manual.events():
                if committer.done():  # a commit raised: crash the agent, never drop
                    committer.result()
                if not await admitted("lake", offsets, event.message):
                    continue
                h = header_map(event.message.headers)
                name, table = p.stream_of[event.message.topic], decode(event.value, h).table
                assert table is not None  # the privatize agent only writes Arrow envelopes
                stored = consented(table, "store")
                p.metrics.suppressed.labels(name, "consent_store").inc(
                    table.num_rows - stored.num_rows
                )
                src = SourceRef.parse(h[H_SOURCE])
                await batcher.add((event, name, stored, src), stored.num_rows)
        finally:
            # Stopping (SIGTERM): commit what has gathered, after the commit in flight, so
            # the next owner has nothing to redo. Faust cancels this task more than once
            # while it stops, then awaits it: each cancel is waited through, up to the
            # timeout (seen: a single wait was cut by the second cancel, and nothing was
            # committed). Past it, what is pending is not acked, so it is replayed and
            # dropped as a duplicate where it did land.
            batcher.close()
            deadline = time.monotonic() + ws.lake_close_timeout_s
            while not committer.done() and (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([committer], timeout=left)
            if not committer.done():
                committer.cancel()
                log.warning("lake: %d envelopes not committed at stop", batcher.pending)
            elif not committer.cancelled() and committer.exception() is not None:
                log.error("lake: the last commit failed at stop: %r", committer.exception())

    def json_to_delta(topic: faust.TopicT, table: str, rows: Any) -> Any:
        """An agent writing a topic of JSON messages to Delta ``table``, exactly once like
        the event tables; ``rows(value)`` turns one message into an Arrow table."""

        @app.agent(topic, name=f"eddyline.{table}")
        async def agent(stream: faust.StreamT[bytes]) -> None:
            offsets = guard(table, stream, [topic.get_topic_name()])
            async for batch in stream.noack_take(  # type: ignore[attr-defined]  # on Stream
                ws.lake_max_messages, within=ws.lake_max_wait_s
            ):
                events = [ev for ev in batch if await admitted(table, offsets, ev.message)]
                batches = [
                    (
                        rows(ev.value),
                        SourceRef(ev.message.topic, ev.message.partition, ev.message.offset),
                    )
                    for ev in events
                ]
                await _commit(p, {table: batches})
                for ev in events:
                    await stream.ack(ev)
                    m = ev.message
                    p.progress.advanced(table, m.topic, m.partition, m.offset)

        return agent

    json_to_delta(deadletter, "deadletters", lambda v: deadletter_table([v], datetime.now(UTC)))
    json_to_delta(drift, "drift_events", lambda v: drift_table([v]))
    json_to_delta(models, "model_metrics", lambda v: model_metrics_table([v]))

    @app.page("/predict/{model}")
    async def predict(web: Any, request: Any, model: str) -> Any:
        """``GET /predict/click?item_category=news&position=3&dwell_time_s=12``: the query
        holds the model's features (its spec's columns)."""
        started = time.perf_counter()
        online = p.models.get(model)
        if online is None:
            return web.json(
                {"error": f"unknown model {model!r} (models: {', '.join(p.models)})"}, status=404
            )
        try:
            proba = online.predict_one(dict(request.query))
        except LearnerSpecError as exc:
            return web.json({"error": f"bad query: {exc}"}, status=400)
        p.metrics.predict.observe(time.perf_counter() - started)
        return web.json(
            {
                "model": online.name,
                "model_version": online.version,
                "events_seen": online.seen,
                "probability": proba,
            }
        )

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    @_survives
    async def check_stalled() -> None:
        # Partitions the consumer read past while their agent got nothing (continuity.py).
        for offsets in list(p.guards.values()):
            await offsets.check_stalled()

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    @_survives
    async def report_lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            try:
                position, end = await consumer.position(tp), consumer.highwater(tp)
            except Exception as exc:  # revoked since assignment() (a rebalance): skip it
                log.debug("lag of %s: %r", tp, exc)
                continue
            if position is not None and end is not None:
                p.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
            if end is not None:
                _check_progress(tp, position, end)

    def _check_progress(tp: Any, position: int | None, end: int) -> None:
        consumer: Any = app.consumer  # Faust keeps the committed offsets on its own class
        stalled = p.progress.check(
            tp.topic,
            tp.partition,
            end=end,
            committed=consumer._committed_offset.get(tp),
            position=position,
            queued={agent: q.qsize() for agent, q in p.queues.items()},
        )
        for agent, seconds in stalled.items():
            p.metrics.stalled.labels(agent, tp.topic, str(tp.partition)).set(seconds)
            if seconds:
                log.warning(
                    "%s: %s/%d has not advanced for %.0fs with messages waiting (see /status)",
                    agent,
                    tp.topic,
                    tp.partition,
                    seconds,
                )

    async def yield_to_data_path(own: Any) -> None:
        """Learning waits while the privatize or lake agent has messages queued, until its
        own queue (``own``) holds ``learn_yield_below`` messages, or for 5 s at most: with
        a backlog, events reach Delta first and the models follow, their lag bounded by
        that queue. All agents share one event loop, and with each taking its turn a
        backlog reached Delta only at the pace of all three together (1M events: in Delta
        after 4.5-5.0 s, learned after ~4.4 s; with this wait, in Delta after ~3.0 s and
        learned after ~4.9 s; /tmp timelines of bench/pipeline.py's drain, 3 runs each).
        """
        give_up = time.monotonic() + 5.0  # never stuck behind a queue that stopped moving
        while (
            own.qsize() < ws.learn_yield_below
            and any(q.qsize() for q in p.data_path.values())
            and time.monotonic() < give_up
        ):
            await asyncio.sleep(0.002)

    def learn_agent(name: str) -> Any:
        """The learn agent of one stream: its private topic → the models of that stream.

        One agent per stream: its acks wait only for its own models' checkpoint. (A single
        agent over both private topics was where a restarted worker was first seen to
        stall; the stall went away once budget shards stopped going through Faust's
        producer buffer, see ``_save_budget``.)"""

        async def learn(stream: faust.StreamT[bytes]) -> None:
            # Acks wait for the checkpoint that covers them: Kafka's committed offset never
            # runs ahead of the models, so a restart resumes exactly where the checkpoint
            # stopped. Offsets are the raw source's (from the envelope header), as in the
            # lake: a raw message privatised twice after a crash arrives twice, and is
            # learned once.
            manual = stream.noack()  # type: ignore[attr-defined]  # on Stream, not StreamT
            unacked: list[Any] = []
            for model in p.models_of[name]:  # logged here: logging is set up by now
                log.info(
                    "model %s v%d over %s: %s",
                    model.name,
                    model.version,
                    model.stream,
                    f"resumed at {model.seen:,} events" if model.seen else "fresh",
                )
            offsets = guard(f"learn.{name}", stream, [p.topics.private(name)])
            async for event in manual.events():
                await yield_to_data_path(_queue(stream))
                if not await admitted(f"learn.{name}", offsets, event.message):
                    continue
                headers = header_map(event.message.headers)
                src = SourceRef.parse(headers[H_SOURCE])
                unacked.append(event)
                table = None
                for model in p.models_of[name]:
                    if src.offset <= p.model_offsets[model.name].get(src.partition, -1):
                        continue  # in the restored checkpoint, or a replay of a learned message
                    if table is None:
                        decoded = decode(event.value, headers).table
                        assert decoded is not None
                        table = consented(decoded, "learn")
                    await learn_batch(model, table, src)
                m = event.message
                p.progress.advanced(f"learn.{name}", m.topic, m.partition, m.offset)
                announced = await p.maybe_checkpoint(name)
                if announced:
                    for done in unacked:
                        await manual.ack(done)
                    unacked.clear()
                for change in announced:
                    # the rolling metrics are computed once per checkpoint, not per batch
                    for metric, value in change.metrics.items():
                        p.metrics.model_metric.labels(change.model, metric).set(value)
                    await models.send(
                        key=change.model.encode(),
                        value=change.model_dump_json().encode(),
                        headers=_JSON_HEADERS,
                    )

        topic = _raw_topic(app, p.topics.private(name))
        return app.agent(topic, name=f"eddyline.learn.{name}")(learn)

    learners = [learn_agent(name) for name in sorted(p.models_of)]

    async def learn_batch(model: OnlineModel, table: Any, src: SourceRef) -> None:
        """One model predicts, then learns, one private batch; its drift alarms become
        drift events; its registry versions are shadow-scored on the same rows."""
        try:
            outcome = model.process(table)
        except Exception:
            log.exception("%s: learning failed on a batch of %d rows", model.name, table.num_rows)
            return
        p.model_offsets[model.name][src.partition] = src.offset
        p.learned[model.name].append(
            (model.seen - table.num_rows, model.seen, src.partition, src.offset)
        )
        p.metrics.learned.labels(model.name).inc(table.num_rows)
        p.metrics.model_seen.labels(model.name).set(model.seen)
        shadow = p.shadows.get(model.name)
        if shadow is not None:
            try:
                changes = await asyncio.to_thread(shadow.observe, table)
            except Exception:
                log.exception("shadow evaluation of %s failed on a batch", model.name)
                changes = []
            for change in changes:
                await models.send(
                    key=change.model.encode(),
                    value=change.model_dump_json().encode(),
                    headers=_JSON_HEADERS,
                )
        alarms = [("error_rate", None, a) for a in outcome.alarms] + outcome.watched
        for signal, watched, alarm in alarms:
            drift_event = await asyncio.to_thread(p.drift_event, model, alarm, signal, watched)
            await drift.send(
                key=model.name.encode(),
                value=drift_event.model_dump_json().encode(),
                headers=[*_JSON_HEADERS, (H_SCHEMA, b"drift:1")],
            )
            p.metrics.drift_events.labels(model.name).inc()
            what = watched or signal
            log.warning("drift: %s %s %.3f -> %.3f", model.name, what, alarm.before, alarm.after)

    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        """Where each partition and agent stands: what to look at when a worker lags."""
        return web.json(worker_status(app, p))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, so the exposition type goes as a header.
        return web.bytes(
            generate_latest(p.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    del privatize, on_rebalance, save_idle_budget, destroy_noise_keys, lake, report_lag
    del learners, metrics, predict, status, check_stalled
    return app, p


def _log_failure(stage: str, src: SourceRef, exc: BaseException) -> None:
    """Log a failure with its traceback's frames but without its message: exception text
    can quote the input (Arrow's and pydantic's do), and logs are past the privacy
    boundary."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s failed at %s: %s (message withheld)\n%s", stage, src, type(exc).__name__, frames)


def _queue(stream: Any) -> Any:
    """The queue of messages Faust has handed an agent's stream and it has not taken yet."""
    return stream.channel.queue


def _survives(timer: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A timer whose failure is logged, not raised: Faust crashes the whole app when a
    timer raises (seen: the lag report asked the position of a partition a rebalance had
    just revoked). The timer runs again at its next tick."""

    @functools.wraps(timer)
    async def run() -> None:
        try:
            await timer()
        except Exception:
            log.exception("timer %s failed; it runs again at its next tick", timer.__name__)

    return run


def worker_status(app: faust.App, p: Pipeline) -> dict[str, Any]:
    """The consumer's flow state, agent queues and locks, as JSON-ready data (``/status``;
    also logged when a worker is asked to dump its state with SIGUSR1)."""
    consumer: Any = app.consumer  # the state below is Faust's own, not on ConsumerT

    def tps(items: Any) -> list[str]:
        return sorted(f"{tp.topic}/{tp.partition}" for tp in items or ())

    queues: dict[str, list[int]] = {}
    for name, agent in app.agents.items():
        actors = getattr(agent, "_actors", ())
        queues[name] = [a.stream.channel.queue.qsize() for a in actors]
    return {
        "fetch_state": _fetch_state(consumer),
        "assigned": tps(consumer.assignment()),
        "active": tps(consumer._active_partitions),  # Faust keeps these private
        "paused": tps(consumer._paused_partitions),
        "buffered": tps(consumer._buffered_partitions),
        "flow_active": consumer.flow_active,
        "flow_control_active": app.flow_control.is_active(),
        "in_recovery": app.in_recovery,
        "rebalancing": app.rebalancing,
        "agent_queues": queues,
        "budget_lock_held": p.budget_lock.locked(),
        "rebalances": p.rebalances,
        "ledgers_loaded": sorted(f"{s}/{n}" for s, n in p.ledgers_loaded),
        "models_seen": {name: m.seen for name, m in p.models.items()},
        "stalled": p.progress.stalled(),
        "offsets": {name: g.state() for name, g in p.guards.items()},
    }


def _fetch_state(consumer: Any) -> dict[str, Any]:
    """aiokafka's view of each event topic partition (Faust's consumer thread keeps its own
    paused set and positions): paused, position status, position, highwater."""
    try:
        assignment = consumer._thread._consumer._subscription.subscription.assignment
        states = {tp: assignment.state_value(tp) for tp in assignment.tps}
    except Exception as exc:  # diagnostics only: never fail the page
        return {"error": repr(exc)}
    return {
        f"{tp.topic}/{tp.partition}": [
            state.paused,
            str(state._status),
            state._position,
            state.highwater,
        ]
        for tp, state in sorted(states.items())
        if ".events." in tp.topic
    }


async def _commit(p: Pipeline, by_table: dict[str, list[Any]]) -> None:
    """Write each table's batches in one Delta commit; retry until it lands (never drop)."""
    for table, batches in by_table.items():
        delay = 0.5
        while True:
            try:
                with p.metrics.delta_commit.time():
                    rows, files = await asyncio.to_thread(_write, p.sink, table, batches)
                break
            except Exception:
                log.exception("Delta commit to %s failed; retrying in %.1fs", table, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        p.metrics.events_written.labels(table).inc(rows)
        p.metrics.commit_rows.observe(rows)
        p.metrics.files.labels(table).set(files)


def _write(sink: DeltaSink, table: str, batches: list[Any]) -> tuple[int, int]:
    """(rows written, data files now in the table): run in a thread, off the event loop."""
    rows = sink.write(table, batches)
    return rows, sink.files(table)


def run_worker(
    ws: WorkerSettings | None = None, ks: KafkaSettings | None = None, loglevel: str = "info"
) -> None:
    """Create missing topics, then run one worker until SIGTERM/SIGINT."""
    from eddyline.streams.kafka.topics import ensure_topics

    ws, ks = ws or WorkerSettings(), ks or KafkaSettings()
    ensure_topics(ks, STREAMS)
    app, _ = build_app(ws, ks)
    _Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker, which never outlives its app's crash.

    A crashed app makes the worker stop (exit status 1), but that shutdown can hang: seen
    after a timer crashed the app mid-rebalance, the consumer's final commit waited forever
    on its thread, leaving a zombie that answered its web pages, consumed nothing and was
    never restarted. Exactly-once needs no graceful stop, so after a grace period the
    process exits hard, and its supervisor (or the next ``eddyline worker run``) takes over."""

    crash_exit_grace_s = 30.0

    async def on_first_start(self) -> None:
        await super().on_first_start()
        watch = threading.Thread(target=self._exit_if_stuck_after_a_crash, daemon=True)
        watch.start()  # a thread: the event loop may be the thing that is stuck

    def _exit_if_stuck_after_a_crash(self) -> None:
        while not self.app.crashed:
            time.sleep(1.0)
        time.sleep(self.crash_exit_grace_s)
        log.critical(
            "the app crashed (%r) and the worker did not stop within %.0fs: exiting",
            self.app.crash_reason,
            self.crash_exit_grace_s,
        )
        sys.stderr.flush()
        os._exit(1)


__all__ = ["ARROW", "STREAMS", "Pipeline", "build_app", "run_worker", "worker_status"]
