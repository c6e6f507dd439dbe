"""Shadow evaluation: registry versions scored on live traffic, promoted and rolled back.

The worker runs a ``ShadowEvaluator`` per model whose spec asks for it: the champion and the
challenger (and, after a promotion, the version it replaced) score every live private batch,
never answering anyone; the challenger is promoted once its rolling loss (log-loss,
squared error or cross-entropy, by the spec's kind) beats the
champion's, and a promotion is rolled back if the new champion falls behind the one it
replaced. Each change is a ``ModelEvent`` on ``signals.models``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from eddyline.online_learning.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    ModelRegistry,
    registry_change,
)
from eddyline.online_learning.scoring import SpecScorer
from eddyline.schemas.events import ModelEvent

log = logging.getLogger("eddyline.shadow")


@dataclass
class ShadowEvaluator:
    """Scores the champion and the challenger (and, after a promotion, the version it
    replaced) on live traffic; promotes and rolls back by their rolling loss."""

    registry: ModelRegistry
    model: str = "click"
    window: int = 2_000  # events in each rolling metric
    min_events: int = 1_000  # live events before a decision
    margin: float = 0.0  # how much better (lower) a loss must be to win
    publish: Callable[[ModelEvent], None] = lambda event: None
    _scorers: dict[str, tuple[int, SpecScorer]] = field(default_factory=dict)
    _losses: dict[str, deque[float]] = field(default_factory=dict)
    _refreshed: float = -math.inf

    def refresh(self) -> None:
        """Load whatever the aliases point to now."""
        for alias in (CHAMPION, CHALLENGER, PREVIOUS):
            version = self.registry.alias(self.model, alias)
            loaded = self._scorers.get(alias)
            if version is None:
                self._scorers.pop(alias, None)
                self._losses.pop(alias, None)
            elif loaded is None or loaded[0] != version:
                artifact = self.registry.artifact_dir(self.registry.get(self.model, version))
                self._scorers[alias] = (version, SpecScorer.load(artifact))
                self._losses[alias] = deque(maxlen=self.window)
        self._refreshed = time.monotonic()

    def aliases(self) -> dict[str, dict[str, Any]]:
        """Each alias scored now: its registry version and rolling live loss."""
        return {
            alias: {"version": version, "live_loss": self.live_loss(alias)}
            for alias, (version, _) in sorted(self._scorers.items())
        }

    def live_loss(self, alias: str) -> float | None:
        losses = self._losses.get(alias)
        return float(np.mean(losses)) if losses and len(losses) >= self.min_events else None

    def observe(self, table: pa.Table) -> list[ModelEvent]:
        """Score a batch of live private events; the registry changes it led to."""
        if time.monotonic() - self._refreshed > 5.0:  # the registry is read every 5 s at most
            self.refresh()
        if table.num_rows == 0 or CHAMPION not in self._scorers:
            return []
        for alias, (_, scorer) in self._scorers.items():
            self._losses[alias].extend(scorer.losses(table).tolist())
        events = self._decide()
        for e in events:
            self.publish(e)
        return events

    def _decide(self) -> list[ModelEvent]:
        champ, chall, prev = (self.live_loss(a) for a in (CHAMPION, CHALLENGER, PREVIOUS))
        if chall is not None and champ is not None and chall < champ - self.margin:
            old, new = self._scorers[CHAMPION][0], self._scorers[CHALLENGER][0]
            why = f"live loss {chall:.4f} < champion v{old}'s {champ:.4f}"
            self.registry.set_alias(self.model, PREVIOUS, old, f"replaced by v{new}")
            self.registry.set_alias(self.model, CHAMPION, new, why)
            self.registry.set_alias(self.model, CHALLENGER, None, "promoted")
            self.refresh()
            log.warning("promoted %s v%d over v%d: %s", self.model, new, old, why)
            return [registry_change(self.model, new, "promoted", CHAMPION, old, why)]
        if prev is not None and champ is not None and champ > prev + self.margin:
            bad, good = self._scorers[CHAMPION][0], self._scorers[PREVIOUS][0]
            why = f"live loss {champ:.4f} > previous v{good}'s {prev:.4f}"
            self.registry.set_alias(self.model, CHAMPION, good, f"rollback: {why}")
            self.registry.set_alias(self.model, PREVIOUS, None, "rolled back to")
            self.refresh()
            log.warning("rolled %s back from v%d to v%d: %s", self.model, bad, good, why)
            return [registry_change(self.model, good, "rolled_back", CHAMPION, bad, why)]
        return []
