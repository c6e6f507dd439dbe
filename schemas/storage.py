"""Where eddyline keeps its files: a local folder or an object-store URI.

The lake (``EDDYLINE_LAKE_PATH``), the model checkpoints (``EDDYLINE_CHECKPOINT_PATH``) and
the model registry (``EDDYLINE_REGISTRY_PATH``) each take a local path or a URI:
``s3://bucket/prefix``, ``az://container/prefix`` (also ``abfss://container@account...``)
or ``gs://bucket/prefix``. One set of storage options serves all three, from the
environment: ``EDDYLINE_STORAGE_<KEY>=value`` becomes the option ``<key>`` (lower case),
the keys delta-rs and Rust's ``object_store`` take, e.g.::

    EDDYLINE_STORAGE_AZURE_STORAGE_ACCOUNT_NAME=myaccount
    EDDYLINE_STORAGE_AZURE_STORAGE_ACCOUNT_KEY=...        # a secret: never logged
    EDDYLINE_STORAGE_AWS_REGION=eu-west-1
    EDDYLINE_STORAGE_ALLOW_HTTP=true                       # emulators only

Every value is held as a pydantic ``SecretStr``: the options print as their key names only.
Delta tables are read and written by delta-rs with these options; other files (checkpoints,
registry artefacts) through ``obstore``, the Python binding of the same ``object_store``
crate, so both see the same store with the same credentials. docs/storage.md says which
stores keep concurrent Delta commits safe and what each needs.

Examples:
    >>> is_remote("az://lake/events"), is_remote("/var/lib/eddyline/lake")
    (True, False)
    >>> join("s3://bucket/lake/", "interaction")
    's3://bucket/lake/interaction'
    >>> StorageOptions.from_env({"EDDYLINE_STORAGE_AWS_SECRET_ACCESS_KEY": "hunter2"})
    StorageOptions(aws_secret_access_key=**********)
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from eddyline.schemas.errors import UserError

PREFIX = "EDDYLINE_STORAGE_"
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.I)
REMOTE_SCHEMES = frozenset({"s3", "s3a", "az", "azure", "abfs", "abfss", "gs", "gcs"})
# object_store's client options (not the provider's configuration): obstore takes them
# apart, delta-rs takes them with the rest.
_CLIENT_KEYS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "timeout",
        "proxy_url",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "user_agent",
    }
)


class StorageError(UserError):
    """A storage location that is malformed, or an object store that refused or cannot be
    reached with the configured options."""


def is_remote(location: str | Path) -> bool:
    """True for an object-store URI (``s3://``, ``az://``, ``abfss://``, ``gs://``...)."""
    match = _SCHEME.match(str(location))
    if match is None or match.group(1).lower() == "file":
        return False
    scheme = match.group(1).lower()
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(
            f"unsupported storage scheme {scheme!r} in {location!r}: use a local path or "
            f"{', '.join(s + '://' for s in sorted(REMOTE_SCHEMES))}"
        )
    return True


def join(root: str | Path, *parts: str) -> str:
    """``root/part/...`` for a path or a URI (``Path`` would turn ``s3://`` into ``s3:/``)."""
    out = str(root).rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@dataclass(frozen=True)
class StorageOptions:
    """Object-store options, secret by default (see the module docstring)."""

    values: Mapping[str, SecretStr] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageOptions:
        env = os.environ if environ is None else environ
        found = {
            k[len(PREFIX) :].lower(): SecretStr(v) for k, v in env.items() if k.startswith(PREFIX)
        }
        return cls(found)

    @classmethod
    def of(cls, options: Mapping[str, str] | None) -> StorageOptions:
        return cls({k: SecretStr(v) for k, v in (options or {}).items()})

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}=**********" for k in sorted(self.values))
        return f"StorageOptions({shown})"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.values)

    def for_delta(self) -> dict[str, str] | None:
        """The options as delta-rs takes them (None when there are none)."""
        if not self.values:
            return None
        return {k: v.get_secret_value() for k, v in self.values.items()}

    def for_obstore(self) -> tuple[dict[str, str], dict[str, str]]:
        """(provider configuration, client options) as obstore's ``from_url`` takes them."""
        config: dict[str, str] = {}
        client: dict[str, str] = {}
        for key, secret in self.values.items():
            bare = re.sub(r"^(azure_|aws_|google_)", "", key)
            if bare in _CLIENT_KEYS:
                client[bare] = secret.get_secret_value()
            else:
                config[key] = secret.get_secret_value()
        return config, client


class Folder:
    """A folder of whole objects (checkpoints, registry artefacts) in a local directory or
    under an object-store URI. A ``put`` is atomic either way: a reader sees the previous
    object or the new one, never part of one (local: temp file, fsync, rename; object
    stores: one PUT)."""

    def __init__(self, root: str | Path, options: StorageOptions | None = None) -> None:
        self.root = str(root).rstrip("/")
        self.remote = is_remote(self.root)
        # None: the process's EDDYLINE_STORAGE_* settings
        self.options = StorageOptions.from_env() if options is None else options
        self._store: Any = None

    def __repr__(self) -> str:
        return f"Folder({self.root!r})"

    def _obstore(self) -> Any:
        if self._store is None:
            from obstore.store import from_url

            config, client = self.options.for_obstore()
            try:
                # the keys are the user's, checked by object_store itself at run time
                self._store = from_url(self.root, config=config, client_options=client)  # type: ignore[call-overload]
            except Exception as exc:  # obstore raises its own tree; report it in one line
                raise StorageError(f"cannot open {self.root}: {_first_line(exc)}") from None
        return self._store

    def local(self, name: str) -> Path:
        return Path(self.root) / name

    def put(self, name: str, data: bytes) -> None:
        if self.remote:
            import obstore

            self._call(obstore.put, name, data)
            return
        path = self.local(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temp name of its own: two processes sharing a folder must not rename each
        # other's half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def get(self, name: str) -> bytes | None:
        """The object's bytes, or None if there is none."""
        if self.remote:
            import obstore

            try:
                return bytes(self._call(obstore.get, name).bytes())
            except FileNotFoundError:
                return None
        try:
            return self.local(name).read_bytes()
        except FileNotFoundError:
            return None

    def modified(self, name: str) -> float | None:
        """When the object was last written (seconds since the epoch, by the store's clock),
        or None if there is none."""
        if self.remote:
            import obstore

            try:
                return float(self._call(obstore.head, name)["last_modified"].timestamp())
            except FileNotFoundError:
                return None
        try:
            return self.local(name).stat().st_mtime
        except FileNotFoundError:
            return None

    def names(self, prefix: str = "") -> list[str]:
        """The objects under ``prefix`` (recursively), relative to the folder, sorted."""
        if self.remote:
            import obstore

            chunks: Iterable[Any] = self._call(obstore.list, prefix or None)
            return sorted(str(meta["path"]) for chunk in chunks for meta in chunk)
        base = Path(self.root)
        start = base / prefix if prefix else base
        if not start.exists():
            return []
        found = [p for p in start.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]
        return sorted(str(p.relative_to(base)) for p in found)

    def subfolders(self) -> list[str]:
        """The names of the folder's direct subfolders."""
        if self.remote:
            import obstore

            listing = self._call(obstore.list_with_delimiter, None)
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"])
        base = Path(self.root)
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(self._obstore(), *args)
        except (FileNotFoundError, StorageError):
            raise
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":
                raise FileNotFoundError(str(args[0]) if args else self.root) from None
            raise StorageError(f"{self.root}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
