"""Source positions: where in Kafka a message came from, and which incarnation of its topic.

Every stage that de-duplicates (the budget ledger, the Delta sink, the models' checkpoints)
counts raw offsets, so the position of a raw message travels with everything made of it
(the ``eddyline-source`` header of private envelopes). Offsets only mean something within
one incarnation of a topic: a topic deleted and created again under the same name starts
again at offset 0. So a position also names its topic's **epoch**, Kafka's topic id, and
every exactly-once key includes it: a recreated topic is a new epoch, never a silent skip.

Examples:
    >>> src = SourceRef("events.interaction", 2, 41, epoch="qTT0AJDVRX2pRIbK5RngwQ")
    >>> SourceRef.parse(src.header().decode()) == src
    True
    >>> src.key
    'events.interaction/2@qTT0AJDVRX2pRIbK5RngwQ'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceRef:
    """One Kafka message's position: topic, partition, offset, and the topic's epoch (its
    topic id; empty where unknown)."""

    topic: str
    partition: int
    offset: int
    epoch: str = ""

    @property
    def key(self) -> str:
        """The partition this position counts offsets of: ``topic/partition[@epoch]``."""
        base = f"{self.topic}/{self.partition}"
        return f"{base}@{self.epoch}" if self.epoch else base

    def header(self) -> bytes:
        base = f"{self.topic}/{self.partition}/{self.offset}"
        return (f"{base}@{self.epoch}" if self.epoch else base).encode()

    @classmethod
    def parse(cls, text: str) -> SourceRef:
        text, _, epoch = text.partition("@")  # topic names cannot hold "@"
        topic, partition, offset = text.rsplit("/", 2)
        return cls(topic, int(partition), int(offset), epoch)
