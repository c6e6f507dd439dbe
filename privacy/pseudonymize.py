"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a secret key.

The same id under the same key always gives the same pseudonym, so a user's events stay
joinable inside a key's lifetime; without the key the pseudonym cannot be reversed or
recomputed. The key id travels beside each pseudonym so keys can rotate.

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
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

# 128 bits of the HMAC, hex: collision-free for any realistic user count, half the bytes.
_HEX_CHARS = 32


class HmacPseudonymizer:
    """Maps identifiers to keyed pseudonyms, column at a time."""

    def __init__(self, key: bytes, *, key_id: str, cache_size: int = 1_000_000) -> None:
        if len(key) < 16:
            raise ValueError("a pseudonym key needs at least 16 bytes")
        self._key = key
        self.key_id = key_id
        # Users recur across batches: remembering recent pseudonyms skips most HMACs. The
        # cache lives in the worker, which sees raw ids anyway; it is never written out.
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def one(self, value: str) -> str:
        """The pseudonym of one identifier."""
        found = self._cache.get(value)
        if found is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            found = hmac.digest(self._key, value.encode(), "sha256").hex()[:_HEX_CHARS]
            self._cache[value] = found
        return found

    def apply(self, column: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Pseudonymise a string column.

        HMAC has no vectorised form, so this loops in Python, but once per distinct id in
        the batch (users repeat within a batch), then maps back with a vectorised take.
        """
        uniques = pc.unique(column)
        mapped = pa.array([self.one(v) for v in uniques.to_pylist()], type=pa.string())
        return pc.take(mapped, pc.index_in(column, value_set=uniques))


def load_or_create_key(path: Path) -> bytes:
    """The key stored at ``path``, creating a random one (mode 0600) on first use."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    path.touch(mode=0o600)
    path.write_text(key.hex())
    return key
