"""The worker's Kafka transport: Faust's, with the consumer's fetch wait set by us."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust

from eddyline.streams.kafka.transport import kafka_transport


def test_the_worker_consumer_waits_at_most_the_configured_fetch_wait(tmp_path: Path) -> None:
    app = faust.App("t", broker="kafka://127.0.0.1:1", datadir=str(tmp_path), autodiscover=False)
    app.transport = kafka_transport(app, 123)

    async def made() -> int:  # no connection: the consumer is only built, never started
        thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust's own
        return int(thread._create_worker_consumer(app.transport)._fetch_max_wait_ms)

    assert asyncio.run(made()) == 123  # Faust alone fixes 1,500 ms
