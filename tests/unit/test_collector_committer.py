"""The collector's group commit: when a window closes (streams/collector/committer.py).

The producer here is a stand-in that only records each window's emit (when, and how many
requests' rows it held) and takes as long as told; ``when_durable`` answers at once; the
table is the list of the requests' rows. Margins are tens of milliseconds against
differences of 50 ms or more, so a slow box cannot flip them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from eddyline.schemas.events import InteractionEvent
from eddyline.schemas.source import SourceRef
from eddyline.streams.collector import committer as committer_module
from eddyline.streams.collector.committer import Committer

WINDOW_S = 0.05
EMIT_S = 0.15


class _Producer:
    """What the committer calls of ``EventProducer``, timed."""

    def __init__(self) -> None:
        self.emits: list[tuple[float, float]] = []  # (started, ended) of each window's emit
        self.tables: list[int] = []  # how many requests' rows each emitted table held

    def emit_many(self, model: Any, table: Any) -> int:
        self.tables.append(len(table))
        started = time.monotonic()
        time.sleep(EMIT_S)
        self.emits.append((started, time.monotonic()))
        return 0

    def seal(self) -> int:
        return len(self.emits)

    def when_durable(self, mark: int, callback: Any) -> None:
        callback()


class _Rows(list[int]):
    """A request's gathered rows of one type (only its length matters here)."""


def _submit(committer: Committer) -> Any:
    rows: Any = {InteractionEvent: _Rows([0])}
    return committer.submit(rows, SourceRef("collector/test", 0, 0), [])


def _run(scenario: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[_Producer, float]:
    producer = _Producer()
    monkeypatch.setattr(committer_module, "table", lambda parts: parts)  # no Arrow here

    async def main() -> float:
        committer = Committer(producer, WINDOW_S, timeout_s=5)  # type: ignore[arg-type]
        runner = asyncio.create_task(committer.run())
        try:
            return float(await scenario(committer))
        finally:
            runner.cancel()

    return producer, asyncio.run(main())


def test_a_lone_request_waits_the_window_for_others_to_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(committer: Committer) -> float:
        started = time.monotonic()
        await _submit(committer)
        return started

    producer, started = _run(scenario, monkeypatch)
    (emit,) = producer.emits
    assert emit[0] - started >= WINDOW_S - 0.005


def test_requests_within_one_window_share_one_emit_and_seal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(committer: Committer) -> float:
        first = asyncio.create_task(_submit(committer))
        await asyncio.sleep(WINDOW_S / 5)
        taken = await asyncio.gather(first, _submit(committer))
        assert taken == [{InteractionEvent: 1}, {InteractionEvent: 1}]  # both answered
        return 0.0

    producer, _ = _run(scenario, monkeypatch)
    assert len(producer.emits) == 1
    assert producer.tables == [2]  # one table made of both requests' rows
