"""Pipeline throughput and latency: raw topic -> privacy -> Delta (+ learning), one worker.

1. Drain: the raw topic is pre-filled with N events; one eddyline worker process starts;
   events/s from its first event in to the last row committed to Delta, with privacy and
   learning on. ``--wire envelope``: Arrow envelopes from the SDK. ``--wire json``: one
   JSON event per message from a plain confluent-kafka producer (what any other client
   sends), and beside it, in the same run, the envelope figure.
2. Baseline: a naive Faust agent (bench/naive_worker.py) doing the same work one JSON event
   per message, on a pre-filled JSON topic, timed the same way.
3. Latency: events offered at ``--rate`` events/s (50,000 through the SDK; 20,000 JSON
   messages with ``--wire json``) to a running worker; for every event, the time from its
   ``occurred_at`` (stamped when it is sent) to the Delta commit that makes it visible (and,
   beside it, to this harness's 0.1 s poll that first read that commit).

4. A/B (``--phases accounting``, not run by default): the drain with one worker setting
   on and off (``--ab NAME=ON,OFF``; default the cost accounting,
   ``EDDYLINE_COST_ACCOUNTING=1,0``; e.g. ``EDDYLINE_REPEAT_WINDOW_S=86400,0``),
   ``--rounds`` pairs in alternating order; medians, their ratio, the spread of the off runs.

    .venv/bin/python bench/pipeline.py [--wire envelope|json] [--events 1000000]
        [--naive-events 100000] [--phases drain,naive,latency|accounting] [--rounds 3]
        [--ab EDDYLINE_COST_ACCOUNTING=1,0]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from deltalake import DeltaTable
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import fresh_namespace, kafka_for_bench
from _wire_json import fill_json, paced, produce

from eddyline.schemas.events import InteractionEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import ensure_topics
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _metric(text: str, name: str) -> float:
    return sum(float(m) for m in re.findall(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))


def _emit(kafka: KafkaSettings, n: int, seed: int, rate: float | None, spool: str) -> None:
    """``n`` events through the SDK's columnar path (``emit_many``: a load generator cheap
    enough not to starve the worker of CPU on two cores; ``emit`` costs ~12 µs an event).
    When paced (``rate``), every chunk is stamped with the time it is emitted."""
    sim = TrafficSimulator(users=20_000, seed=seed)
    settings = ProducerSettings(spool_dir=Path(spool))
    with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as producer:
        for size, at in paced(n, rate, 5_000):
            producer.emit_many(InteractionEvent, sim.interaction_columns(size, occurred_at=at))
        assert producer.flush(300) == 0


def _worker(
    kafka: KafkaSettings, root: Path, name: str, extra: dict[str, str] | None = None
) -> WorkerProcess:
    env = {
        **(extra or {}),
        "EDDYLINE_BOOTSTRAP": kafka.bootstrap,
        "EDDYLINE_NAMESPACE": kafka.namespace,
        "EDDYLINE_LAKE_PATH": str(root / "lake"),
        "EDDYLINE_STATE_DIR": str(root / "state"),
        "EDDYLINE_PSEUDONYM_KEY": "bench-key-0123456789abcdef",
    }
    return WorkerProcess(env, root / f"{name}.log", free_port()).start(timeout=120)


def drain(
    bootstrap: str,
    namespace: str,
    n: int,
    root: Path,
    spool: str,
    wire: str,
    env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """(events/s raw topic -> committed Delta rows, events/s raw topic -> learned)."""
    kafka = KafkaSettings(bootstrap=bootstrap, namespace=namespace)
    ensure_topics(kafka, ["interaction", "feedback"])
    log(f"drain ({wire}): pre-filling {n:,} events")
    SENDERS[wire](kafka, n, 1, None, spool)
    worker = _worker(kafka, root, "drain-worker", env)
    try:
        # The clock starts when the worker's first event is counted (scraped every 20 ms
        # until then) and stops at the wall time of the Delta commit that holds the last
        # row (its commit info), so the end needs no fast scraping: a scrape costs the
        # worker ~1 ms of its event loop, and at 20 ms intervals that was ~5% of it.
        first = 0.0
        written = learned_at = None
        deadline = time.monotonic() + 900
        while written is None or learned_at is None:
            if time.monotonic() > deadline:  # never hang: say how far it got
                lines = (worker.metrics() or "").splitlines()
                shown = "\n".join(x for x in lines if x.startswith("eddyline_worker_events"))
                raise RuntimeError(f"drain: not all {n:,} events written and learned:\n{shown}")
            text = worker.metrics() or ""
            now = time.time()
            if not first:
                if _metric(text, "eddyline_worker_events_in_total") > 0:
                    first = now
                time.sleep(0.02)
                continue
            if written is None and _metric(text, "eddyline_worker_rows_written_total") >= n:
                written = now
            if learned_at is None and _metric(text, "eddyline_worker_events_learned_total") >= n:
                learned_at = now
            time.sleep(0.1 if written else 0.5)  # learning ends last: seen to 0.1 s
        done = _last_append(root / "lake" / "interaction")
        # The figure is raw topic -> committed Delta rows (the issue's); learning runs
        # beside it in the same process and, with a backlog, yields to the lake (the
        # learn agent's ``learn_yield_below``): it finishes later, and its rate is
        # reported beside (to the scrape that saw it: 0.1 s once Delta has it all).
        log(
            f"drain ({wire}): {n:,} events in {done - first:.2f}s to Delta, "
            f"{learned_at - first:.2f}s to all learned"
        )
        if (env or {}).get("EDDYLINE_COST_ACCOUNTING") != "0":
            COST.update(_cost(worker))
        return n / (done - first), n / (learned_at - first)
    finally:
        worker.stop()


def accounting(
    bootstrap: str, n: int, rounds: int, root: Path, spool: str, wire: str, ab: str
) -> dict[str, object]:
    """The drain with one setting on and off (``ab``: ``NAME=ON,OFF``), in ``rounds``
    pairs, the order alternating (on-off, off-on, ...): medians, their ratio, and the
    spread of the off runs among themselves (what noise alone does)."""
    name, values = ab.split("=", 1)
    value = dict(zip(("on", "off"), values.split(","), strict=True))
    runs: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(rounds):
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            env = {name: value[mode]}
            with fresh_namespace(bootstrap, f"ab{mode}{i}") as ns:
                rate, _ = drain(bootstrap, ns, n, root / f"ab-{mode}-{i}", spool, wire, env)
            runs[mode].append(rate)
            log(f"{name}={value[mode]}: {rate:,.0f} events/s")
    on, off = (float(np.median(runs[m])) for m in ("on", "off"))
    return {
        "setting": ab,
        "events_per_s_on": [round(r) for r in runs["on"]],
        "events_per_s_off": [round(r) for r in runs["off"]],
        "median_on": round(on),
        "median_off": round(off),
        "ratio_on_vs_off": round(on / off, 3),
        "spread_off": round((max(runs["off"]) - min(runs["off"])) / off, 3),
    }


COST: dict[str, float] = {}  # the last drain's CPU seconds per 1,000 rows, per stage


def _cost(worker: WorkerProcess, predictions: int = 500) -> dict[str, float]:
    """CPU seconds per 1,000 rows of each stage's thread (``eddyline_worker_stage_*``),
    after ``predictions`` GET /predict/click calls (per 1,000 predictions for predict)."""
    query = "item_category=news&position=3&dwell_time_s=12"
    for _ in range(predictions):
        worker.get(f"/predict/click?{query}")
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(worker.metrics() or ""):
        for sample in family.samples:
            if sample.name in (
                "eddyline_worker_stage_cpu_seconds_total",
                "eddyline_worker_stage_rows_total",
            ):
                found.setdefault(sample.labels["stage"], {})[sample.name] = sample.value
    return {
        stage: round(
            1000
            * v["eddyline_worker_stage_cpu_seconds_total"]
            / v["eddyline_worker_stage_rows_total"],
            4,
        )
        for stage, v in sorted(found.items())
        if v.get("eddyline_worker_stage_rows_total")
    }


def _last_append(uri: Path) -> float:
    """Wall time (s since the epoch) of the newest append to a Delta table (not upkeep's)."""
    stamps = [
        c["timestamp"] for c in DeltaTable(str(uri)).history() if c.get("operation") == "WRITE"
    ]
    return float(max(stamps)) / 1000


def naive(bootstrap: str, namespace: str, n: int, root: Path) -> float:
    topic = f"{namespace}.json"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for event in TrafficSimulator(users=20_000, seed=2).interactions(n):
        produce(producer, topic, event.model_dump_json().encode(), event.user_id.encode())
    producer.flush(120)
    log(f"naive: pre-filled {n:,} JSON messages")
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "naive_worker.py"),
            bootstrap,
            topic,
            str(root / "naive-lake"),
            str(n),
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    found = re.findall(r"\{\"first\".*?\}", proc.stdout + proc.stderr)  # Faust logs stdout
    result = json.loads(found[-1])
    log(f"naive: {n:,} events in {result['done'] - result['first']:.2f}s")
    return n / float(result["done"] - result["first"])


def latency(
    bootstrap: str, namespace: str, rate: float, seconds: float, root: Path, spool: str, wire: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds from emit to visible in Delta, per event, at ``rate`` events/s offered:
    (to the commit that made it visible, to the 0.1 s poll that first saw that commit).

    Steady state: the worker first takes a warm-up of 1,000 events to Delta (group join,
    table creation), then the paced events are offered and measured. An event is visible
    from the wall time of the Delta commit that added its file (the commit info's
    timestamp): what any reader opening the table from then on sees. The poll's figure
    adds this harness's polling interval and reading time."""
    kafka = KafkaSettings(bootstrap=bootstrap, namespace=namespace)
    ensure_topics(kafka, ["interaction", "feedback"])
    worker = _worker(kafka, root, "latency-worker")
    log_dir = root / "lake" / "interaction" / "_delta_log"
    parts: list[pa.Table] = []
    next_version = 0

    def appended() -> int:
        """Reads the commits made since the last call; returns the rows they added."""
        nonlocal next_version
        rows, polled = 0, time.time()
        while (entry := log_dir / f"{next_version:020d}.json").exists():
            actions = [json.loads(line) for line in entry.read_text().splitlines() if line]
            info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
            if info.get("operation") != "OPTIMIZE":  # compaction re-adds rows seen before
                for add in (a["add"] for a in actions if "add" in a):
                    path = log_dir.parent / unquote(add["path"])
                    t = pq.read_table(path, columns=["event_id", "occurred_at"])
                    n = t.num_rows
                    t = t.append_column("committed", pa.repeat(info["timestamp"] / 1e3, n))
                    parts.append(t.append_column("polled", pa.repeat(polled, n)))
                    rows += n
            next_version += 1
        return rows

    try:
        _emit(kafka, 1_000, 4, None, spool)
        warm, deadline = 0, time.monotonic() + 120
        while warm < 1_000 and time.monotonic() < deadline:
            time.sleep(0.1)
            warm += appended()
        if warm < 1_000:
            raise RuntimeError(f"warm-up: only {warm} of 1,000 events became visible")
        parts.clear()
        n = int(rate * seconds)
        send = SENDERS[wire]
        sender = threading.Thread(target=send, args=(kafka, n, 3, rate, spool), daemon=True)
        log(f"latency ({wire}): offering {rate:,.0f} events/s for {seconds:.0f}s")
        sender.start()
        rows, deadline = 0, time.monotonic() + seconds + 120
        while rows < n and time.monotonic() < deadline:
            time.sleep(0.1)
            rows += appended()
        sender.join(timeout=5)
    finally:
        worker.stop()
    if not parts:
        raise RuntimeError(f"none of {n:,} events became visible")
    # first appearance of each event (exactly once holds, but a duplicate must not count)
    frame = pl.from_arrow(pa.concat_tables(parts)).unique("event_id", keep="first")
    if frame.height < n:
        raise RuntimeError(f"only {frame.height:,} of {n:,} events became visible")
    at = frame["occurred_at"].dt.epoch("us").to_numpy() / 1e6
    return frame["committed"].to_numpy() - at, frame["polled"].to_numpy() - at


SENDERS = {"envelope": _emit, "json": fill_json}


def _round(x: float | None, digits: int | None = None) -> float | None:
    return None if x is None else round(x, digits)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wire", choices=["envelope", "json"], default="envelope")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--naive-events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, help="offered events/s (50,000; json: 20,000)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="A/B: on/off pairs")
    parser.add_argument("--ab", default="EDDYLINE_COST_ACCOUNTING=1,0", help="NAME=ON,OFF")
    parser.add_argument(
        "--phases",
        default="drain,naive,latency",
        help="comma-separated subset to run (figures of a skipped phase print as null)",
    )
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if unknown := phases - {"drain", "naive", "latency", "accounting"}:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    rate = args.rate or (20_000 if args.wire == "json" else 50_000)
    ours = learned = base = p50 = p99 = p99_polled = envelope = None
    cost: dict[str, float] = {}
    ab: dict[str, object] | None = None
    with kafka_for_bench() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spool = str(root / "spool")
        if "drain" in phases:
            with fresh_namespace(bootstrap, "drain") as ns:
                ours, learned = drain(bootstrap, ns, args.events, root / "drain", spool, args.wire)
                cost = dict(COST)
            if args.wire == "json":  # the envelope figure beside it, same run
                with fresh_namespace(bootstrap, "drainenv") as ns:
                    envelope, _ = drain(
                        bootstrap, ns, args.events, root / "drain-env", spool, "envelope"
                    )
        if "accounting" in phases:
            ab = accounting(bootstrap, args.events, args.rounds, root, spool, args.wire, args.ab)
        if "naive" in phases:
            with fresh_namespace(bootstrap, "naive") as ns:
                base = naive(bootstrap, ns, args.naive_events, root)
        if "latency" in phases:
            with fresh_namespace(bootstrap, "lat") as ns:
                delays, polled = latency(
                    bootstrap, ns, rate, args.seconds, root / "latency", spool, args.wire
                )
            p50, p99 = (float(p) for p in np.percentile(delays, [50, 99]))
            p99_polled = float(np.percentile(polled, 99))
            log(
                f"latency: p50 {p50:.2f}s p99 {p99:.2f}s over {len(delays):,} events "
                f"(p99 {p99_polled:.2f}s to the poll that saw them)"
            )
    print(
        json.dumps(
            {
                "bench": "pipeline",
                "wire": args.wire,
                "events": args.events,
                "naive_events": args.naive_events,
                "events_per_s": _round(ours),
                "learned_events_per_s": _round(learned),
                "envelope_events_per_s": _round(envelope),
                "cpu_s_per_1000": cost,
                "naive_events_per_s": _round(base),
                "ratio_vs_naive": round(ours / base, 1) if ours and base else None,
                "offered_events_per_s": rate,
                "p50_visible_s": _round(p50, 3),
                "p99_visible_s": _round(p99, 3),
                "p99_seen_by_poll_s": _round(p99_polled, 3),
                "target_events_per_s": 100_000 if args.wire == "json" else 300_000,
                "target_ratio_vs_naive": 5 if args.wire == "json" else 20,
                "target_p99_visible_s": 2.0,
                "accounting_ab": ab,
            }
        )
    )


if __name__ == "__main__":
    main()
