"""The collector's path without HTTP and without the box's contention: what each stage costs
an event, in this one process, at the window sizes the collector bench can make.

A window of ``w`` requests (100 ``Product Clicked`` calls each, the bodies of
``bench/collector.py``) goes through what the collector does to it: ``parse_json`` and
``gather`` per request, then one ``table``, one ``emit_many`` and one ``seal`` for the window,
then the wait for Kafka's acknowledgement (``wait_durable``: latency, not CPU, reported
apart). Windows of 1, 2, 4 and 8 requests: 8 clients of 100 events can never fill more
than 800. A straight line through the window costs gives the fixed cost of a window and
the cost of each event in it. Baseline in the same run: ``orjson.loads`` of the same
bodies, the least any Python collector does with them.

    .venv/bin/python bench/collector_stages.py [--requests 2400]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import fresh_namespace, kafka_for_bench
from collector import KEY, PER_REQUEST, _bodies, _mapping

from eddyline.streams.collector.gather import gather, table
from eddyline.streams.collector.limits import parse_json
from eddyline.streams.collector.mapping import Mapping, WriteKey, load_mapping
from eddyline.streams.heap import tune_gc
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import ensure_topics
from eddyline.streams.sdk.producer import EventProducer

STAGES = ("parse", "gather", "table", "emit_many", "seal")


def _windows(
    producer: EventProducer,
    bodies: list[bytes],
    per_window: int,
    mapping: Mapping,
    key: WriteKey,
) -> dict[str, float]:
    """Seconds spent in each stage (and waiting for Kafka) over all ``bodies``."""
    spent = dict.fromkeys((*STAGES, "ack"), 0.0)
    clock = time.perf_counter
    for w in range(0, len(bodies) - per_window + 1, per_window):
        parts = []
        for body in bodies[w : w + per_window]:
            t0 = clock()
            call = parse_json(body)
            t1 = clock()
            gathered, _, _ = gather(call["batch"], key, mapping, call["sentAt"], datetime.now(UTC))
            spent["parse"] += t1 - t0
            spent["gather"] += clock() - t1
            parts.append(gathered)
        for model in parts[0]:
            t0 = clock()
            made = table([p[model] for p in parts])
            t1 = clock()
            producer.emit_many(model, made)
            spent["table"] += t1 - t0
            spent["emit_many"] += clock() - t1
        t0 = clock()
        mark = producer.seal()
        t1 = clock()
        assert producer.wait_durable(mark, 30)
        spent["seal"] += t1 - t0
        spent["ack"] += clock() - t1
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2400)
    args = parser.parse_args()
    tune_gc(100_000)  # as the collector does after its start-up
    bodies = _bodies(args.requests)
    with kafka_for_bench() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        mapping = load_mapping(_mapping(Path(tmp)))
        key = mapping.key_of(KEY)
        assert key is not None
        with fresh_namespace(bootstrap, "stages") as ns:
            kafka = KafkaSettings(
                bootstrap=bootstrap, namespace=ns, extra_config={"linger.ms": 0}
            )  # as the collector's
            ensure_topics(kafka, ["interaction", "feedback"])
            settings = ProducerSettings(spool_dir=Path(tmp) / "spool")
            with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as producer:
                # warm up (connections, caches, the broker's JIT): the first size measured
                # came out 1.5-2x slower than the same size measured later without it
                _windows(producer, bodies[:800], 1, mapping, key)
                t0 = time.perf_counter()
                for body in bodies:
                    orjson.loads(body)
                baseline = (time.perf_counter() - t0) / (len(bodies) * PER_REQUEST) * 1e6
                rows = {}
                for per_window in (1, 2, 4, 8):
                    spent = _windows(producer, bodies, per_window, mapping, key)
                    events = len(bodies) // per_window * per_window * PER_REQUEST
                    us = {s: round(v / events * 1e6, 2) for s, v in spent.items()}
                    us["cpu_path"] = round(sum(us[s] for s in STAGES), 2)
                    rows[per_window * PER_REQUEST] = us
                    print(f"window of {per_window * PER_REQUEST} events: {us}", file=sys.stderr)
    sizes = np.array(sorted(rows), float)
    window_us = np.array([rows[int(n)]["cpu_path"] * n for n in sizes])
    per_event, fixed = np.polyfit(sizes, window_us, 1)
    print(
        json.dumps(
            {
                "bench": "collector_stages",
                "us_per_event_by_window": rows,
                "window_fixed_us": round(float(fixed)),
                "per_event_us": round(float(per_event), 2),
                "orjson_loads_us_per_event": round(baseline, 2),
                "cpu_path_at_800_vs_orjson": round(rows[800]["cpu_path"] / baseline, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
