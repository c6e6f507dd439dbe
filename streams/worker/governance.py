"""Governance by automation: forget a user, withdraw consent, keep a log an auditor reads.

``Governance.forget(user_id)`` (also ``eddyline forget``, and a worker for each request on
``governance.requests``) runs these steps, each recorded in a journal so that a run cut short
(even by ``kill -9``) resumes where it stopped and ends in the same state:

1. **suppress**: the subject (``privacy.governance``) goes to the compacted topic
   ``governance.suppressed``, which every worker follows (``SuppressionFeed``): from then on
   the privacy stage drops the user's events before anything else, the lake stores and the
   models learn none of their rows, and the budget ledgers forget them;
2. **settle**: wait ``settle_s``, so that every worker has the entry before step 3;
3. **delete**: a Delta DELETE of their rows (by pseudonym, under every key) in every table
   that has a ``user_pid``, retried on a concurrent commit; then a count, which must be 0;
4. **vacuum** (``vacuum_now``): the files that held their rows are removed now (older table
   versions cannot be read any more); otherwise the worker's hourly vacuum removes them once
   they are older than the table retention (``removed_from_storage_by``);
5. **log**: one row in the Delta table ``governance_log``: request, subject (never the raw
   id), action, tables and versions touched, rows removed, when, by whom.

A withdrawal of consent for storage (``scope="store"``) deletes like a forget but lets the
models keep learning; for learning (``scope="learn"``) it stops the learning only (what the
models learned before is bounded by the events' local DP: docs/governance.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from eddyline.privacy.governance import Scope, Subject, Suppression
from eddyline.schemas.storage import Folder, join
from eddyline.schemas.tables import governance_row
from eddyline.streams.kafka.settings import KafkaSettings, WorkerSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.worker.privatizer import pseudonymizer_from_settings

log = logging.getLogger("eddyline.governance")
LOG_TABLE = "governance_log"
_ACTIONS = {"forget": "forget", "store": "withdraw_store", "learn": "withdraw_learn"}


class SuppressionFeed:
    """Follows ``governance.suppressed`` from its start into a ``Suppression``, in a thread."""

    def __init__(self, ks: KafkaSettings, suppression: Suppression) -> None:
        self.ks, self.suppression = ks, suppression
        self.topic = Topics(ks.namespace).suppressed
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start following; return once everything already in the topic is loaded."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="eddyline-suppressed", daemon=True
            )
            self._thread.start()
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"the suppression list ({self.topic}) did not load in {timeout}s")

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conf = {"group.id": f"eddyline-feed-{id(self)}", "enable.auto.commit": False}
        consumer = Consumer(self.ks.librdkafka(conf))
        try:
            meta = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
            parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            ends = {p.partition: consumer.get_watermark_offsets(p, timeout=30)[1] for p in parts}
            consumer.assign(parts)
            seen: dict[int, int] = {}
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                value = None if msg is None or msg.error() is not None else msg.value()
                if msg is not None and value:
                    self.suppression.add(Subject.from_json(json.loads(value)))
                    seen[msg.partition() or 0] = (msg.offset() or 0) + 1
                if all(seen.get(p, 0) >= end for p, end in ends.items()):
                    self._loaded.set()
        except Exception:  # the stages keep what they had; the log says why it stopped
            log.exception("the suppression feed stopped")
        finally:
            consumer.close()


@dataclass
class Governance:
    """Runs governance requests against the lake and Kafka (see the module docstring)."""

    ws: WorkerSettings = field(default_factory=WorkerSettings)
    ks: KafkaSettings = field(default_factory=KafkaSettings)
    settle_s: float = 10.0
    clock: Any = time.time

    def forget(
        self,
        user_id: str,
        *,
        scope: Scope = "forget",
        request_id: str | None = None,
        requested_by: str = "api",
        vacuum_now: bool = False,
    ) -> dict[str, Any]:
        """Forget ``user_id`` (or withdraw one consent); the ``governance_log`` row."""
        subject = Subject.of(
            user_id, pseudonymizer_from_settings(self.ws), scope=scope, request_id=""
        )
        request_id = request_id or f"{scope}-{subject.subject[:20]}"
        subject = Subject(subject.subject, subject.pids, scope, request_id)
        done = self._logged(request_id)
        if done is not None:
            return done  # idempotent: this request already ran to its end
        journal = _Journal(Path(self.ws.state_dir) / "governance" / f"{request_id}.json")
        journal.setdefault("requested_at", datetime.fromtimestamp(self.clock(), UTC).isoformat())
        if not journal.get("suppressed"):
            self._publish(subject)
            journal.set("suppressed", True)
        published = datetime.fromisoformat(journal.get("requested_at")).timestamp()
        time.sleep(max(0.0, self.settle_s - (self.clock() - published)))
        tables = journal.get("tables") or {}
        if scope in ("forget", "store"):
            for table in self._tables():
                if table not in tables:
                    tables[table] = self._delete(table, subject.pids, vacuum_now)
                    journal.set("tables", tables)
        return self._log(subject, journal, tables, requested_by, vacuum_now)

    # -- the steps ------------------------------------------------------------------------

    def _publish(self, subject: Subject) -> None:
        producer = Producer(self.ks.librdkafka({"enable.idempotence": True}))
        producer.produce(
            Topics(self.ks.namespace).suppressed,
            key=subject.subject.encode(),
            value=json.dumps(subject.to_json()).encode(),
        )
        if producer.flush(30):
            raise TimeoutError("the suppression entry was not acknowledged by Kafka")

    def _uri(self, table: str) -> str:
        return join(self.ws.lake_path, table)

    def _dt(self, table: str) -> DeltaTable:
        return DeltaTable(self._uri(table), storage_options=self.ws.storage().for_delta())

    def _tables(self) -> list[str]:
        """The lake's tables that hold a ``user_pid`` column (local folder or object store)."""
        options = self.ws.storage()
        names = []
        for name in Folder(self.ws.lake_path, options).subfolders():
            if not DeltaTable.is_deltatable(self._uri(name), options.for_delta()):
                continue
            if "user_pid" in self._dt(name).schema().to_arrow().names:
                names.append(name)
        return names

    def _delete(self, table: str, pids: tuple[str, ...], vacuum_now: bool) -> dict[str, int]:
        """Delete the rows of ``pids`` in ``table`` until none is left; what was done."""
        predicate = "user_pid IN (" + ", ".join(f"'{p}'" for p in pids) + ")"  # hex only
        before, done = self._dt(table).version(), {"rows": 0, "files": 0, "copied": 0}
        for _ in range(20):  # a concurrent append or compaction may win a commit race
            dt = self._dt(table)
            try:
                metrics = dt.delete(predicate)
                done["rows"] += int(metrics.get("num_deleted_rows", 0))
                done["files"] += int(metrics.get("num_removed_files", 0))
                done["copied"] += int(metrics.get("num_copied_rows", 0))
            except CommitFailedError:
                time.sleep(0.5)
                continue
            if _count(self._dt(table), pids) == 0:
                break
        else:
            raise RuntimeError(f"rows of the subject remain in {table} after 20 deletes")
        dt = self._dt(table)
        if vacuum_now:
            dt.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
        return {
            "version_before": before,
            "version_after": dt.version(),
            "rows": done["rows"],
            "files_rewritten": done["files"],
            "rows_rewritten": done["copied"],  # other users' rows copied to new files
        }

    def _logged(self, request_id: str) -> dict[str, Any] | None:
        if not DeltaTable.is_deltatable(self._uri(LOG_TABLE), self.ws.storage().for_delta()):
            return None
        rows = self._dt(LOG_TABLE).to_pyarrow_table()
        found = rows.filter(pc.equal(rows["request_id"], request_id)).to_pylist()
        return found[0] if found else None

    def _log(
        self,
        subject: Subject,
        journal: _Journal,
        tables: dict[str, dict[str, int]],
        requested_by: str,
        vacuum_now: bool,
    ) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        # the worker's vacuum removes files older than the retention, hourly
        gone_by = now if vacuum_now else now + timedelta(hours=168 + 1)
        row = governance_row(
            request_id=subject.request_id,
            subject=subject.subject,
            action=_ACTIONS[subject.scope],
            tables=json.dumps(tables, sort_keys=True),
            rows_removed=sum(t["rows"] for t in tables.values()),
            requested_at=datetime.fromisoformat(journal.get("requested_at")),
            done_at=now,
            requested_by=requested_by,
            removed_from_storage_by=gone_by if tables else None,
            detail="ledgers: each worker forgets the subject when the request reaches it",
        )
        write_deltalake(
            self._uri(LOG_TABLE), row, mode="append", storage_options=self.ws.storage().for_delta()
        )
        journal.remove()
        done: dict[str, Any] = row.to_pylist()[0]
        log.info("governance %s done: %d rows removed", subject.request_id, done["rows_removed"])
        return done


def _count(dt: DeltaTable, pids: tuple[str, ...]) -> int:
    """Rows of these pseudonyms left in the table."""
    column = dt.to_pyarrow_table(columns=["user_pid"])["user_pid"]
    return int(pc.sum(pc.is_in(column, value_set=pa.array(list(pids), pa.string()))).as_py() or 0)


class _Journal:
    """A request's progress on disk (JSON, replaced atomically): no raw id in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def setdefault(self, key: str, value: Any) -> None:
        if key not in self.data:
            self.set(key, value)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
