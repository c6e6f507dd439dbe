"""Source positions: where in Kafka a message came from.

Every stage that de-duplicates (the budget ledger, the Delta sink, the models' checkpoints)
counts raw offsets, so the position of a raw message travels with everything made of it
(the ``eddyline-source`` header of private envelopes).

Examples:
    >>> src = SourceRef("events.interaction", 2, 41)
    >>> SourceRef.parse(src.header().decode()) == src
    True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceRef:
    """One Kafka message's position: topic, partition, offset."""

    topic: str
    partition: int
    offset: int

    def header(self) -> bytes:
        return f"{self.topic}/{self.partition}/{self.offset}".encode()

    @classmethod
    def parse(cls, text: str) -> SourceRef:
        topic, partition, offset = text.rsplit("/", 2)
        return cls(topic, int(partition), int(offset))
