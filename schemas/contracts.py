"""Schema contracts kept in the repo, and the compatibility check between versions.

Each registered model ``name:version`` is exported as JSON Schema to
``schemas/contracts/<name>.v<version>.json`` with a fingerprint. ``eddyline schemas check``
fails when an exported version changed without a version bump, when a version has not been
exported, or when a new version breaks the compatibility mode its model declares.

Modes follow Confluent Schema Registry, applied to eddyline's data (every event carries every
field of its writer's schema, optional ones possibly null; readers ignore unknown fields):

* ``BACKWARD``: readers on the new version read data written with the previous one
  (added fields must be optional; types may only widen).
* ``FORWARD``: readers on the previous version read data written with the new one.
* ``FULL``: both. ``*_TRANSITIVE``: against every earlier version, not just the previous one.
* ``NONE``: no check.

Examples:
    >>> old = {"properties": {"a": {"type": "integer"}}, "required": ["a"]}
    >>> new = {"properties": {"a": {"type": "number"}, "b": {"type": "string"}}, "required": ["a"]}
    >>> breaking_changes(reader=new, writer=old)
    []
    >>> breaking_changes(reader=old, writer=new)
    ['a: writer type number is not readable as integer']
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eddyline.schemas.registry import REGISTRY, SchemaRegistry

Compatibility = Literal[
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
]
CONTRACTS_DIR = Path(__file__).parent / "contracts"
_NOISE_KEYS = {"title", "description", "examples"}


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _NOISE_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def fingerprint(schema: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``schema`` without titles and descriptions."""
    canonical = json.dumps(_strip(schema), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class _Prop:
    types: frozenset[str]
    enum: frozenset[Any] | None
    fmt: str | None
    lower: float | None
    upper: float | None
    min_len: int | None
    max_len: int | None

    @classmethod
    def of(cls, schema: dict[str, Any]) -> _Prop:
        options = schema.get("anyOf", [schema])
        types: set[str] = set()
        enum: set[Any] | None = None
        merged: dict[str, Any] = {}
        for opt in options:
            if "const" in opt or "enum" in opt:
                enum = (enum or set()) | set(opt.get("enum", [opt.get("const")]))
            types.add(opt.get("type", "any"))
            merged.update({k: v for k, v in opt.items() if k != "type"})
        return cls(
            frozenset(types),
            frozenset(enum) if enum is not None else None,
            merged.get("format"),
            merged.get("minimum"),
            merged.get("maximum"),
            merged.get("minLength"),
            merged.get("maxLength"),
        )


def _readable(name: str, reader: _Prop, writer: _Prop) -> list[str]:
    """Why values written as ``writer`` may not validate as ``reader`` (empty: they do)."""
    problems = []
    for t in writer.types - reader.types:
        if not (t == "integer" and "number" in reader.types) and "any" not in reader.types:
            problems.append(
                f"{name}: writer type {t} is not readable as {'/'.join(sorted(reader.types))}"
            )
    if reader.enum is not None and (writer.enum is None or not writer.enum <= reader.enum):
        problems.append(f"{name}: writer values outside the reader's allowed values")
    if reader.fmt != writer.fmt:
        problems.append(f"{name}: format {writer.fmt} read as {reader.fmt}")
    bounds: list[tuple[str, float | None, float | None, bool]] = [
        ("minimum", reader.lower, writer.lower, True),
        ("maximum", reader.upper, writer.upper, False),
        ("minLength", reader.min_len, writer.min_len, True),
        ("maxLength", reader.max_len, writer.max_len, False),
    ]
    for label, r, w, is_lower in bounds:
        looser = w is None or (w < r if is_lower else w > r) if r is not None else False
        if r is not None and looser:
            problems.append(f"{name}: the reader's {label} {r} rejects values the writer allows")
    return problems


def breaking_changes(*, reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Why data written with ``writer`` may fail for readers of ``reader`` (empty: it won't)."""
    r_props, w_props = reader.get("properties", {}), writer.get("properties", {})
    required = set(reader.get("required", []))
    problems = []
    for name, r_schema in r_props.items():
        if name not in w_props:
            if name in required:
                problems.append(f"{name}: required by the reader, absent from the writer")
            continue
        problems += _readable(name, _Prop.of(r_schema), _Prop.of(w_props[name]))
    return problems


def check_pair(mode: Compatibility, new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """The breaking changes of ``new`` against ``old`` under ``mode``."""
    problems = []
    if mode.startswith(("BACKWARD", "FULL")):
        problems += [f"BACKWARD: {p}" for p in breaking_changes(reader=new, writer=old)]
    if mode.startswith(("FORWARD", "FULL")):
        problems += [f"FORWARD: {p}" for p in breaking_changes(reader=old, writer=new)]
    return problems


def contract(model: Any) -> dict[str, Any]:
    """The contract document of one model class."""
    schema = model.model_json_schema()
    return {
        "name": model.event_name,
        "version": model.event_version,
        "compatibility": model.compatibility,
        "fingerprint": fingerprint(schema),
        "schema": schema,
    }


def load_contracts(directory: Path = CONTRACTS_DIR) -> dict[str, dict[int, dict[str, Any]]]:
    """Exported contracts by name, then version."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        out.setdefault(doc["name"], {})[doc["version"]] = doc
    return out


def export(directory: Path = CONTRACTS_DIR, registry: SchemaRegistry = REGISTRY) -> list[Path]:
    """Write the contract of every registered version that has no file yet."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in registry.models():
        path = directory / f"{model.event_name}.v{model.event_version}.json"
        if not path.exists():
            path.write_text(json.dumps(contract(model), indent=2, sort_keys=True) + "\n")
            written.append(path)
    return written


def check(directory: Path = CONTRACTS_DIR, registry: SchemaRegistry = REGISTRY) -> list[str]:
    """Every problem with the registered models against the exported contracts."""
    known = load_contracts(directory)
    problems = []
    for model in registry.models():
        doc, sid = contract(model), model.schema_id()
        versions = dict(known.get(model.event_name, {}))
        stored = versions.get(model.event_version)
        if stored is None:
            problems.append(f"{sid}: not exported; run `eddyline schemas export`")
        elif stored["fingerprint"] != doc["fingerprint"]:
            problems.append(
                f"{sid}: changed since it was exported; bump event_version "
                "instead of editing a published version"
            )
        versions[model.event_version] = doc
        problems += [f"{sid}: {p}" for p in _against_history(versions, model.event_version)]
    return problems


def _against_history(versions: dict[int, dict[str, Any]], version: int) -> list[str]:
    new = versions[version]
    mode: Compatibility = new["compatibility"]
    earlier = sorted(v for v in versions if v < version)
    if mode == "NONE" or not earlier:
        return []
    targets = earlier if mode.endswith("TRANSITIVE") else earlier[-1:]
    return [
        f"vs v{v}: {p}"
        for v in targets
        for p in check_pair(mode, new["schema"], versions[v]["schema"])
    ]
