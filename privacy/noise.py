"""Noise secrets: replay-stable noise from a secret used for nothing else, then destroyed.

Every row's noise is drawn from a pseudorandom function of the noise secret and the row's
identity: its raw topic, partition and offset, and its index in that message
(``privacy.draws.KeyedDraws``). A row privatised again after a crash or a rebalance, alone
or in a batch cut differently, is therefore noised exactly as the first time, so no reader
of the private topic ever sees two noisings of one event to average.

The secret is not derived from anything else: it is 32 random bytes from the OS CSPRNG,
one per (stream, raw partition, window), made by the worker that owns the partition when it
first needs one. Nobody else holds it: not the pseudonym key (which `eddyline budget show`
and anyone linking pseudonyms need), not the budget ledger. The worker keeps it in its own
compacted changelog topic (``<app id>-noise-changelog``) so that the partition's next owner
replays with the same secret, and destroys it (a tombstone; compaction then drops it) once
no message it served can be replayed: ``keep_windows`` windows after its own, which covers
the raw topics' retention. From then on the noise of those messages cannot be recomputed
by anyone, including eddyline.

Which window: the raw message's Kafka timestamp (the broker's append time: raw topics are
created with ``message.timestamp.type=LogAppendTime``), clamped to the windows a replay can
need, so that no sender can make the worker keep secrets for windows of its choosing.

Examples:
    >>> keys = NoiseKeys(window_s=86_400, keep_windows=2, store={})
    >>> name = keys.name("interaction", 0, keys.window_for(86_400 * 10.5, now_s=86_400 * 10.6))
    >>> name, keys.get(name) is None
    ('interaction/0/10', True)
    >>> keys.store[name] = NoiseKeys.new().hex()
    >>> keys.expired(now_s=86_400 * 12.1), keys.expired(now_s=86_400 * 13.1)
    ([], ['interaction/0/10'])
"""

from __future__ import annotations

import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass

import numpy as np


@dataclass
class NoiseKeys:
    """The noise secrets one worker holds, by ``"<stream>/<partition>/<window>"``.

    ``store`` maps names to hex secrets (read from the noise topic when a partition is
    assigned: ``streams.worker.state``)."""

    window_s: int
    keep_windows: int
    store: MutableMapping[str, str]

    @staticmethod
    def name(stream: str, partition: int, window: int) -> str:
        return f"{stream}/{partition}/{window}"

    @staticmethod
    def new() -> bytes:
        """A fresh secret (32 bytes from the OS CSPRNG)."""
        return secrets.token_bytes(32)

    def window_for(self, timestamp_s: float, now_s: float) -> int:
        """The window of a message with this Kafka timestamp, clamped to those a replay can
        need (from ``keep_windows`` ago to the next window)."""
        return self.windows_for(np.array([timestamp_s]), now_s)[0]

    def windows_for(self, timestamps_s: np.ndarray, now_s: float) -> list[int]:
        """``window_for`` of many timestamps at once."""
        now = int(now_s // self.window_s)
        found = np.clip(timestamps_s // self.window_s, now - self.keep_windows, now + 1)
        return [int(w) for w in found.astype(np.int64).tolist()]

    def get(self, name: str) -> bytes | None:
        found = self.store.get(name)
        return None if found is None else bytes.fromhex(found)

    def expired(self, now_s: float) -> list[str]:
        """The secrets no replay can need any more: to be destroyed."""
        oldest = int(now_s // self.window_s) - self.keep_windows
        return sorted(name for name in self.store if int(name.rsplit("/", 1)[1]) < oldest)
