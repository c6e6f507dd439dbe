"""Group commit: the collector answers a request once its events are durable.

Requests emit into the SDK's buffers; every ``window_s`` the committer seals them (one
envelope per partition for the whole window: ``EventProducer.seal``) and, beside the next
window, waits until Kafka acknowledged those envelopes or the spool holds them
(``wait_durable``), then answers the window's requests: True (durable) or False (not in
``timeout_s``: the server answers 503)."""

from __future__ import annotations

import asyncio
import logging

from eddyline.streams.sdk.producer import EventProducer

log = logging.getLogger("eddyline.collector")


class Committer:
    """Group commit: seals what a window's requests emitted, answers them once durable."""

    def __init__(self, producer: EventProducer, window_s: float, timeout_s: float) -> None:
        self.producer, self.window_s, self.timeout_s = producer, window_s, timeout_s
        self.waiting: list[tuple[asyncio.Future[bool], int]] = []
        self.waiting_events = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def durable(self, events: int) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting.append((future, events))
        self.waiting_events += events
        self._wake.set()
        return await future

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.window_s)  # let the window's requests join
            batch, self.waiting = self.waiting, []
            try:
                mark = await asyncio.to_thread(self.producer.seal)
            except Exception:  # the loop must live on: these requests get a 503
                log.exception("sealing the window's envelopes failed")
                mark = -1
            task = asyncio.create_task(self._answer(batch, mark))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, batch: list[tuple[asyncio.Future[bool], int]], mark: int) -> None:
        try:
            ok = mark >= 0 and await asyncio.to_thread(
                self.producer.wait_durable, mark, self.timeout_s
            )
        except Exception:
            log.exception("waiting for envelopes to be durable failed")
            ok = False
        for future, events in batch:
            self.waiting_events -= events
            if not future.done():
                future.set_result(ok)
