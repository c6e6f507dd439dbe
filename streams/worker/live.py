"""What the worker's live page (``/``, ``streams/worker/page/``) shows, as JSON (``/live``).

Every ``every_s`` a timer samples the worker's counters into a ring buffer (the last
``keep`` samples: 10 minutes by default), so the page's charts hold a history as soon as it
opens: rows per second through each stage, consumer lag, dead letters. The stages' own
announcements add the rest: each model checkpoint's rolling metrics and calibration, drift
events and registry moves (``saw``). Budget use and cost are computed when sampled.

Nothing here is personal: counts, rates, model statistics, reason codes, table names.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from eddyline.schemas.events import DriftEvent, ModelEvent

if TYPE_CHECKING:
    from eddyline.streams.worker.pipeline import Pipeline

#: the stages whose rows per second the page plots, and the counter each one counts with
STAGES = ("decoded", "private", "written", "learned", "deadlettered")
_DATA_STAGES = ("privatize", "lake", "learn")  # what one event costs (predictions aside)


def total(metric: Counter | Gauge, **match: str) -> float:
    """The sum of a metric's values over the label sets matching ``match``."""
    out = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket", "_count", "_sum")):
                continue
            if all(sample.labels.get(k) == v for k, v in match.items()):
                out += sample.value
    return out


def by_label(metric: Counter | Gauge, label: str) -> dict[str, float]:
    """A metric's values summed per value of one label."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created") and label in sample.labels:
                key = sample.labels[label]
                out[key] = out.get(key, 0.0) + sample.value
    return out


class Live:
    """The live page's state of one worker (see the module docstring)."""

    def __init__(self, p: Pipeline, every_s: float = 2.0, keep: int = 300) -> None:
        self.p, self.every_s = p, every_s
        self.samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=keep)
        self.checkpoints: dict[str, deque[dict[str, Any]]] = {}  # model -> its history
        self.calibration: dict[str, list[list[float]]] = {}
        self.drift: deque[dict[str, Any]] = deque(maxlen=200)
        self.registry: deque[dict[str, Any]] = deque(maxlen=200)
        self.budget: dict[str, Any] = {"spent": {}, "active_users": 0, "events": 0}
        self.tables: dict[str, int | None] = {}
        self._keep = keep
        self.worker = uuid.uuid4().hex[:12]  # names this process's cost samples

    def saw(self, drift: list[DriftEvent], changes: list[ModelEvent]) -> None:
        """Drift events and model events as the worker announces them."""
        for d in drift:
            self.drift.append(
                {
                    "t": d.detected_at.timestamp(),
                    "model": d.model,
                    "version": d.model_version,
                    "signal": d.signal,
                    "feature": d.feature,
                    "severity": d.severity,
                    "before": d.stat_before,
                    "after": d.stat_after,
                }
            )
        for c in changes:
            at = c.created_at.timestamp()
            if c.kind == "checkpoint":
                history = self.checkpoints.setdefault(c.model, deque(maxlen=self._keep))
                history.append({"t": at, "version": c.model_version, **c.metrics})
                if c.calibration:
                    self.calibration[c.model] = c.calibration
            else:
                self.registry.append(
                    {
                        "t": at,
                        "model": c.model,
                        "kind": c.kind,
                        "alias": c.alias,
                        "version": c.model_version,
                        "previous": c.previous_version,
                        "reason": c.reason,
                    }
                )

    def counters(self) -> dict[str, float]:
        """The cumulative counts each stage's rate is the difference of, and the lag now."""
        m, streams = self.p.metrics, self.p.streams
        return {
            "decoded": total(m.events_in),
            "private": total(m.events_private),
            "written": sum(total(m.rows_written, table=s) for s in streams),
            "learned": total(m.learned),
            "deadlettered": total(m.deadlettered_events),
            "lag": total(m.lag),
        }

    async def sample(self) -> None:
        """One sample (the timer's tick): counters, budget use and cost, table versions."""
        self.samples.append((time.time(), self.counters()))
        self.budget = self.p.privatize.privatizer.budgets.usage()
        if self.p.metrics.accounting:
            self._price_users()
        names = [*self.p.streams, *self.p.writers]
        versions = await asyncio.to_thread(lambda: {t: self.p.sink.version(t) for t in names})
        self.tables = {t: v for t, v in versions.items() if v is not None}

    def _price_users(self) -> None:
        """Cost per active user: what the events the current budget window charged cost in
        CPU at the configured price, divided by the users charged (0 until one is)."""
        m, users = self.p.metrics, self.budget["active_users"]
        per_event = sum(m.cost_of(stage) for stage in _DATA_STAGES) / 1e6
        m.active_users.set(users)
        m.cost_per_user.set(per_event * self.budget["events"] / users if users else 0.0)

    def cost_sample(self) -> bytes:
        """A ``signals.costs`` message: this worker's CPU per stage so far, its price, and
        the current budget window's active users (``schemas.tables.costs_table``)."""
        return json.dumps(
            {
                "worker": self.worker,
                "price_per_core_hour": self.p.metrics.price_per_core_hour,
                "active_users": self.budget["active_users"],
                "window_events": self.budget["events"],
                "at": datetime.now(UTC).isoformat(),
                "stages": self.p.metrics.spent(),
            }
        ).encode()

    def state(self) -> dict[str, Any]:
        """The page's data: every chart's series and every table's rows."""
        m = self.p.metrics
        times = [t for t, _ in self.samples]
        rates: dict[str, list[float]] = {s: [] for s in STAGES}
        for (t0, a), (t1, b) in zip(self.samples, list(self.samples)[1:], strict=False):
            for s in STAGES:
                rates[s].append(max(0.0, (b[s] - a[s]) / max(t1 - t0, 1e-9)))
        shadows = self.p.learn.shadows
        models = {}
        for name, model in self.p.learn.models.items():
            shadow = shadows.get(name)
            models[name] = {
                "version": model.version,
                "stream": model.stream,
                "seen": model.seen,
                "history": list(self.checkpoints.get(name, ())),
                "calibration": self.calibration.get(name) or model.calibration(),
                "aliases": shadow.aliases() if shadow is not None else {},
            }
        cpu = by_label(m.stage_cpu, "stage")
        rows = by_label(m.stage_rows, "stage")
        return {
            "now": time.time(),
            "every_s": self.every_s,
            "times": times[1:],
            "rates": rates,
            "lag": [c["lag"] for _, c in list(self.samples)[1:]],
            "deadletters": by_label(m.deadlettered_events, "reason"),
            "suppressed": by_label(m.suppressed, "reason"),
            "models": models,
            "drift": list(self.drift),
            "registry": list(self.registry),
            "budget": self.budget,
            "tables": [
                {"table": t, "version": v, "rows": total(m.rows_written, table=t)}
                for t, v in sorted(self.tables.items())
            ],
            "cost": {
                "price_per_core_hour": m.price_per_core_hour,
                "cpu_s_per_1000": {s: cpu[s] / rows[s] * 1000 for s in sorted(cpu) if rows.get(s)},
                "per_million_events": {s: m.cost_of(s) for s in sorted(cpu)},
                "per_active_user": total(m.cost_per_user),
                "active_users": self.budget["active_users"],
            },
        }
