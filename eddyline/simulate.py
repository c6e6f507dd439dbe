"""Realistic traffic: interactions and feedback from many users, with a concept drift.

Before ``drift_at``, users click news and music; after it, sports and tech: the click model's
error jumps, which the worker's drift detector must catch. Feedback follows the same world:
users are satisfied with news and music items before the change, sports and tech after
(an item's category is its number modulo 4, as for interactions).

Examples:
    >>> sim = TrafficSimulator(users=10, seed=1, drift_at=5)
    >>> [e.action for e in sim.interactions(3)]
    ['skip', 'click', 'click']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast
from uuid import UUID

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eddyline.schemas.events import Action, FeedbackEvent, InteractionEvent

CATEGORIES = ("news", "sports", "music", "tech")
_P_CLICK_BEFORE = np.array([0.75, 0.15, 0.70, 0.20])
_P_CLICK_AFTER = np.array([0.15, 0.75, 0.20, 0.70])
_P_SATISFIED_BEFORE = np.array([0.85, 0.25, 0.80, 0.30])
_P_SATISFIED_AFTER = np.array([0.25, 0.85, 0.30, 0.80])


@dataclass
class TrafficSimulator:
    """Seeded event generator. ``drift_at`` is the index of the first drifted interaction."""

    users: int = 1_000
    seed: int = 0
    drift_at: int | None = None
    app_id: str = "demo-shop"
    items: int = 200

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._emitted = 0
        self._t0 = datetime.now(UTC)

    def user_id(self, i: int) -> str:
        return f"user-{self.seed}-{i:06d}@example.com"

    def _interaction_draws(self, n: int) -> dict[str, np.ndarray]:
        """The next ``n`` interactions' values, drawn as columns (one seeded stream)."""
        rng, start = self._rng, self._emitted
        idx = np.arange(start, start + n)
        users = rng.integers(0, self.users, n)
        items = rng.integers(0, self.items, n)
        cats = items % len(CATEGORIES)
        drifted = idx >= self.drift_at if self.drift_at is not None else np.zeros(n, bool)
        p = np.where(drifted, _P_CLICK_AFTER[cats], _P_CLICK_BEFORE[cats])
        clicked = rng.random(n) < p
        bought = clicked & (rng.random(n) < 0.2)
        other = np.where(rng.random(n) < 0.5, "skip", "view")
        actions = np.where(bought, "purchase", np.where(clicked, "click", other))
        dwell = rng.exponential(30.0, n).round(2)
        position = rng.integers(0, 20, n)
        uuids = np.frombuffer(rng.bytes(16 * n), dtype="V16")
        self._emitted += n
        return {
            "idx": idx,
            "users": users,
            "items": items,
            "cats": cats,
            "actions": actions,
            "dwell": dwell,
            "position": position,
            "uuids": uuids,
        }

    def interactions(self, n: int) -> Iterator[InteractionEvent]:
        """The next ``n`` interactions (vectorised draws, then one model per event)."""
        d = self._interaction_draws(n)
        for k in range(n):
            yield InteractionEvent(
                event_id=UUID(bytes=d["uuids"][k].tobytes(), version=4),
                user_id=self.user_id(int(d["users"][k])),
                occurred_at=self._t0 + timedelta(milliseconds=int(d["idx"][k])),
                app_id=self.app_id,
                item_id=f"sku-{int(d['items'][k])}",
                item_category=CATEGORIES[int(d["cats"][k])],
                action=cast(Action, str(d["actions"][k])),
                dwell_time_s=float(d["dwell"][k]),
                position=int(d["position"][k]),
            )

    def interaction_columns(self, n: int, occurred_at: datetime | None = None) -> pa.Table:
        """The next ``n`` interactions as columns, for ``EventProducer.emit_many`` (what an
        app holding a frame sends; a load generator that must not be the bottleneck).

        The same draws as ``interactions``, except event ids (left to ``emit_many``) and,
        when ``occurred_at`` is given, one timestamp for all rows.

        Examples:
            >>> TrafficSimulator(users=10, seed=1).interaction_columns(3)["action"].to_pylist()
            ['skip', 'click', 'click']
        """
        d = self._interaction_draws(n)
        start = occurred_at or self._t0  # each row 1 ms after the last, as in interactions
        step = 0 if occurred_at else 1_000
        micros = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        at = pa.array(micros + d["idx"] * step, pa.timestamp("us", tz="UTC"))
        users = pa.array(d["users"]).cast(pa.string())
        items = pa.array(d["items"]).cast(pa.string())
        return pa.table(
            {
                "user_id": pc.binary_join_element_wise(
                    f"user-{self.seed}-", pc.utf8_lpad(users, 6, "0"), "@example.com", ""
                ),
                "occurred_at": at,
                "app_id": pa.array([self.app_id] * n),
                "item_id": pc.binary_join_element_wise("sku-", items, ""),
                "item_category": pa.array(np.array(CATEGORIES)[d["cats"]]),
                "action": pa.array(d["actions"]),
                "dwell_time_s": pa.array(d["dwell"]),
                "position": pa.array(d["position"]),
            }
        )

    def feedback(self, n: int) -> Iterator[FeedbackEvent]:
        """``n`` feedback events, drifted once ``drift_at`` interactions have been emitted: a
        rating, a thumbs-up label, or both; some carry a free-text comment (redacted by the
        worker)."""
        rng = self._rng
        users = rng.integers(0, self.users, n)
        items = rng.integers(0, self.items, n)
        cats = items % len(CATEGORIES)
        drifted = self.drift_at is not None and self._emitted >= self.drift_at
        p = (_P_SATISFIED_AFTER if drifted else _P_SATISFIED_BEFORE)[cats]
        satisfied = rng.random(n) < p
        rating = np.where(satisfied, rng.integers(4, 6, n), rng.integers(1, 4, n))
        form = rng.random(n)  # < 0.4: rating only; < 0.7: label only; else both
        comment = rng.random(n) < 0.1
        for k in range(n):
            yield FeedbackEvent(
                user_id=self.user_id(int(users[k])),
                app_id=self.app_id,
                item_id=f"sku-{int(items[k])}",
                rating=int(rating[k]) if form[k] < 0.4 or form[k] >= 0.7 else None,
                label=bool(satisfied[k]) if form[k] >= 0.4 else None,
                comment="loved it, mail me at fan@example.com" if comment[k] else None,
            )
