"""Model checkpoints: a model (with its detector) and the stream offsets it has learned.

A checkpoint is one pickle written atomically (temp file, fsync, rename), so a crash leaves
the previous checkpoint or the new one, never half of one. A restarted worker loads it and
skips the messages at or below its offsets: it neither starts from scratch nor learns an
event twice.

Pickles run code when loaded: the store trusts its own folder only.

Examples:
    >>> import tempfile
    >>> store = ModelStore(tempfile.mkdtemp())
    >>> store.save("demo", {"weights": [1, 2]}, {0: 41})
    >>> store.load("demo").offsets
    {0: 41}
"""

from __future__ import annotations

import os
import pickle
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Checkpoint:
    model: Any
    offsets: dict[int, int]  # raw partition -> last raw offset learned
    saved_at: float
    # raw partition -> the epoch (topic id) its offsets count in; checkpoints saved before
    # epochs were recorded have none
    epochs: dict[int, str] = field(default_factory=dict)


class ModelStore:
    """Latest checkpoint per model name, in a local folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / f"{name}.ckpt"

    def save(
        self, name: str, model: Any, offsets: dict[int, int], epochs: dict[int, str] | None = None
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        checkpoint = Checkpoint(model, dict(offsets), time.time(), dict(epochs or {}))
        data = pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)
        # A temp name of its own: two workers sharing a state folder must not rename each
        # other's half-written file.
        tmp = self.path(name).with_suffix(f".{os.getpid()}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(name))

    def load(self, name: str) -> Checkpoint | None:
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            return None
        checkpoint = pickle.loads(data)  # noqa: S301 - our own folder, written by save()
        assert isinstance(checkpoint, Checkpoint)
        if "epochs" not in checkpoint.__dict__:  # saved before epochs were recorded
            object.__setattr__(checkpoint, "epochs", {})
        return checkpoint
