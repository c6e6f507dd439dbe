"""Scale-out: 1, 2 and 3 workers draining the same backlog into a lake on object storage.

For each worker count, in one run: a fresh namespace whose raw topic is pre-filled with N
events (SDK envelopes), then that many worker processes start at once, each with its own
state folder (as on separate machines), sharing only Kafka and the lake on the object
store (Azurite, the test session's server: tests/azurite.py). Measured from the first event
any worker takes in to the newest append commit once Delta holds N rows: events/s to Delta;
beside it, events/s learned: until the click model's lifetime count (one owner at a time,
docs/architecture.md "Scale-out") reaches N, which must then be exactly N. Then the table
is read back: ``lost`` (events not in Delta) and ``doubled`` (rows beyond one per event)
over all counts.
A baseline in the same run: one worker with the lake on local disk (the object store's cost).

On two cores the point is that nothing is lost or doubled and the cost per added worker is
small; more processes share the same two cores, so no linear speed-up is expected.

    .venv/bin/python bench/scale.py [--events 300000] [--workers 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _broker import fresh_namespace, kafka_for_bench
from pipeline import _emit, _metric, log  # the pipeline bench's SDK filler and scraping

from eddyline.schemas.storage import StorageOptions, join
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import ensure_topics
from eddyline.streams.worker.process import WorkerProcess
from tests.azurite import Azurite


def drain(
    bootstrap: str, n: int, workers: int, lake: str, env: dict[str, str], root: Path
) -> dict[str, float]:
    """Events/s to Delta and learned, and what was lost or doubled, for ``workers``."""
    with fresh_namespace(bootstrap, "scale") as namespace:
        kafka = KafkaSettings(bootstrap=bootstrap, namespace=namespace)
        ensure_topics(kafka, ["interaction", "feedback"])
        log(f"{workers} worker(s), lake {lake}: pre-filling {n:,} events")
        _emit(kafka, n, 1, None, str(root / f"spool-{namespace}"))
        procs = []
        for i in range(workers):
            proc_env = {
                **env,
                "EDDYLINE_BOOTSTRAP": bootstrap,
                "EDDYLINE_NAMESPACE": namespace,
                "EDDYLINE_LAKE_PATH": lake,
                "EDDYLINE_STATE_DIR": str(root / f"{namespace}-machine-{i}"),
                "EDDYLINE_PSEUDONYM_KEY": "bench-key-0123456789abcdef",
            }
            log_file = root / f"{namespace}-worker-{i}.log"
            procs.append(WorkerProcess(proc_env, log_file, free_port()))
        # all start at once (each start() waits for its worker to answer); the clock is read
        # from the workers' metrics from the first moment any of them answers
        starting = [threading.Thread(target=p.start, kwargs={"timeout": 120}) for p in procs]
        for t in starting:
            t.start()
        try:
            first, seen = 0.0, 0.0
            written = learned = None
            deadline = time.monotonic() + 900
            while written is None or learned is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{workers} workers: not all {n:,} events written/learned")
                texts = [p.metrics() or "" for p in procs]
                now = time.time()
                if not first:
                    if sum(_metric(t, "eddyline_worker_events_in_total") for t in texts) > 0:
                        first = now
                    time.sleep(0.02)
                    continue
                rows = sum(_metric(t, "eddyline_worker_rows_written_total") for t in texts)
                if written is None and rows >= n:
                    written = now
                # the click model's lifetime count (the owner's; followers show its checkpoints)
                done = max(_metric(t, "eddyline_worker_model_events_seen") for t in texts)
                if learned is None and done >= n:
                    learned = now
                    seen = done
                time.sleep(0.2)
            options = StorageOptions.from_env().for_delta()
            dt = DeltaTable(join(lake, "interaction"), storage_options=options)
            stamps = [c["timestamp"] for c in dt.history() if c.get("operation") == "WRITE"]
            done_at = float(max(stamps)) / 1000
            ids = dt.to_pyarrow_table(columns=["event_id"])["event_id"]
            distinct = len(set(ids.to_pylist()))
            out = {
                "events_per_s": n / (done_at - first),
                "learned_per_s": n / (learned - first),
                "lost": n - distinct,
                "doubled": len(ids) - distinct,
                "model_seen": seen,  # must be exactly n: each event learned once by one owner
            }
            for t in starting:
                t.join()
            log(f"{workers} worker(s): {out}")
            return out
        finally:
            for p in procs:
                p.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--workers", default="1,2,3")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with (
        tempfile.TemporaryDirectory() as tmp,
        kafka_for_bench() as bootstrap,
    ):
        root = Path(tmp)
        azurite = Azurite(root / "azurite")
        azurite.start()
        try:
            import os

            os.environ.update(azurite.env())  # this process reads the lake back with them
            env = {**azurite.env(), "EDDYLINE_BUDGET_EPSILON": "1e6"}
            local = drain(bootstrap, args.events, 1, str(root / "local-lake"), env, root)
            results = []
            for k in counts:
                container = azurite.create_container(f"scale{uuid.uuid4().hex[:8]}")
                results.append(drain(bootstrap, args.events, k, join(container, "lake"), env, root))
        finally:
            azurite.stop()
    rates = [round(r["events_per_s"]) for r in results]
    print(
        json.dumps(
            {
                "bench": "scale",
                "events": args.events,
                "workers": counts,
                "events_per_s": rates,
                "learned_per_s": [round(r["learned_per_s"]) for r in results],
                "local_disk_1_worker_events_per_s": round(local["events_per_s"]),
                "object_store_ratio_1_worker": round(rates[0] / local["events_per_s"], 3),
                "model_seen_exactly_once": all(r["model_seen"] == args.events for r in results),
                "lost": int(sum(r["lost"] for r in results) + local["lost"]),
                "doubled": int(sum(r["doubled"] for r in results) + local["doubled"]),
            }
        )
    )


if __name__ == "__main__":
    main()
