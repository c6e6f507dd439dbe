"""The producer SDK an app embeds: typed ``emit``, columnar batches, Arrow envelopes,
delivery that never loses an accepted event (spool), asyncio wrapper."""

from eddyline.streams.sdk.aio import AsyncEventProducer
from eddyline.streams.sdk.producer import DeliveryReport, EventProducer
from eddyline.streams.sdk.spool import SpoolFullError

__all__ = ["AsyncEventProducer", "DeliveryReport", "EventProducer", "SpoolFullError"]
