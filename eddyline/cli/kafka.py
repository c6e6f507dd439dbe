"""``eddyline broker``, ``topics``, ``worker``, ``drift``, ``simulate``: Kafka and the worker."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from eddyline.cli.common import (
    CPort,
    Port,
    app,
    broker_app,
    collector_app,
    drift_app,
    err,
    topics_app,
    worker_app,
)
from eddyline.streams.kafka.broker import KAFKA_VERSION, LocalBroker
from eddyline.streams.kafka.cluster import LocalCluster
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings, eddyline_home

Nodes = Annotated[int, typer.Option(help="nodes (3: a replicated cluster that survives one)")]


def _local(port: int, controller_port: int, nodes: int) -> LocalBroker | LocalCluster:
    """One node on ``port``, or a cluster whose node i listens on port + 2(i-1) (controller
    port + 2(i-1) too), under ~/.eddyline/cluster-<port>."""
    if nodes == 1 and not (eddyline_home() / f"cluster-{port}").exists():
        return LocalBroker(port=port, controller_port=controller_port)
    ports = [(port + 2 * i, controller_port + 2 * i) for i in range(max(nodes, 1))]
    return LocalCluster(len(ports), root=eddyline_home() / f"cluster-{port}", ports=ports)


@broker_app.command("start")
def broker_start(port: Port = 9092, controller_port: CPort = 9093, nodes: Nodes = 1) -> None:
    """Fetch Kafka's jars (first run), format storage (first run), start, wait until ready."""
    local = _local(port, controller_port, nodes)
    with err.status(f"starting Kafka {KAFKA_VERSION} on {local.bootstrap}..."):
        local.start()
    where = f"log {local.log_file}" if isinstance(local, LocalBroker) else f"in {local.root}"
    err.print(f"Kafka {KAFKA_VERSION} is up on {local.bootstrap} ({where})")
    print(local.bootstrap)  # for EDDYLINE_BOOTSTRAP


@broker_app.command("stop")
def broker_stop(port: Port = 9092, nodes: Nodes = 1) -> None:
    """Stop the local broker (or cluster)."""
    local = _local(port, port + 1, nodes)
    stopped = local.stop()
    err.print("stopped" if stopped else "no local broker was running")


@broker_app.command("status")
def broker_status(
    port: Port = 9092, nodes: Nodes = 1, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Whether the local broker (every node) runs and answers. Exit 1 if one does not."""
    local = _local(port, port + 1, nodes)
    brokers = [local] if isinstance(local, LocalBroker) else local.brokers
    nodes_state = [
        {"bootstrap": b.bootstrap, "pid": b.pid(), "answers": b.answers(), "dir": str(b.dir)}
        for b in brokers
    ]
    up = all(n["answers"] for n in nodes_state)
    state = {
        "bootstrap": local.bootstrap,
        "answers": up,
        "nodes": nodes_state,
        "version": KAFKA_VERSION,
    }
    if as_json:
        print(json.dumps(state))
    else:
        err.print(f"{'up' if up else 'down'}: {state}")
    raise typer.Exit(0 if up else 1)


@topics_app.command("create")
def topics_create() -> None:
    """Create the eddyline topics that are missing (partitions from EDDYLINE_PARTITIONS;
    streams from EDDYLINE_STREAMS)."""
    from eddyline.streams.kafka.topics import ensure_topics

    created = ensure_topics(KafkaSettings(), WorkerSettings().load_streams())
    err.print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))


@worker_app.command("run")
def worker_run(loglevel: Annotated[str, typer.Option(help="Faust log level")] = "info") -> None:
    """Run one worker (settings from EDDYLINE_* variables) until SIGTERM or Ctrl-C."""
    from eddyline.streams.worker.run import run_worker

    run_worker(WorkerSettings(), KafkaSettings(), loglevel=loglevel)


@collector_app.command("run")
def collector_run(
    mapping: Annotated[
        str | None, typer.Option(help="the mapping YAML (default: EDDYLINE_COLLECTOR_MAPPING)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="default: EDDYLINE_COLLECTOR_PORT, 8088")] = None,
) -> None:
    """Run one collector until SIGTERM or Ctrl-C (settings from EDDYLINE_COLLECTOR_*)."""
    import asyncio
    import logging

    from eddyline.schemas.streams import load_event_modules
    from eddyline.streams.collector.mapping import load_mapping
    from eddyline.streams.collector.server import Collector, CollectorSettings, serve

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(message)s")
    load_event_modules(WorkerSettings().event_modules)  # streams a mapping may name
    settings = CollectorSettings()
    overrides = {k: v for k, v in (("mapping", mapping), ("port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    collector = Collector(load_mapping(settings.mapping), settings, KafkaSettings())
    err.print(f"collector on {settings.host}:{settings.port}")
    try:
        asyncio.run(serve(collector))
    except KeyboardInterrupt:
        pass


@app.command("simulate")
def simulate(
    events: Annotated[int, typer.Option(help="interaction events to send")] = 20_000,
    drift_at: Annotated[int, typer.Option(help="first drifted event (-1: no drift)")] = 10_000,
    users: int = 1_000,
    seed: int = 0,
) -> None:
    """Emit realistic interaction and feedback traffic with a concept drift."""
    from eddyline.simulate import TrafficSimulator
    from eddyline.streams.sdk.producer import EventProducer

    sim = TrafficSimulator(users=users, seed=seed, drift_at=None if drift_at < 0 else drift_at)
    with EventProducer() as producer:
        for event in sim.interactions(events):
            producer.emit(event)
        for fb in sim.feedback(events // 20):
            producer.emit(fb)
    err.print(f"sent {events + events // 20:,} events ({producer.delivered:,} acknowledged)")


@drift_app.command("tail")
def drift_tail(group: Annotated[str, typer.Option(help="consumer group")] = "eddyline-cli") -> None:
    """Print drift events as JSON lines as they arrive."""
    from eddyline.consumers.drift import DriftSubscriber

    with DriftSubscriber(group_id=group) as sub:
        for event in sub:
            print(event.model_dump_json(), flush=True)
