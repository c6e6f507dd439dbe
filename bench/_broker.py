"""A Kafka for benchmarks: EDDYLINE_BOOTSTRAP if set, else a local broker on free ports."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from streams.broker import LocalBroker, free_port


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
