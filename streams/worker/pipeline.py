"""The worker's state, built once from its settings: the stages, the sink, the metrics, and
the bookkeeping the intake and the Faust agents share (offset guards, progress, queues).

No broker is needed to build it (every client connects lazily), so unit tests drive the
stages through it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from eddyline.privacy.governance import Suppression
from eddyline.schemas.deadletter import deadletter_table
from eddyline.schemas.events import TimeWindow
from eddyline.schemas.storage import Folder, is_remote
from eddyline.schemas.tables import costs_table, drift_table, model_metrics_table
from eddyline.streams.kafka.health import HealthProbe
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import Topics, noise_keep_windows, topic_ids
from eddyline.streams.worker.continuity import OffsetGuard
from eddyline.streams.worker.epochs import TopicEpochs
from eddyline.streams.worker.governance import Governance, SuppressionFeed
from eddyline.streams.worker.lake_stage import LakeStage, TableWriter
from eddyline.streams.worker.learn_stage import LearnStage
from eddyline.streams.worker.live import Live
from eddyline.streams.worker.metrics import WorkerMetrics
from eddyline.streams.worker.privatize import PrivatizeStage
from eddyline.streams.worker.privatizer import Privatizer, pseudonymizer_from_settings
from eddyline.streams.worker.progress import PartitionProgress
from eddyline.streams.worker.sink import DeltaSink
from eddyline.streams.worker.upkeep import UpkeepPolicy


class Pipeline:
    """One worker's stages and shared state (see the module docstring)."""

    def __init__(self, ws: WorkerSettings, ks: KafkaSettings, streams: list[str]) -> None:
        self.ws, self.ks, self.streams = ws, ks, streams
        if is_remote(ws.lake_path):  # wrong credentials: one line now, not a retry loop later
            Folder(ws.lake_path, ws.storage()).subfolders()
        self.topics = Topics(ks.namespace)
        self.stream_of = {self.topics.raw(s): s for s in streams}
        self.stream_of.update({self.topics.private(s): s for s in streams})
        self.metrics = WorkerMetrics.create(
            price_per_core_hour=ws.price_per_core_hour, accounting=ws.cost_accounting
        )
        self.sink = DeltaSink(
            ws.lake_path,
            storage_options=ws.storage().for_delta(),
            upkeep=UpkeepPolicy(retention_days=ws.retention_days),
            retention=ws.retention,
        )
        # Who was forgotten or withdrew consent: followed from Kafka (governance.py), read
        # by every stage.
        self.suppression = Suppression()
        self.feed = SuppressionFeed(ks, self.suppression)
        self.governance = Governance(ws, ks)
        self.privatize = PrivatizeStage(
            _privatizer(ws, self.suppression), self.metrics, self.stream_of, keep_windows=_keep(ws)
        )
        self.lake = LakeStage(self.sink, self.metrics, self.stream_of, self.suppression)
        self.learn = LearnStage(ws, streams, self.metrics, self.sink, self.topics, self.suppression)
        self.writers = {
            "deadletters": TableWriter(
                self.lake, "deadletters", lambda v: deadletter_table([v], datetime.now(UTC))
            ),
            "drift_events": TableWriter(self.lake, "drift_events", lambda v: drift_table([v])),
            "model_metrics": TableWriter(
                self.lake, "model_metrics", lambda v: model_metrics_table([v])
            ),
            "worker_costs": TableWriter(self.lake, "worker_costs", lambda v: costs_table([v])),
        }
        self.progress = PartitionProgress(ws.stall_after_s)
        self.guards: dict[str, OffsetGuard] = {}  # per agent: offset continuity
        self.queues: dict[str, Any] = {}  # per agent: the queue Faust hands it messages on
        # What waits for the intake and the lake agent (anything with ``qsize``): the
        # learn agents wait while these hold messages (``learn_yield_below``).
        self.data_path: dict[str, Any] = {}
        self.intake: Any = None  # the running Intake (streams.worker.intake), once started
        self.epochs = TopicEpochs(functools.partial(topic_ids, ks))
        self.health = HealthProbe(ks)
        self.live = Live(self)


def _privatizer(ws: WorkerSettings, suppression: Suppression) -> Privatizer:
    return Privatizer(
        pseudonymizer_from_settings(ws),
        np.random.default_rng(ws.seed),  # None: seeded from the OS CSPRNG
        max_bytes=ws.max_envelope_bytes,
        max_rows=ws.max_envelope_rows,
        budget=(ws.budget_epsilon, ws.budget_delta, ws.budget_window_s),
        window=TimeWindow(
            timedelta(seconds=ws.max_event_age_s), timedelta(seconds=ws.max_clock_skew_s)
        ),
        suppression=suppression,
        repeats=(ws.repeat_window_s, ws.repeat_max_keys),
    )


def _keep(ws: WorkerSettings) -> int:
    return noise_keep_windows(ws.budget_window_s)
