"""The intake on a partition that mixes every kind of raw message (issue #20, point 3)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Producer

from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.envelope import (
    H_CONTENT_TYPE,
    H_SCHEMA,
    H_SOURCE,
    JSON,
    decode,
    encode_arrow,
    header_map,
)
from eddyline.schemas.events import InteractionEvent
from eddyline.schemas.source import SourceRef
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics, read_all
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import deadletters, delta_ids, wait_for

pytestmark = pytest.mark.integration
EMAIL = "someone.private@example.com"


def _event(user: str, seq: int) -> dict[str, object]:
    return {
        "event_id": str(uuid.UUID(int=seq + 1)),
        "user_id": user,
        "occurred_at": (datetime.now(UTC) - timedelta(seconds=60 - seq / 100)).isoformat(),
        "app_id": "shop",
        "item_id": f"sku-{seq}",
        "item_category": "news",
        "action": "click",
        "dwell_time_s": 1.0 + seq % 7,
        "position": seq % 5,
    }


def test_a_partition_mixing_json_arrow_and_garbage_keeps_per_user_order(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Single-event JSON (with and without headers), Arrow envelopes and bad messages of
    every kind, interleaved on one partition: the good events reach the private topic in
    the order they were sent (so each user's order holds), each exactly once in Delta, and
    each bad message is one dead letter with its reason, its own offset and no values."""
    topic = Topics(kafka.namespace).raw("interaction")
    producer = Producer(kafka.librdkafka({"enable.idempotence": True}))
    json_headers = [(H_CONTENT_TYPE, JSON.encode()), (H_SCHEMA, b"interaction:1")]
    good: list[str] = []  # event ids in send order
    bad: dict[int, str] = {}  # message number -> reason expected
    messages: list[tuple[bytes, list[tuple[str, bytes]] | None]] = []
    seq = 0

    def add_json(headers: bool) -> None:
        nonlocal seq
        event = _event(f"user-{seq % 3}", seq)
        messages.append((json.dumps(event).encode(), json_headers if headers else None))
        good.append(str(event["event_id"]))
        seq += 1

    def add_arrow(n: int) -> None:
        nonlocal seq
        rows = [_event(f"user-{(seq + i) % 3}", seq + i) for i in range(n)]
        table = pa.Table.from_pylist(
            [
                {**InteractionEvent.model_validate(r).model_dump(), "event_id": r["event_id"]}
                for r in rows
            ],
            schema=arrow_schema(InteractionEvent),
        )
        messages.append(encode_arrow(table, "interaction:1"))
        good.extend(str(r["event_id"]) for r in rows)
        seq += n

    def add_bad(value: bytes, headers: list[tuple[str, bytes]] | None, reason: str) -> None:
        bad[len(messages)] = reason
        messages.append((value, headers))

    for round_ in range(4):
        for _ in range(30):
            add_json(headers=True)
        add_bad(b"\x00\x01 not anything", None, "envelope.content_type")
        for _ in range(5):
            add_json(headers=False)  # no headers: JSON because it starts with "{"
        add_arrow(40)
        add_bad(b'{"user_id": "u", "broken', json_headers, "envelope.corrupt")
        add_json(headers=True)
        add_bad(json.dumps({**_event(EMAIL, 0), EMAIL: 1}).encode(), json_headers, "row.invalid")
        add_bad(
            json.dumps({**_event(EMAIL, 0), "action": "teleport"}).encode(),
            json_headers,
            "row.invalid",
        )
        add_bad(b"[1, 2, 3]", json_headers, "envelope.corrupt")
        add_bad(json.dumps(_event(EMAIL, 0)).encode(), [(H_SCHEMA, b"nope:9")], "schema.unknown")
        add_arrow(10 + round_)
        for _ in range(20):
            add_json(headers=True)
    for value, headers in messages:
        kwargs = {"headers": headers} if headers else {}
        producer.produce(topic, value, partition=1, **kwargs)
    assert producer.flush(60) == 0

    worker = WorkerProcess(worker_env, tmp_path / "worker.log", free_port()).start(timeout=90)
    lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
    try:
        wait_for(lambda: len(delta_ids(lake, "interaction")) >= len(good), 120, "all in Delta")
        wait_for(lambda: len(deadletters(kafka)) >= len(bad), 60, "every bad message")
        written = delta_ids(lake, "interaction")
        assert len(written) == len(good) and set(written) == set(good)

        private = []
        for value, headers in read_all(kafka, Topics(kafka.namespace).private("interaction")):
            h = header_map(headers)
            assert SourceRef.parse(h[H_SOURCE]).partition == 1
            table = decode(value, h).table
            assert table is not None
            private += table["event_id"].to_pylist()
        assert private == good  # the order sent, hence every user's order

        letters = deadletters(kafka)
        by_offset = {d["source"]["offset"]: d for d in letters}
        assert len(letters) == len(bad) == len(by_offset)  # one each, none doubled
        assert {n: by_offset[n]["reason"] for n in bad} == bad  # offset = message number
        assert all(d["source"]["partition"] == 1 for d in letters)
        text = json.dumps(letters)
        assert EMAIL not in text and "teleport" not in text and "broken" not in text
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.dump()}") from exc
    finally:
        worker.stop()
