"""The Delta sink: private batches appended exactly once per source message.

Each commit records, as Delta app transactions, the last raw-topic offset it covers for
every source partition (``app_id = "<raw topic>/<partition>"``). Before writing, the sink
drops what a committed transaction already covers, so a batch replayed after a crash or
rebalance is never written twice.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from streams.processing import SourceRef


def _app_id(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class DeltaSink:
    """Appends private batches to one Delta table per stream under ``root``."""

    def __init__(self, root: str, storage_options: dict[str, str] | None = None) -> None:
        self.root = root.rstrip("/")
        self.storage_options = storage_options
        self._tables: dict[str, DeltaTable] = {}
        self._lock = threading.Lock()

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def _table(self, name: str) -> DeltaTable | None:
        dt = self._tables.get(name)
        if dt is None:
            if not DeltaTable.is_deltatable(self.uri(name), self.storage_options):
                return None
            dt = self._tables[name] = DeltaTable(
                self.uri(name), storage_options=self.storage_options
            )
        else:
            dt.update_incremental()
        return dt

    def committed(self, table: str, source_topic: str, partition: int) -> int:
        """The last raw offset of ``source_topic/partition`` already in ``table`` (-1: none)."""
        dt = self._table(table)
        if dt is None:
            return -1
        version = dt.transaction_version(_app_id(source_topic, partition))
        return -1 if version is None else version

    def version(self, table: str) -> int | None:
        """The table's current Delta version, or None if it does not exist yet."""
        with self._lock:
            dt = self._table(table)
            return None if dt is None else dt.version()

    def write(self, table: str, batches: Sequence[tuple[pa.Table, SourceRef]]) -> int:
        """Append the batches not yet committed, in one Delta commit; return rows written."""
        with self._lock:
            fresh: list[pa.Table] = []
            last: dict[tuple[str, int], int] = {}
            done: dict[tuple[str, int], int] = defaultdict(lambda: -2)
            for batch, src in batches:
                key = (src.topic, src.partition)
                if done[key] == -2:
                    done[key] = self.committed(table, *key)
                if src.offset <= max(done[key], last.get(key, -1)):
                    continue  # already in Delta: a replay after a crash or rebalance
                fresh.append(batch)
                last[key] = src.offset
            if not last:
                return 0
            data = pa.concat_tables(fresh, promote_options="default")
            data = data.append_column("event_date", pc.cast(data["occurred_at"], pa.date32()))
            txns = [Transaction(_app_id(t, p), off) for (t, p), off in last.items()]
            write_deltalake(
                self.uri(table),
                data,
                mode="append",
                partition_by=["event_date"],
                storage_options=self.storage_options,
                commit_properties=CommitProperties(app_transactions=txns),
            )
            return int(data.num_rows)
