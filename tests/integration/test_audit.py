"""The outside audit's findings (issue 18), each against a real worker and a real broker:
a poison message, personal data in dead letters, a budget reset by backdating, noise that
the pseudonym key removes, a partition that cannot advance."""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from eddyline.consumers.lake import Lake
from eddyline.privacy.draws import Draws, KeyedDraws
from eddyline.privacy.mechanisms import LaplaceMechanism
from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.envelope import H_SOURCE, decode, encode_arrow, encode_json, header_map
from eddyline.schemas.events import InteractionEvent
from eddyline.schemas.source import OFFSET_COLUMN, SourceRef
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import Topics, read_all, read_latest
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.budget_state import changelog_topic
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import deadletters, delta_ids, wait_for

pytestmark = pytest.mark.integration
CANARY = "canary-4e1f"


def _start(env: dict[str, str], tmp_path: Path, **extra: str) -> WorkerProcess:
    return WorkerProcess({**env, **extra}, tmp_path / "worker.log", free_port()).start()


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path):
    proc = _start(worker_env, tmp_path, EDDYLINE_STALL_AFTER_S="3")
    yield proc
    proc.stop()


def _raw_producer(kafka: KafkaSettings) -> Producer:
    return Producer(kafka.librdkafka({"message.max.bytes": 16_000_000}))


def _rows(n: int, seed: int, **fields: object) -> list[dict[str, object]]:
    events = TrafficSimulator(users=50, seed=seed).interactions(n)
    return [{**e.__dict__, "event_id": str(e.event_id), **fields} for e in events]


def _envelope(rows: list[dict[str, object]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    table = pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent))
    return encode_arrow(table, "interaction:1")


def _metric(worker: WorkerProcess, line_start: str) -> float | None:
    for line in (worker.metrics() or "").splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_poison_message_is_dead_lettered_once_and_the_events_behind_it_land(
    kafka: KafkaSettings, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    """2,500 rows whose ids fail validation, under the envelope limit: their dead letter
    once outgrew Kafka's message limit and crashed the agent on that message forever."""
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    raw = Topics(kafka.namespace).raw("interaction")
    poison = _rows(2_500, seed=1)
    for i, row in enumerate(poison):
        row["event_id"] = f"{CANARY}-{i}-" + "é" * 1_500  # 3 kB, 9 kB as JSON text
    good = _rows(500, seed=2)
    producer = _raw_producer(kafka)
    offsets: list[int] = []
    for value, headers in (_envelope(poison), _envelope(good)):
        producer.produce(
            raw,
            value=value,
            headers=headers,
            partition=0,
            on_delivery=lambda err, msg: offsets.append(msg.offset()),
        )
    producer.flush(30)
    sent = time.monotonic()
    wait_for(lambda: len(delta_ids(lake, "interaction")) == 500, 30, "the events behind it")
    landed_s = time.monotonic() - sent
    assert set(delta_ids(lake, "interaction")) == {r["event_id"] for r in good}
    assert landed_s < 15, f"the good events took {landed_s:.1f}s"

    [letter] = deadletters(kafka)  # exactly one: no crash loop sending it again
    assert (letter["reason"], letter["field"], letter["count"], letter["rows"]) == (
        "row.invalid",
        "event_id",
        2_500,
        "0-2499",
    )
    source = {k: letter["source"][k] for k in ("topic", "partition", "offset")}
    assert source == {"topic": raw, "partition": 0, "offset": min(offsets)}
    assert CANARY not in json.dumps(letter)
    time.sleep(6)  # a lag report and a progress check
    assert (
        _metric(worker, 'eddyline_worker_deadlettered_events_total{reason="row.invalid"}') == 2_500
    )
    assert json.loads(worker.status() or "{}")["stalled"] == []
    assert "Traceback" not in worker.log_path.read_text()


def test_no_text_the_sender_chose_reaches_dead_letters_tables_logs_or_metrics(
    kafka: KafkaSettings, worker: WorkerProcess, worker_env: dict[str, str]
) -> None:
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    raw = Topics(kafka.namespace).raw("interaction")
    ok = json.loads(
        InteractionEvent(
            user_id="u", app_id="a", item_id="i", item_category="c", action="view", dwell_time_s=1
        ).model_dump_json()
    )
    table = pa.Table.from_pylist(_rows(3, seed=3), schema=arrow_schema(InteractionEvent))

    def column(name: str, values: pa.Array) -> pa.Table:
        return table.set_column(table.schema.get_field_index(name), name, values)

    hostile = [
        encode_json({**ok, f"{CANARY}-key@example.com": 1}, "interaction:1"),
        encode_json({**ok, "event_id": f"{CANARY}-id"}, "interaction:1"),
        encode_json({**ok, "position": f"{CANARY}-position"}, "interaction:1"),
        encode_json({**ok, "user_id": {f"{CANARY}-nested": [f"{CANARY}-deep"]}}, "interaction:1"),
        encode_json({**ok, "occurred_at": f"{CANARY}-time"}, "interaction:1"),
        encode_json(ok, f"{CANARY}-schema:1"),
        (json.dumps(ok).encode(), [("content-type", f"{CANARY}-type".encode())]),
        _encode(column("dwell_time_s", pa.array([f"{CANARY}-cast"] * 3))),
        _encode(
            column("event_id", pa.array([f"{CANARY}-user-{i}" for i in range(3)])).set_column(
                1, "user_id", table["event_id"]
            )
        ),
        _encode(table.append_column(f"{CANARY}-column", pa.array([1, 2, 3]))),
        _encode(column("item_id", pa.array([{f"{CANARY}-field": 1}] * 3))),
    ]
    producer = _raw_producer(kafka)
    for value, headers in hostile:
        producer.produce(raw, value=value, headers=headers, partition=1)
    producer.flush(30)

    def stored() -> int:
        if not (lake / "deadletters").exists():
            return 0
        return Lake(lake).read("deadletters").num_rows

    wait_for(lambda: stored() >= len(hostile), 60, "every hostile message dead-lettered")
    time.sleep(6)  # a lag report
    haystack = [json.dumps(Lake(lake).read("deadletters").to_pylist(), default=str)]
    haystack += [v.decode() for v, _ in read_all(kafka, Topics(kafka.namespace).deadletter)]
    haystack += [worker.log_path.read_text(), worker.metrics() or "", worker.status() or ""]
    for root, _, files in os.walk(lake / "deadletters"):
        haystack += [Path(root, f).read_bytes().decode("latin-1") for f in files]
    found = [i for i, text in enumerate(haystack) if CANARY in text]
    assert found == [], f"the canary is in output {found}"


def _encode(table: pa.Table) -> tuple[bytes, list[tuple[str, bytes]]]:
    return encode_arrow(table, "interaction:1")


def test_backdating_cannot_reset_the_budget_and_only_the_noise_secret_removes_noise(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """The audit sent one user's events dated days back, 3 s apart: each message got a
    fresh allowance (400 of 400 written against an allowance of 100 ε). And the noise was
    seeded from the pseudonym key, which `budget show` needs: with it, every noised value
    was recovered exactly."""
    env = {**worker_env, "EDDYLINE_BUDGET_EPSILON": "10"}  # the interaction allowance: 10
    worker = _start(env, tmp_path)
    key = env["EDDYLINE_PSEUDONYM_KEY"].encode()
    backdater = "backdater@example.com"
    started = time.time()
    try:
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as sdk:
            sim = TrafficSimulator(users=1, seed=4)
            for message in range(15):  # 15 messages, each dated one more day back
                at = datetime.now(UTC) - timedelta(days=message + 1)
                for e in sim.interactions(10):
                    sdk.emit(e.model_copy(update={"user_id": backdater, "occurred_at": at}))
                assert sdk.flush(30) == 0
                time.sleep(1.3)  # a ledger save (every second) between messages
            truth = list(TrafficSimulator(users=200, seed=5).interactions(200))
            for e in truth:
                sdk.emit(e)
            assert sdk.flush(30) == 0
        wait_for(
            lambda: _metric(worker, 'eddyline_worker_events_in_total{stream="interaction"}') == 350,
            60,
            "every event privatised",
        )
        time.sleep(2)  # the last ledger save
    finally:
        worker.stop()
    ended = time.time()
    windows = int(ended // 86_400) - int(started // 86_400) + 1
    pid = HmacPseudonymizer(key).apply(pa.array([backdater]))[0].as_py()
    private = _private_messages(kafka)
    released = sum(t["user_pid"].to_pylist().count(pid) for _, t in private)
    assert 10 <= released <= 10 * windows  # each window charged: one allowance
    shown = subprocess.run(
        [sys.executable, "-m", "eddyline", "budget", "show", backdater, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sum(r["events"] for r in rows) == released and all(r["events"] <= 10 for r in rows)

    # The noise: recomputed exactly with the noise secret, never with the pseudonym key.
    dwell = {str(e.event_id): e.dwell_time_s for e in truth}
    mech = LaplaceMechanism(epsilon=1.0, lower=0.0, upper=300.0)
    secrets = _noise_secrets(kafka)
    budget_log = b"".join(
        k + v for k, v in read_latest(kafka, changelog_topic(WorkerSettings(), kafka)).items()
    )
    assert secrets and not any(s.hex().encode() in budget_log for s in secrets.values())
    old_seed = hmac.digest(key, b"eddyline-noise" + env["EDDYLINE_SEED"].encode(), "sha256")
    with_secret, with_key, rows_checked = 0, 0, 0
    for src, table in private:
        ids = table["event_id"].to_pylist()
        if not all(i in dwell for i in ids):
            continue
        released_values = np.array(table["dwell_time_s"].to_pylist())
        values = np.array([dwell[i] for i in ids])
        mine = [
            s for name, s in secrets.items() if name.startswith(f"interaction/{src.partition}/")
        ]
        with_secret += max(
            int((mech.apply(values, _rng(s, src, table)) == released_values).sum()) for s in mine
        )
        with_key += int((mech.apply(values, _rng(old_seed, src, table)) == released_values).sum())
        rows_checked += len(ids)
    assert rows_checked == 200
    assert with_secret == 200  # the attack works, given the secret
    assert with_key <= 2  # without it: a noise draw of exactly 0 is rarer than 1 in 10^4


def _rng(secret: bytes, src: SourceRef, table: pa.Table) -> Draws:
    """The draws the worker made for ``dwell_time_s`` of this private batch under
    ``secret`` (every row of the batch crossed: an envelope's rows are 0..n-1 of its raw
    message; a JSON run's are row 0 of each raw offset)."""
    n = table.num_rows
    if OFFSET_COLUMN in table.column_names:
        offsets, indices = table[OFFSET_COLUMN].to_numpy(), np.zeros(n, np.int64)
    else:
        offsets, indices = np.full(n, src.offset, np.int64), np.arange(n)
    field = list(InteractionEvent.model_fields).index("dwell_time_s")
    return KeyedDraws.for_source(secret, src.key, offsets, indices).stream(field)


def _private_messages(kafka: KafkaSettings) -> list[tuple[SourceRef, pa.Table]]:
    out = []
    for value, headers in read_all(kafka, Topics(kafka.namespace).private("interaction")):
        h = header_map(headers)
        table = decode(value, h).table
        assert table is not None
        out.append((SourceRef.parse(h[H_SOURCE]), table))
    return out


def _noise_secrets(kafka: KafkaSettings) -> dict[str, bytes]:
    topic = f"{kafka.namespace}.eddyline-noise-changelog"
    return {
        json.loads(k): bytes.fromhex(json.loads(v)) for k, v in read_latest(kafka, topic).items()
    }


def test_a_partition_that_cannot_advance_is_named_and_recovers(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """A sink that refuses every commit: the lake agent retries (it never drops), and the
    worker names the partitions that stand still, in /status and in a metric."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the lake's folder should be")
    env = {**worker_env, "EDDYLINE_LAKE_PATH": str(blocker / "lake")}
    worker = _start(env, tmp_path, EDDYLINE_STALL_AFTER_S="3")
    try:
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as sdk:
            events = list(TrafficSimulator(users=30, seed=6).interactions(300))
            for e in events:
                sdk.emit(e)
            assert sdk.flush(30) == 0

        def stalled() -> list[dict]:
            return json.loads(worker.status() or "{}").get("stalled", [])

        wait_for(lambda: any(s["agent"] == "lake" for s in stalled()), 40, "a stalled lake")
        [entry, *_] = [s for s in stalled() if s["agent"] == "lake"]
        assert entry["topic"].endswith("events.interaction.private") and entry["stalled_s"] >= 3
        gauge = (
            "eddyline_worker_partition_stalled_seconds{"
            f'agent="lake",partition="{entry["partition"]}",topic="{entry["topic"]}"}}'
        )
        assert (_metric(worker, gauge) or 0) >= 3
        blocker.unlink()  # the store comes back
        wait_for(lambda: len(delta_ids(blocker / "lake", "interaction")) == 300, 90, "the events")
        wait_for(lambda: not stalled(), 30, "no stalled partition")
        assert _metric(worker, gauge) == 0
    finally:
        worker.stop()
