"""Group commit: the collector answers a request once its events are durable.

Segment requests hand their gathered columns to the committer (``submit``); every
``window_s`` it makes the window's events of each type into one table and emits it in one
``emit_many`` call (a call costs ~1.5 ms whatever its size, so 100-event requests one by
one paid ~15 µs an event for it), falling back to each request's own calls one by one
(``Gathered.rows``, ``emit_rows``: invalid calls dead-lettered one by one) only when the
window's table is refused; then it seals the producer's buffers (one envelope per
partition for the whole window: ``EventProducer.seal``) and, beside the next window, waits
until Kafka acknowledged those envelopes or the spool holds them (``wait_durable``), then
answers the window's requests. Requests that emitted their events themselves (the native
endpoint) only wait (``durable``). The emitting and sealing run on a thread, so the event
loop reads the next requests meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import pyarrow as pa

from eddyline.schemas.deadletter import DeadLetter
from eddyline.schemas.errors import EventValidationError
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.source import SourceRef
from eddyline.streams.collector.gather import Gathered, table
from eddyline.streams.collector.limits import HttpError
from eddyline.streams.collector.sending import FULL, emit_rows
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.sdk.spool import SpoolFullError

log = logging.getLogger("eddyline.collector")

Rows = dict[type[BaseEvent], Gathered]


@dataclass
class _Request:
    """One request waiting in a window: its rows to emit (none: emitted already), what
    was taken of them by event type, its dead letters, and its answer."""

    future: asyncio.Future[bool]
    events: int
    rows: Rows = field(default_factory=dict)
    source: SourceRef | None = None
    dead: list[DeadLetter] = field(default_factory=list)
    taken: dict[type[BaseEvent], int] = field(default_factory=dict)
    error: HttpError | None = None


class Committer:
    """Group commit (module docstring)."""

    def __init__(self, producer: EventProducer, window_s: float, timeout_s: float) -> None:
        self.producer, self.window_s, self.timeout_s = producer, window_s, timeout_s
        self.waiting: list[_Request] = []
        self.waiting_events = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def durable(self, events: int) -> bool:
        """Wait until the events this request emitted are durable (False: not in time)."""
        request = self._join(events)
        return await request.future

    async def submit(
        self, rows: Rows, source: SourceRef, dead: list[DeadLetter]
    ) -> dict[type[BaseEvent], int]:
        """Emit ``rows`` in this window and wait until they are durable: how many of each
        type were taken (the invalid ones are added to ``dead``). Raises ``HttpError``
        503 when the spool is full or the events are not durable in time."""
        request = self._join(sum(len(g) for g in rows.values()), rows, source, dead)
        ok = await request.future
        if request.error is not None:
            raise request.error
        if not ok and any(request.taken.values()):
            raise not_durable()
        return request.taken

    def _join(
        self,
        events: int,
        rows: Rows | None = None,
        source: SourceRef | None = None,
        dead: list[DeadLetter] | None = None,
    ) -> _Request:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        request = _Request(future, events, rows or {}, source, dead if dead is not None else [])
        self.waiting.append(request)
        self.waiting_events += events
        self._wake.set()
        return request

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.window_s)  # let the window's requests join
            batch, self.waiting = self.waiting, []
            try:
                mark = await asyncio.to_thread(self._emit_and_seal, batch)
            except Exception:  # the loop must live on: these requests get a 503
                log.exception("sealing the window's envelopes failed")
                mark = -1
            task = asyncio.create_task(self._answer(batch, mark))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _emit_and_seal(self, batch: list[_Request]) -> int:
        """Emit the window's rows, one call per event type; seal; the mark to wait for."""
        by_model: dict[type[BaseEvent], list[_Request]] = {}
        for request in batch:
            for model in request.rows:
                by_model.setdefault(model, []).append(request)
        for model, requests in by_model.items():
            self._emit(model, requests)
        return self.producer.seal()

    def _emit(self, model: type[BaseEvent], requests: list[_Request]) -> None:
        try:
            self.producer.emit_many(model, table([r.rows[model] for r in requests]))
        except (EventValidationError, pa.ArrowException, TypeError, OverflowError):
            for r in requests:  # nothing was taken: each request's calls one by one
                self._emit_one_by_one(model, r)
            return
        except SpoolFullError as exc:
            for r in requests:
                r.error = HttpError(503, "spool_full", FULL, retry_after=exc.retry_after or 5)
            return
        for r in requests:
            r.taken[model] = len(r.rows[model])

    def _emit_one_by_one(self, model: type[BaseEvent], r: _Request) -> None:
        assert r.source is not None
        rows, rejected = r.rows[model].rows()
        r.dead.extend(why.letter(r.source, i) for i, why in rejected)
        try:
            r.taken[model] = emit_rows(self.producer, model, rows, r.source, r.dead)
        except HttpError as exc:
            r.error = exc

    async def _answer(self, batch: list[_Request], mark: int) -> None:
        ok = False
        if mark >= 0:
            loop = asyncio.get_running_loop()
            durable: asyncio.Future[None] = loop.create_future()

            def done() -> None:  # on the producer's reporting thread
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(_settle, durable)

            self.producer.when_durable(mark, done)
            try:
                await asyncio.wait_for(durable, self.timeout_s)
                ok = True
            except TimeoutError:
                ok = False
        for request in batch:
            self.waiting_events -= request.events
            if not request.future.done():
                request.future.set_result(ok)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # (not timed out meanwhile)
        future.set_result(None)


def not_durable() -> HttpError:
    return HttpError(
        503, "not_durable", "Kafka and the spool did not take the events in time", retry_after=5
    )
