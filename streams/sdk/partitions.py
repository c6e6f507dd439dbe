"""How many partitions each topic has, as the SDK routes by it.

Asked of Kafka once per topic and kept in the spool folder (``partitions.json``), so a
producer started while Kafka is away can still route each user to its partition (and spool
in order) for topics it has seen before.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eddyline.schemas.errors import TopicNotFoundError
from eddyline.streams.kafka.clients import ClientErrors, metadata


class PartitionCounts:
    """Partition counts by topic: the cache file first, then Kafka's metadata."""

    def __init__(self, folder: Callable[[], Path], timeout_s: float, bootstrap: str) -> None:
        self._folder, self._timeout, self._bootstrap = folder, timeout_s, bootstrap
        self.known: dict[str, int] = {}

    def load(self) -> None:
        """Read what an earlier producer on the same spool folder learnt."""
        self.known.update(self._read())

    def count(self, topic: str, client: Any, errors: ClientErrors) -> int:
        """``topic``'s partition count; Kafka is asked (through ``client``) only once."""
        if topic in self.known:
            return self.known[topic]
        md = metadata(client, errors, self._bootstrap, self._timeout, topic)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise TopicNotFoundError(topic)
        self.known[topic] = len(meta.partitions)
        self._write()
        return self.known[topic]

    def _file(self) -> Path:
        return self._folder() / "partitions.json"

    def _read(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self._file().read_text()).items()}
        except (OSError, ValueError):
            return {}

    def _write(self) -> None:
        known = {**self._read(), **self.known}
        path = self._file()
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # shared folder
        tmp.write_text(json.dumps(known))
        tmp.replace(path)
