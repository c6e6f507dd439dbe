"""The model registry: versions, lineage, metrics, privacy spent and aliases, in Delta.

Two append-only Delta tables under ``root`` and an artifact folder:

* ``models``: one row per registered version (name, version, lineage: the drift event and
  table versions it was trained from, the code version, metrics, the ε/δ Opacus's accountant
  measured and its history, for composing later runs);
* ``aliases``: one row per alias move (``champion``, ``challenger``, ``previous``); an alias
  is its latest row;
* ``artifacts/<name>/<version>/``: the model files.

Registering is atomic: the artifact is written to a fresh folder first, and the version
exists only once its ``models`` row is committed (one Delta commit). A crash before that
leaves an unreferenced folder, never a half-registered version.

Examples:
    >>> import tempfile
    >>> reg = ModelRegistry(tempfile.mkdtemp())
    >>> reg.alias("click", "champion") is None
    True
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from eddyline.schemas.events import ModelEvent
from eddyline.schemas.storage import Folder, StorageOptions, join

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"

_MODELS = pa.schema(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("artifact", pa.string()),
        ("drift_key", pa.string()),
        ("lineage", pa.string()),  # JSON
        ("metrics", pa.string()),  # JSON
        ("epsilon", pa.float64()),
        ("delta", pa.float64()),
        ("accountant_history", pa.string()),  # JSON: [[noise_multiplier, sample_rate, steps]]
        ("data_key", pa.string()),  # which data the ε was spent on (composed per key)
        ("code_version", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
_ALIASES = pa.schema(
    [
        ("name", pa.string()),
        ("alias", pa.string()),
        ("version", pa.int64()),
        ("previous_version", pa.int64()),
        ("reason", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version."""

    name: str
    version: int
    artifact: str  # a folder or an object-store URI: ``ModelRegistry.artifact_dir`` reads it
    drift_key: str | None
    lineage: dict[str, Any]
    metrics: dict[str, float]
    epsilon: float
    delta: float
    accountant_history: list[list[float]]
    data_key: str


def code_version() -> str:
    """The git commit of the running code if known, else the package version."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"eddyline {version('eddyline')}"


class ModelRegistry:
    """Registered model versions and their aliases, under ``root``: a folder or an
    object-store URI (``schemas/storage.py``; options: ``EDDYLINE_STORAGE_*`` by default)."""

    def __init__(self, root: str | Path, options: StorageOptions | None = None) -> None:
        self.root = str(root).rstrip("/")
        self.options = options if options is not None else StorageOptions.from_env()
        self._delta = self.options.for_delta()
        self.models_uri = join(self.root, "models")
        self.aliases_uri = join(self.root, "aliases")
        self.artifacts = Folder(join(self.root, "artifacts"), self.options)
        self._downloaded: dict[str, Path] = {}  # artifact URI -> local copy

    # -- reading ---------------------------------------------------------------------------

    def _rows(self, uri: str) -> list[dict[str, Any]]:
        if not DeltaTable.is_deltatable(uri, self._delta):
            return []
        table = DeltaTable(uri, storage_options=self._delta).to_pyarrow_table()
        rows: list[dict[str, Any]] = table.to_pylist()
        return rows

    def artifact_dir(self, version: ModelVersion) -> Path:
        """A local folder holding ``version``'s files: the artifact folder itself, or (on an
        object store) a copy downloaded once into a cache folder, removed when this registry
        is garbage-collected or the process exits."""
        if not self.artifacts.remote:
            return Path(version.artifact)
        local = self._downloaded.get(version.artifact)
        if local is not None:
            return local
        # a private folder of this process (artifacts are code-bearing: never a shared path)
        local = Path(tempfile.mkdtemp(prefix="eddyline-artifact-"))
        weakref.finalize(self, shutil.rmtree, local, ignore_errors=True)
        prefix = version.artifact[len(self.artifacts.root) + 1 :]
        for name in self.artifacts.names(prefix):
            data = self.artifacts.get(name)
            if data is None:
                raise FileNotFoundError(f"{join(self.artifacts.root, name)} vanished")
            target = local / name[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self._downloaded[version.artifact] = local
        return local

    def versions(self, name: str) -> list[ModelVersion]:
        rows = sorted(
            (r for r in self._rows(self.models_uri) if r["name"] == name),
            key=lambda r: r["version"],
        )
        return [self._version(r) for r in rows]

    def get(self, name: str, version: int) -> ModelVersion:
        for v in self.versions(name):
            if v.version == version:
                return v
        raise KeyError(f"model {name!r} has no version {version}")

    def by_drift_key(self, drift_key: str) -> ModelVersion | None:
        """The version a drift event (by its idempotency key) already produced, if any."""
        for r in self._rows(self.models_uri):
            if r["drift_key"] == drift_key:
                return self._version(r)
        return None

    def spent(self, data_key: str) -> list[list[float]]:
        """Every training run's accountant history on ``data_key``, concatenated."""
        history: list[list[float]] = []
        for r in self._rows(self.models_uri):
            if r["data_key"] == data_key:
                history += json.loads(r["accountant_history"])
        return history

    def alias(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points to (its latest move), or None."""
        moves = [
            r for r in self._rows(self.aliases_uri) if (r["name"], r["alias"]) == (name, alias)
        ]
        if not moves:
            return None
        latest = max(moves, key=lambda r: r["created_at"])
        version: int | None = latest["version"]
        return None if version is None or version < 0 else version

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self._rows(self.aliases_uri) if r["name"] == name),
            key=lambda r: r["created_at"],
        )

    # -- writing ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        write_artifact: Callable[[Path], None],
        *,
        metrics: dict[str, float],
        epsilon: float,
        delta: float,
        accountant_history: list[list[float]],
        data_key: str,
        lineage: dict[str, Any],
        drift_key: str | None = None,
    ) -> ModelVersion:
        """Write the artifact (``write_artifact(folder)``), then commit the version row."""
        folder = self._write_artifact(name, write_artifact)
        version = max((v.version for v in self.versions(name)), default=0) + 1
        row = {
            "name": name,
            "version": version,
            "artifact": folder,
            "drift_key": drift_key,
            "lineage": json.dumps(lineage, default=str),
            "metrics": json.dumps(metrics),
            "epsilon": epsilon,
            "delta": delta,
            "accountant_history": json.dumps(accountant_history),
            "data_key": data_key,
            "code_version": code_version(),
            "created_at": datetime.now(UTC),
        }
        # The commit point: before it, the version does not exist.
        rows = pa.Table.from_pylist([row], _MODELS)
        write_deltalake(self.models_uri, rows, mode="append", storage_options=self._delta)
        return self._version(row)

    def _write_artifact(self, name: str, write_artifact: Callable[[Path], None]) -> str:
        """The artifact's location: a fresh folder, written locally then (on an object
        store) uploaded file by file; nothing refers to it until the version row commits."""
        folder = join(self.artifacts.root, name, uuid.uuid4().hex)
        local = Path(folder) if not self.artifacts.remote else Path(tempfile.mkdtemp())
        local.mkdir(parents=True, exist_ok=True)
        try:
            write_artifact(local)
            if self.artifacts.remote:
                prefix = folder[len(self.artifacts.root) + 1 :]
                for path in sorted(p for p in local.rglob("*") if p.is_file()):
                    self.artifacts.put(f"{prefix}/{path.relative_to(local)}", path.read_bytes())
        except BaseException:
            if not self.artifacts.remote:
                shutil.rmtree(local, ignore_errors=True)
            raise
        finally:
            if self.artifacts.remote:
                shutil.rmtree(local, ignore_errors=True)
        return folder

    def set_alias(self, name: str, alias: str, version: int | None, reason: str) -> int | None:
        """Point ``alias`` at ``version`` (None: clear it); the version it pointed to."""
        previous = self.alias(name, alias)
        row = {
            "name": name,
            "alias": alias,
            "version": -1 if version is None else version,
            "previous_version": previous,
            "reason": reason,
            "created_at": datetime.now(UTC),
        }
        rows = pa.Table.from_pylist([row], _ALIASES)
        write_deltalake(self.aliases_uri, rows, mode="append", storage_options=self._delta)
        return previous

    def orphans(self) -> list[str]:
        """Artifact folders no version refers to (left by a crash before registering)."""
        used = {r["artifact"] for r in self._rows(self.models_uri)}
        folders = {"/".join(n.split("/")[:2]) for n in self.artifacts.names() if n.count("/") >= 2}
        return sorted(f for f in (join(self.artifacts.root, x) for x in folders) if f not in used)

    @staticmethod
    def _version(r: dict[str, Any]) -> ModelVersion:
        return ModelVersion(
            r["name"],
            int(r["version"]),
            r["artifact"],
            r["drift_key"],
            json.loads(r["lineage"]),
            json.loads(r["metrics"]),
            float(r["epsilon"]),
            float(r["delta"]),
            json.loads(r["accountant_history"]),
            r["data_key"],
        )


__all__ = ["ModelRegistry", "ModelVersion", "code_version"]


def registry_change(
    model: str, version: int, kind: Any, alias: str | None, previous: int | None, reason: str
) -> ModelEvent:
    """The ``ModelEvent`` announcing a registry change on ``signals.models``."""
    return ModelEvent(
        model=model,
        model_version=version,
        kind=kind,
        alias=alias,
        previous_version=previous,
        reason=reason,
    )
