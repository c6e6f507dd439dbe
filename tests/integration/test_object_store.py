"""The lake, checkpoints and registry on a real object store: Azurite, started by the test
session (tests/azurite.py says why it is the closest to the real service for Delta)."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from eddyline.consumers.lake import Lake
from eddyline.online_learning.checkpoint import ModelStore
from eddyline.online_learning.registry import ModelRegistry
from eddyline.schemas.source import SourceRef
from eddyline.schemas.storage import Folder, StorageError, StorageOptions, join
from eddyline.streams.worker.sink import DeltaSink
from tests.azurite import Azurite

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _row(partition: int, offset: int) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"p{partition}-{offset}"],
            "occurred_at": pa.array([T0 + timedelta(seconds=offset)], pa.timestamp("us", tz="UTC")),
        }
    )


def _write(sink: DeltaSink, table: str, batches: list[tuple[pa.Table, SourceRef]]) -> None:
    """As the lake stage does: retry a commit another writer won, dropping what it wrote."""
    for _ in range(50):
        try:
            sink.write(table, batches)
            return
        except CommitFailedError:
            time.sleep(0.05)
    raise AssertionError("a commit lost 50 races in a row")


def test_files_on_the_object_store_round_trip_and_a_wrong_key_fails_in_one_line(
    object_store: str, azurite: Azurite
) -> None:
    folder = Folder(join(object_store, "files"), StorageOptions.from_env())
    assert folder.get("missing.bin") is None and folder.names() == []
    folder.put("a/b.bin", b"one")
    folder.put("a/b.bin", b"two")
    folder.put("c.bin", b"three")
    assert folder.get("a/b.bin") == b"two"
    assert folder.names() == ["a/b.bin", "c.bin"] and folder.subfolders() == ["a"]

    bad = {**StorageOptions.from_env().for_delta(), "azure_storage_account_key": "QUFBQQ=="}  # type: ignore[dict-item]
    with pytest.raises(StorageError) as caught:
        Folder(join(object_store, "files"), StorageOptions.of(bad)).get("c.bin")
    assert "\n" not in str(caught.value) and "QUFBQQ" not in str(caught.value)


def test_checkpoints_and_the_registry_live_on_the_object_store(object_store: str) -> None:
    store = ModelStore(join(object_store, "checkpoints"), StorageOptions.from_env())
    store.save("click", {"weights": [1.0, 2.0]}, {0: 41, 1: 7}, {0: "e1"})
    again = ModelStore(join(object_store, "checkpoints"))  # options from EDDYLINE_STORAGE_*
    loaded = again.load("click")
    assert loaded is not None and loaded.model == {"weights": [1.0, 2.0]}
    assert loaded.offsets == {0: 41, 1: 7} and loaded.epochs == {0: "e1"}
    assert again.load("satisfaction") is None

    registry = ModelRegistry(join(object_store, "_registry"))

    def artifact(folder):  # type: ignore[no-untyped-def]
        (folder / "model.json").write_text('{"w": [1, 2]}')
        (folder / "sub").mkdir()
        (folder / "sub" / "meta.txt").write_text("meta")

    v1 = registry.register(
        "click", artifact, metrics={"loss": 0.5}, epsilon=1.0, delta=1e-6,
        accountant_history=[[1.1, 0.01, 100]], data_key="k", lineage={"x": 1},
    )  # fmt: skip
    assert v1.artifact.startswith(f"{object_store}/_registry/artifacts/click/")
    registry.set_alias("click", "champion", v1.version, "first")
    fresh = ModelRegistry(join(object_store, "_registry"))  # another process, same store
    assert fresh.alias("click", "champion") == 1
    local = fresh.artifact_dir(fresh.get("click", 1))
    assert (local / "model.json").read_text() == '{"w": [1, 2]}'
    assert (local / "sub" / "meta.txt").read_text() == "meta"
    assert fresh.orphans() == []

    def broken(folder):  # type: ignore[no-untyped-def]
        (folder / "model.json").write_text("{}")
        raise RuntimeError("training crashed after writing part of its artifact")

    with pytest.raises(RuntimeError):
        fresh.register(
            "click", broken, metrics={}, epsilon=1.0, delta=1e-6,
            accountant_history=[], data_key="k", lineage={},
        )  # fmt: skip
    assert [v.version for v in fresh.versions("click")] == [1]
    del fresh  # the downloaded copy is private to that registry and goes with it
    gc.collect()
    assert not local.exists()


@pytest.mark.parametrize("where", ["object store", "local folder"])
def test_two_writers_racing_on_one_table_commit_each_offset_exactly_once(
    where: str, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers (two sinks, their own table handles) append to one table at once: each
    its own partition, and both the same partition (a takeover in flight), from the first
    commit on (both create the table). Every commit race is settled by the store's
    conditional put (local: rename-if-absent); every offset lands once."""
    if where == "object store":
        for name, value in azurite.env().items():
            monkeypatch.setenv(name, value)
        lake = join(azurite.create_container(f"t{uuid.uuid4().hex[:12]}"), "lake")
    else:
        lake = str(tmp_path / "lake")
    options = StorageOptions.from_env().for_delta()
    writers = [DeltaSink(lake, options, background_upkeep=False) for _ in range(2)]
    per_writer, step = 120, 6

    def run(w: int) -> None:
        for start in range(0, per_writer, step):
            own = [(_row(w, o), SourceRef("raw", w, o)) for o in range(start, start + step)]
            shared = [(_row(9, o), SourceRef("raw", 9, o)) for o in range(start, start + step)]
            _write(writers[w], "interaction", own + shared)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    ids = Counter(Lake(lake).read("interaction", columns=["event_id"])["event_id"].to_pylist())
    expected = {f"p{p}-{o}" for p in (0, 1, 9) for o in range(per_writer)}
    assert set(ids) == expected and max(ids.values()) == 1
    assert Lake(lake).tables() == ["interaction"]

    # The drift event's "before" version, from the table alone: a sink that wrote nothing
    # (a restarted worker, another machine) finds it, and it brackets the offset.
    reader = DeltaSink(lake, options, background_upkeep=False)
    key = SourceRef("raw", 9, 0).key
    dt = DeltaTable(join(lake, "interaction"), storage_options=options)
    for start in (0, 1, 60, per_writer - 1):
        version = reader.version_before("interaction", {key: start})
        assert version is not None  # version 0 creates the table empty: never holds offsets
        dt.load_as_version(version)
        assert (dt.transaction_version(key) or -1) < start, start
        dt.load_as_version(version + 1)
        assert (dt.transaction_version(key) or -1) >= start, start
    assert reader.version_before("interaction", {key: per_writer}) == reader.version("interaction")
