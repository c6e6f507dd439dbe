"""The worker's stages without a broker: hand each one a message, check what it makes.

The Faust agents only move bytes between Kafka and these objects (streams/worker/agents.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pyarrow as pa
import pytest

from eddyline.schemas.arrow import arrow_schema
from eddyline.schemas.deadletter import Reason
from eddyline.schemas.envelope import H_SOURCE, decode, encode_arrow, header_map
from eddyline.schemas.events import InteractionEvent
from eddyline.schemas.source import SourceRef
from eddyline.simulate import TrafficSimulator
from eddyline.streams.worker.pipeline import Pipeline
from eddyline.streams.worker.privatize import RawMessage

RAW = "events.interaction"


def _raw(n: int, offset: int, seed: int = 1) -> RawMessage:
    rows = [
        {**e.__dict__, "event_id": str(e.event_id)}
        for e in TrafficSimulator(users=20, seed=seed).interactions(n)
    ]
    value, headers = encode_arrow(
        pa.Table.from_pylist(rows, schema=arrow_schema(InteractionEvent)), "interaction:1"
    )
    return RawMessage(value, headers, SourceRef(RAW, 0, offset), timestamp=1.0e9)


def _sample(p: Pipeline, name: str, **labels: str) -> float:
    return p.metrics.registry.get_sample_value(name, labels) or 0.0


def test_privatize_makes_a_private_envelope_and_counts_a_message_once(p: Pipeline) -> None:
    message = _raw(50, offset=7)
    first = p.privatize.process(message, noise_key=b"n" * 32)
    assert first.private is not None and first.rows == 50 and first.dead == []
    value, headers = first.private
    assert header_map(headers)[H_SOURCE] == f"{RAW}/0/7"
    assert decode(value, headers).table.num_rows == 50  # type: ignore[union-attr]
    again = p.privatize.process(message, noise_key=b"n" * 32)  # read again: a rebalance
    assert again.private is None and again.dead == []  # its users were charged: a replay
    events_in = "eddyline_worker_events_in_total"
    assert _sample(p, events_in, stream="interaction") == 50  # counted once


def test_privatize_turns_its_own_failure_into_a_dead_letter_without_the_message(
    p: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    value = "canary-9d1@example.com"  # as if read from the message

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError(f"cannot parse {value!r}")

    monkeypatch.setattr(p.privatize.privatizer, "process", broken)
    with caplog.at_level(logging.ERROR):
        out = p.privatize.process(_raw(3, offset=1), noise_key=b"n" * 32)
    assert [(d.reason, d.detail) for d in out.dead] == [(Reason.INTERNAL_ERROR, "ValueError")]
    assert out.private is None
    assert "ValueError" in caplog.text and "broken" in caplog.text  # the frames are there
    assert "canary-9d1" not in caplog.text


def test_privatize_dead_letters_a_private_batch_kafka_would_refuse(p: Pipeline) -> None:
    p.privatize.max_private_bytes = 1_000
    out = p.privatize.process(_raw(50, offset=2), noise_key=b"n" * 32)
    assert out.private is None
    assert [(d.reason, d.count) for d in out.dead] == [(Reason.ENVELOPE_TOO_LARGE, 50)]


def _private(p: Pipeline, n: int, offset: int, seed: int = 1) -> tuple[bytes, list]:
    out = p.privatize.process(_raw(n, offset, seed), noise_key=b"n" * 32)
    assert out.private is not None
    value, headers = out.private
    return value, headers


def test_the_lake_commits_once_per_source_and_retries_a_failing_commit(
    p: Pipeline, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    private_topic = "events.interaction.private"
    batch = [p.lake.prepare(*_private(p, 40, offset=i, seed=i), private_topic) for i in range(3)]
    write, failures = p.lake._write, [2]

    def flaky(table: str, batches: list) -> tuple[int, int]:
        if failures[0]:
            failures[0] -= 1
            raise OSError("the store is away")
        return write(table, batches)

    monkeypatch.setattr(p.lake, "_write", flaky)
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    asyncio.run(p.lake.commit(batch))
    asyncio.run(p.lake.commit(batch))  # a replay: dropped by the offsets in the commits
    from deltalake import DeltaTable

    assert DeltaTable(str(tmp_path / "lake" / "interaction")).count() == 120
    assert _sample(p, "eddyline_worker_rows_written_total", table="interaction") == 120


async def _no_sleep(seconds: float) -> None:
    return None


def test_learning_skips_what_a_model_learned_and_checkpoints_what_it_covers(
    p: Pipeline,
) -> None:
    envelope = _private(p, 500, offset=4)
    learned = asyncio.run(p.learn.learn("interaction", *envelope))
    assert learned.drift == [] and p.learn.models["click"].seen == 500
    asyncio.run(p.learn.learn("interaction", *envelope))  # privatised twice: learned once
    assert p.learn.models["click"].seen == 500
    [checkpoint] = asyncio.run(p.learn.maybe_checkpoint("interaction"))
    assert (checkpoint.model, checkpoint.events_seen, checkpoint.offsets) == ("click", 500, {0: 4})
    restored = p.learn.store.load("click")
    assert restored is not None and restored.offsets == {0: 4}


def test_the_table_writers_store_dead_letters(p: Pipeline, tmp_path: Path) -> None:
    dead = p.privatize.process(
        RawMessage(b"\x00junk", [("content-type", b"text/csv")], SourceRef(RAW, 1, 9), 1e9),
        noise_key=b"n" * 32,
    ).dead
    messages = [(d.to_json(), SourceRef("events.deadletter", 0, i)) for i, d in enumerate(dead)]
    asyncio.run(p.writers["deadletters"].write(messages))
    from eddyline.consumers.lake import Lake

    [row] = Lake(tmp_path / "lake").read("deadletters").to_pylist()
    assert (row["reason"], row["source_partition"], row["source_offset"]) == (
        "envelope.content_type",
        1,
        9,
    )


def test_every_stage_counts_a_recreated_topic_afresh(p: Pipeline, tmp_path: Path) -> None:
    """The raw topic deleted and created again: offsets restart at 0 under a new topic id.
    Privatize, lake and learn must take its messages, not skip them as done."""

    def raw(offset: int, epoch: str, seed: int) -> RawMessage:
        message = _raw(300, offset, seed)
        src = SourceRef(RAW, 0, offset, epoch)
        return RawMessage(message.value, message.headers, src, message.timestamp)

    private_topic = "events.interaction.private"
    for message in (raw(900, "A", 1), raw(0, "B", 2)):
        out = p.privatize.process(message, noise_key=b"n" * 32)
        assert out.private is not None and out.rows == 300, message.source
        value, headers = out.private
        asyncio.run(p.lake.commit([p.lake.prepare(value, headers, private_topic)]))
        asyncio.run(p.learn.learn("interaction", value, headers))
    from deltalake import DeltaTable

    assert DeltaTable(str(tmp_path / "lake" / "interaction")).count() == 600
    assert p.learn.models["click"].seen == 600
    epochs = "eddyline_worker_source_epochs_total"
    assert _sample(p, epochs, stage="privatize", topic=RAW) == 1
    assert _sample(p, epochs, stage="learn", topic=RAW) == 1


@pytest.mark.parametrize(("scope", "stored", "learned"), [("store", 0, 100), ("learn", 100, 0)])
def test_a_withdrawn_consent_stops_storing_or_learning_at_once(
    p: Pipeline, tmp_path: Path, scope: str, stored: int, learned: int
) -> None:
    """All 100 rows belong to one user (within the budget), who withdrew one consent after
    they were privatised: the stage of that consent drops them, the other keeps them."""
    from eddyline.privacy.governance import Subject

    message = _raw(100, offset=3)
    rows = decode(message.value, message.headers).table
    assert rows is not None
    one_user = rows.set_column(
        rows.schema.get_field_index("user_id"), "user_id", pa.array(["u"] * 100)
    )
    value, headers = encode_arrow(one_user, "interaction:1")
    out = p.privatize.process(RawMessage(value, headers, message.source, 1e9), b"n" * 32)
    assert out.private is not None and out.rows == 100
    pseudonymizer = p.privatize.privatizer._pseudonymizer
    p.suppression.add(Subject.of("u", pseudonymizer, scope=scope, request_id="r"))  # type: ignore[arg-type]
    private = p.lake.prepare(*out.private, "events.interaction.private")
    asyncio.run(p.lake.commit([private]))
    asyncio.run(p.learn.learn("interaction", *out.private))
    from deltalake import DeltaTable

    uri = tmp_path / "lake" / "interaction"
    assert (DeltaTable(str(uri)).count() if uri.exists() else 0) == stored
    assert p.learn.models["click"].seen == learned
