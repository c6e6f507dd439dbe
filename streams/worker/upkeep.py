"""Table upkeep beside live appends: checkpoints, compaction of small files, vacuum, and
retention (rows older than the table's retention deleted, once a day).

Runs in the writer's thread right after a commit, so it never races its own appends.
Compaction rewrites small files into large ones in a commit that changes no data
(``dataChange=false``), so concurrent appends from other workers do not conflict with it.

Examples:
    >>> policy = UpkeepPolicy(checkpoint_every=10)
    >>> policy.checkpoint_every
    10
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from deltalake import DeltaTable

log = logging.getLogger("eddyline.upkeep")


@dataclass(frozen=True)
class UpkeepPolicy:
    """When to checkpoint, compact and vacuum one table."""

    checkpoint_every: int = 100  # commits; readers then replay at most this many JSON commits
    compact_every: int = 60  # commits; with 1 s commits, small files live about a minute
    target_file_bytes: int = 128 * 1024 * 1024
    vacuum_every_s: float = 3600.0
    retention_hours: int = 168  # keep removed files a week: time travel and slow readers
    retention_days: int = 0  # rows whose event_date is older are deleted (0: kept forever)


@dataclass
class UpkeepStats:
    checkpoints: int = 0
    compactions: int = 0
    files_removed: int = 0
    vacuumed_files: int = 0
    retention_deleted: int = 0


@dataclass
class TableUpkeep:
    """Upkeep state for one table, driven by ``after_commit``."""

    policy: UpkeepPolicy = field(default_factory=UpkeepPolicy)
    stats: UpkeepStats = field(default_factory=UpkeepStats)
    clock: Callable[[], float] = time.monotonic  # tests pass a simulated clock
    wall_clock: Callable[[], float] = time.time  # what "older than N days" is measured by
    # called with (version, rows deleted, cutoff date) after a retention delete
    on_retention: Callable[[int, int, date], None] | None = None
    _commits: int = 0
    _last_vacuum: float | None = None
    _retained_day: int | None = None

    def after_commit(self, dt: DeltaTable, commits: int = 1) -> None:
        """Do whatever upkeep is due after ``commits`` more commits to ``dt`` (several at
        once when a background upkeep thread catches up: each step runs once)."""
        before = self._commits
        self._commits += commits

        def due(every: int) -> bool:
            return self._commits // every > before // every

        if due(self.policy.compact_every):
            metrics = dt.optimize.compact(target_size=self.policy.target_file_bytes)
            self.stats.compactions += 1
            self.stats.files_removed += int(metrics.get("numFilesRemoved", 0))
        if due(self.policy.checkpoint_every):
            dt.update_incremental()
            dt.create_checkpoint()
            dt.cleanup_metadata()  # log entries older than the log retention, past the checkpoint
            self.stats.checkpoints += 1
        self._retain(dt)
        now = self.clock()
        if self._last_vacuum is None:
            self._last_vacuum = now
        elif now - self._last_vacuum >= self.policy.vacuum_every_s:
            removed = dt.vacuum(
                retention_hours=self.policy.retention_hours,
                dry_run=False,
                enforce_retention_duration=False,
            )
            self.stats.vacuumed_files += len(removed)
            self._last_vacuum = now

    def _retain(self, dt: DeltaTable) -> None:
        """Delete the rows past the retention, at most once a (wall-clock) day."""
        days = self.policy.retention_days
        today = int(self.wall_clock() // 86_400)
        if not days or self._retained_day == today:
            return
        if "event_date" not in dt.metadata().partition_columns:
            return
        self._retained_day = today
        cutoff = date(1970, 1, 1) + timedelta(days=today - days)
        # a partition column: whole files go, no row is rewritten
        metrics = dt.delete(f"event_date < '{cutoff.isoformat()}'")
        rows = int(metrics.get("num_deleted_rows", 0))
        if rows:
            self.stats.retention_deleted += rows
            if self.on_retention is not None:
                self.on_retention(dt.version(), rows, cutoff)


def file_count(dt: DeltaTable) -> int:
    """Data files in the table's current version."""
    return len(dt.file_uris())
