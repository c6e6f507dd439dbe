"""Storage locations and options (schemas/storage.py), on local folders; the same code on
a real object store: tests/integration/test_object_store.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from eddyline.online_learning.checkpoint import ModelStore
from eddyline.schemas.storage import Folder, StorageError, StorageOptions, is_remote, join
from eddyline.streams.kafka.settings import WorkerSettings


def test_options_come_from_eddyline_storage_variables_and_never_print_their_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "EDDYLINE_STORAGE_AZURE_STORAGE_ACCOUNT_KEY": "s3cr3t-key",
        "EDDYLINE_STORAGE_ALLOW_HTTP": "true",
        "EDDYLINE_LAKE_PATH": "az://lake",  # not a storage option
    }
    options = StorageOptions.from_env(env)
    assert options.for_delta() == {"azure_storage_account_key": "s3cr3t-key", "allow_http": "true"}
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("storage: %s %r", options, options)
    assert "s3cr3t" not in caplog.text and "azure_storage_account_key" in caplog.text
    assert "s3cr3t" not in repr(options.values)  # SecretStr all the way down


def test_obstore_gets_client_options_apart_from_the_provider_configuration() -> None:
    options = StorageOptions.of(
        {"azure_allow_http": "true", "timeout": "30s", "azure_storage_account_name": "a"}
    )
    config, client = options.for_obstore()
    assert config == {"azure_storage_account_name": "a"}
    assert client == {"allow_http": "true", "timeout": "30s"}
    assert StorageOptions().for_delta() is None


def test_locations_are_joined_without_mangling_uris_and_unknown_schemes_are_refused() -> None:
    assert join("az://c/lake/", "interaction", "/x") == "az://c/lake/interaction/x"
    assert join(Path("/var/lake"), "t") == "/var/lake/t"
    assert is_remote("abfss://c@acct.dfs.core.windows.net/p") and is_remote("gs://b")
    assert not is_remote("file:///tmp/lake") and not is_remote("./lake")
    with pytest.raises(StorageError, match="unsupported storage scheme 'ftp'"):
        is_remote("ftp://host/lake")


def test_a_local_folder_puts_atomically_lists_and_reads(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "f")
    assert folder.get("a/b.bin") is None and folder.names() == [] and folder.subfolders() == []
    folder.put("a/b.bin", b"one")
    folder.put("a/b.bin", b"two")
    folder.put("c.bin", b"three")
    assert folder.get("a/b.bin") == b"two"
    assert folder.names() == ["a/b.bin", "c.bin"] and folder.names("a") == ["a/b.bin"]
    assert folder.subfolders() == ["a"]
    assert not [p for p in (tmp_path / "f").rglob("*") if p.name.endswith(".tmp")]


def test_checkpoints_go_where_checkpoint_path_says(tmp_path: Path) -> None:
    ws = WorkerSettings(state_dir=tmp_path / "state")
    assert ws.checkpoints() == str(tmp_path / "state" / "models")
    ws = WorkerSettings(state_dir=tmp_path / "state", checkpoint_path=str(tmp_path / "ck"))
    ModelStore(ws.checkpoints()).save("click", {"w": 1}, {0: 5})
    assert (tmp_path / "ck" / "click.ckpt").exists()
    assert ModelStore(str(tmp_path / "ck")).load("click").offsets == {0: 5}  # type: ignore[union-attr]
