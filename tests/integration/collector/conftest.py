"""Fixtures of the collector's tests: a collector with the default mapping and two write
keys, and a worker beside it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from eddyline.streams.collector.mapping import DEFAULT_MAPPING
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.collector.support import KEY, CollectorProcess


@pytest.fixture
def page_port() -> int:
    return free_port()


@pytest.fixture
def collector(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path, page_port: int
) -> Iterator[CollectorProcess]:
    mapping = yaml.safe_load(DEFAULT_MAPPING.read_text())
    mapping["write_keys"] = [
        {
            "name": "web",
            "key": "env:TEST_WRITE_KEY",
            "app_id": "shop",
            "origins": [f"http://127.0.0.1:{page_port}"],
            "rate_per_s": 20_000,
        },
        {"name": "slow", "key": "slow-key", "app_id": "shop", "rate_per_s": 10},
    ]
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    env = {
        **worker_env,
        "TEST_WRITE_KEY": KEY,
        "EDDYLINE_COLLECTOR_MAPPING": str(tmp_path / "mapping.yaml"),
        "EDDYLINE_COLLECTOR_READ_TIMEOUT_S": "2",
        "EDDYLINE_SPOOL_DIR": str(tmp_path / "collector-spool"),
    }
    proc = CollectorProcess(env, tmp_path / "collector.log").start()
    yield proc
    proc.stop()


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(worker_env, tmp_path / "worker.log", free_port()).start(timeout=90)
    yield proc
    proc.stop()
