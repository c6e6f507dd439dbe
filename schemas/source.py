"""Source positions: where in Kafka a message came from, and which incarnation of its topic.

Every stage that de-duplicates (the budget ledger, the Delta sink, the models' checkpoints)
counts raw offsets, so the position of a raw message travels with everything made of it
(the ``eddyline-source`` header of private envelopes). Offsets only mean something within
one incarnation of a topic: a topic deleted and created again under the same name starts
again at offset 0. So a position also names its topic's **epoch**, Kafka's topic id, and
every exactly-once key includes it: a recreated topic is a new epoch, never a silent skip.

A private envelope made of many raw messages (the intake groups single-event JSON messages)
names the range of raw offsets it covers, ``first``..``offset``, and holds each row's own raw
offset in a column (``OFFSET_COLUMN``): a replay cut differently overlaps what was taken
before only in part, and ``rows_after`` keeps the rows that are new.

Examples:
    >>> src = SourceRef("events.interaction", 2, 41, epoch="qTT0AJDVRX2pRIbK5RngwQ")
    >>> SourceRef.parse(src.header().decode()) == src
    True
    >>> src.key
    'events.interaction/2@qTT0AJDVRX2pRIbK5RngwQ'
    >>> SourceRef.parse("events.interaction/2/30-41@qTT0AJDVRX2pRIbK5RngwQ").start
    30
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

#: The column of a multi-message private envelope holding each row's raw offset; the lake
#: and the models drop it (``rows_after``) before anything is stored or learned.
OFFSET_COLUMN = "_raw_offset"


@dataclass(frozen=True)
class SourceRef:
    """One Kafka message's position: topic, partition, offset, and the topic's epoch (its
    topic id; empty where unknown). For a range of messages, ``offset`` is the last and
    ``first`` the first."""

    topic: str
    partition: int
    offset: int
    epoch: str = ""
    first: int | None = None

    def __post_init__(self) -> None:
        if self.first == self.offset:  # one message: one form
            object.__setattr__(self, "first", None)

    @property
    def start(self) -> int:
        """The first raw offset covered (``offset`` for one message)."""
        return self.offset if self.first is None else self.first

    @property
    def key(self) -> str:
        """The partition this position counts offsets of: ``topic/partition[@epoch]``."""
        base = f"{self.topic}/{self.partition}"
        return f"{base}@{self.epoch}" if self.epoch else base

    def header(self) -> bytes:
        offsets = str(self.offset) if self.start == self.offset else f"{self.first}-{self.offset}"
        base = f"{self.topic}/{self.partition}/{offsets}"
        return (f"{base}@{self.epoch}" if self.epoch else base).encode()

    @classmethod
    def parse(cls, text: str) -> SourceRef:
        text, _, epoch = text.partition("@")  # topic names cannot hold "@"
        topic, partition, offsets = text.rsplit("/", 2)
        first, _, last = offsets.partition("-")
        if last:
            return cls(topic, int(partition), int(last), epoch, int(first))
        return cls(topic, int(partition), int(first), epoch)


def rows_after(table: pa.Table, source: SourceRef, done: int) -> pa.Table | None:
    """The rows of a private envelope from ``source`` whose raw offset is past ``done`` (the
    last raw offset already taken; -1: none), without the offset column; None when the
    whole envelope was taken before."""
    if source.offset <= done:
        return None
    if OFFSET_COLUMN not in table.column_names:
        return table
    if source.start > done:
        return table.drop_columns([OFFSET_COLUMN])
    return table.filter(pc.greater(table[OFFSET_COLUMN], done)).drop_columns([OFFSET_COLUMN])
