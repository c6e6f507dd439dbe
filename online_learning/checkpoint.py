"""Model checkpoints: a model (with its detector) and the stream offsets it has learned.

A checkpoint is one pickle written atomically (locally: temp file, fsync, rename; on an
object store: one PUT), so a crash leaves the previous checkpoint or the new one, never half
of one. A restarted worker loads it and
skips the messages at or below its offsets: it neither starts from scratch nor learns an
event twice.

Pickles run code when loaded: the store trusts its own folder or bucket only (keep write
access to it as narrow as to the worker itself).

Examples:
    >>> import tempfile
    >>> store = ModelStore(tempfile.mkdtemp())
    >>> store.save("demo", {"weights": [1, 2]}, {0: 41})
    >>> store.load("demo").offsets
    {0: 41}
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eddyline.schemas.storage import Folder, StorageOptions


@dataclass(frozen=True)
class Checkpoint:
    model: Any
    offsets: dict[int, int]  # raw partition -> last raw offset learned
    saved_at: float
    # raw partition -> the epoch (topic id) its offsets count in; checkpoints saved before
    # epochs were recorded have none
    epochs: dict[int, str] = field(default_factory=dict)


class ModelStore:
    """Latest checkpoint per model name, in a local folder or under an object-store URI
    (``schemas/storage.py``): every worker of a group can read what the model's owner saved."""

    def __init__(self, root: str | Path, options: StorageOptions | None = None) -> None:
        self.folder = Folder(root, options)

    @property
    def root(self) -> str:
        return self.folder.root

    @staticmethod
    def name_of(name: str) -> str:
        return f"{name}.ckpt"

    def save(
        self, name: str, model: Any, offsets: dict[int, int], epochs: dict[int, str] | None = None
    ) -> None:
        checkpoint = Checkpoint(model, dict(offsets), time.time(), dict(epochs or {}))
        self.folder.put(self.name_of(name), pickle.dumps(checkpoint, pickle.HIGHEST_PROTOCOL))

    def modified(self, name: str) -> float | None:
        """When ``name``'s checkpoint was last written (the store's clock), None if never."""
        return self.folder.modified(self.name_of(name))

    def load(self, name: str) -> Checkpoint | None:
        data = self.folder.get(self.name_of(name))
        if data is None:
            return None
        checkpoint = pickle.loads(data)  # noqa: S301 - our own store, written by save()
        assert isinstance(checkpoint, Checkpoint)
        if "epochs" not in checkpoint.__dict__:  # saved before epochs were recorded
            object.__setattr__(checkpoint, "epochs", {})
        return checkpoint
