"""The Faust worker's wiring: the app, its topics and tables, the agents, timers and pages.

* the intake (not a Faust agent: ``streams.worker.intake``, its own consumer and thread):
  raw ``events.<stream>`` -> the privacy stage, in batches -> ``events.<stream>.private``
  (same partition; the raw offsets in a header); bad input -> ``events.deadletter``.
* ``lake``: private topics -> Delta, exactly once; acks after the commit.
* ``learn.<stream>``: private events -> that stream's online models; drift ->
  ``signals.drift``; checkpoints -> ``signals.models``.
* ``deadletters``, ``drift_events``, ``model_metrics``, ``worker_costs``: those topics ->
  their Delta tables.

The logic lives in the stages (``privatize``, ``lake_stage``, ``learn_stage``); the loops
that feed them in ``intake`` and ``agents``. One process is one asyncio loop; scale out with more
processes in the same consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import faust

from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.transport import kafka_transport
from eddyline.streams.worker import timers, web
from eddyline.streams.worker.agents import (
    Wiring,
    cost_timer,
    governance_agent,
    lake_agent,
    learn_agents,
    table_agents,
)
from eddyline.streams.worker.continuity import KafkaProbe, OffsetGuard, Seeker
from eddyline.streams.worker.intake import Intake
from eddyline.streams.worker.pipeline import Pipeline

log = logging.getLogger("eddyline.worker")


def raw_topic(app: faust.App, *names: str) -> faust.TopicT:
    """A topic of raw bytes: envelopes are decoded by our code, not by Faust's codecs."""
    return app.topic(*names, value_type=bytes, value_serializer="raw", key_serializer="raw")


def build_app(
    ws: WorkerSettings | None = None,
    ks: KafkaSettings | None = None,
    streams: list[str] | None = None,
) -> tuple[faust.App, Pipeline]:
    """The Faust app and its pipeline, for these settings."""
    ws, ks = ws or WorkerSettings(), ks or KafkaSettings()
    p = Pipeline(ws, ks, streams or ws.load_streams())
    app = _faust_app(ws, ks)
    app.transport = kafka_transport(app, ws.fetch_max_wait_ms)  # before any topic
    w = Wiring(
        app,
        p,
        out={s: raw_topic(app, p.topics.private(s)) for s in p.streams},
        deadletter=raw_topic(app, p.topics.deadletter),
        drift=raw_topic(app, p.topics.drift),
        models=raw_topic(app, p.topics.models),
        costs=raw_topic(app, p.topics.costs),
        guard=_guards(app, p),
    )
    _intake(app, p)
    lake_agent(w, raw_topic(app, *[p.topics.private(s) for s in p.streams]))
    learn_agents(w, raw_topic)
    table_agents(w)
    cost_timer(w)
    governance_agent(w, raw_topic(app, p.topics.requests))
    timers.register(app, p)
    web.register(app, p)
    return app, p


def _intake(app: faust.App, p: Pipeline) -> None:
    """Run the intake beside the agents: started with the app, stopped (saved, committed,
    out of its group) with it; if it fails, the worker crashes rather than stall."""

    @app.task  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    async def intake() -> None:
        p.intake = Intake(p)
        p.data_path["privatize"] = p.intake
        p.intake.start()
        try:
            while p.intake.alive:
                await asyncio.sleep(0.5)
            if p.intake.failed is not None:
                await app.crash(p.intake.failed)
        finally:
            stopping = asyncio.ensure_future(asyncio.to_thread(p.intake.stop))
            while not stopping.done():  # Faust cancels more than once while it stops
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([stopping])

    del intake


def _faust_app(ws: WorkerSettings, ks: KafkaSettings) -> faust.App:
    (ws.state_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust's mkdir is not -p
    return faust.App(
        f"{ks.namespace}.{ws.app_id}" if ks.namespace else ws.app_id,
        broker=[f"kafka://{host}" for host in ks.bootstrap.split(",")],
        broker_credentials=credentials(ks),
        store="memory://",
        datadir=str(ws.state_dir / "faust"),  # else "<app id>-data" in the working directory
        autodiscover=False,
        web_host=ws.web_host,
        web_bind=ws.web_host,
        web_port=ws.web_port,
        # Exactly-once rests on the offsets in each Delta commit, not on Kafka commits, so a
        # rebalance or shutdown need not wait for in-flight events: they are replayed and
        # de-duplicated. Waiting would hang shutdown whenever an agent holds unacked events.
        stream_wait_empty=False,
        topic_partitions=ks.partitions,
        topic_replication_factor=ks.replication or 1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=ws.session_timeout_s,
        broker_heartbeat_interval=min(3.0, ws.session_timeout_s / 3),
        producer_max_request_size=16 * 1024 * 1024,
        # Envelopes are ~100-500 kB: Faust's 1 MiB default fetches only a few per round trip.
        consumer_max_fetch_size=16 * 1024 * 1024,
    )


def credentials(ks: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """The worker's Kafka credentials (Faust's, for aiokafka) from the same settings the
    librdkafka clients read: SASL (PLAIN, SCRAM-SHA-256/512) over TLS or not, or TLS alone."""
    protocol = ks.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=ks.ssl_ca_location) if "SSL" in protocol else None
    if protocol.startswith("SASL"):
        password = ks.sasl_password.get_secret_value() if ks.sasl_password else None
        return faust.SASLCredentials(
            username=ks.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=ks.sasl_mechanism or "PLAIN",
        )
    return faust.SSLCredentials(context)


def _guards(app: faust.App, p: Pipeline) -> Any:
    """How each agent gets its offset guard; the guards share one probe of the broker and
    one seeker (agents reading the same topic must not undo each other's re-reads)."""
    probe, seeker = KafkaProbe(p.ks, app.conf.id), Seeker(app.consumer)

    def guard(agent: str, stream: Any, topics: list[str]) -> OffsetGuard:
        queue = stream.channel.queue
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

    return guard


__all__ = ["Pipeline", "build_app", "raw_topic"]
