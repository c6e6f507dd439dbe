"""The baseline for bench/pipeline.py: the same work, done the obvious Faust way.

One JSON event per Kafka message; per event: pydantic validation, an HMAC pseudonym, a
numpy Laplace draw; rows buffered and appended to Delta every 10,000 rows or second.
Prints one JSON line with the time of the first message and of the last commit.

    python bench/naive_worker.py BOOTSTRAP TOPIC LAKE EXPECTED WEB_PORT
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import tempfile
import time

import faust
import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from eddyline.schemas.events import InteractionEvent

bootstrap, topic_name, lake, expected, port = sys.argv[1:6]
app = faust.App(
    f"{topic_name}-naive",  # under the topic's namespace: deleted with it after the run
    broker=f"kafka://{bootstrap}",
    store="memory://",
    datadir=tempfile.mkdtemp(prefix="naive-faust-"),  # not "<app id>-data" in the cwd
    web_port=int(port),
    web_bind="127.0.0.1",
    consumer_auto_offset_reset="earliest",
    stream_wait_empty=False,
    autodiscover=False,
)
topic = app.topic(topic_name, value_type=bytes, value_serializer="raw")
KEY, RNG = b"k" * 32, np.random.default_rng()
state = {"first": 0.0, "written": 0, "rows": [], "last_flush": time.monotonic()}


def flush() -> None:
    rows = state["rows"]
    if rows:
        write_deltalake(lake, pa.Table.from_pylist(rows), mode="append")
        state["written"] += len(rows)
        state["rows"] = []
    state["last_flush"] = time.monotonic()


@app.agent(topic)
async def naive(stream: faust.StreamT[bytes]) -> None:
    async for value in stream:
        if not state["first"]:
            state["first"] = time.time()
        event = InteractionEvent.model_validate_json(value)
        state["rows"].append(
            {
                "event_id": str(event.event_id),
                "user_pid": hmac.new(KEY, event.user_id.encode(), hashlib.sha256).hexdigest()[:32],
                "occurred_at": event.occurred_at,
                "item_category": event.item_category,
                "action": event.action,
                "position": event.position,
                "dwell_time_s": min(max(event.dwell_time_s, 0.0), 300.0) + RNG.laplace(0.0, 300.0),
            }
        )
        if len(state["rows"]) >= 10_000 or time.monotonic() - state["last_flush"] >= 1.0:
            flush()
        if state["written"] + len(state["rows"]) >= int(expected):
            flush()
            print(
                json.dumps(
                    {"first": state["first"], "done": time.time(), "written": state["written"]}
                ),
                flush=True,
            )
            os._exit(0)


if __name__ == "__main__":
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
