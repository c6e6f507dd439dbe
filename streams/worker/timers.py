"""The worker's timers: noticing skipped and stalled partitions of the Faust agents,
reporting their lag and the cluster's health (the intake does its own: ``intake._report``).

Faust crashes the whole app when a timer raises, so each one is wrapped (``survives``):
a failure is logged and the timer runs again at its next tick.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from eddyline.streams.worker.pipeline import Pipeline

log = logging.getLogger("eddyline.worker")


def survives(timer: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A timer whose failure is logged, not raised: asking the position of a partition a
    rebalance has just revoked must not take the app down."""

    @functools.wraps(timer)
    async def run() -> None:
        try:
            await timer()
        except Exception:
            log.exception("timer %s failed; it runs again at its next tick", timer.__name__)

    return run


def register(app: faust.App, p: Pipeline) -> None:
    """Add the timers to ``app``."""

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    @survives
    async def check_skipped() -> None:
        # Partitions the consumer read past while their agent got nothing (continuity.py).
        for offsets in list(p.guards.values()):
            await offsets.check_stalled()

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    @survives
    async def report_lag() -> None:
        consumer: Any = app.consumer  # the committed offsets are Faust's own
        for tp in consumer.assignment():
            try:
                position, end = await consumer.position(tp), consumer.highwater(tp)
            except Exception as exc:  # revoked since assignment() (a rebalance): skip it
                log.debug("lag of %s: %r", tp, exc)
                continue
            if position is not None and end is not None:
                p.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
            if end is not None:
                _check_progress(p, tp, position, end, consumer._committed_offset.get(tp))

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]  # Faust leaves it untyped
    @survives
    async def report_cluster() -> None:
        health = await asyncio.to_thread(p.health.read, p.topics.all(p.streams))
        p.metrics.brokers.set(health.brokers)
        p.metrics.under_replicated.set(health.under_replicated)
        p.metrics.offline.set(health.offline)

    @app.timer(interval=p.live.every_s)  # type: ignore[untyped-decorator]  # Faust: untyped
    @survives
    async def sample_live() -> None:
        await p.live.sample()

    @app.timer(interval=p.ws.model_refresh_s)  # type: ignore[untyped-decorator]  # Faust
    @survives
    async def follow_models() -> None:
        # The models another worker owns, from its checkpoints: what /predict answers here.
        await asyncio.to_thread(p.learn.refresh_followed)

    del check_skipped, report_lag, report_cluster, sample_live, follow_models


def _check_progress(
    p: Pipeline, tp: Any, position: int | None, end: int, committed: int | None
) -> None:
    stalled = p.progress.check(
        tp.topic,
        tp.partition,
        end=end,
        committed=committed,
        position=position,
        queued={agent: q.qsize() for agent, q in p.queues.items()},
    )
    for agent, seconds in stalled.items():
        p.metrics.stalled.labels(agent, tp.topic, str(tp.partition)).set(seconds)
        if seconds:
            log.warning(
                "%s: %s/%d has not advanced for %.0fs with messages waiting (see /status)",
                agent,
                tp.topic,
                tp.partition,
                seconds,
            )
