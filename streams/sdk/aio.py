"""``AsyncEventProducer``: the SDK for asyncio apps (FastAPI and friends).

``emit`` only appends to an in-memory buffer, so it is called inline; anything that can
wait (``flush``, ``close``, waiting for spool room) runs off the event loop.

Examples:
    >>> import asyncio
    >>> async def main() -> None:
    ...     async with AsyncEventProducer() as producer:   # no network call yet
    ...         pass
    >>> asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from eddyline.schemas.events import BaseEvent
from eddyline.streams.kafka.settings import KafkaSettings, ProducerSettings
from eddyline.streams.sdk.producer import DeliveryReport, EventProducer
from eddyline.streams.sdk.spool import SpoolFullError


class AsyncEventProducer:
    """The asyncio face of :class:`EventProducer`; same arguments, awaitable methods."""

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        kafka: KafkaSettings | None = None,
        registry: CollectorRegistry | None = None,
        on_delivery: Callable[[DeliveryReport], None] | None = None,
    ) -> None:
        settings = settings or ProducerSettings()
        self._block_timeout = settings.block_timeout_s
        # The sync producer must never block the loop: it raises, and we wait here instead.
        self._sync = EventProducer(
            settings.model_copy(update={"on_full": "raise"}),
            kafka=kafka,
            registry=registry,
            on_delivery=on_delivery,
        )

    @property
    def delivered(self) -> int:
        return self._sync.delivered

    async def emit(
        self, event: BaseEvent | Mapping[str, Any], *, schema: type[BaseEvent] | None = None
    ) -> None:
        """Accept one event; if the spool is full, wait (without blocking the loop)."""
        deadline = time.monotonic() + self._block_timeout
        while True:
            try:
                if not self._sync.connected:  # first use connects: keep it off the loop
                    await asyncio.to_thread(self._sync.emit, event, schema=schema)
                else:
                    self._sync.emit(event, schema=schema)
                return
            except SpoolFullError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    async def flush(self, timeout: float = 30.0) -> int:
        """Send everything buffered; the number of envelopes still pending."""
        return await asyncio.to_thread(self._sync.flush, timeout)

    async def close(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self._sync.close, timeout)

    async def __aenter__(self) -> AsyncEventProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
