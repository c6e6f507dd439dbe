"""SDK → Kafka → worker (privatize, lake, learn) → Delta + dead letters + drift, for real."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from eddyline.consumers.lake import Lake
from eddyline.predict import PredictionError, Predictor
from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.envelope import ARROW, encode_arrow, encode_json
from eddyline.schemas.events import InteractionEvent, ModelEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import Topics, read_all, read_latest
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.budget_state import changelog_topic
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import (
    deadlettered_rows,
    deadletters,
    delta_ids,
    drift_events,
    wait_for,
)

pytestmark = pytest.mark.integration
CANARY_TEXT = "canary-comment-4c1d"


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path):
    proc = WorkerProcess(worker_env, tmp_path / "worker.log", free_port()).start()
    yield proc
    proc.stop()


def _invalid_json(kafka: KafkaSettings, n: int) -> list[str]:
    producer, topic, ids = (
        Producer(kafka.librdkafka()),
        Topics(kafka.namespace).raw("interaction"),
        [],
    )
    for i in range(n):
        eid = f"00000000-0000-4000-8000-{i:012d}"
        bad = {
            "event_id": eid,
            "user_id": f"bad-user-{i}@example.com",
            "app_id": "a",
            "item_id": "i",
            "item_category": "news",
            "occurred_at": "2026-01-01T00:00:00Z",
            "action": "teleport" if i % 2 else "click",
            "dwell_time_s": -1.0 if i % 2 == 0 else 1.0,
        }
        value, headers = encode_json(bad, "interaction:1")
        producer.produce(topic, value=value, headers=headers)
        ids.append(eid)
    producer.flush(30)
    return ids


def _invalid_rows_envelope(kafka: KafkaSettings, n: int) -> list[str]:
    """One Arrow envelope whose rows all break the schema (position out of range)."""
    sim = TrafficSimulator(users=5, seed=99)
    rows = [
        {**e.__dict__, "event_id": str(e.event_id), "position": 5_000} for e in sim.interactions(n)
    ]
    value, headers = encode_arrow(
        pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent)), "interaction:1"
    )
    producer = Producer(kafka.librdkafka())
    producer.produce(Topics(kafka.namespace).raw("interaction"), value=value, headers=headers)
    producer.flush(30)
    return [r["event_id"] for r in rows]


def _emit(producer: EventProducer, events: list) -> list[str]:
    for e in events:
        producer.emit(e)
    assert producer.flush(30) == 0
    return [str(e.event_id) for e in events]


def test_ten_thousand_events_exactly_once_private_deadlettered_and_drift(
    kafka: KafkaSettings, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    sim = TrafficSimulator(users=300, seed=21, drift_at=4_500)
    feedback = list(sim.feedback(400))
    feedback = [
        f.model_copy(update={"comment": CANARY_TEXT}) if i % 4 == 0 else f
        for i, f in enumerate(feedback)
    ]
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        # Phase 1: before the drift, plus 200 invalid events from non-SDK clients.
        pre_drift = list(sim.interactions(4_500))
        valid = _emit(producer, pre_drift + feedback[:200])
        invalid = _invalid_json(kafka, 150) + _invalid_rows_envelope(kafka, 50)
        wait_for(lambda: len(delta_ids(lake, "interaction")) == 4_500, 120, "phase 1 in Delta")
        wait_for(
            lambda: (
                'eddyline_worker_events_learned_total{model="click"} 4500.0'
                in (worker.metrics() or "")
            ),
            60,
            "phase 1 learned",
        )
        # Phase 2: after the drift.
        post_drift = list(sim.interactions(4_900))
        valid += _emit(producer, post_drift + feedback[200:])
    assert len(valid) + len(invalid) == 10_000

    def landed() -> bool:
        return len(delta_ids(lake, "interaction")) + len(delta_ids(lake, "feedback")) >= len(valid)

    wait_for(landed, 120, "every valid event in Delta")
    written = delta_ids(lake, "interaction") + delta_ids(lake, "feedback")
    assert len(written) == len(valid) and set(written) == set(valid)  # each exactly once

    letters = deadletters(kafka)
    # 150 JSON messages (row 0 of each) and one envelope of 50 rows, each named once
    assert sorted(r for _, _, r in deadlettered_rows(kafka)) == ["0"] * 150 + ["0-49"]
    assert sum(d["count"] for d in letters) == len(invalid)
    assert {(d["reason"], d["field"]) for d in letters} == {
        ("row.invalid", "dwell_time_s"),
        ("row.invalid", "action"),
        ("row.invalid", "position"),
    }
    assert all(d["source"]["topic"].endswith("events.interaction") for d in letters)

    drifts = drift_events(kafka)
    assert drifts, "no drift event after the injected drift"
    assert all(d.events_seen > 4_500 for d in drifts), "a drift alarm before the drift"
    assert drifts[0].offsets_after and drifts[0].lake_version is not None
    # The version range brackets the change: time travel to lake_version_before reads only
    # pre-drift interactions; the drifted ones are in the rows added after it.
    before = drifts[0].lake_version_before
    assert before is not None and before <= drifts[0].lake_version
    old = set(
        Lake(lake).read("interaction", as_of=before, columns=["event_id"])["event_id"].to_pylist()
    )
    assert old and old <= {str(e.event_id) for e in pre_drift}
    assert {str(e.event_id) for e in post_drift[:100]} <= set(delta_ids(lake, "interaction")) - old

    # The drift event is also a row of the drift_events table.
    def drift_rows() -> list[str]:
        if not (lake / "drift_events").exists():
            return []
        return Lake(lake).read("drift_events", columns=["drift_id"])["drift_id"].to_pylist()

    wait_for(lambda: str(drifts[0].drift_id) in drift_rows(), 30, "drift events in Delta")

    # Each checkpoint's rolling metrics land in the model_metrics table and in Prometheus.
    def metric_rows() -> list[dict]:
        if not (lake / "model_metrics").exists():
            return []
        return Lake(lake).read("model_metrics").to_pylist()

    def click_metrics() -> bool:
        return any(r["log_loss"] for r in metric_rows() if r["model"] == "click")

    wait_for(click_metrics, 30, "the click model's metrics in Delta")
    assert all(0 <= r["error_rate"] <= 1 for r in metric_rows() if r["kind"] == "checkpoint")
    assert 'eddyline_worker_model_log_loss{model="click"}' in (worker.metrics() or "")
    # The model answers predictions, and announces its checkpoints.
    base = f"http://127.0.0.1:{worker.web_port}/predict"
    with urllib.request.urlopen(
        f"{base}/click?item_category=sports&position=1&dwell_time_s=5"
    ) as r:
        answer = json.loads(r.read())
    assert 0.0 <= answer["probability"] <= 1.0 and answer["events_seen"] >= 9_000
    for url, status in ((f"{base}/nope?item_category=x", 404), (f"{base}/click?position=x", 400)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url)
        assert err.value.code == status
    # ... and through the Python helper, with the worker's reason on a bad request
    predictor = Predictor(f"http://127.0.0.1:{worker.web_port}")
    got = predictor.predict("click", item_category="sports", position=1, dwell_time_s=5)
    assert got.model == "click" and got.probability == pytest.approx(
        answer["probability"], abs=0.05
    )
    with pytest.raises(PredictionError, match="unknown model") as refused:
        predictor.predict("nope", item_category="x")
    assert refused.value.status == 404
    announced = [
        ModelEvent.model_validate_json(v)
        for v, _ in read_all(kafka, Topics(kafka.namespace).models)
    ]
    latest = {event.model: event for event in announced if event.kind == "checkpoint"}
    assert set(latest) == {"click", "satisfaction"} and latest["click"].events_seen > 0
    # The satisfaction model learned every (consenting) feedback event; it answers too.
    wait_for(
        lambda: (
            'eddyline_worker_model_events_seen{model="satisfaction"} 400.0'
            in (worker.metrics() or "")
        ),
        30,
        "the feedback learned",
    )
    happy = predictor.predict("satisfaction", item_id="sku-3", app_id=sim.app_id)
    assert happy.model == "satisfaction" and 0.0 <= happy.probability <= 1.0
    with pytest.raises(PredictionError, match="missing feature 'app_id'") as refused:
        predictor.predict("satisfaction", item_id="sku-3")
    assert refused.value.status == 400

    # the worker's own output too: its log file and its metrics page
    logs_and_metrics = [worker.log_path.read_bytes(), (worker.metrics() or "").encode()]
    _assert_no_raw_personal_data(
        kafka, lake, [sim.user_id(i) for i in range(sim.users)], logs_and_metrics
    )


def _assert_no_raw_personal_data(
    kafka: KafkaSettings, lake: Path, user_ids: list[str], extra: list[bytes]
) -> None:
    """Canaries: raw user ids and the marked comment appear nowhere past the boundary:
    private topics, dead letters, signals, the budget ledger, Delta, logs, metrics."""
    topics = Topics(kafka.namespace)
    blobs = [v for s in ("interaction", "feedback") for v, _ in read_all(kafka, topics.private(s))]
    blobs += list(read_latest(kafka, changelog_topic(WorkerSettings(), kafka)))  # keys
    blobs += list(read_latest(kafka, changelog_topic(WorkerSettings(), kafka)).values())
    blobs += extra
    blobs += [v for v, _ in read_all(kafka, topics.deadletter)]
    blobs += [v for v, _ in read_all(kafka, topics.drift)]
    blobs += [v for v, _ in read_all(kafka, topics.models)]
    for root, _, files in os.walk(lake):
        blobs += [Path(root, f).read_bytes() for f in files]
    for table in ("interaction", "feedback"):  # decoded too: Parquet may compress strings
        blobs.append(json.dumps(Lake(lake).read(table).to_pylist(), default=str).encode())
    haystack = b"\n".join(blobs)
    assert CANARY_TEXT.encode() not in haystack
    leaked = [u for u in [*user_ids, "bad-user-0@example.com"] if u.encode() in haystack]
    assert leaked == []


def test_garbage_on_a_raw_topic_is_deadlettered_and_the_worker_keeps_going(
    kafka: KafkaSettings, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    raw = Topics(kafka.namespace).raw("interaction")
    producer = Producer(kafka.librdkafka({"message.max.bytes": 16_000_000}))

    def envelope(n: int, seed: int) -> tuple[bytes, list[tuple[str, bytes]]]:
        rows = [
            {**e.__dict__, "event_id": str(e.event_id)}
            for e in TrafficSimulator(seed=seed).interactions(n)
        ]
        table = pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent))
        return encode_arrow(table, "interaction:1")

    good_value, good_headers = envelope(10, 4)
    garbage = [
        (os.urandom(512), [("content-type", ARROW.encode())]),  # random bytes as Arrow
        (good_value[: len(good_value) // 2], good_headers),  # truncated Arrow
        (os.urandom(256), []),  # no headers at all
        (b'{"user_id": ', [("content-type", b"application/json")]),  # broken JSON
        (b"{}", [("content-type", b"application/json"), ("eddyline-schema", b"interaction:77")]),
        (b"x", [("content-type", b"text/csv")]),  # wrong content type
        envelope(20_001, 5),  # valid rows, but more than the worker's limit of 20,000
    ]
    for value, headers in garbage:
        producer.produce(raw, value=value, headers=headers, partition=0)
    producer.flush(30)
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as sdk:
        valid = _emit(sdk, list(TrafficSimulator(users=20, seed=8).interactions(300)))
    wait_for(lambda: len(delta_ids(lake, "interaction")) == 300, 90, "valid events after garbage")
    assert set(delta_ids(lake, "interaction")) == set(valid)
    expected = sorted(
        ["envelope.corrupt"] * 3
        + ["envelope.content_type"] * 2
        + ["schema.unknown", "envelope.too_large"]
    )
    assert sorted(d["reason"] for d in deadletters(kafka)) == expected
    assert worker.proc is not None and worker.proc.poll() is None

    def stored_reasons() -> list[str]:
        if not (lake / "deadletters").exists():
            return []
        return sorted(Lake(lake).read("deadletters", columns=["reason"])["reason"].to_pylist())

    wait_for(lambda: stored_reasons() == expected, 30, "dead letters in Delta")
    time.sleep(5.5)  # one lag report
    metrics = worker.metrics() or ""
    assert 'eddyline_worker_deadletters_total{reason="envelope.corrupt"} 3.0' in metrics
    assert 'eddyline_worker_deadlettered_events_total{reason="envelope.corrupt"} 3.0' in metrics
    assert 'eddyline_worker_table_files{table="interaction"}' in metrics
    assert "eddyline_worker_consumer_lag{" in metrics
