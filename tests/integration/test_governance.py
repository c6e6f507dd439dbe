"""Forgetting users while traffic flows, and finishing a forget a crash cut short: no row of
theirs left in any table or file, none written or learned later, everyone else intact, one
log row per request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from eddyline.consumers.lake import Lake
from eddyline.privacy.pseudonymize import HmacPseudonymizer
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.budget_state import read_ledger
from eddyline.streams.worker.governance import Governance
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import delta_ids, wait_for

pytestmark = pytest.mark.integration


def _settings(env: dict[str, str]) -> tuple[WorkerSettings, KafkaSettings]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return WorkerSettings(), KafkaSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _pids(env: dict[str, str], users: list[str]) -> set[str]:
    key = env["EDDYLINE_PSEUDONYM_KEY"].encode()
    return set(HmacPseudonymizer(key).apply(pa.array(users)).to_pylist())


def _metric(worker: WorkerProcess, prefix: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in (worker.metrics() or "").splitlines()
        if line.startswith(prefix)
    )


def _files_holding(lake: Path, pids: set[str]) -> list[str]:
    found = []
    for path in lake.rglob("*.parquet"):
        if "_delta_log" in path.parts:
            continue
        table = pq.read_table(path)
        if "user_pid" in table.column_names and pids & set(table["user_pid"].to_pylist()):
            found.append(str(path))
    return found


def test_forgetting_ten_users_while_traffic_flows(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**worker_env, "EDDYLINE_BUDGET_EPSILON": "1e6"}
    lake = Path(env["EDDYLINE_LAKE_PATH"])
    sim = TrafficSimulator(users=2_000, seed=12)
    gone = [sim.user_id(i) for i in range(10)]
    pids = _pids(env, gone)
    events = list(sim.interactions(45_000)) + list(sim.feedback(5_000))
    worker = WorkerProcess(env, tmp_path / "worker.log", free_port()).start()
    learned = 'eddyline_worker_events_learned_total{model="click"}'
    forgotten = 'eddyline_worker_suppressed_total{reason="forgotten"'
    try:
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
            # Phase 1: 50,000 events of 2,000 users; 10 of them forgotten in the middle.
            def traffic() -> None:
                for i, e in enumerate(events):
                    producer.emit(e)
                    if i % 5_000 == 4_999:
                        time.sleep(0.5)

            sender = threading.Thread(target=traffic)
            sender.start()
            time.sleep(2)
            governance = Governance(*_settings(env), settle_s=3)
            rows = [governance.forget(u, requested_by="test", vacuum_now=True) for u in gone]
            sender.join()
            assert producer.flush(60) == 0
            kept = {str(e.event_id) for e in events if e.user_id not in gone}
            wait_for(lambda: kept <= _written(lake), 120, "every other user's events")
            wait_for(lambda: _stable(worker, learned), 60, "learning to settle")
            # Phase 2: events of theirs after the forget, and of others as a control.
            before = _metric(worker, learned), _metric(worker, forgotten)
            late_gone = [
                e.model_copy(update={"user_id": gone[i % 10]})
                for i, e in enumerate(TrafficSimulator(users=50, seed=13).interactions(500))
            ]
            late_kept = list(TrafficSimulator(users=50, seed=14).interactions(500))
            for e in late_gone + late_kept:
                producer.emit(e)
            assert producer.flush(60) == 0
        kept |= {str(e.event_id) for e in late_kept}
        wait_for(lambda: kept <= _written(lake), 60, "the control events")
        wait_for(lambda: _metric(worker, learned) == before[0] + 500, 60, "the control learned")
        time.sleep(2)  # anything of theirs would have been learned by now
        assert _metric(worker, learned) == before[0] + 500  # none of theirs learned
        assert _metric(worker, forgotten) == before[1] + 500  # dropped at the privacy stage
    finally:
        worker.stop()
    written = delta_ids(lake, "interaction") + delta_ids(lake, "feedback")
    assert len(written) == len(kept) and set(written) == kept  # everyone else intact, once
    for table in ("interaction", "feedback"):
        stored = Lake(lake).read(table, columns=["user_pid"])["user_pid"].to_pylist()
        assert not pids & set(stored)
    assert _files_holding(lake, pids) == []  # vacuumed: no file holds them
    log = Lake(lake).read("governance_log").to_pylist()
    assert sorted(r["request_id"] for r in log) == sorted(r["request_id"] for r in rows)
    assert all(r["action"] == "forget" for r in log)
    assert not any(u in json.dumps(log, default=str) for u in gone)  # never the raw id
    assert not pids & {e.user_pid for e in read_ledger(*_settings(env))}  # ledgers forgot


def _written(lake: Path) -> set[str]:
    return set(delta_ids(lake, "interaction") + delta_ids(lake, "feedback"))


def _stable(worker: WorkerProcess, metric: str) -> bool:
    first = _metric(worker, metric)
    time.sleep(1.5)
    return first > 0 and _metric(worker, metric) == first


def test_a_forget_cut_short_by_kill_9_finishes_when_run_again(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    sim = TrafficSimulator(users=100, seed=15)
    victim = sim.user_id(0)
    events = list(sim.interactions(3_000))
    worker = WorkerProcess(worker_env, tmp_path / "worker.log", free_port()).start()
    try:
        with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
            for e in events:
                producer.emit(e)
            assert producer.flush(30) == 0
        wait_for(lambda: len(delta_ids(lake, "interaction")) == 3_000, 90, "the events")
        env = {**os.environ, **worker_env}
        cmd = [sys.executable, "-m", "eddyline", "forget", victim, "--settle-s", "20"]
        cut = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(8)  # published, settling
        cut.send_signal(signal.SIGKILL)
        cut.wait()
        again = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        row = json.loads(again.stdout)
        third = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True)
        assert json.loads(third.stdout)["request_id"] == row["request_id"]  # done once
    finally:
        worker.stop()
    mine = [e for e in events if e.user_id == victim]
    assert row["rows_removed"] == len(mine) > 0
    assert set(delta_ids(lake, "interaction")) == {
        str(e.event_id) for e in events if e.user_id != victim
    }
    assert len(Lake(lake).read("governance_log")) == 1
