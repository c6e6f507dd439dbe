"""``Lake``: the Delta tables, for data scientists, as Arrow, polars or DuckDB.

Examples:
    >>> lake = Lake("./lake")
    >>> lake.tables()   # doctest: +SKIP
    ['feedback', 'interaction']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.errors import MissingExtraError

try:
    from deltalake import DeltaTable
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("query", "consumers.lake") from exc


class Lake:
    """The eddyline Delta tables under one root folder (or object-store URI)."""

    def __init__(
        self, root: str | Path = "./lake", *, storage_options: dict[str, str] | None = None
    ) -> None:
        self.root = str(root).rstrip("/")
        self.storage_options = storage_options

    def tables(self) -> list[str]:
        """The tables present (local roots only)."""
        root = Path(self.root)
        return (
            sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir())
            if root.is_dir()
            else []
        )

    def table(self, name: str, *, version: int | None = None) -> DeltaTable:
        """The Delta table for event ``name``, at ``version`` (time travel) or the latest."""
        return DeltaTable(
            f"{self.root}/{name}", version=version, storage_options=self.storage_options
        )

    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        columns: list[str] | None = None,
        filters: Any = None,
    ) -> pa.Table:
        """The table as Arrow; ``filters`` are deltalake DNF filters."""
        return self.table(name, version=version).to_pyarrow_table(columns=columns, filters=filters)

    def polars(self, name: str, *, version: int | None = None) -> Any:
        """The table as a lazy polars frame."""
        import polars as pl

        return pl.scan_delta(
            f"{self.root}/{name}", version=version, storage_options=self.storage_options
        )

    def sql(self, query: str) -> pa.Table:
        """Run DuckDB SQL where each table is a view of its name (``SELECT * FROM interaction``)."""
        import duckdb

        con = duckdb.connect()
        for name in self.tables():
            con.register(name, self.table(name).to_pyarrow_dataset())
        result: pa.Table = con.sql(query).to_arrow_table()
        return result
