"""The Delta sink: private batches appended exactly once per source message (per row, for
envelopes that cover many raw messages).

Each commit records, as Delta app transactions, the last raw-topic offset it covers for
every source partition (``app_id = "<raw topic>/<partition>@<topic id>"``: offsets count
within one incarnation of a topic, ``schemas.source``). Before writing, the sink drops what
a committed transaction already covers, so a batch replayed after a crash or rebalance is
never written twice, and a recreated topic (a new topic id) starts a new count.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from eddyline.schemas.source import SourceRef, rows_after
from eddyline.schemas.tables import governance_row
from eddyline.streams.worker.upkeep import TableUpkeep, UpkeepPolicy, file_count

log = logging.getLogger("eddyline.lake")


class DeltaSink:
    """Appends private batches to one Delta table per stream under ``root``."""

    def __init__(
        self,
        root: str,
        storage_options: dict[str, str] | None = None,
        upkeep: UpkeepPolicy | None = None,
        background_upkeep: bool = True,
        retention: dict[str, int] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root.rstrip("/")
        self.storage_options = storage_options
        self.upkeep_policy = upkeep or UpkeepPolicy()
        # table -> days its rows are kept (else the policy's retention_days)
        self.retention = dict(retention or {})
        self._wall_clock = wall_clock  # what retention measures age by (tests simulate it)
        self.upkeep: dict[str, TableUpkeep] = {}
        # Upkeep (compaction, checkpoints, vacuum) runs in its own thread on its own table
        # handles, beside the appends (Delta's optimistic concurrency lets a compaction
        # commit between appends): on the commit path a compaction would hold the next
        # commit, and every event waiting for it. False: inline after each commit (tests).
        self._pending: dict[str, int] = {}  # table -> commits not yet seen by upkeep
        self._wake = threading.Condition()
        self._upkeeper: threading.Thread | None = None
        if background_upkeep:
            self._upkeeper = threading.Thread(
                target=self._upkeep_loop, name="eddyline-delta-upkeep", daemon=True
            )
            self._upkeeper.start()
        self._tables: dict[str, DeltaTable] = {}
        self._lock = threading.Lock()

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def _table(self, name: str) -> DeltaTable | None:
        """The table at its latest version (refreshed), or None if it does not exist yet."""
        dt = self._tables.get(name)
        if dt is None:
            if not DeltaTable.is_deltatable(self.uri(name), self.storage_options):
                return None
            dt = DeltaTable(self.uri(name), storage_options=self.storage_options)
            self._tables[name] = dt
        else:
            dt.update_incremental()
        return dt

    def committed(self, table: str, source: SourceRef) -> int:
        """The last raw offset of ``source``'s partition (and epoch) in ``table`` (-1: none)."""
        with self._lock:
            return _committed(self._table(table), source.key)

    def version(self, table: str) -> int | None:
        """The table's current Delta version, or None if it does not exist yet."""
        with self._lock:
            dt = self._table(table)
            return None if dt is None else dt.version()

    def version_before(self, table: str, starts: dict[str, int]) -> int | None:
        """The newest version holding nothing at or past ``starts`` (source key -> first raw
        offset): time travel to it reads only data from before those source offsets. None:
        even the first readable version holds some.

        Read from the table itself (the app transactions each commit records, which only
        grow from version to version), so any process computes the same answer: a worker
        that restarted, or one that learns partitions another worker wrote. A binary search:
        about log2(versions) snapshot loads, each from the nearest Delta checkpoint.
        """
        latest = self.version(table)
        if latest is None or not starts:
            return latest
        dt = DeltaTable(self.uri(table), storage_options=self.storage_options)

        def clean(version: int) -> bool:
            dt.load_as_version(version)
            return all(_committed(dt, key) < start for key, start in starts.items())

        if clean(latest):
            return latest
        lo = _oldest_readable(dt, latest)
        if not clean(lo):
            return None
        hi = latest  # clean(lo) and not clean(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if clean(mid) else (lo, mid)
        return lo

    def files(self, table: str) -> int:
        """Data files in the table's current version."""
        with self._lock:
            dt = self._table(table)
            return 0 if dt is None else file_count(dt)

    def write(self, table: str, batches: Sequence[tuple[pa.Table, SourceRef]]) -> int:
        """Append the batches not yet committed, in one Delta commit; return rows written.

        The offsets are read from the same snapshot the commit is based on, so if another
        writer (a worker that took the partition over) commits the same source partition in
        between, delta-rs rejects this commit (``CommitFailedError``); the caller retries,
        re-reads the offsets, and drops what the other writer wrote.
        """
        with self._lock:
            dt = self._table(table)
            if dt is None:
                dt = self._create(table, _uncommitted(None, batches)[0])
            fresh, last = _uncommitted(dt, batches)
            if not last:
                return 0
            data = _with_date(pa.concat_tables(fresh, promote_options="default"))
            txns = [Transaction(key, off) for key, off in last.items()]
            write_deltalake(
                dt,
                data,
                mode="append",
                partition_by=["event_date"],
                schema_mode="merge",
                storage_options=self.storage_options,
                commit_properties=CommitProperties(app_transactions=txns),
            )
            if self._upkeeper is None:
                self._run_upkeep(table, dt, 1)  # ``write_deltalake`` left ``dt`` at its commit
            else:
                with self._wake:
                    self._pending[table] = self._pending.get(table, 0) + 1
                    self._wake.notify()
            return int(data.num_rows)

    def _create(self, table: str, rows: list[pa.Table]) -> DeltaTable:
        """Create ``table`` empty (version 0: schema only, no source offsets), then return it.

        Data never goes into the creating commit: a create has no snapshot to check source
        offsets against, so two workers creating the table at once would both commit the
        same offsets (seen on Azurite). Of two racing creates one wins; the other's fails
        and it reads the winner's table; every data commit then has a snapshot, and the
        offsets committed in it, to be checked against."""
        schema = pa.concat_tables(rows, promote_options="default")
        try:
            write_deltalake(
                self.uri(table),
                _with_date(schema.slice(0, 0)),
                mode="append",
                partition_by=["event_date"],
                storage_options=self.storage_options,
            )
        except Exception:  # another writer created it first: use theirs
            if not DeltaTable.is_deltatable(self.uri(table), self.storage_options):
                raise
        dt = self._tables[table] = DeltaTable(self.uri(table), storage_options=self.storage_options)
        return dt

    def _new_upkeep(self, table: str) -> TableUpkeep:
        days = self.retention.get(table, self.upkeep_policy.retention_days)
        policy = dataclasses.replace(self.upkeep_policy, retention_days=days)
        log_row = _log_retention(self.root, table, self.storage_options)
        return TableUpkeep(policy, wall_clock=self._wall_clock, on_retention=log_row)

    def upkeep_idle(self, timeout: float = 60.0) -> bool:
        """Wait until background upkeep has seen every commit so far; False on timeout."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._pending, timeout)

    def _upkeep_loop(self) -> None:
        handles: dict[str, DeltaTable] = {}  # upkeep's own, never the writer's
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._pending))
                table, commits = next(iter(self._pending.items()))
            dt = handles.get(table)
            if dt is None:
                dt = handles[table] = DeltaTable(
                    self.uri(table), storage_options=self.storage_options
                )
            else:
                dt.update_incremental()
            self._run_upkeep(table, dt, commits)
            with self._wake:
                left = self._pending.pop(table) - commits
                if left:  # commits that arrived meanwhile
                    self._pending[table] = left
                self._wake.notify_all()

    def _run_upkeep(self, table: str, dt: DeltaTable, commits: int) -> None:
        upkeep = self.upkeep.get(table)
        if upkeep is None:
            upkeep = self.upkeep[table] = self._new_upkeep(table)
        try:
            upkeep.after_commit(dt, commits)
        except Exception:  # upkeep is best effort: the data is committed already
            log.exception("upkeep of %s failed; it will run again later", table)


def _log_retention(
    root: str, table: str, storage_options: dict[str, str] | None
) -> Callable[[int, int, date], None]:
    """What a retention delete leaves in the ``governance_log`` table."""

    def log_row(version: int, rows: int, cutoff: date) -> None:
        now = datetime.now(UTC)
        tables = {table: {"version_after": version, "rows": rows}}
        row = governance_row(
            request_id=f"retention-{table}-{version}",
            action="retention",
            tables=json.dumps(tables),
            rows_removed=rows,
            requested_at=now,
            done_at=now,
            requested_by="worker",
            detail=f"rows with event_date before {cutoff.isoformat()}; versions before "
            f"{version} still hold them until vacuum (a model's lineage may name them)",
        )
        write_deltalake(
            f"{root}/governance_log", row, mode="append", storage_options=storage_options
        )

    return log_row


def _with_date(data: pa.Table) -> pa.Table:
    """``data`` with its partition column, ``event_date`` (the UTC date of ``occurred_at``)."""
    return data.append_column("event_date", pc.cast(data["occurred_at"], pa.date32()))


def _oldest_readable(dt: DeltaTable, latest: int) -> int:
    """The oldest version whose snapshot still loads (log cleanup removes the commits a
    Delta checkpoint covers once they pass the log retention)."""

    def loads(version: int) -> bool:
        try:
            dt.load_as_version(version)
        except Exception:
            return False
        return True

    if loads(0):
        return 0
    lo, hi = 0, latest  # not loadable at lo, loadable at hi (the latest always is)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if loads(mid) else (mid, hi)
    return hi


def _committed(dt: DeltaTable | None, key: str) -> int:
    if dt is None:
        return -1
    version = dt.transaction_version(key)
    return -1 if version is None else version


def _uncommitted(
    dt: DeltaTable | None, batches: Sequence[tuple[pa.Table, SourceRef]]
) -> tuple[list[pa.Table], dict[str, int]]:
    """The rows past each partition's committed offset, and the new last offsets. An
    envelope of many raw messages may overlap what is committed in part (a replay cut
    differently): only its rows past the committed offset are kept."""
    fresh: list[pa.Table] = []
    last: dict[str, int] = {}
    done: dict[str, int] = {}
    for batch, src in batches:
        key = src.key
        if key not in done:
            done[key] = _committed(dt, key)
        rows = rows_after(batch, src, max(done[key], last.get(key, -1)))
        if rows is None:
            continue  # already in Delta: a replay after a crash or rebalance
        fresh.append(rows)
        last[key] = src.offset
    return fresh, last
