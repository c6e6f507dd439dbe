"""Repeated events: the same ``event_id`` of the same user, sent again, is dropped.

A client that retries after a lost response (a collector client whose 200 never arrived,
the SDK after a lost acknowledgement) sends an event it already sent. The privacy stage
keeps, per event type and raw partition, a :class:`RepeatFilter`: a 64-bit key per event
released (the user's budget pseudonym and the ``event_id``, hashed) for the current window
of the worker's clock and the one before, so a repeat is caught for at least one window
(24 h by default) and at most two. A repeat is dropped before its budget is charged:
it is neither stored nor learned nor charged twice.

The keys are one-way hashes of a pseudonym and an id the client made (the collector's is
a UUID of Segment's ``messageId``): nothing here is personal data, and a forget request
has nothing to remove. They follow the raw partition like the budget ledger: the worker
saves the keys added since its last save as chunks in the budget topic
(``chunks``/``restore_chunk``) and the partition's next owner loads them.

Memory is 8 bytes a key in sorted numpy runs (merged eight at a time as they grow) behind
a Bloom filter (2-4 bytes a key held), so that a new key is rarely searched for. A
filter holds at most ``max_keys``: past that, the older window is dropped early (the
guarantee then covers less than a window; ``truncated`` counts it).

Examples:
    >>> import numpy as np
    >>> f = RepeatFilter(window_s=86_400)
    >>> f.check(np.array([1, 2, 1], np.uint64), window=0).tolist()
    [False, False, True]
    >>> f.check(np.array([2, 3], np.uint64), window=1).tolist()
    [True, False]
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa

_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
FANOUT = 8  # sorted runs merged at once
CHUNK_KEYS = 65_536  # keys per saved chunk: 512 KiB, under Kafka's default message limit


class RepeatFilter:
    """The keys of the events released by one event type in one raw partition, by window.

    ``check`` answers, for a batch of keys, which rows repeat a key of a live window or
    an earlier row of the batch, and remembers the others in ``window``."""

    def __init__(self, window_s: int = 86_400, max_keys: int = 4_000_000) -> None:
        self.window_s, self.max_keys = window_s, max_keys
        self._runs: dict[int, list[np.ndarray]] = {}  # window -> sorted runs of keys
        self._blooms: dict[int, _Bloom] = {}  # window -> a Bloom filter of its keys
        self._unsaved: dict[int, list[np.ndarray]] = {}  # window -> keys added since a save
        self._seq: dict[int, int] = {}  # window -> chunks saved (the next chunk's number)
        self.truncated = 0  # windows (or runs) dropped early to stay under max_keys
        self.reported = 0  # how many of those the worker has logged

    def __len__(self) -> int:
        return sum(len(run) for runs in self._runs.values() for run in runs)

    def window_of(self, epoch_s: float) -> int:
        return int(epoch_s // self.window_s)

    def check(self, keys: np.ndarray, window: int) -> np.ndarray:
        """Which of ``keys`` (uint64, in batch order) are repeats; the rest are remembered
        in ``window`` (the index of the window of the worker's clock)."""
        self._expire(window)
        repeat = np.zeros(len(keys), bool)
        if not len(keys):
            return repeat
        ordered = np.sort(keys)
        if (ordered[1:] == ordered[:-1]).any():  # a key twice in the batch: later rows repeat
            _, first = np.unique(keys, return_index=True)
            repeat[:] = True
            repeat[first] = False
        maybe = np.zeros(len(keys), bool)
        for bloom in self._blooms.values():
            maybe |= bloom.holds(keys)  # (in order would not pay for the argsort)
        ask = np.flatnonzero(maybe & ~repeat)  # the others are new for sure
        if len(ask):
            needles = keys[ask]
            found = np.zeros(len(ask), bool)
            for runs in self._runs.values():
                for run in runs:
                    at = np.searchsorted(run, needles)
                    found |= run[np.minimum(at, len(run) - 1)] == needles
            repeat[ask] = found
        added = np.sort(keys[~repeat]) if repeat.any() else ordered  # sorted, distinct
        if len(added):
            self._unsaved.setdefault(window, []).append(added)
            self._add_run(window, added)
        return repeat

    def _add_run(self, window: int, run: np.ndarray) -> None:
        """Add a sorted run of keys; merge runs as they double; stay under ``max_keys``."""
        runs = self._runs.setdefault(window, [])
        runs.append(run)
        bloom = self._blooms.get(window)
        held = sum(len(r) for r in runs)
        if bloom is None or bloom.bits < min(16 * held, 16 * self.max_keys):
            # (re)built at 32 bits a key held, up to 16 at max_keys: it grows with the window
            bloom = self._blooms[window] = _Bloom(min(32 * held, 16 * self.max_keys))
            for earlier in runs[:-1]:
                bloom.add(earlier)
        bloom.add(run)
        # Size-tiered: the last FANOUT runs merge once they are of one size (within 4x),
        # so a key is merged ~log8(keys / batch) times; the Bloom filter keeps the
        # searches few, however many runs there are.
        while len(runs) >= FANOUT and len(runs[-FANOUT]) <= 4 * len(runs[-1]):
            tail = runs[-FANOUT:]
            del runs[-FANOUT:]
            runs.append(np.sort(np.concatenate(tail), kind="stable"))  # merges sorted runs
        while len(self) > self.max_keys:
            self.truncated += 1
            oldest = min(self._runs)
            if len(self._runs) > 1 or len(self._runs[oldest]) == 1:
                self._runs.pop(oldest)
                self._blooms.pop(oldest, None)
                self._unsaved.pop(oldest, None)
            else:  # one window over the limit alone: its oldest keys go
                self._runs[oldest].pop(0)

    def _expire(self, window: int) -> None:
        """Forget the windows before the previous one (no look-up reaches them)."""
        for w in [w for w in self._runs if w < window - 1]:
            self._runs.pop(w)
            self._blooms.pop(w, None)
            self._unsaved.pop(w, None)

    # -- saving and restoring ----------------------------------------------------------

    def chunks(self, now_window: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The keys added since the last call, as chunks named ``<window>/<n>`` (values:
        ``{"keys": base64 of little-endian uint64}``), and the names of saved chunks whose
        window has expired (to delete)."""
        self._expire(now_window)
        out: dict[str, dict[str, Any]] = {}
        for window, parts in sorted(self._unsaved.items()):
            keys = np.concatenate(parts).astype("<u8")
            for start in range(0, len(keys), CHUNK_KEYS):
                n = self._seq.get(window, 0)
                self._seq[window] = n + 1
                raw = keys[start : start + CHUNK_KEYS].tobytes()
                out[f"{window}/{n}"] = {"keys": base64.b64encode(raw).decode()}
        self._unsaved.clear()
        expired = [w for w in self._seq if w not in self._runs]  # expired or truncated
        gone = [f"{w}/{n}" for w in expired for n in range(self._seq.pop(w))]
        return out, gone

    def restore_chunk(self, name: str, chunk: dict[str, Any], now_window: int) -> int:
        """Load one saved chunk (from ``chunks``); how many keys it held (0 if expired)."""
        window, n = (int(part) for part in name.split("/"))
        self._seq[window] = max(self._seq.get(window, 0), n + 1)
        if window < now_window - 1:
            return 0
        keys = np.frombuffer(base64.b64decode(chunk["keys"]), "<u8").astype(np.uint64)
        self._add_run(window, np.sort(keys))
        return len(keys)


class _Bloom:
    """A blocked Bloom filter of 64-bit keys: one 64-bit word per key (the key's top bits
    pick it) with two bits set in it (bits 0-5 and 6-11), so a key costs one memory access,
    and keys given in order touch the words in order. Rebuilt twice as large whenever it
    holds more than a key per 16 bits, up to 16 bits a key at the filter's ``max_keys``
    (8 MiB per window at 4 million): a new key is a candidate for a repeat ~0.2-2% of the
    time, and only candidates are searched in the sorted runs."""

    def __init__(self, bits: int) -> None:
        log2 = max(14, (bits // 64 - 1).bit_length())  # 2**log2 words, at least 128 KiB
        self.bits = 64 << log2
        self.shift = np.uint64(64 - log2)
        self.words = np.zeros(1 << log2, np.uint64)

    def _probe(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        one, six = np.uint64(1), np.uint64(63)
        bits = (one << (keys & six)) | (one << ((keys >> np.uint64(6)) & six))
        return (keys >> self.shift).astype(np.intp), bits

    def add(self, ordered: np.ndarray) -> None:
        """Add keys given in ascending order: a key's word follows the previous one's, so
        the bits of one word are OR-ed together first and each word is written once."""
        at, bits = self._probe(ordered)
        starts = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
        self.words[at[starts]] |= np.bitwise_or.reduceat(bits, starts)

    def holds(self, keys: np.ndarray) -> np.ndarray:
        at, bits = self._probe(keys)
        found: np.ndarray = (self.words[at] & bits) == bits
        return found


def event_keys(
    user_names: list[str], user_indices: np.ndarray, event_ids: pa.Array | pa.ChunkedArray
) -> np.ndarray:
    """Each row's key: its user's pseudonym (``user_names[user_indices]``; hex HMAC output,
    whose first 64 bits are uniform) mixed with a hash of its ``event_id`` (FNV-1a over
    the id's bytes, vectorised when the ids have one length, as UUIDs do)."""
    users = _hex64(user_names)  # uniform already (HMAC output)
    with np.errstate(over="ignore"):
        keys: np.ndarray = _mix(_fnv(event_ids) ^ (users[user_indices] * _MIX1))
    return keys


_NIBBLE = np.array(
    [int(chr(c), 16) if chr(c) in "0123456789abcdefABCDEF" else c & 15 for c in range(256)],
    np.uint8,
)


def _hex64(names: list[str]) -> np.ndarray:
    """The first 16 hex digits of each name as a 64-bit integer, vectorised."""
    digits = _NIBBLE[np.array(names, dtype="S16").view(np.uint8).reshape(len(names), 16)]
    packed = np.ascontiguousarray(digits[:, 0::2] * np.uint8(16) + digits[:, 1::2])
    return packed.view(">u8").reshape(len(names)).astype(np.uint64)


def _fnv(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each string's UTF-8 bytes: FNV-1a over 8-byte little-endian words
    (the last one zero-padded), then the length; 5 steps for a UUID, vectorised when the
    strings have one length, one by one (same result) when not."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = column.cast(pa.string())
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + n + 1]
    lengths = np.diff(offsets)
    data = np.frombuffer(column.buffers()[2], np.uint8)
    if n and (lengths == lengths[0]).all():
        size = int(lengths[0])
        grid = np.zeros((n, -(-size // 8) * 8), np.uint8)
        grid[:, :size] = data[offsets[0] : offsets[-1]].reshape(n, size)
        words = grid.view("<u8")
        h = np.full(n, _FNV_OFFSET, np.uint64)
        with np.errstate(over="ignore"):
            for j in range(words.shape[1]):
                h = (h ^ words[:, j]) * _FNV_PRIME
        return h ^ np.uint64(size)
    out = np.empty(n, np.uint64)
    for i, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)):
        raw = data[start:end].tobytes()
        v = int(_FNV_OFFSET)
        for at in range(0, len(raw), 8):
            word = int.from_bytes(raw[at : at + 8].ljust(8, b"\0"), "little")
            v = ((v ^ word) * int(_FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
        out[i] = v ^ len(raw)
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit moves every output bit."""
    x = x.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


__all__ = ["CHUNK_KEYS", "RepeatFilter", "event_keys"]
