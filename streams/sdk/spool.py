"""A bounded, durable, ordered on-disk queue of envelopes: the SDK's offline spool.

Each envelope is one file named by its sequence number, written atomically (temp file,
fsync, rename), so a crash leaves either the whole envelope or nothing. Entries are read
back in sequence order; a producer sends them oldest first and deletes each file only
after Kafka acknowledged it.

Several processes may share a spool root: each takes the first free *slot* (a subfolder
held with an exclusive ``flock``), so a restarted process takes over the slot, and the
envelopes, of the one before it.

Examples:
    >>> import tempfile
    >>> spool = Spool.open(tempfile.mkdtemp(), max_bytes=1 << 20)
    >>> spool.put(7, "events.interaction", 2, b"value", [("content-type", b"x")])
    >>> [(e.seq, e.partition, e.read()[0]) for e in spool.entries()]
    [(7, 2, b'value')]
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from eddyline.schemas.envelope import Headers
from eddyline.schemas.errors import EddylineError

_SUFFIX = ".env"


class SpoolFullError(EddylineError):
    """The offline spool reached its size limit; the event was not accepted."""

    def __init__(self, directory: Path, max_bytes: int, retry_after: float = 1.0) -> None:
        super().__init__(
            f"the offline spool {directory} is full ({max_bytes:,} bytes): Kafka "
            "has been unreachable for long; raise EDDYLINE_SPOOL_MAX_BYTES or "
            "retry later"
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled envelope."""

    seq: int
    topic: str
    partition: int
    path: Path
    size: int

    def read(self) -> tuple[bytes, Headers]:
        """(value, headers) of the envelope."""
        with open(self.path, "rb") as f:
            meta = json.loads(f.readline())
            value = f.read()
        return value, [(k, bytes.fromhex(v)) for k, v in meta["headers"]]


class Spool:
    """One slot of a spool root: a folder of envelope files, size-bounded."""

    def __init__(self, directory: Path, max_bytes: int, lock: IO[str]) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = lock  # held for the life of this object
        self.size = 0
        self._entries: dict[int, SpoolEntry] = {}
        self._keys: Counter[tuple[str, int]] = Counter()
        for path in directory.glob(f"*{_SUFFIX}"):
            entry = self._load(path)
            if entry is not None:
                self._add(entry)
        for tmp in directory.glob("*.tmp"):  # a write that a crash interrupted
            tmp.unlink(missing_ok=True)

    @classmethod
    def open(cls, root: str | Path, *, max_bytes: int) -> Spool:
        """Take a free slot under ``root``: one that a dead process left non-empty first."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        existing = sorted(
            root.glob("slot-*"), key=lambda p: (not any(p.glob(f"*{_SUFFIX}")), int(p.name[5:]))
        )
        candidates = [*existing, *(root / f"slot-{n}" for n in range(len(existing), 1024))]
        for directory in candidates:
            directory.mkdir(exist_ok=True)
            lock = open(directory / ".lock", "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return cls(directory, max_bytes, lock)
        raise EddylineError(f"no free spool slot under {root}")

    @staticmethod
    def _load(path: Path) -> SpoolEntry | None:
        try:
            with open(path, "rb") as f:
                meta = json.loads(f.readline())
            return SpoolEntry(
                int(path.stem), meta["topic"], meta["partition"], path, path.stat().st_size
            )
        except (OSError, ValueError, KeyError):
            return None

    def _add(self, entry: SpoolEntry) -> None:
        self._entries[entry.seq] = entry
        self._keys[(entry.topic, entry.partition)] += 1
        self.size += entry.size

    def has(self, topic: str, partition: int) -> bool:
        """Whether envelopes for this topic partition wait in the spool."""
        return self._keys[(topic, partition)] > 0

    def __len__(self) -> int:
        return len(self._entries)

    def max_seq(self) -> int:
        return max(self._entries, default=-1)

    def put(self, seq: int, topic: str, partition: int, value: bytes, headers: Headers) -> None:
        """Store one envelope durably, or raise :class:`SpoolFullError`."""
        meta = {
            "topic": topic,
            "partition": partition,
            "headers": [[k, v.hex()] for k, v in headers],
        }
        data = json.dumps(meta).encode() + b"\n" + value
        if self.size + len(data) > self.max_bytes:
            raise SpoolFullError(self.directory, self.max_bytes)
        path = self.directory / f"{seq:020d}{_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._add(SpoolEntry(seq, topic, partition, path, len(data)))

    def entries(self, topic: str | None = None, partition: int | None = None) -> list[SpoolEntry]:
        """Entries in sequence order, optionally for one topic partition."""
        return [
            e
            for _, e in sorted(self._entries.items())
            if topic is None or (e.topic == topic and e.partition == partition)
        ]

    def keys(self) -> list[tuple[str, int]]:
        return [k for k, n in self._keys.items() if n > 0]

    def remove(self, seq: int) -> None:
        entry = self._entries.pop(seq, None)
        if entry is not None:
            entry.path.unlink(missing_ok=True)
            self._keys[(entry.topic, entry.partition)] -= 1
            self.size -= entry.size

    def close(self) -> None:
        self._lock.close()
