"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a secret key, keys rotating.

The same id under the same key always gives the same pseudonym, so a user's events stay
joinable inside a key's lifetime; without the key the pseudonym cannot be reversed or
recomputed. The key id travels beside each pseudonym (column ``key_id``).

Rotation: a keyring holds keys with the time each starts (``not_before``); an event is
pseudonymised under the key in force at its ``occurred_at``, so a replay, a late event or a
second worker all give the same pseudonym. Keys start on a budget-window boundary (checked
at start-up by the worker), so one user's events in one window share one pseudonym and the
budget ledger never sees a user twice.

The keyring file (a secret: mode 0600, never logged) has one key per line::

    # key_id  not_before (UTC, ISO 8601)  key (hex, >= 16 bytes)
    k1  1970-01-01  5f1c...
    k2  2027-01-01  9ab0...

Examples:
    >>> import pyarrow as pa
    >>> p = HmacPseudonymizer(b"k" * 32, key_id="k1")
    >>> out = p.apply(pa.array(["alice", "bob", "alice"]))
    >>> out[0].as_py() == out[2].as_py(), len(out[0].as_py())
    (True, 32)
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# 128 bits of the HMAC, hex: collision-free for any realistic user count, half the bytes.
_HEX_CHARS = 32


def _pseudonym(secret: bytes, value: str) -> str:
    return hmac.digest(secret, value.encode(), "sha256").hex()[:_HEX_CHARS]


@dataclass(frozen=True)
class PseudonymKey:
    """One key of a keyring: in force from ``not_before`` (epoch seconds) until the next."""

    key_id: str
    secret: bytes = field(repr=False)
    not_before: int = 0

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("a pseudonym key needs at least 16 bytes")
        if not self.key_id or any(c.isspace() for c in self.key_id):
            raise ValueError(f"a key id must be a non-empty word, not {self.key_id!r}")


@dataclass(frozen=True)
class Encoding:
    """A string column dictionary-encoded: its distinct values and each row's index into
    them. The pseudonymizer's encoding of a pseudonym column holds its cached string
    objects, whose hashes Python has already computed (two ids with one pseudonym would
    need an HMAC-SHA256 collision in 128 bits)."""

    names: list[str]
    indices: pa.Array

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray) -> Encoding:
        """Any string column's encoding: one hash pass (Arrow) for the distinct values."""
        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries().combine_chunks()
        return cls(encoded.dictionary.to_pylist(), encoded.indices)


class HmacPseudonymizer:
    """Maps identifiers to keyed pseudonyms, column at a time, under a rotating keyring."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        key_id: str = "k1",
        keys: Sequence[PseudonymKey] = (),
        cache_size: int = 1_000_000,
    ) -> None:
        ring = list(keys) or ([PseudonymKey(key_id, key)] if key is not None else [])
        if not ring:
            raise ValueError("a pseudonymizer needs a key")
        ring.sort(key=lambda k: k.not_before)
        if len({k.key_id for k in ring}) != len(ring):
            raise ValueError("key ids in a keyring must be unique")
        self.keys: tuple[PseudonymKey, ...] = tuple(ring)
        self._starts = np.array([k.not_before * 1_000_000 for k in ring], dtype=np.int64)
        # Users recur across batches: remembering recent pseudonyms skips most HMACs. The
        # cache lives in the worker, which sees raw ids anyway; it is never written out.
        self._caches: list[dict[str, str]] = [{} for _ in ring]
        self._cache_size = cache_size

    @property
    def key_id(self) -> str:
        """The id of the newest key (the one in force now, unless a key starts later)."""
        return self.key_at(datetime.now(UTC)).key_id

    def key_at(self, at: datetime) -> PseudonymKey:
        """The key in force at ``at`` (the oldest key for anything before all of them)."""
        return self.keys[self.key_index_at(at.timestamp())]

    def key_index_at(self, epoch_s: float) -> int:
        """The index in ``keys`` of the key in force at ``epoch_s`` (seconds)."""
        index = int(np.searchsorted(self._starts, int(epoch_s * 1e6), side="right"))
        return max(index - 1, 0)

    def encode_under(
        self, column: pa.Array | pa.ChunkedArray, key: int
    ) -> tuple[pa.Array, Encoding]:
        """(pseudonyms of ``column`` under ``keys[key]``, their encoding)."""
        return self._encode_key(column, key)

    def one(self, value: str, key: int = -1) -> str:
        """The pseudonym of one identifier under ``keys[key]`` (default: the newest)."""
        cache = self._caches[key]
        found = cache.get(value)
        if found is None:
            if len(cache) >= self._cache_size:
                cache.clear()
            found = cache[value] = _pseudonym(self.keys[key].secret, value)
        return found

    def _apply_key(self, column: pa.Array | pa.ChunkedArray, key: int) -> pa.Array:
        return self._encode_key(column, key)[0]

    def _encode_key(
        self, column: pa.Array | pa.ChunkedArray, key: int
    ) -> tuple[pa.Array, Encoding]:
        """(pseudonyms, their encoding: the distinct pseudonyms and each row's index there)."""
        # HMAC has no vectorised form, so this loops in Python, but once per distinct id in
        # the batch (users repeat within a batch), then maps back with a vectorised take.
        raw = Encoding.of(column)  # the distinct ids and each row's index among them
        values = raw.names
        cache = self._caches[key]
        hits = [*map(cache.get, values)]
        if None in hits:  # new users: their HMACs in one comprehension, then cached
            secret = self.keys[key].secret
            misses = [v for v, f in zip(values, hits, strict=True) if f is None]
            if len(cache) + len(misses) > self._cache_size:
                cache.clear()
            cache.update({v: _pseudonym(secret, v) for v in misses})
            found = [*map(cache.__getitem__, values)]
        else:
            found = cast("list[str]", hits)  # no None: every id was cached
        mapped = pa.array(found, type=pa.string())
        return pc.take(mapped, raw.indices), Encoding(found, raw.indices)

    def apply(self, column: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Pseudonymise a string column under the newest key."""
        return self._apply_key(column, len(self.keys) - 1)

    def apply_at(
        self, column: pa.Array | pa.ChunkedArray, at: pa.Array | pa.ChunkedArray
    ) -> tuple[pa.Array, pa.Array]:
        """(pseudonyms, key ids) of a string column, each row under the key in force at its
        timestamp in ``at``."""
        pids, key_ids, _ = self.encode_at(column, at)
        return pids, key_ids

    def encode_at(
        self, column: pa.Array | pa.ChunkedArray, at: pa.Array | pa.ChunkedArray
    ) -> tuple[pa.Array, pa.Array, Encoding | None]:
        """``apply_at``, and the pseudonyms' encoding when one key covers the batch (what
        the budget ledger would otherwise recompute: ``BudgetLedger.charge(encoded=)``)."""
        if len(self.keys) == 1:
            pids, encoding = self._encode_key(column, 0)
            return pids, pa.repeat(self.keys[0].key_id, len(column)), encoding
        micros = pc.cast(at, pa.int64()).to_numpy(zero_copy_only=False)
        which = np.maximum(np.searchsorted(self._starts, micros, side="right") - 1, 0)
        out = np.empty(len(column), dtype=object)
        for key in np.unique(which).tolist():
            rows = np.flatnonzero(which == key)
            part = self._apply_key(pc.take(column, pa.array(rows)), key)
            out[rows] = part.to_numpy(zero_copy_only=False)
        names = np.array([k.key_id for k in self.keys], dtype=object)[which]
        return pa.array(out, pa.string()), pa.array(names, pa.string()), None


def load_or_create_key(path: Path) -> bytes:
    """The key stored at ``path``, creating a random one (mode 0600) on first use."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    path.touch(mode=0o600)
    path.write_text(key.hex())
    return key


def _epoch(text: str) -> int:
    at = datetime.fromisoformat(text)
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def load_keyring(path: Path) -> list[PseudonymKey]:
    """The keys of a keyring file (format in the module docstring); errors name the line,
    never the key."""
    keys = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        try:
            key_id, start, secret = parts
            keys.append(PseudonymKey(key_id, bytes.fromhex(secret), _epoch(start)))
        except ValueError as exc:
            reason = str(exc) if "key" in str(exc) else "expected: key_id not_before hex-key"
            raise ValueError(f"{path}:{number}: {reason}") from None
    if not keys:
        raise ValueError(f"{path}: no keys")
    return keys


def add_key(path: Path, key_id: str, not_before: datetime) -> PseudonymKey:
    """Append a new random key starting at ``not_before`` to the keyring at ``path``
    (created, mode 0600, if missing)."""
    existing = load_keyring(path) if path.exists() else []
    key = PseudonymKey(key_id, secrets.token_bytes(32), int(not_before.timestamp()))
    HmacPseudonymizer(keys=[*existing, key])  # refuses a duplicate id
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
    with path.open("a") as f:
        f.write(f"{key_id}  {not_before.astimezone(UTC).isoformat()}  {key.secret.hex()}\n")
    return key
