"""The budget ledger is changelog-backed Faust table state: after kill -9 and a restart it
equals the ledger of a run without the crash, and no user gets more than the budget."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from eddyline.schemas.events import InteractionEvent
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import STREAMS, ensure_topics
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.budget_state import read_ledger
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

ALLOWANCE = 10  # ε = 10 per user per day with one ε = 1 field: the accountant allows 10


def _traffic(now: datetime) -> list[InteractionEvent]:
    """12,000 events over 1,500 users: most users stay under the allowance (so a charge
    counted twice would show), the busiest go past it (so suppression shows)."""
    events = TrafficSimulator(users=1_500, seed=5).interactions(12_000)
    return [e.model_copy(update={"occurred_at": now}) for e in events]


def _rows(lake: Path) -> int:
    uri = str(lake / "interaction")
    return DeltaTable(uri).count() if DeltaTable.is_deltatable(uri) else 0


def _ledger(kafka: KafkaSettings) -> dict[tuple[str, int], int]:
    """(user pseudonym, window) -> events charged, from the budget table's changelog."""
    out: dict[tuple[str, int], int] = {}
    for entry in read_ledger(WorkerSettings(), kafka):
        for window, count in entry.windows.items():
            out[(entry.user_pid, window)] = count
    return out


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _assert_rows_reconcile(text: str) -> None:
    """Every row a worker decoded is accounted for once: dead-lettered as invalid, withheld
    (consent, budget), skipped as a replay its user's saved budget covers, dropped as a
    repeat of an event released before, or private."""
    w = "eddyline_worker_"
    decoded = _metric(text, f"{w}events_in_total", stream="interaction")
    assert decoded > 0
    assert decoded == (
        _metric(text, f"{w}deadlettered_events_total", reason="row.invalid")
        + _metric(text, f"{w}suppressed_total", stream="interaction", reason="consent")
        + _metric(text, f"{w}suppressed_total", stream="interaction", reason="budget")
        + _metric(text, f"{w}events_replayed_total", stream="interaction")
        + _metric(text, f"{w}events_repeated_total", stream="interaction")
        + _metric(text, f"{w}events_private_total", stream="interaction")
    )


def _run(
    kafka: KafkaSettings,
    env: dict[str, str],
    tmp: Path,
    events: list[InteractionEvent],
    crash: bool,
) -> tuple[dict[tuple[str, int], int], int]:
    """Stream ``events`` through a worker (killed -9 mid-stream and restarted if ``crash``);
    the saved ledger and the rows in Delta once everything is through."""
    ensure_topics(kafka, STREAMS)
    env = {**env, "EDDYLINE_NAMESPACE": kafka.namespace, "EDDYLINE_LAKE_PATH": str(tmp / "lake")}
    worker = WorkerProcess(env, tmp / "w0.log", free_port()).start()
    per_user = Counter(e.user_id for e in events)
    expected = sum(min(n, ALLOWANCE) for n in per_user.values())
    rng = random.Random(3)
    try:
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
            for chunk in range(12):
                for event in events[chunk * 1_000 : (chunk + 1) * 1_000]:
                    producer.emit(event)
                producer.flush()
                time.sleep(0.3)
                if crash and chunk == 6:
                    # mid-stream, after saves in every partition: some charges are saved,
                    # some not
                    wait_for(
                        lambda: (
                            len({e.partition for e in read_ledger(WorkerSettings(), kafka)})
                            == kafka.partitions
                        ),
                        60,
                        "budget saves in every partition",
                    )
                    time.sleep(rng.uniform(0.0, 1.0))
                    worker.kill()
                    worker = WorkerProcess(env, tmp / "w1.log", free_port()).start()
        wait_for(lambda: _rows(tmp / "lake") == expected, 120, f"{expected} rows in Delta")
        wait_for(
            lambda: sum(_ledger(kafka).values()) == expected, 60, "the ledger holding them all"
        )
        time.sleep(2)  # a further save must not change it
        _assert_rows_reconcile(worker.metrics() or "")
        return _ledger(kafka), _rows(tmp / "lake")
    finally:
        worker.stop()


def test_the_ledger_after_kill_9_equals_the_ledger_without_a_crash(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**worker_env, "EDDYLINE_BUDGET_EPSILON": "10", "EDDYLINE_SESSION_TIMEOUT_S": "6"}
    events = _traffic(datetime.now(UTC))
    calm = kafka.model_copy(update={"namespace": kafka.namespace + "calm"})
    crashed = kafka.model_copy(update={"namespace": kafka.namespace + "crash"})
    ledger_calm, rows_calm = _run(calm, env, tmp_path / "calm", events, crash=False)
    ledger_crash, rows_crash = _run(crashed, env, tmp_path / "crash", events, crash=True)
    assert ledger_crash == ledger_calm
    assert rows_crash == rows_calm
    assert max(ledger_calm.values()) == ALLOWANCE  # the busiest users hit the budget...
    assert min(ledger_calm.values()) < ALLOWANCE  # ...most did not: a double charge would show

    # `eddyline budget show` finds a user by their raw id (pseudonymised with the same key)
    busiest, sent = Counter(e.user_id for e in events).most_common(1)[0]
    shown = subprocess.run(
        [sys.executable, "-m", "eddyline", "budget", "show", busiest, "--json"],
        env={**os.environ, **env, "EDDYLINE_NAMESPACE": crashed.namespace},
        capture_output=True,
        text=True,
        check=True,
    )
    [row] = [json.loads(line) for line in shown.stdout.splitlines()]
    assert row["stream"] == "interaction" and row["events"] == min(sent, ALLOWANCE)
    assert row["allowance"] == ALLOWANCE and 0 < row["epsilon_spent"] <= 10.0
    assert busiest not in shown.stdout + shown.stderr  # the raw id is never printed
