"""``eddyline demo``: broker, worker, simulated traffic with a drift, and a summary."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer
from rich.console import Console
from rich.progress import Progress

from eddyline.consumers.drift import DriftSubscriber
from eddyline.schemas.envelope import KafkaHeaders, encode_json
from eddyline.schemas.events import DriftEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import LocalBroker, free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import STREAMS, Topics, ensure_topics, read_all
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess


@dataclass
class DemoReport:
    sent: int = 0
    sent_invalid: int = 0
    rows_in_delta: int = 0
    deadlettered: int = 0
    drift_point: int = 0
    drift_started: datetime | None = None
    drifts: list[DriftEvent] = field(default_factory=list)
    lake: str = ""

    @property
    def after_drift(self) -> list[DriftEvent]:
        """Drift events detected after the drifted traffic began."""
        start = self.drift_started
        return [d for d in self.drifts if start is not None and d.detected_at > start]

    @property
    def reconciles(self) -> bool:
        return self.sent == self.rows_in_delta + self.deadlettered


def send_invalid(kafka: KafkaSettings, n: int) -> int:
    """``n`` hand-written JSON events that break the schema, as a non-SDK client would send."""
    producer = Producer(kafka.librdkafka())
    topic = Topics(kafka.namespace).raw("interaction")
    for i in range(n):
        bad = {
            "event_id": f"00000000-0000-4000-8000-{i:012d}",
            "user_id": f"bad-user-{i}",
            "app_id": "demo-shop",
            "item_id": "sku-1",
            "item_category": "news",
            "action": "teleport" if i % 2 else "click",
            "dwell_time_s": -1.0 if i % 2 == 0 else 3.0,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        value, headers = encode_json(bad, "interaction:1")
        kafka_headers: KafkaHeaders = [*headers]
        producer.produce(topic, value=value, headers=kafka_headers)
    producer.flush(30)
    return n


def count_rows(lake: Path) -> int:
    from deltalake import DeltaTable

    total = 0
    for name in STREAMS:
        if DeltaTable.is_deltatable(str(lake / name)):
            total += DeltaTable(str(lake / name)).count()
    return total


def count_deadletters(kafka: KafkaSettings) -> int:
    return sum(
        json.loads(v)["count"] for v, _ in read_all(kafka, Topics(kafka.namespace).deadletter)
    )


def run_demo(events: int = 40_000, console: Console | None = None) -> DemoReport:
    """Run the whole loop once and return what happened."""
    console = console or Console(stderr=True)
    broker = LocalBroker()
    started_broker = not broker.answers()
    if started_broker:
        console.print("starting the local Kafka broker (first run fetches its jars with Maven)...")
        broker.start()
    run_id = time.strftime("demo-%Y%m%d-%H%M%S")
    lake = Path("lake") / run_id
    kafka = KafkaSettings(bootstrap=broker.bootstrap, namespace=run_id)
    ensure_topics(kafka, STREAMS)
    env = {
        "EDDYLINE_BOOTSTRAP": kafka.bootstrap,
        "EDDYLINE_NAMESPACE": run_id,
        "EDDYLINE_LAKE_PATH": str(lake),
        "EDDYLINE_STATE_DIR": str(Path(".eddyline")),
    }
    Path(".eddyline").mkdir(exist_ok=True)
    worker = WorkerProcess(env, Path(".eddyline") / f"{run_id}-worker.log", free_port())
    report = DemoReport(drift_point=events // 2, lake=str(lake))
    try:
        console.print("starting a worker...")
        worker.start()
        _traffic(kafka, events, report, console)
        _wait(kafka, lake, report, worker, console)
    finally:
        worker.stop()
        if started_broker:
            broker.stop()
    return report


def _traffic(
    kafka: KafkaSettings, events: int, report: DemoReport, console: Console, rate: float = 2_000.0
) -> None:
    """Emit at about ``rate`` interactions/s: a live stream, not a backlog, so the worker
    sees every partition's events in time order and the drift where it happens."""
    sim = TrafficSimulator(users=2_000, seed=7, drift_at=report.drift_point)
    with EventProducer(kafka=kafka) as producer, Progress(console=console) as progress:
        task = progress.add_task("emitting events", total=events)
        step = 500
        for start in range(0, events, step):
            if start == report.drift_point:
                report.drift_started = datetime.now(UTC)
                progress.console.print(f"drift injected at event {start:,}")
            t0 = time.monotonic()
            for event in sim.interactions(step):
                producer.emit(event)
            for fb in sim.feedback(step // 20):
                producer.emit(fb)
            report.sent += step + step // 20
            progress.advance(task, step)
            time.sleep(max(0.0, step / rate - (time.monotonic() - t0)))
    report.sent_invalid = send_invalid(kafka, 50)
    report.sent += report.sent_invalid


def _wait(
    kafka: KafkaSettings,
    lake: Path,
    report: DemoReport,
    worker: WorkerProcess,
    console: Console,
    timeout: float = 180.0,
) -> None:
    deadline = time.monotonic() + timeout
    with (
        DriftSubscriber(group_id=f"{kafka.namespace}-demo", kafka=kafka) as drift,
        console.status("waiting for the worker to catch up...") as status,
    ):
        while time.monotonic() < deadline:
            event = drift.poll(0.5)
            if event is not None:
                report.drifts.append(event)
            if lake.exists():
                report.rows_in_delta = count_rows(lake)
            report.deadlettered = count_deadletters(kafka)
            status.update(
                f"Delta rows {report.rows_in_delta:,} + dead-lettered "
                f"{report.deadlettered:,} of {report.sent:,} sent"
            )
            if report.reconciles and report.after_drift:
                break
            time.sleep(1.0)
        while (event := drift.poll(1.0)) is not None:
            report.drifts.append(event)
