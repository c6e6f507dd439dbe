"""The worker's metrics registry."""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client import generate_latest

from eddyline.streams.worker.metrics import WorkerMetrics


def test_the_worker_serves_process_and_python_metrics_beside_its_own() -> None:
    registry = WorkerMetrics.create().registry
    text = generate_latest(registry).decode()
    assert (registry.get_sample_value("process_cpu_seconds_total") or 0) > 0
    assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 1e6
    assert "python_gc_collections_total" in text and "python_info" in text
    assert (
        0
        < (registry.get_sample_value("process_open_fds") or 0)
        <= len(os.listdir("/proc/self/fd")) + 1
    )
    # two workers' registries in one process (tests) do not collide
    assert WorkerMetrics.create().registry is not registry


def test_a_stage_costs_its_threads_cpu_per_million_rows_at_the_price_given() -> None:
    metrics = WorkerMetrics.create(price_per_core_hour=3.6)  # 0.001 a core-second
    started = time.thread_time()
    while time.thread_time() - started < 0.05:  # burn 50 ms of this thread's CPU
        sum(range(1000))
    metrics.charge("privatize", started, 1_000)
    spent = metrics.registry.get_sample_value(
        "eddyline_worker_stage_cpu_seconds_total", {"stage": "privatize"}
    )
    assert spent is not None and 0.05 <= spent < 0.5
    assert (
        metrics.registry.get_sample_value(
            "eddyline_worker_stage_rows_total", {"stage": "privatize"}
        )
        == 1_000
    )
    cost = metrics.registry.get_sample_value(
        "eddyline_worker_cost_per_million_events", {"stage": "privatize"}
    )
    assert cost == pytest.approx(spent / 1_000 * 1e6 * 0.001)
    started = time.thread_time()
    time.sleep(0.05)  # waiting is not CPU: this charge adds ~nothing
    metrics.charge("privatize", started, 1_000)
    assert metrics.registry.get_sample_value(
        "eddyline_worker_stage_cpu_seconds_total", {"stage": "privatize"}
    ) == pytest.approx(spent, abs=0.005)
