"""Data subjects and what they asked for: forgotten, or consent withdrawn for storage or for
learning. The pieces every stage shares; the jobs that act on requests are
``streams.worker.governance``.

A request names a user by their raw id, which eddyline never stores. It keeps instead:

* the **subject**: HMAC-SHA256 of the raw id under a key derived from the keyring's first
  key (``subject_key``), stable across key rotations, so the privacy stage recognises the
  user's future events whatever key pseudonymises them then;
* the user's **pseudonyms** under every key of the keyring, which the lake and the models
  (and the Delta DELETE) match, since past the privacy boundary only pseudonyms exist.

Examples:
    >>> from eddyline.privacy.pseudonymize import HmacPseudonymizer
    >>> p = HmacPseudonymizer(b"k" * 32)
    >>> s = Suppression()
    >>> s.add(Subject.of("alice", p, scope="forget", request_id="r1"))
    >>> s.forgotten(p, ["alice", "bob"])
    [True, False]
    >>> p.one("alice") in s.pids("learn")
    True
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from eddyline.privacy.pseudonymize import HmacPseudonymizer

Scope = Literal["forget", "store", "learn"]
# What each scope withholds: "forget" everything; "store" storage (rows deleted, no more
# stored; learning goes on); "learn" learning (nothing deleted; no more learned).
_WITHHOLDS: dict[str, set[str]] = {
    "forget": {"privatize", "store", "learn"},
    "store": {"store"},
    "learn": {"learn"},
}


def subject_key(pseudonymizer: HmacPseudonymizer) -> bytes:
    """The key of subject ids: derived from the keyring's first key (keep it in the ring)."""
    return hmac.digest(pseudonymizer.keys[0].secret, b"eddyline-subject", "sha256")


def subject_of(user_id: str, key: bytes) -> str:
    return hmac.digest(key, user_id.encode(), "sha256").hex()[:32]


@dataclass(frozen=True)
class Subject:
    """One request's subject: never the raw id."""

    subject: str
    pids: tuple[str, ...]  # the user's pseudonym under every key of the keyring
    scope: Scope
    request_id: str

    @classmethod
    def of(
        cls, user_id: str, pseudonymizer: HmacPseudonymizer, *, scope: Scope, request_id: str
    ) -> Subject:
        pids = tuple(pseudonymizer.one(user_id, i) for i in range(len(pseudonymizer.keys)))
        subject = subject_of(user_id, subject_key(pseudonymizer))
        return cls(subject, pids, scope, request_id)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Subject:
        return cls(data["subject"], tuple(data["pids"]), data["scope"], data["request_id"])


class Suppression:
    """Every subject whose events are withheld, by scope; thread-safe (a feed thread adds,
    the stages read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subjects: dict[str, Subject] = {}
        self._pids: dict[str, set[str]] = {"privatize": set(), "store": set(), "learn": set()}
        self._raw: set[str] = set()  # subject ids withheld at the privacy stage
        self._ids: dict[str, str] = {}  # raw id -> subject id: users recur across batches
        self.version = 0  # bumped by every change: stages apply what is new

    def add(self, subject: Subject) -> None:
        with self._lock:
            self._subjects[subject.subject] = subject
            for stage in _WITHHOLDS[subject.scope]:
                self._pids[stage].update(subject.pids)
            if "privatize" in _WITHHOLDS[subject.scope]:
                self._raw.add(subject.subject)
            self.version += 1

    def pids(self, stage: Literal["store", "learn", "privatize"]) -> frozenset[str]:
        """The pseudonyms a stage must drop (``privatize``: those the ledgers forget)."""
        with self._lock:
            return frozenset(self._pids[stage])

    def subjects(self) -> list[Subject]:
        with self._lock:
            return list(self._subjects.values())

    def forgotten(self, pseudonymizer: HmacPseudonymizer, user_ids: Sequence[str]) -> list[bool]:
        """Which of these raw ids belong to a forgotten subject (one HMAC per id: the privacy
        stage asks for the distinct ids of a batch only, and only while any is forgotten)."""
        with self._lock:
            if not self._raw:
                return [False] * len(user_ids)
            ids, key = self._ids, None
            if len(ids) > 1_000_000:
                ids.clear()
            out = []
            for user in user_ids:  # a loop per distinct id of a batch, as for pseudonyms
                found = ids.get(user)
                if found is None:
                    key = key or subject_key(pseudonymizer)
                    found = ids[user] = subject_of(user, key)
                out.append(found in self._raw)
            return out

    @property
    def empty(self) -> bool:
        return not self._subjects
