"""Registry versions answering predictions beside the online model.

``/predict/<model>?version=...`` on a worker: ``online`` (the default: the model learning
live), an alias (``champion``, ``challenger``, ``previous``) or a version number from the
registry (``online_learning/registry.py``), so an app can serve the champion the lifecycle
promoted, not only the online learner. An alias is looked up again at most every
``alias_ttl_s`` (5 s by default: a promotion is served within that); a version's scorer is
loaded once (from the object store, if the registry is there) and kept.

Examples:
    >>> parse_version("champion"), parse_version("3"), parse_version(None)
    ('champion', 3, 'online')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from eddyline.online_learning.learner import OnlineModel
from eddyline.online_learning.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from eddyline.online_learning.scoring import SpecScorer

ONLINE = "online"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)


class VersionNotServedError(LookupError):
    """The requested alias is unset or the version is not registered (HTTP 404)."""


def parse_version(raw: str | None) -> str | int:
    """``online``, an alias, or a version number; ValueError for anything else."""
    if raw is None or raw == ONLINE:
        return ONLINE
    if raw in ALIASES:
        return raw
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    raise ValueError(f"version must be online, {', '.join(ALIASES)} or a number, not {raw!r}")


class RegistryServing:
    """Answers for registry versions of the worker's models (thread-safe)."""

    def __init__(
        self,
        registry: ModelRegistry,
        alias_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.alias_ttl_s = alias_ttl_s
        self._clock = clock
        self._aliases: dict[tuple[str, str], tuple[float, int | None]] = {}
        self._scorers: dict[tuple[str, int], SpecScorer] = {}
        self._lock = threading.Lock()

    def resolve(self, model: str, which: str | int) -> int:
        """The registry version ``which`` names now."""
        if isinstance(which, int):
            return which
        now = self._clock()
        with self._lock:
            cached = self._aliases.get((model, which))
        if cached is None or now - cached[0] > self.alias_ttl_s:
            cached = (now, self.registry.alias(model, which))
            with self._lock:
                self._aliases[(model, which)] = cached
        if cached[1] is None:
            raise VersionNotServedError(f"model {model!r} has no {which} yet")
        return cached[1]

    def scorer(self, model: str, version: int) -> SpecScorer:
        with self._lock:
            found = self._scorers.get((model, version))
        if found is None:
            try:
                registered = self.registry.get(model, version)
            except KeyError as exc:
                raise VersionNotServedError(str(exc).strip("\"'")) from None
            found = SpecScorer.load(self.registry.artifact_dir(registered))
            with self._lock:
                self._scorers[(model, version)] = found
        return found

    def answer(
        self, online: OnlineModel, which: str | int, values: dict[str, Any]
    ) -> dict[str, Any]:
        """The registry version's answer for one row, shaped as the online model's."""
        row = online.parse_row(values)  # the same parsing and errors as the online model
        version = self.resolve(online.name, which)
        scorer = self.scorer(online.name, version)
        out = scorer.predict(pa.Table.from_pylist([row]))
        answer: dict[str, Any]
        if scorer.kind == "binary":
            answer = {"probability": float(out[0])}
        elif scorer.kind == "regression":
            answer = {"value": float(out[0])}
        else:
            probabilities = {c: float(p) for c, p in zip(scorer.classes, out[0], strict=False)}
            answer = {
                "class": scorer.classes[int(np.argmax(out[0]))],
                "probabilities": probabilities,
            }
        return {"model": online.name, "model_version": version, "served": which, **answer}
