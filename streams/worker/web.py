"""The worker's web pages, on ``EDDYLINE_WEB_PORT``: ``/`` (the live page: ``page/``,
drawn from ``/live``, ``streams.worker.live``), ``/metrics`` (Prometheus), ``/status``
(where each partition and agent stands: what to look at when a worker lags or stalls) and
``/predict/<model>`` (the online model's answer for the features in the query: a
probability, a number or a class, by the spec's kind; ``?version=champion`` and the like
answer with a registry version instead: ``online_learning/serving.py``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eddyline.online_learning.registry import ModelRegistry
from eddyline.online_learning.serving import (
    ONLINE,
    RegistryServing,
    VersionNotServedError,
    parse_version,
)
from eddyline.online_learning.spec import LearnerSpecError
from eddyline.schemas.storage import join
from eddyline.streams.worker.pipeline import Pipeline

PAGE = Path(__file__).parent / "page"
#: the live page's files, by the name it asks for (nothing else is served from the folder)
_FILES = {
    "page.js": ("page.js", "text/javascript"),
    "page.css": ("page.css", "text/css"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}


def register(app: faust.App, p: Pipeline) -> None:
    """Add the pages to ``app``."""

    ws = p.ws
    serving = RegistryServing(
        ModelRegistry(ws.registry_path or join(ws.lake_path, "_registry"), ws.storage())
    )

    @app.page("/predict/{model}")
    async def predict(web: Any, request: Any, model: str) -> Any:
        """``GET /predict/click?item_category=news&position=3&dwell_time_s=12``: the query
        holds the model's features (its spec's columns), and optionally ``version``:
        ``online`` (default), ``champion``, ``challenger``, ``previous`` or a number."""
        started, cpu = time.perf_counter(), time.thread_time()
        online = p.learn.models.get(model)
        if online is None:
            known = ", ".join(p.learn.models)
            return web.json({"error": f"unknown model {model!r} (models: {known})"}, status=404)
        values = {k: v for k, v in request.query.items() if k != "version"}
        try:
            which = parse_version(request.query.get("version"))
            if which != ONLINE:
                served = await asyncio.to_thread(serving.answer, online, which, values)
                p.metrics.predict.observe(time.perf_counter() - started)
                return web.json(served)
            answer = online.predict(values)
        except (LearnerSpecError, ValueError) as exc:
            return web.json({"error": f"bad query: {exc}"}, status=400)
        except VersionNotServedError as exc:
            return web.json({"error": str(exc)}, status=404)
        p.metrics.predict.observe(time.perf_counter() - started)
        p.metrics.charge("predict", cpu, 1)
        return web.json(
            {
                "model": online.name,
                "model_version": online.version,
                "served": ONLINE,
                "events_seen": online.seen,
                **answer,  # probability, value, or class and probabilities (by spec kind)
            }
        )

    @app.page("/")
    async def index(web: Any, request: Any) -> Any:
        return web.html((PAGE / "index.html").read_text())

    @app.page("/page/{name}")
    async def files(web: Any, request: Any, name: str) -> Any:
        found = _FILES.get(name)
        if found is None:
            return web.json({"error": f"no page file {name!r}"}, status=404)
        path, kind = found
        return web.bytes((PAGE / path).read_bytes(), content_type=kind)

    @app.page("/live")
    async def live(web: Any, request: Any) -> Any:
        return web.json(p.live.state())

    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        return web.json(worker_status(app, p))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, so the exposition type goes as a header.
        return web.bytes(
            generate_latest(p.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    del predict, status, metrics, index, files, live


def worker_status(app: faust.App, p: Pipeline) -> dict[str, Any]:
    """The consumer's flow state, agent queues and locks, as JSON-ready data (``/status``;
    also logged when a worker is asked to dump its state with SIGUSR1)."""
    consumer: Any = app.consumer  # the state below is Faust's own, not on ConsumerT

    def tps(items: Any) -> list[str]:
        return sorted(f"{tp.topic}/{tp.partition}" for tp in items or ())

    queues: dict[str, list[int]] = {}
    for name, agent in app.agents.items():
        actors = getattr(agent, "_actors", ())
        queues[name] = [a.stream.channel.queue.qsize() for a in actors]
    return {
        "fetch_state": _fetch_state(consumer),
        "assigned": tps(consumer.assignment()),
        "active": tps(consumer._active_partitions),  # Faust keeps these private
        "paused": tps(consumer._paused_partitions),
        "buffered": tps(consumer._buffered_partitions),
        "flow_active": consumer.flow_active,
        "flow_control_active": app.flow_control.is_active(),
        "in_recovery": app.in_recovery,
        "rebalancing": app.rebalancing,
        "agent_queues": queues,
        "intake": p.intake.state() if p.intake is not None else None,
        "models_seen": {name: m.seen for name, m in p.learn.models.items()},
        "stalled": p.progress.stalled(),
        "offsets": {name: g.state() for name, g in p.guards.items()},
    }


def _fetch_state(consumer: Any) -> dict[str, Any]:
    """aiokafka's view of each event topic partition (Faust's consumer thread keeps its own
    paused set and positions): paused, position status, position, highwater."""
    try:
        assignment = consumer._thread._consumer._subscription.subscription.assignment
        states = {tp: assignment.state_value(tp) for tp in assignment.tps}
    except Exception as exc:  # diagnostics only: never fail the page
        return {"error": repr(exc)}
    return {
        f"{tp.topic}/{tp.partition}": [
            state.paused,
            str(state._status),
            state._position,
            state.highwater,
        ]
        for tp, state in sorted(states.items())
        if ".events." in tp.topic
    }
