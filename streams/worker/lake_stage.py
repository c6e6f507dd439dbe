"""The lake stage: private envelopes in, Delta commits out, exactly once.

``LakeStage.prepare`` decodes one private envelope and keeps the rows whose consent allows
storing; ``LakeStage.commit`` writes a batch of prepared envelopes, one Delta commit per
table, through the ``DeltaSink`` (offsets of the raw source in each commit: a replay is
dropped there). A commit that fails is retried with backoff until it lands: nothing is ever
dropped, and a sink that keeps refusing shows as a stalled partition
(``streams.worker.progress``). The same commit path writes the worker's other tables
(``TableWriter``: dead letters, drift events, model metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from eddyline.privacy.consent import consented
from eddyline.privacy.governance import Suppression
from eddyline.schemas.envelope import H_SOURCE, decode, header_map
from eddyline.schemas.source import SourceRef
from eddyline.streams.worker.metrics import WorkerMetrics
from eddyline.streams.worker.sink import DeltaSink

log = logging.getLogger("eddyline.lake")


@dataclass(frozen=True)
class Prepared:
    """One private envelope, ready to commit: its table, stored rows and raw source."""

    table: str
    rows: pa.Table
    source: SourceRef


class LakeStage:
    """Commits private batches (and the worker's other tables) to Delta."""

    def __init__(
        self,
        sink: DeltaSink,
        metrics: WorkerMetrics,
        stream_of: dict[str, str],
        suppression: Suppression | None = None,
    ) -> None:
        self.sink, self.metrics, self.stream_of = sink, metrics, stream_of
        self.suppression = suppression or Suppression()

    def prepare(self, value: bytes, headers: Any, topic: str) -> Prepared:
        """A private envelope's rows that may be stored (``consent_store``)."""
        h = header_map(headers)
        name, table = self.stream_of[topic], decode(value, h).table
        assert table is not None  # the privatize stage only writes Arrow envelopes
        stored = consented(table, "store")
        self.metrics.suppressed.labels(name, "consent_store").inc(table.num_rows - stored.num_rows)
        return Prepared(name, stored, SourceRef.parse(h[H_SOURCE]))

    async def commit(self, batch: Sequence[Prepared]) -> None:
        """Write ``batch``, one Delta commit per table, retrying until each lands."""
        by_table: dict[str, list[tuple[pa.Table, SourceRef]]] = defaultdict(list)
        withheld = self.suppression.pids("store")  # as of now: a request may have come since
        for item in batch:
            rows = without_pids(item.rows, withheld)
            if rows.num_rows < item.rows.num_rows:
                dropped = item.rows.num_rows - rows.num_rows
                self.metrics.suppressed.labels(item.table, "forgotten_store").inc(dropped)
            by_table[item.table].append((rows, item.source))
        for table, batches in by_table.items():
            await self._commit(table, batches)

    async def _commit(self, table: str, batches: list[tuple[pa.Table, SourceRef]]) -> None:
        delay = 0.5
        while True:
            try:
                with self.metrics.delta_commit.time():
                    rows, files = await asyncio.to_thread(self._write, table, batches)
                break
            except Exception:
                log.exception("Delta commit to %s failed; retrying in %.1fs", table, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.metrics.rows_written.labels(table).inc(rows)
        self.metrics.commit_rows.observe(rows)
        self.metrics.files.labels(table).set(files)

    def _write(self, table: str, batches: list[tuple[pa.Table, SourceRef]]) -> tuple[int, int]:
        """(rows written, data files now in the table): run in a thread."""
        started = time.thread_time()
        rows = self.sink.write(table, batches)
        self.metrics.charge("lake", started, rows)
        return rows, self.sink.files(table)


@dataclass(frozen=True)
class TableWriter:
    """Writes one topic of JSON messages (dead letters, drift events, model events) to its
    Delta table, exactly once like the event tables: ``rows(value)`` turns a message into
    rows."""

    lake: LakeStage
    table: str
    rows: Callable[[bytes], pa.Table]

    async def write(self, messages: Sequence[tuple[bytes, SourceRef]]) -> None:
        await self.lake.commit([Prepared(self.table, self.rows(v), src) for v, src in messages])


def without_pids(rows: pa.Table, pids: frozenset[str]) -> pa.Table:
    """``rows`` without those of these pseudonyms (a forget or a storage withdrawal)."""
    if not pids or "user_pid" not in rows.column_names or not rows.num_rows:
        return rows
    mask = pc.is_in(rows["user_pid"], value_set=pa.array(sorted(pids), pa.string()))
    return rows if not pc.any(mask).as_py() else rows.filter(pc.invert(mask))
