"""``Lake``: the Delta tables, for data scientists, as Arrow, pandas, polars or DuckDB.

Tables: one per event stream (``interaction``, ``feedback``), plus ``deadletters``,
``drift_events``, ``model_metrics``, ``worker_costs`` and ``governance_log``. Every event
row carries ``user_pid`` (a keyed pseudonym), never a raw user id; noised columns are meant
for aggregates (see ``docs/querying.md``).

Usage (on a lake a worker wrote; docs/querying.md has more)::

    lake = Lake("./lake")
    lake.tables()  # ['deadletters', 'feedback', 'interaction', ...]
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from eddyline.schemas.errors import UserError, require_extra
from eddyline.schemas.storage import Folder, StorageOptions

require_extra("query", "eddyline.consumers.lake", "deltalake", "duckdb", "polars")

import duckdb  # noqa: E402  # after the check: its error names the extra to install
from deltalake import DeltaTable  # noqa: E402
from deltalake.exceptions import DeltaError  # noqa: E402
from deltalake.exceptions import TableNotFoundError as _DeltaTableNotFound  # noqa: E402


class LakeError(UserError, DeltaError):
    """A table, or a version of it, cannot be read."""


class TableNotFoundError(LakeError, _DeltaTableNotFound):
    """No Delta table of that name under the lake's root."""


class QueryError(UserError, duckdb.Error):
    """DuckDB refused or failed the SQL (``Lake.sql``)."""


AsOf = int | datetime | str | None  # a version, a timestamp, or an ISO 8601 string


class Lake:
    """The eddyline Delta tables under one root folder (or object-store URI)."""

    def __init__(
        self, root: str | Path = "./lake", *, storage_options: dict[str, str] | None = None
    ) -> None:
        self.root = str(root).rstrip("/")
        # None: the worker's own settings, EDDYLINE_STORAGE_* (schemas/storage.py)
        options = (
            StorageOptions.of(storage_options) if storage_options else StorageOptions.from_env()
        )
        self._folder = Folder(self.root, options)
        self.storage_options = options.for_delta()

    def tables(self) -> list[str]:
        """The tables present (a local folder or an object-store URI)."""
        return [
            name
            for name in self._folder.subfolders()
            if DeltaTable.is_deltatable(f"{self.root}/{name}", self.storage_options)
        ]

    def table(self, name: str, *, as_of: AsOf = None) -> DeltaTable:
        """The Delta table of ``name``: latest, or as of a version number or a timestamp."""
        uri = f"{self.root}/{name}"
        try:
            dt = DeltaTable(uri, storage_options=self.storage_options)
        except _DeltaTableNotFound:
            known = ", ".join(self.tables()) or "none"
            raise TableNotFoundError(
                f"no table {name!r} under {self.root} (tables: {known})"
            ) from None
        if as_of is not None:
            try:
                dt.load_as_version(as_of)
            except (DeltaError, ValueError) as exc:
                raise LakeError(
                    f"table {name!r} has no version {as_of!r} (latest: {dt.version()}; "
                    f"vacuumed versions cannot be read): {exc}"
                ) from None
        return dt

    def read(
        self,
        name: str,
        *,
        as_of: AsOf = None,
        columns: list[str] | None = None,
        filters: Any = None,
    ) -> pa.Table:
        """The table as Arrow. ``filters`` are deltalake DNF filters, e.g.
        ``[("event_date", "=", date(2026, 11, 29)), ("action", "in", ["click", "purchase"])]``:
        partition filters prune files before anything is read."""
        dt = self.table(name, as_of=as_of)
        try:
            return dt.to_pyarrow_table(columns=columns, filters=filters)
        except (OSError, DeltaError) as exc:
            if as_of is None:
                raise
            raise LakeError(
                f"table {name!r} as of {as_of!r}: its files are gone (vacuumed: a forget with "
                f"--vacuum-now, retention, or the hourly vacuum past the file retention): {exc}"
            ) from None

    def pandas(self, name: str, **kwargs: Any) -> Any:
        """The table as a pandas DataFrame (same arguments as ``read``; needs pandas)."""
        return self.read(name, **kwargs).to_pandas()

    def polars(self, name: str, *, as_of: AsOf = None) -> Any:
        """The table as a lazy polars frame (filters and projections are pushed down)."""
        import polars as pl

        version = as_of if isinstance(as_of, int) else None
        if as_of is not None and version is None:
            version = self.table(name, as_of=as_of).version()
        return pl.scan_delta(
            f"{self.root}/{name}", version=version, storage_options=self.storage_options
        )

    def sql(self, query: str, *, as_of: AsOf = None) -> pa.Table:
        """DuckDB SQL where each table is a view named after it (``SELECT * FROM interaction``).

        ``as_of`` reads every table the query names as of that version or time (a version
        number is per table: name one table when you give one)."""
        con = duckdb.connect()
        for name in self.tables():
            if as_of is not None and not re.search(rf"\b{re.escape(name)}\b", query):
                continue  # not in the query: it need not have that version
            con.register(name, self.table(name, as_of=as_of).to_pyarrow_dataset())
        try:
            result: pa.Table = con.sql(query).to_arrow_table()
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise QueryError(f"{first} (tables: {', '.join(self.tables()) or 'none'})") from None
        return result

    def history(self, name: str, limit: int | None = 20) -> list[dict[str, Any]]:
        """The table's commits, newest first (version, timestamp, operation, metrics)."""
        return self.table(name).history(limit)
