"""Collector throughput and latency: Segment batches over HTTP into Kafka, beside the SDK.

1. Throughput: 8 concurrent clients (aiohttp, keep-alive) post ``/v1/batch`` requests of 100
   ``Product Clicked`` calls to one ``eddyline collector run`` process for ``--seconds``;
   events/s answered 200 (a 200 means in Kafka or in the spool). Beside it, CPU an event:
   the collector process's (user + system, /proc: what one core would carry if the clients
   and the broker ran elsewhere), the clients' (this process) and everything else's (the
   broker's mostly), and the box's cores busy (/proc/stat).
2. Baseline, same run: the same events through the SDK's ``emit_many`` in this process
   (columns, 10,000 a call) to Kafka's acknowledgement.
3. Latency: the clients paced at half the measured throughput; p50/p99 of the request
   latency (to the durable answer).
4. Ceiling, same run: the same clients against a bare aiohttp server that only reads each
   body, decodes its JSON and answers ``{"success": true}`` (the least an HTTP collector in
   Python does per request): what this box and this harness can measure at all, and that
   server's CPU an event.

The collector's path without HTTP, stage by stage: ``bench/collector_stages.py``.

    .venv/bin/python bench/collector.py [--seconds 20] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import fresh_namespace, kafka_for_bench

from eddyline.schemas.events import InteractionEvent
from eddyline.streams.collector.mapping import DEFAULT_MAPPING
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.kafka.topics import ensure_topics
from eddyline.streams.sdk.producer import EventProducer

KEY = "bench-write-key"
PER_REQUEST = 100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mapping(folder: Path) -> str:
    """The default mapping with the bench's key and no rate limit to speak of."""
    mapping = yaml.safe_load(DEFAULT_MAPPING.read_text())
    mapping["write_keys"] = [{"name": "bench", "key": KEY, "app_id": "bench", "rate_per_s": 1e9}]
    (folder / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    return str(folder / "mapping.yaml")


def _bodies(n: int) -> list[bytes]:
    """``n`` distinct request bodies of PER_REQUEST calls (1,000 users)."""
    out = []
    for r in range(n):
        batch = [
            {
                "type": "track",
                "event": "Product Clicked",
                "userId": f"user-{(r * PER_REQUEST + i) % 1000}",
                "messageId": str(uuid.uuid4()),
                "timestamp": "2026-12-01T10:00:00Z",
                "properties": {"product_id": f"sku-{i}", "category": "news", "position": i % 9},
            }
            for i in range(PER_REQUEST)
        ]
        out.append(json.dumps({"batch": batch, "sentAt": "2026-12-01T10:00:00Z"}).encode())
    return out


async def _clients(
    url: str, bodies: list[bytes], clients: int, seconds: float, rate: float | None
) -> tuple[int, list[float], int]:
    """(events accepted, request latencies, non-200 answers); ``rate``: total events/s."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
    latencies: list[float] = []
    accepted = refused = 0
    end = time.monotonic() + seconds
    gap = clients * PER_REQUEST / rate if rate else 0.0

    async def client(c: int, session: aiohttp.ClientSession) -> None:
        nonlocal accepted, refused
        i, next_at = c, time.monotonic() + gap * c / clients
        while time.monotonic() < end:
            if gap:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += gap
            started = time.perf_counter()
            async with session.post(url, data=bodies[i % len(bodies)], headers=auth) as reply:
                await reply.read()
                if reply.status == 200:
                    accepted += PER_REQUEST
                    latencies.append(time.perf_counter() - started)
                else:
                    refused += 1
            i += clients

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(c, session) for c in range(clients)))
    return accepted, latencies, refused


def _serve_ceiling(port: int) -> None:
    """The ceiling's server (run in a child process): read, decode, answer."""
    from aiohttp import web

    async def batch(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        return web.json_response({"success": bool(body["batch"])})

    app = web.Application()
    app.router.add_post("/v1/batch", batch)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _run_server(
    argv: list[str], env: dict[str, str], port: int, log_to: Path
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(log_to, "wb"))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{argv} did not answer /health (log: {log_to})")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Box:
    """CPU used while a phase runs: the box's (all processes, /proc/stat, in cores), the
    server's and this process's (the clients), each as µs an event."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.box, self.server, self.own = _box_busy_s(), _cpu_s(server_pid), time.process_time()
        self.started = time.monotonic()

    def done(self, events: int) -> dict[str, float]:
        per = 1e6 / max(events, 1)
        box, server = _box_busy_s() - self.box, _cpu_s(self.pid) - self.server
        own = time.process_time() - self.own
        return {
            "box_cores_busy": round(box / (time.monotonic() - self.started), 2),
            "server_us": round(server * per, 1),
            "clients_us": round(own * per, 1),
            "others_us": round((box - server - own) * per, 1),  # the broker, the rest
        }


def _box_busy_s() -> float:
    """CPU seconds the whole box has been busy (not idle, not waiting for the disk)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _ceiling(
    bodies: list[bytes], clients: int, seconds: float, tmp: Path
) -> tuple[float, dict[str, float]]:
    port = free_port()
    argv = [sys.executable, __file__, "--serve-ceiling", str(port)]
    proc = _run_server(argv, dict(os.environ), port, tmp / "ceiling.log")
    try:
        url = f"http://127.0.0.1:{port}/v1/batch"
        asyncio.run(_clients(url, bodies, clients, 3, None))  # warm up
        box = _Box(proc.pid)
        accepted, _, _ = asyncio.run(_clients(url, bodies, clients, seconds, None))
        return accepted / seconds, box.done(accepted)
    finally:
        proc.terminate()
        proc.wait(30)


def _sdk(kafka: KafkaSettings, n: int, spool: str) -> float:
    """events/s through ``emit_many`` to Kafka's acknowledgement."""
    cols = {
        "user_id": [f"user-{i % 1000}" for i in range(10_000)],
        "app_id": ["bench"] * 10_000,
        "item_id": [f"sku-{i % 100}" for i in range(10_000)],
        "item_category": ["news"] * 10_000,
        "action": ["click"] * 10_000,
        "dwell_time_s": [0.0] * 10_000,
        "position": [i % 9 for i in range(10_000)],
    }
    settings = ProducerSettings(spool_dir=spool)
    with EventProducer(settings, kafka=kafka, registry=CollectorRegistry()) as producer:
        started = time.perf_counter()
        for _ in range(n // 10_000):
            producer.emit_many(InteractionEvent, cols)
        assert producer.flush(120) == 0
        return n // 10_000 * 10_000 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--serve-ceiling", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ceiling:
        return _serve_ceiling(args.serve_ceiling)
    bodies = _bodies(2_000)
    with kafka_for_bench() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        with fresh_namespace(bootstrap, "collector") as ns:
            kafka = KafkaSettings(bootstrap=bootstrap, namespace=ns)
            ensure_topics(kafka, ["interaction", "feedback"])
            port = free_port()
            env = {
                **os.environ,
                "EDDYLINE_BOOTSTRAP": bootstrap,
                "EDDYLINE_NAMESPACE": ns,
                "EDDYLINE_COLLECTOR_PORT": str(port),
                "EDDYLINE_COLLECTOR_MAPPING": _mapping(Path(tmp)),
                "EDDYLINE_SPOOL_DIR": str(Path(tmp) / "collector-spool"),
            }
            argv = [sys.executable, "-m", "eddyline", "collector", "run"]
            proc = _run_server(argv, env, port, Path(tmp) / "collector.log")
            try:
                url = f"http://127.0.0.1:{port}/v1/batch"
                asyncio.run(_clients(url, bodies, args.clients, 3, None))  # warm up
                box = _Box(proc.pid)
                accepted, _, refused = asyncio.run(
                    _clients(url, bodies, args.clients, args.seconds, None)
                )
                cpu = box.done(accepted)
                cpu_us = cpu["server_us"]
                rate = accepted / args.seconds
                log(
                    f"collector: {rate:,.0f} events/s ({refused} requests refused), "
                    f"{cpu_us:.1f} µs of its CPU an event; the box {cpu['box_cores_busy']} "
                    f"cores busy (clients {cpu['clients_us']} µs an event, the broker and "
                    f"the rest {cpu['others_us']})"
                )
                half = rate / 2
                _, latencies, refused_half = asyncio.run(
                    _clients(url, bodies, args.clients, args.seconds, half)
                )
                p50, p99 = (float(x) * 1000 for x in np.percentile(latencies, [50, 99]))
                log(f"at {half:,.0f} events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            finally:
                proc.terminate()
                proc.wait(30)
            sdk = _sdk(kafka, 1_000_000, str(Path(tmp) / "sdk-spool"))
            log(f"SDK emit_many: {sdk:,.0f} events/s")
        ceiling, bare = _ceiling(bodies, args.clients, args.seconds, Path(tmp))
        log(
            f"ceiling (bare aiohttp, decode and answer): {ceiling:,.0f} events/s, "
            f"{bare['server_us']} µs of its CPU an event; the box {bare['box_cores_busy']} "
            f"cores busy (clients {bare['clients_us']} µs an event)"
        )
    print(
        json.dumps(
            {
                "bench": "collector",
                "events_per_s": round(rate),
                "sdk_events_per_s": round(sdk),
                "ratio_vs_sdk": round(rate / sdk, 3),
                "collector_cpu_us_per_event": round(cpu_us, 1),
                "box_cores_busy": cpu["box_cores_busy"],
                "clients_cpu_us_per_event": cpu["clients_us"],
                "broker_and_rest_cpu_us_per_event": cpu["others_us"],
                "ceiling_events_per_s": round(ceiling),
                "ceiling_server_cpu_us_per_event": bare["server_us"],
                "ratio_vs_ceiling": round(rate / ceiling, 3),
                "clients": args.clients,
                "events_per_request": PER_REQUEST,
                "p50_ms_at_half_load": round(p50, 1),
                "p99_ms_at_half_load": round(p99, 1),
                "refused_requests": refused + refused_half,
                "target_events_per_s": 100_000,
                "target_p99_ms_at_half_load": 50,
            }
        )
    )


if __name__ == "__main__":
    main()
