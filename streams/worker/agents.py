"""The Faust agents: thin loops that move messages between Kafka and the stages.

Each agent admits a message through its offset guard (``streams.worker.continuity``: Faust
can skip offsets across a rebalance), hands it to its stage, sends what the stage made, and
acks only what is safe: lake after the Delta commit, learn after the model checkpoint. A
crash anywhere replays, and every stage drops replays by raw offset. Each agent reports what
it finished to ``p.progress``. The raw topics are not read here but by the intake
(``streams.worker.intake``), in batches, on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from eddyline.schemas.deadletter import DeadLetter
from eddyline.schemas.envelope import H_CONTENT_TYPE, H_SCHEMA
from eddyline.schemas.events import DriftEvent, ModelEvent
from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.batching import CommitBatcher, FlushPolicy
from eddyline.streams.worker.continuity import OffsetGuard
from eddyline.streams.worker.lake_stage import Prepared
from eddyline.streams.worker.pipeline import Pipeline
from eddyline.streams.worker.privatize import log_failure
from eddyline.streams.worker.timers import survives

log = logging.getLogger("eddyline.worker")
_JSON_HEADERS = [(H_CONTENT_TYPE, b"application/json")]


@dataclass(frozen=True)
class Wiring:
    """What the agents share: the app, the pipeline, Faust's topics and tables, and how to
    make an agent's offset guard (``guard(agent, stream, topics)``)."""

    app: faust.App
    p: Pipeline
    out: dict[str, faust.TopicT]  # stream -> its private topic
    deadletter: faust.TopicT
    drift: faust.TopicT
    models: faust.TopicT
    costs: faust.TopicT
    guard: Any

    async def admitted(self, agent: str, offsets: OffsetGuard, message: Any) -> bool:
        """The guard's verdict; an admitted message is in the agent's hands until it
        reports it finished."""
        if not await offsets.admit(message):
            return False
        self.p.progress.received(agent, message.topic, message.partition, message.offset)
        return True

    async def source(self, message: Any) -> SourceRef:
        """The message's position, with its topic's current id (asked again when the
        partition's offsets went backwards: a replay, or a topic created again)."""
        epochs = self.p.epochs
        if epochs.regressed(message.topic, message.partition, message.offset):
            await epochs.refresh([message.topic])
        return epochs.source(message.topic, message.partition, message.offset)

    def finished(self, agent: str, message: Any) -> None:
        self.p.progress.advanced(agent, message.topic, message.partition, message.offset)

    async def send_dead(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            await self.deadletter.send(value=letter.to_json(), headers=_JSON_HEADERS)

    async def announce(self, drift: list[DriftEvent], changes: list[ModelEvent]) -> None:
        self.p.live.saw(drift, changes)
        for event in drift:
            await self.drift.send(
                key=event.model.encode(),
                value=event.model_dump_json().encode(),
                headers=[*_JSON_HEADERS, (H_SCHEMA, b"drift:1")],
            )
        for change in changes:
            await self.models.send(
                key=change.model.encode(),
                value=change.model_dump_json().encode(),
                headers=_JSON_HEADERS,
            )


def lake_agent(w: Wiring, private: faust.TopicT) -> None:
    p, app, ws = w.p, w.app, w.p.ws

    @app.agent(private, name="eddyline.lake")
    async def lake(stream: faust.StreamT[bytes]) -> None:
        # Envelopes gather while the previous commit runs; each commit acks what it holds
        # (streams/worker/batching.py says when a batch is due).
        manual = stream.noack()  # type: ignore[attr-defined]  # on Stream, not StreamT
        offsets = w.guard("lake", stream, [p.topics.private(s) for s in p.streams])
        p.data_path["lake"] = stream.channel.queue  # type: ignore[attr-defined]

        async def commit(batch: list[tuple[Any, Prepared]]) -> None:
            await p.lake.commit([prepared for _, prepared in batch])
            for event, _ in batch:
                await manual.ack(event)
                w.finished("lake", event.message)

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
                if not await w.admitted("lake", offsets, event.message):
                    continue
                prepared = p.lake.prepare(event.value, event.message.headers, event.message.topic)
                await batcher.add((event, prepared), prepared.rows.num_rows)
        finally:
            await _close_batcher(batcher, committer, ws.lake_close_timeout_s)


async def _close_batcher(batcher: CommitBatcher[Any], committer: Any, timeout_s: float) -> None:
    """At a graceful stop, commit what has gathered, after the commit in flight, so the next
    owner has nothing to redo. Faust cancels the agent more than once while it stops: each
    cancel is waited through, up to ``timeout_s``. Past it, what is pending is not acked, so
    it is replayed (and dropped where it did land)."""
    batcher.close()
    deadline = time.monotonic() + timeout_s
    while not committer.done() and (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([committer], timeout=left)
    if not committer.done():
        committer.cancel()
        log.warning("lake: %d envelopes not committed at stop", batcher.pending)
    elif not committer.cancelled() and committer.exception() is not None:
        log.error("lake: the last commit failed at stop: %r", committer.exception())


def cost_timer(w: Wiring) -> None:
    """Publish the worker's CPU per stage on ``signals.costs`` every ``cost_sample_s``."""

    @w.app.timer(interval=w.p.ws.cost_sample_s)  # type: ignore[untyped-decorator]  # Faust
    @survives
    async def sample_costs() -> None:
        if w.p.metrics.accounting and w.p.metrics.spent():
            await w.costs.send(value=w.p.live.cost_sample(), headers=_JSON_HEADERS)

    del sample_costs


def table_agents(w: Wiring) -> None:
    """One agent per JSON topic the worker also stores: dead letters, drift, model events,
    cost samples."""
    for topic, table in (
        (w.deadletter, "deadletters"),
        (w.drift, "drift_events"),
        (w.models, "model_metrics"),
        (w.costs, "worker_costs"),
    ):
        _table_agent(w, topic, table)


def _table_agent(w: Wiring, topic: faust.TopicT, table: str) -> None:
    p, ws = w.p, w.p.ws

    @w.app.agent(topic, name=f"eddyline.{table}")
    async def agent(stream: faust.StreamT[bytes]) -> None:
        offsets = w.guard(table, stream, [topic.get_topic_name()])
        writer = p.writers[table]
        await p.epochs.refresh([topic.get_topic_name()])
        async for batch in stream.noack_take(  # type: ignore[attr-defined]  # on Stream
            ws.lake_max_messages, within=ws.lake_max_wait_s
        ):
            events = [ev for ev in batch if await w.admitted(table, offsets, ev.message)]
            await writer.write([(ev.value, await w.source(ev.message)) for ev in events])
            for ev in events:
                await stream.ack(ev)
                w.finished(table, ev.message)


def learn_agents(w: Wiring, raw_topic: Any) -> None:
    """The learn agent of each stream with models: its learn topic (one partition: one
    worker of the group holds it) -> its models. One agent per stream: its acks wait only
    for its own models' checkpoint. The group's rebalances say who owns which models."""
    p = w.p
    learn_topics = {p.topics.learn(s): s for s in p.learn.models_of}
    for topic, name in sorted(learn_topics.items()):
        _learn_agent(w, raw_topic(w.app, topic), name)

    @w.app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust types handlers narrowly
    async def models_revoked(app: Any, revoked: Any, **_: Any) -> None:
        lost = {learn_topics[tp.topic] for tp in revoked if tp.topic in learn_topics}
        if lost:
            p.learn.revoke(lost)
            log.info("models of %s: no longer learned here", ", ".join(sorted(lost)))

    @w.app.on_partitions_assigned.connect  # type: ignore[arg-type]  # Faust types handlers narrowly
    async def models_assigned(app: Any, assigned: Any, **_: Any) -> None:
        owned = {learn_topics[tp.topic] for tp in assigned if tp.topic in learn_topics}
        p.learn.assign(owned)
        log.info("models learned here: %s", ", ".join(sorted(owned)) or "none (following)")

    del models_revoked, models_assigned


def _learn_agent(w: Wiring, topic: faust.TopicT, name: str) -> None:
    p, agent_name = w.p, f"learn.{name}"

    @w.app.agent(topic, name=f"eddyline.learn.{name}")
    async def learn(stream: faust.StreamT[bytes]) -> None:
        # Acks wait for the checkpoint that covers them: Kafka's committed offset never runs
        # ahead of the models, so a restart resumes exactly where the checkpoint stopped.
        manual = stream.noack()  # type: ignore[attr-defined]  # on Stream, not StreamT
        unacked: list[Any] = []
        for model in p.learn.models_of[name]:  # logged here: logging is set up by now
            seen = f"resumed at {model.seen:,} events" if model.seen else "fresh"
            log.info("model %s v%d over %s: %s", model.name, model.version, model.stream, seen)
        offsets = w.guard(agent_name, stream, [p.topics.learn(name)])
        queue = stream.channel.queue  # type: ignore[attr-defined]
        lock = asyncio.Lock()  # one learn or checkpoint at a time (copies must be consistent)

        async def checkpoint() -> None:
            announced = await p.learn.maybe_checkpoint(name)
            if announced:
                for done in unacked:
                    await manual.ack(done)
                unacked.clear()
                await w.announce([], announced)

        async def when_idle() -> None:
            # The last events before a pause are checkpointed too: what other workers answer
            # /predict with, and where the next owner resumes, is never more than two
            # checkpoint intervals behind.
            while True:
                await asyncio.sleep(p.ws.checkpoint_every_s)
                async with lock:
                    if unacked and p.learn.owns(name):
                        await checkpoint()

        idler = asyncio.ensure_future(when_idle())
        try:
            async for event in manual.events():
                await _yield_to_data_path(p, queue)
                if not await w.admitted(agent_name, offsets, event.message):
                    continue
                if not p.learn.owns(name):
                    continue  # fetched before a revoke: its new owner learns it (never acked)
                async with lock:
                    if event.message.generation_id != w.app.consumer_generation_id:
                        # Fetched before a rebalance and held up since (behind the data path,
                        # the lock): after the reload below it would move the model's offsets
                        # past the messages Kafka now re-delivers from the checkpoint, and
                        # those would be skipped as learned. Never acked: it comes again.
                        continue
                    if p.learn.reload_due(name):  # (re)assigned: from the shared checkpoint on
                        await asyncio.to_thread(p.learn.reload, name)
                        unacked.clear()  # Kafka resumes at the checkpoint: these come again
                    unacked.append(event)
                    learned = await p.learn.learn(name, event.value, event.message.headers)
                    await w.announce(learned.drift, learned.changes)
                    w.finished(agent_name, event.message)
                    await checkpoint()
        finally:
            idler.cancel()


async def _yield_to_data_path(p: Pipeline, own: Any) -> None:
    """Learning waits while the intake or the lake agent has messages waiting, until its own
    queue (``own``) holds ``learn_yield_below`` messages, or for 5 s at most: all agents
    share one event loop, and with a backlog events reach Delta first while the models'
    lag stays bounded by that queue (bench/RESULTS.md has the timelines)."""
    give_up = time.monotonic() + 5.0  # never stuck behind a queue that stopped moving
    while (
        own.qsize() < p.ws.learn_yield_below
        and any(q.qsize() for q in p.data_path.values())
        and time.monotonic() < give_up
    ):
        await asyncio.sleep(0.002)


def governance_agent(w: Wiring, requests: faust.TopicT) -> None:
    """Runs the governance requests a backend sends (forget, withdraw consent), one at a
    time, retrying until each is done: they are obligations, never dropped."""
    p = w.p

    @w.app.agent(requests, name="eddyline.governance")
    async def governance(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack():  # type: ignore[attr-defined]  # on Stream
            request = json.loads(event.value)
            delay = 1.0
            while True:
                try:
                    await asyncio.to_thread(
                        p.governance.forget,
                        request["user_id"],
                        scope=request.get("scope", "forget"),
                        request_id=request.get("request_id"),
                        requested_by=request.get("requested_by", "kafka"),
                    )
                    break
                except Exception as exc:  # the request holds a raw id: never in the log
                    src = SourceRef(
                        event.message.topic, event.message.partition, event.message.offset
                    )
                    log_failure("governance request", src, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 300.0)
            await stream.ack(event)
