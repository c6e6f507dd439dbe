"""What the delivery engine moves and reports: sealed envelopes on their way, the reports of
their fate, and librdkafka's statistics as metrics.

Examples:
    >>> env = Outgoing(7, "interaction", "events.interaction", 2, b"...",
    ...                [("eddyline-schema", b"interaction:1"), ("eddyline-count", b"40")], 40, 0.0)
    >>> env.key, Outgoing.from_spool(7, "events.interaction", 2, b"...", env.headers).count
    (('events.interaction', 2), 40)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from eddyline.schemas.envelope import H_COUNT, H_SCHEMA, Headers
from eddyline.streams.sdk.metrics import ProducerMetrics


@dataclass(frozen=True)
class DeliveryReport:
    """The fate of one envelope, passed to ``on_delivery``."""

    stream: str
    topic: str
    partition: int
    count: int
    error: str | None
    latency_s: float
    spooled: bool = False


@dataclass(frozen=True)
class Outgoing:
    """One sealed envelope on its way: its sequence number orders the spool."""

    seq: int
    stream: str
    topic: str
    partition: int
    value: bytes
    headers: Headers
    count: int
    created: float

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    @classmethod
    def from_spool(
        cls, seq: int, topic: str, partition: int, value: bytes, headers: Headers
    ) -> Outgoing:
        """A spooled envelope, its stream and count read back from its headers."""
        h = dict(headers)
        stream = h.get(H_SCHEMA, b"").decode().split(":")[0]
        count = int(h.get(H_COUNT, b"0") or 0)
        return cls(seq, stream, topic, partition, value, headers, count, time.monotonic())


class ClientStats:
    """librdkafka's statistics (``stats_cb``, every 5 s) as metrics: the brokers the client
    is connected to, and the produce requests it retried (an outage shows in both)."""

    def __init__(self, metrics: ProducerMetrics) -> None:
        self._metrics = metrics
        self._retries = 0

    def update(self, stats_json: str) -> None:
        stats: dict[str, Any] = json.loads(stats_json)
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        self._metrics.brokers_up.set(sum(b.get("state") == "UP" for b in brokers))
        retries = sum(int(b.get("txretries", 0)) for b in brokers)
        if retries > self._retries:
            self._metrics.kafka_retries.inc(retries - self._retries)
        self._retries = max(self._retries, retries)
