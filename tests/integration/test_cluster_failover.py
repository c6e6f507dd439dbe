"""A replicated cluster loses a node mid-stream: a broker killed with -9 and restarted, then
the active KRaft controller. The SDK keeps emitting, two workers keep working; afterwards
every accepted event is in Delta exactly once, nothing is dead-lettered, and the metrics of
the SDK and of the workers show the outage and the recovery.

The figures of each run are printed as one JSON line (docs/reliability.md keeps them):
``pytest tests/integration/test_cluster_failover.py -s``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.cluster import LocalCluster
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import STREAMS, Topics, ensure_topics, read_all
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import delta_ids, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
EVENTS, RATE = 40_000, 2_000  # 20 s of traffic


def _gauge(text: str | None, name: str) -> float | None:
    for line in (text or "").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("victim", ["broker", "controller"])
def test_losing_a_node_mid_stream_loses_and_doubles_nothing(
    kafka_cluster: LocalCluster, worker_env: dict[str, str], tmp_path: Path, victim: str
) -> None:
    kafka = KafkaSettings(bootstrap=kafka_cluster.bootstrap, namespace=f"f{uuid.uuid4().hex[:8]}")
    ensure_topics(kafka, STREAMS)  # three copies, min.insync.replicas 2: from the cluster
    env = {
        **worker_env,
        "EDDYLINE_BOOTSTRAP": kafka.bootstrap,
        "EDDYLINE_NAMESPACE": kafka.namespace,
        "EDDYLINE_SESSION_TIMEOUT_S": "6",
        "EDDYLINE_BUDGET_EPSILON": "1e6",  # this is about delivery, not suppression
    }
    lake = Path(env["EDDYLINE_LAKE_PATH"])
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log", free_port()).start() for i in (1, 2)]
    registry, sent, samples = CollectorRegistry(), [], []
    done = threading.Event()

    def emit() -> None:
        sim = TrafficSimulator(users=2_000, seed=5)
        with EventProducer(kafka=kafka, registry=registry) as producer:
            for start in range(0, EVENTS, RATE // 10):
                t0 = time.monotonic()
                for e in sim.interactions(RATE // 10):
                    producer.emit(e)
                    sent.append(str(e.event_id))
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
            assert producer.flush(120) == 0

    def sample() -> None:
        while not done.is_set():
            texts = [w.metrics() for w in workers]
            samples.append(
                {
                    "t": time.monotonic(),
                    "sdk_brokers": registry.get_sample_value("eddyline_sdk_kafka_brokers_up"),
                    "brokers": [_gauge(t, "eddyline_worker_kafka_brokers") for t in texts],
                    "under": [
                        _gauge(t, "eddyline_worker_under_replicated_partitions") for t in texts
                    ],
                }
            )
            time.sleep(1.0)

    sender, sampler = threading.Thread(target=emit), threading.Thread(target=sample)
    sender.start()
    sampler.start()
    try:
        time.sleep(5)
        node = kafka_cluster.controller()
        if victim == "broker":
            node = next(b.node_id for b in kafka_cluster.brokers if b.node_id != node)
        killed = time.monotonic()
        kafka_cluster.kill(node)
        time.sleep(12)
        restarted = time.monotonic()
        kafka_cluster.restart(node)
        sender.join(180)
        assert not sender.is_alive()
        wait_for(
            lambda: len(delta_ids(lake, "interaction")) >= len(sent),
            240,
            "every event in Delta",
            every=2,
            status=lambda: f"{len(delta_ids(lake, 'interaction'))} of {len(sent)}",
        )
        wait_for(
            lambda: samples and samples[-1]["under"] == [0.0, 0.0],
            120,
            "the cluster fully replicated again",
            status=lambda: f"last samples (under, brokers): {_recent(samples)}",
        )
        recovered = samples[-1]["t"]
    finally:
        done.set()
        sampler.join(10)
        for w in workers:
            w.stop()
    written = delta_ids(lake, "interaction")
    assert len(written) == len(sent) == EVENTS and set(written) == set(sent)
    assert read_all(kafka, Topics(kafka.namespace).deadletter) == []
    assert min(s["sdk_brokers"] or 3 for s in samples) <= 2  # the SDK saw the outage...
    delivered = registry.get_sample_value(
        "eddyline_sdk_delivered_events_total", {"stream": "interaction"}
    )
    assert delivered == EVENTS  # ...and every event acknowledged after it
    assert min(min(b or 3 for b in s["brokers"]) for s in samples) <= 2
    assert max(max(u or 0 for u in s["under"]) for s in samples) > 0
    assert samples[-1]["brokers"] == [3.0, 3.0]
    figures = {
        "victim": victim,
        "node": node,
        "events": len(sent),
        "outage_s": round(restarted - killed, 1),
        "recovered_after_restart_s": round(recovered - restarted, 1),
        "sdk_retries": registry.get_sample_value("eddyline_sdk_kafka_retries_total"),
        "sdk_spooled": registry.get_sample_value(
            "eddyline_sdk_spooled_events_total", {"stream": "interaction"}
        )
        or 0,
        "lost": len(set(sent) - set(written)),
        "doubled": len(written) - len(set(written)),
    }
    print(json.dumps({"test": "cluster_failover", **figures}))


def _recent(samples: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """The last few samples' under-replicated and broker gauges (a failure's evidence)."""
    return [(s["under"], s["brokers"]) for s in samples[-5:]]
