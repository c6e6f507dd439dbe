"""Test data shared by unit and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.events import DriftEvent


def drift_event(key: str = "click:1:error_rate:0:100", **fields: Any) -> DriftEvent:
    """A concept-drift event for the click model; ``fields`` override any field."""
    base: dict[str, Any] = {
        "idempotency_key": key,
        "model": "click",
        "model_version": 1,
        "stream": "interaction",
        "signal": "error_rate",
        "detector": "adwin",
        "severity": 0.2,
        "stat_before": 0.2,
        "stat_after": 0.4,
        "events_seen": 1,
        "offsets_after": {0: (1, 2)},
        "detected_at": datetime.now(UTC),
    }
    return DriftEvent(**{**base, **fields})
