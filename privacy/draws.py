"""Random draws by row: the same event gets the same noise however the batches are cut.

The mechanisms (``privacy.mechanisms``) take their randomness from a :class:`Draws`: each
call returns draws for every row of the batch, one row per event. Two kinds:

* :class:`KeyedDraws`, the worker's: every uniform is a pseudo-random function of a secret
  and the event's identity (its raw topic's partition and epoch, the raw offset of its
  message and its index in that message) and of *which* draw it is (the mechanism's stream,
  the call, the position in the call), computed with AES-256 (``cryptography``: OpenSSL,
  one call per batch). An event privatised again after a crash, a rebalance, or in a batch
  cut differently (the intake groups single-event messages by what one fetch returned) is
  noised exactly as the first time, so no reader of the private topics ever sees two
  noisings of one event to average; without the secret the noise cannot be recomputed.
* :class:`GeneratorDraws`: a numpy ``Generator`` seen through the same interface (tests,
  benchmarks, and the stage's fallback without a secret).

Rows are independent by construction: a row's draws never depend on which other rows share
its batch. A mechanism that retries rows (the discrete Gaussian's rejection sampling) asks
for the rows still pending (:meth:`Draws.rows`); the call counter is shared, so attempt *t*
of a row always reads the same uniforms.

Examples:
    >>> import numpy as np
    >>> key = bytes(32)
    >>> a = KeyedDraws.for_source(key, "events.x/0@id", np.array([7, 7, 9]), np.array([0, 1, 0]))
    >>> b = KeyedDraws.for_source(key, "events.x/0@id", np.array([9]), np.array([0]))
    >>> bool(a.stream(1).random()[2] == b.stream(1).random()[0])  # same event, same draw
    True
"""

from __future__ import annotations

import hmac
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_UNIT = 2.0**-53  # a uniform's resolution: the top 53 bits of a 64-bit word


class Draws(Protocol):
    """Draws for ``n`` rows: row i of every result belongs to event i of the batch."""

    n: int

    def random(self, k: int | None = None) -> np.ndarray:
        """Uniforms in [0, 1): shape (n,), or (n, k)."""
        ...

    def rows(self, index: np.ndarray) -> Draws:
        """The draws of these rows only (their next calls read what theirs would have)."""
        ...

    def stream(self, number: int) -> Draws:
        """An independent stream for one use (one mechanism on one column)."""
        ...


def exponential(draws: Draws, k: int | None = None) -> np.ndarray:
    """Standard exponential draws (inversion: -log(1 - U))."""
    out: np.ndarray = -np.log1p(-draws.random(k))
    return out


def integers(draws: Draws, low: int, high: int) -> np.ndarray:
    """One integer per row, uniform in [low, high) (bias below 2^-40 for any range used)."""
    out: np.ndarray = low + np.floor(draws.random() * (high - low)).astype(np.int64)
    return out


class GeneratorDraws:
    """A numpy ``Generator`` as :class:`Draws` (draws in call order; nothing keyed)."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng, self.n = rng, n

    def random(self, k: int | None = None) -> np.ndarray:
        return self.rng.random(self.n if k is None else (self.n, k))

    def rows(self, index: np.ndarray) -> GeneratorDraws:
        return GeneratorDraws(self.rng, len(index))

    def stream(self, number: int) -> GeneratorDraws:
        return self


def as_draws(rng: np.random.Generator | Draws, n: int) -> Draws:
    """``rng`` as draws for ``n`` rows (a ``Generator`` is wrapped)."""
    if isinstance(rng, np.random.Generator):
        return GeneratorDraws(rng, n)
    if rng.n != n:
        raise ValueError(f"draws for {rng.n} rows asked for {n}")
    return rng


# The second word of an AES block (the first is the row's raw offset): the row's index in
# its message, the stream, the call and the block within the call.
_INDEX_SHIFT, _STREAM_SHIFT, _CALL_SHIFT = 40, 32, 16
_MAX_INDEX, _MAX_STREAM, _MAX_CALL, _MAX_BLOCKS = 1 << 24, 1 << 8, 1 << 16, 1 << 16


class KeyedDraws:
    """Draws that are a keyed function of each row's identity (module docstring).

    ``offsets``: each row's raw offset; ``indices``: its index in its raw message (0 for a
    single-event message). One AES block (two uniforms) per row per pair of draws."""

    def __init__(
        self,
        key: bytes,
        offsets: np.ndarray,
        indices: np.ndarray,
        stream: int = 0,
        calls: list[int] | None = None,
    ) -> None:
        if len(key) != 32:
            raise ValueError("a draws key is 32 bytes")
        offsets = np.asarray(offsets, np.int64)
        indices = np.asarray(indices, np.int64)
        if len(offsets) and (offsets.min() < 0 or indices.min() < 0):
            raise ValueError("offsets and row indices are never negative")
        if len(indices) and indices.max() >= _MAX_INDEX:
            raise ValueError(f"a message holds at most {_MAX_INDEX:,} rows")
        if not 0 <= stream < _MAX_STREAM:
            raise ValueError(f"streams are 0-{_MAX_STREAM - 1}")
        self._key = key
        self._offsets = offsets.astype(np.uint64)
        self._ids = indices.astype(np.uint64) << np.uint64(_INDEX_SHIFT)
        self._stream = stream
        self._calls = calls if calls is not None else [0]  # shared with ``rows`` views
        self.n = len(offsets)

    @classmethod
    def for_source(
        cls, secret: bytes, source_key: str, offsets: np.ndarray, indices: np.ndarray
    ) -> KeyedDraws:
        """Draws for rows of one raw partition (``SourceRef.key``: topic, partition and
        epoch) under a noise secret: a recreated topic, whose offsets start again, never
        reuses a draw."""
        key = hmac.digest(secret, b"eddyline.draws:" + source_key.encode(), "sha256")
        return cls(key, offsets, indices)

    def random(self, k: int | None = None) -> np.ndarray:
        call = self._calls[0]
        self._calls[0] += 1
        if call >= _MAX_CALL:
            raise ValueError(f"more than {_MAX_CALL:,} calls on one stream")
        width = 1 if k is None else k
        blocks = (width + 1) // 2
        if blocks > _MAX_BLOCKS:
            raise ValueError(f"at most {2 * _MAX_BLOCKS:,} draws per row per call")
        tag = np.uint64((self._stream << _STREAM_SHIFT) | (call << _CALL_SHIFT))
        words = np.empty((self.n, blocks, 2), np.uint64)
        words[:, :, 0] = self._offsets[:, None]
        words[:, :, 1] = (self._ids | tag)[:, None] | np.arange(blocks, dtype=np.uint64)
        encryptor = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()  # noqa: S305
        # ECB is the point: each block is one counter, encrypted alone (a PRF), not a message.
        out = np.frombuffer(encryptor.update(words.tobytes()), np.uint64)
        uniforms = (out >> np.uint64(11)).astype(np.float64) * _UNIT
        uniforms = uniforms.reshape(self.n, 2 * blocks)[:, :width]
        return uniforms[:, 0].copy() if k is None else uniforms

    def rows(self, index: np.ndarray) -> KeyedDraws:
        return self._view(self._offsets[index], self._ids[index], self._stream, self._calls)

    def stream(self, number: int) -> KeyedDraws:
        if not 0 <= number < _MAX_STREAM:
            raise ValueError(f"streams are 0-{_MAX_STREAM - 1}")
        return self._view(self._offsets, self._ids, number, [0])

    def _view(
        self, offsets: np.ndarray, ids: np.ndarray, stream: int, calls: list[int]
    ) -> KeyedDraws:
        view = KeyedDraws.__new__(KeyedDraws)
        view._key, view._offsets, view._ids = self._key, offsets, ids
        view._stream, view._calls, view.n = stream, calls, len(offsets)
        return view
