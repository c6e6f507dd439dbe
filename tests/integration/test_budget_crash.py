"""The budget survives kill -9: a restarted worker does not give a user a second allowance."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable
from prometheus_client import CollectorRegistry

from eddyline.simulate import TrafficSimulator
from online_learning.checkpoint import ModelStore
from streams.broker import free_port
from streams.producer import EventProducer
from streams.settings import KafkaSettings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def _flood(kafka: KafkaSettings, seed: int, n: int) -> None:
    now = datetime.now(UTC)
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        for event in TrafficSimulator(users=1, seed=seed).interactions(n):
            producer.emit(event.model_copy(update={"user_id": "flooder", "occurred_at": now}))


def _metric(worker: WorkerProcess | str, name: str) -> float:
    """Sum of the interaction-stream samples of one worker metric (or of a metrics text)."""
    text = worker if isinstance(worker, str) else (worker.metrics() or "")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"eddyline_worker_{name}") and "interaction" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _charged(ledger: Path) -> int:
    """Events charged in the last budget checkpoint (0 if there is none yet)."""
    saved = ModelStore(ledger.parent).load("ledgers") if ledger.exists() else None
    return sum(saved.model["interaction"].counts.values()) if saved and saved.model else 0


def _rows(lake: Path) -> int:
    uri = str(lake / "interaction")
    return DeltaTable(uri).count() if DeltaTable.is_deltatable(uri) else 0


def test_a_crash_does_not_reset_a_users_budget(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # ε = 10 per user per day with one ε = 1 field: the accountant allows 10 events.
    env = {**worker_env, "EDDYLINE_BUDGET_EPSILON": "10", "EDDYLINE_SESSION_TIMEOUT_S": "6"}
    lake = Path(env["EDDYLINE_LAKE_PATH"])
    ledger = Path(env["EDDYLINE_STATE_DIR"]) / "budget" / "ledgers.ckpt"
    first = WorkerProcess(env, tmp_path / "w0.log", free_port()).start()
    _flood(kafka, 1, 30)
    wait_for(lambda: _rows(lake) == 10, 60, "the allowance in Delta")
    _flood(kafka, 2, 1)  # the next message triggers the budget checkpoint
    wait_for(lambda: _charged(ledger) == 10, 30, "a budget checkpoint holding the 10 charges")
    first.kill()
    second = WorkerProcess(env, tmp_path / "w1.log", free_port()).start()
    try:
        _flood(kafka, 3, 30)
        # Every event the restarted worker sees (the new flood, and any replay) is over budget.
        wait_for(lambda: _metric(second, "events_in_total") >= 30, 60, "the new flood")
        snapshot = second.metrics() or ""  # one snapshot: the counters agree with each other
        seen = _metric(snapshot, "events_in_total")
        assert _metric(snapshot, 'suppressed_total{reason="budget"') == seen
        assert _metric(snapshot, "events_private_total") == 0
        assert _rows(lake) == 10  # never more than the budget through, across the crash
    finally:
        second.stop()
