"""Running a worker: create missing topics, build the app, run it until SIGTERM/SIGINT, and
never outlive the app's crash.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

import faust

from eddyline.streams.heap import tune_gc
from eddyline.streams.kafka.logs import quieten_handlers
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import cluster_replication, ensure_topics
from eddyline.streams.worker.app import build_app

log = logging.getLogger("eddyline.worker")


def run_worker(
    ws: WorkerSettings | None = None, ks: KafkaSettings | None = None, loglevel: str = "info"
) -> None:
    """Create missing topics, then run one worker until SIGTERM/SIGINT."""
    ws, ks = ws or WorkerSettings(), ks or KafkaSettings()
    ks = cluster_replication(ks)  # Faust creates its changelogs with it
    ensure_topics(ks, ws.load_streams())
    app, _ = build_app(ws, ks)
    worker = _Worker(app, loglevel=loglevel, quiet=True, gc_young=ws.gc_young_threshold)
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker, which never outlives its app's crash.

    A crashed app makes the worker stop (exit status 1), but that shutdown can hang (the
    consumer's final commit waiting forever on its thread after a crash mid-rebalance),
    leaving a zombie that answers its web pages, consumes nothing and is never restarted.
    Exactly-once needs no graceful stop, so after a grace period the process exits hard,
    and its supervisor (or the next ``eddyline worker run``) takes over."""

    crash_exit_grace_s = 30.0

    def __init__(self, app: faust.App, *, gc_young: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.gc_young = gc_young  # streams/heap.py

    async def on_first_start(self) -> None:
        await super().on_first_start()
        tune_gc(self.gc_young)  # start-up is done: freeze what it made
        quieten_handlers()  # Faust has set up logging: aiokafka's retries, one line a minute
        logging.getLogger("eddyline.kafka").setLevel(logging.WARNING)  # librdkafka's too
        watch = threading.Thread(target=self._exit_if_stuck_after_a_crash, daemon=True)
        watch.start()  # a thread: the event loop may be the thing that is stuck

    def _exit_if_stuck_after_a_crash(self) -> None:
        while not self.app.crashed:
            time.sleep(1.0)
        time.sleep(self.crash_exit_grace_s)
        log.critical(
            "the app crashed (%r) and the worker did not stop within %.0fs: exiting",
            self.app.crash_reason,
            self.crash_exit_grace_s,
        )
        sys.stderr.flush()
        os._exit(1)
