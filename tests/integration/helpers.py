from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from deltalake import DeltaTable

from eddyline.consumers.drift import DriftSubscriber
from eddyline.schemas.envelope import decode
from eddyline.schemas.events import DriftEvent
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics, read_all


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    every: float = 0.5,
    status: Callable[[], str] | None = None,
) -> None:
    """Poll ``check`` until it holds; on timeout, fail naming ``what`` (and ``status()``,
    the state reached, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    reached = f" ({status()})" if status is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{reached}")


def delta_ids(lake: Path, table: str) -> list[str]:
    if not DeltaTable.is_deltatable(str(lake / table)):
        return []
    return (
        DeltaTable(str(lake / table)).to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist()
    )


def deadletters(kafka: KafkaSettings) -> list[dict]:
    return [json.loads(v) for v, _ in read_all(kafka, Topics(kafka.namespace).deadletter)]


def deadlettered_rows(kafka: KafkaSettings, reason: str = "row.invalid") -> set[tuple]:
    """Each dead-lettered (raw partition, offset, rows) once: dead letters name their
    source position and rows, and a raw message read again after a crash is
    dead-lettered again."""
    return {
        (d["source"]["partition"], d["source"]["offset"], d["rows"])
        for d in deadletters(kafka)
        if d["reason"] == reason
    }


def topic_event_ids(kafka: KafkaSettings, topic: str) -> list[str]:
    ids: list[str] = []
    for value, headers in read_all(kafka, topic):
        env = decode(value, headers)
        assert env.table is not None
        ids += env.table["event_id"].to_pylist()
    return ids


def drift_events(kafka: KafkaSettings) -> list[DriftEvent]:
    """Every drift event on the namespace's signals.drift (waits up to 60 s for the first)."""
    found: list[DriftEvent] = []
    with DriftSubscriber(group_id=f"{kafka.namespace}-test", kafka=kafka) as sub:

        def got_one() -> bool:
            event = sub.poll(1.0)
            if event is not None:
                found.append(event)
            return bool(found)

        wait_for(got_one, 60, "a drift event", every=0)
        while (event := sub.poll(2.0)) is not None:
            found.append(event)
    return found
