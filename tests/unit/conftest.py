"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import STREAMS
from eddyline.streams.worker.pipeline import Pipeline


@pytest.fixture
def p(tmp_path: Path) -> Pipeline:
    """A worker's pipeline (no broker: its stages are driven by hand), learning ``click``."""
    ws = WorkerSettings(
        lake_path=str(tmp_path / "lake"),
        state_dir=tmp_path / "state",
        pseudonym_key="k" * 32,
        checkpoint_every_s=0.01,
        learners="click",
    )
    return Pipeline(ws, KafkaSettings(), STREAMS)
