"""The learn stage: private envelopes in, models updated, drift and model events out.

``LearnStage.learn`` feeds one private envelope to every online model of its stream (one per
learner spec): each predicts, then learns, the rows whose consent allows learning, unless
its checkpoint already covers the envelope's raw offset (a replay, or the restored past).
Drift alarms become ``DriftEvent``s naming the raw offsets after the change and the Delta
versions around it; registry versions are shadow-scored on the same rows
(``online_learning.shadow``). ``maybe_checkpoint`` saves each model with the offsets it
covers, every ``checkpoint_every_s``: the agent acks only what a checkpoint covers, so a
restart resumes exactly where the checkpoint stopped.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from eddyline.online_learning.checkpoint import ModelStore
from eddyline.online_learning.detectors import Alarm
from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.registry import ModelRegistry
from eddyline.online_learning.shadow import ShadowEvaluator
from eddyline.online_learning.spec import LearnerSpec, LearnerSpecError, load_specs
from eddyline.privacy.consent import consented
from eddyline.privacy.governance import Suppression
from eddyline.schemas.envelope import H_SOURCE, decode, header_map
from eddyline.schemas.events import DriftEvent, ModelEvent
from eddyline.schemas.source import SourceRef, rows_after
from eddyline.schemas.storage import join
from eddyline.streams.kafka.settings import WorkerSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.worker.lake_stage import without_pids
from eddyline.streams.worker.metrics import WorkerMetrics
from eddyline.streams.worker.sink import DeltaSink

log = logging.getLogger("eddyline.learn")


@dataclass
class Learned:
    """What one private envelope led to."""

    drift: list[DriftEvent] = field(default_factory=list)
    changes: list[ModelEvent] = field(default_factory=list)  # registry moves (shadowing)


class LearnStage:
    """The online models of one worker, by stream (see the module docstring)."""

    def __init__(
        self,
        ws: WorkerSettings,
        streams: list[str],
        metrics: WorkerMetrics,
        sink: DeltaSink,
        topics: Topics,
        suppression: Suppression | None = None,
    ) -> None:
        self.ws, self.metrics, self.sink, self.topics = ws, metrics, sink, topics
        self.suppression = suppression or Suppression()
        self.store = ModelStore(ws.checkpoints(), ws.storage())
        self.models: dict[str, OnlineModel] = {}
        # model -> raw partition -> last raw offset it has learned (from its checkpoint), and
        # the epoch (topic id) those offsets count in
        self.offsets: dict[str, dict[int, int]] = {}
        self.epochs: dict[str, dict[int, str]] = {}
        self.specs: dict[str, LearnerSpec] = {}
        self.saved_at: dict[str, float] = {}  # model -> its loaded checkpoint's store time
        for spec in load_specs(ws.learners):
            if spec.stream not in streams:
                raise LearnerSpecError(
                    f"learner {spec.name!r} reads {spec.stream!r}, which this worker does not "
                    f"process (streams: {', '.join(streams)})"
                )
            self.specs[spec.name] = spec
            model, self.offsets[spec.name], self.epochs[spec.name] = self._restore(spec)
            self.models[spec.name] = model
            # from the checkpoint: a model whose checkpoint holds its whole stream learns
            # nothing more and would otherwise show no count at all
            metrics.model_seen.labels(spec.name).set(self.models[spec.name].seen)
        self.models_of: dict[str, list[OnlineModel]] = defaultdict(list)
        for model in self.models.values():
            self.models_of[model.stream].append(model)
        self._last_checkpoint = dict.fromkeys(self.models_of, time.monotonic())
        # Streams whose learn partition this worker holds: it alone learns their models
        # (the group's first assignment narrows this; a worker alone keeps them all).
        self.owned: set[str] = set(self.models_of)
        self._reload_due: set[str] = set()
        # Reloads run in threads (the owner's, on assignment; a follower's refresh): one at a
        # time, and a refresh never installs a copy over a stream this worker now owns.
        self._reloading = threading.Lock()
        # registry versions (retrained offline), scored on the live batches of their model
        self.shadows: dict[str, ShadowEvaluator] = {}
        for model in self.models.values():
            if ws.shadow and model.spec.shadow:
                registry = ModelRegistry(
                    ws.registry_path or join(ws.lake_path, "_registry"), ws.storage()
                )
                self.shadows[model.name] = ShadowEvaluator(
                    registry, model.name, window=ws.shadow_window, min_events=ws.shadow_min_events
                )
        # Per model, recent envelopes learned: (events seen before and after it, raw
        # partition, first and last raw offset, source key); what a drift event's offsets
        # come from.
        self.learned: dict[str, deque[tuple[int, int, int, int, int, str]]] = {
            name: deque(maxlen=50_000) for name in self.models
        }

    def _restore(self, spec: LearnerSpec) -> tuple[OnlineModel, dict[int, int], dict[int, str]]:
        """The model's last checkpoint if it was taken of this very spec; else a fresh model
        (which learns from the committed offsets on, not from the start of the topic)."""
        ws = self.ws
        fresh = OnlineModel.from_spec(spec, warmup=ws.drift_warmup, cooldown=ws.drift_cooldown)
        try:
            self.saved_at[spec.name] = self.store.modified(spec.name) or 0.0
            restored = self.store.load(spec.name)
        except Exception as exc:  # an unreadable checkpoint must not stop the worker
            log.warning("model %s: checkpoint unreadable (%s); starting fresh", spec.name, exc)
            return fresh, {}, {}
        if restored is None:
            return fresh, {}, {}
        model = restored.model
        if not isinstance(model, OnlineModel) or model.spec.fingerprint() != spec.fingerprint():
            log.warning(
                "model %s: the checkpoint was taken of another spec; starting fresh (bump "
                "`version` in the spec when you change it)",
                spec.name,
            )
            return fresh, {}, {}
        return model, restored.offsets, restored.epochs

    # -- ownership (one learner per model across the group) ---------------------------------

    def assign(self, streams: set[str]) -> None:
        """The group's assignment now holds the learn partitions of ``streams``: this worker
        owns their models, from their latest checkpoint on the shared store (another owner
        may have advanced them; after any rebalance Kafka resumes at the last checkpoint)."""
        self.owned = streams & set(self.models_of)
        self._reload_due = set(self.owned)

    def revoke(self, streams: set[str]) -> None:
        """Learn partitions taken away: their models are no longer learned or saved here."""
        self.owned -= streams

    def owns(self, stream: str) -> bool:
        return stream in self.owned

    def reload_due(self, stream: str) -> bool:
        return stream in self._reload_due

    def reload(self, stream: str) -> None:
        """Replace ``stream``'s models with their checkpoints (fresh models if none)."""
        with self._reloading:
            self._reload(stream)

    def _reload(self, stream: str) -> None:
        models = []
        for old in self.models_of[stream]:
            spec = self.specs[old.name]
            model, self.offsets[spec.name], self.epochs[spec.name] = self._restore(spec)
            self.models[spec.name] = model
            self.learned[spec.name].clear()
            self.metrics.model_seen.labels(spec.name).set(model.seen)
            models.append(model)
        self.models_of[stream] = models
        self._reload_due.discard(stream)
        log.info("models of %s loaded from their checkpoints: %s", stream, self._describe(models))

    def refresh_followed(self) -> list[str]:
        """Reload the models of the streams this worker does not own when their owner has
        saved a newer checkpoint (what ``/predict`` answers with here); the streams reloaded."""
        done = []
        for stream in sorted(set(self.models_of) - self.owned):
            names = [m.name for m in self.models_of[stream]]
            newest = {n: self.store.modified(n) for n in names}
            if not any(t is not None and t > self.saved_at.get(n, 0.0) for n, t in newest.items()):
                continue
            with self._reloading:  # checked again under the lock: assigned meanwhile?
                if stream in self.owned or stream in self._reload_due:
                    continue  # its owner's reload (after this one) reads the same store
                self._reload(stream)
            done.append(stream)
        return done

    @staticmethod
    def _describe(models: list[OnlineModel]) -> str:
        return ", ".join(f"{m.name} v{m.version} at {m.seen:,} events" for m in models)

    # -- learning -------------------------------------------------------------------------

    async def learn(self, stream: str, value: bytes, headers: Any) -> Learned:
        """One private envelope through every model of ``stream`` that has not learned it."""
        h = header_map(headers)
        src = SourceRef.parse(h[H_SOURCE])
        out, table = Learned(), None
        for model in self.models_of[stream]:
            self._follow_epoch(model.name, src)
            done = self.offsets[model.name].get(src.partition, -1)
            if src.offset <= done:
                continue  # in the restored checkpoint, or a replay of a learned message
            if table is None:
                decoded = decode(value, h).table
                assert decoded is not None
                table = without_pids(consented(decoded, "learn"), self.suppression.pids("learn"))
            rows = rows_after(table, src, done)
            assert rows is not None
            await self._learn_batch(model, rows, src, out)
        return out

    def _follow_epoch(self, name: str, src: SourceRef) -> None:
        """Offsets count within one incarnation of the raw topic: a new topic id (the topic
        was deleted and created again) starts the partition's count afresh, where the old
        offsets would make every new envelope look learned."""
        known = self.epochs[name].get(src.partition)
        if not src.epoch or known == src.epoch:
            return
        if known:  # not a checkpoint from before epochs were recorded
            log.warning(
                "model %s: %s/%d is a new topic (id %s, was %s); its offsets start afresh",
                name,
                src.topic,
                src.partition,
                src.epoch,
                known,
            )
            self.metrics.epochs.labels("learn", src.topic).inc()
            self.offsets[name].pop(src.partition, None)
        self.epochs[name][src.partition] = src.epoch

    async def _learn_batch(
        self, model: OnlineModel, table: pa.Table, src: SourceRef, out: Learned
    ) -> None:
        started = time.thread_time()
        try:
            outcome = model.process(table)
            self.metrics.charge("learn", started, table.num_rows)
        except Exception:
            log.exception("%s: learning failed on a batch of %d rows", model.name, table.num_rows)
            return
        self.offsets[model.name][src.partition] = src.offset
        self.learned[model.name].append(
            (model.seen - table.num_rows, model.seen, src.partition, src.start, src.offset, src.key)
        )
        self.metrics.learned.labels(model.name).inc(table.num_rows)
        self.metrics.model_seen.labels(model.name).set(model.seen)
        shadow = self.shadows.get(model.name)
        if shadow is not None:
            try:
                out.changes += await asyncio.to_thread(shadow.observe, table)
            except Exception:
                log.exception("shadow evaluation of %s failed on a batch", model.name)
        # the error detector: 0/1 errors (classifiers), absolute residuals (regression)
        error = "residual" if model.spec.kind == "regression" else "error_rate"
        alarms = [(error, None, a) for a in outcome.alarms] + outcome.watched
        for signal, watched, alarm in alarms:
            event = await asyncio.to_thread(self.drift_event, model, alarm, signal, watched)
            out.drift.append(event)
            self.metrics.drift_events.labels(model.name).inc()
            log.warning(
                "drift: %s %s %.3f -> %.3f at %d events (%s)",
                model.name,
                watched or signal,
                alarm.before,
                alarm.after,
                alarm.index,
                event.idempotency_key,
            )

    def drift_event(
        self,
        model: OnlineModel,
        alarm: Alarm,
        signal: str = "error_rate",
        watched: str | None = None,
    ) -> DriftEvent:
        """A drift event naming the offsets of the data after the change. ``signal``:
        error_rate or residual (concept drift), label_rate (prior drift) or feature (data drift, the
        feature named by ``watched``, e.g. ``feature:position``)."""
        start = alarm.change_index
        after: dict[int, tuple[int, int]] = {}
        keys: dict[int, str] = {}
        for seen_before, seen_after, partition, first, last, key in self.learned[model.name]:
            # A message belongs to the "after" window if most of its rows do: envelopes hold
            # thousands of events, and a cut a few values early must not pull in a whole
            # pre-change envelope.
            if (seen_before + seen_after) / 2 > start:
                lo, hi = after.get(partition, (first, last))
                after[partition] = (min(lo, first), max(hi, last))
                keys[partition] = key
        if not after and self.learned[model.name]:  # the cut lies late in the last message:
            _, _, partition, first, last, key = self.learned[model.name][-1]  # that one, then
            after[partition], keys[partition] = (first, last), key
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
            detector="adwin" if watched else model.spec.drift.error.method,  # watchers: ADWIN
            severity=alarm.severity,
            stat_before=alarm.before,
            stat_after=alarm.after,
            events_seen=alarm.index,
            offsets_after=after,
            lake_version=self.sink.version(model.stream),
            lake_version_before=self.sink.version_before(
                model.stream, {keys[p]: lo for p, (lo, _) in after.items()}
            ),
        )

    # -- checkpoints ----------------------------------------------------------------------

    async def maybe_checkpoint(self, stream: str) -> list[ModelEvent]:
        """Checkpoint the models of ``stream`` and their offsets if ``checkpoint_every_s``
        has passed; the ``ModelEvent`` announcing each (none if it was not time yet)."""
        if stream not in self.owned or stream in self._reload_due:
            return []  # its owner's checkpoint may be newer than this copy: never overwrite it
        if time.monotonic() - self._last_checkpoint[stream] < self.ws.checkpoint_every_s:
            return []
        self._last_checkpoint[stream] = time.monotonic()
        announced = []
        for live in self.models_of[stream]:
            name = live.name
            live.checkpoints += 1
            # A consistent copy, taken on the event loop between batches; written in a thread.
            model, offsets = copy.deepcopy(live), dict(self.offsets[name])
            epochs = dict(self.epochs[name])
            await asyncio.to_thread(self.store.save, name, model, offsets, epochs)
            announced.append(
                ModelEvent(
                    model=name,
                    model_version=model.version,
                    checkpoint=model.checkpoints,
                    events_seen=model.seen,
                    offsets=offsets,
                    error_rate=model.detector.estimate,
                    metrics=model.rolling_metrics(),
                    calibration=model.calibration(),
                )
            )
            for metric, value in announced[-1].metrics.items():
                key = "window_events" if metric == "events" else metric
                self.metrics.model_quality[key].labels(name).set(value)
        return announced
