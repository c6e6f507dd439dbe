"""What the delivery engine moves: sealed envelopes on their way, and reports of their fate.

Examples:
    >>> env = Outgoing(7, "interaction", "events.interaction", 2, b"...",
    ...                [("eddyline-schema", b"interaction:1"), ("eddyline-count", b"40")], 40, 0.0)
    >>> env.key, Outgoing.from_spool(7, "events.interaction", 2, b"...", env.headers).count
    (('events.interaction', 2), 40)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from eddyline.schemas.envelope import H_COUNT, H_SCHEMA, Headers


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
