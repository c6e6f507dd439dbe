"""A Kafka for benchmarks: EDDYLINE_BOOTSTRAP if set, else a local broker on free ports."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka.admin import AdminClient

from eddyline.streams.kafka.broker import LocalBroker, free_port


@contextlib.contextmanager
def kafka_for_bench() -> Iterator[str]:
    if os.environ.get("EDDYLINE_BOOTSTRAP"):
        yield os.environ["EDDYLINE_BOOTSTRAP"]
        return
    with tempfile.TemporaryDirectory() as root:
        broker = LocalBroker(port=free_port(), controller_port=free_port(), root=Path(root))
        broker.start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


@contextlib.contextmanager
def fresh_namespace(bootstrap: str, prefix: str) -> Iterator[str]:
    """A new topic namespace (``prefix`` + 6 hex digits) whose topics are deleted when the
    phase ends: against a long-lived broker (``EDDYLINE_BOOTSTRAP``) every pre-filled run
    would otherwise stay on its disk (one night of pipeline runs left 50 GB there)."""
    namespace = f"{prefix}{uuid.uuid4().hex[:6]}"
    try:
        yield namespace
    finally:
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(namespace)]
            for future in admin.delete_topics(mine, operation_timeout=30).values():
                future.result(60)
        except Exception as exc:
            print(f"could not delete the topics of {namespace}: {exc}", file=sys.stderr)
