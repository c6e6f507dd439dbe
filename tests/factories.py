"""Test data shared by unit and integration tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from eddyline.schemas.events import DriftEvent


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


# Stand-ins for the parts of Faust an OffsetGuard (streams/continuity.py) touches.


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Message:
    tp: TP
    offset: int
    generation_id: int = 1


@dataclass
class SeekingConsumer:
    """Records seeks; ``positions``: the next offset it reads, per assigned partition."""

    seeks: list[tuple[TP, int]] = field(default_factory=list)
    positions: dict[TP, int] = field(default_factory=dict)

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        for tp, offset in partitions.items():
            self.seeks.append((tp, offset))
            self.positions[tp] = offset

    def assignment(self) -> set[TP]:
        return set(self.positions)

    async def position(self, tp: TP) -> int:
        return self.positions[tp]


class FlowControl:
    def is_active(self) -> bool:
        return True


@dataclass
class FaustApp:
    consumer: SeekingConsumer = field(default_factory=SeekingConsumer)
    flow_control: FlowControl = field(default_factory=FlowControl)
    rebalancing: bool = False
    in_recovery: bool = False
    consumer_generation_id: int = 1
