"""The worker's metrics registry."""

from __future__ import annotations

import os

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
