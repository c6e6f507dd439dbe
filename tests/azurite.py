"""Azurite, Microsoft's Azure Storage emulator (npm), as the test session's object store.

Why Azurite: Delta's commit protocol needs a put that fails if the object exists. Azure Blob
Storage has it natively (``If-None-Match: *``), delta-rs uses it with no lock service, and
Azurite implements the same conditional requests over the same REST API, so concurrent
commits from several workers are resolved as they would be on Azure. (S3-compatible servers
from PyPI emulate S3, whose conditional put delta-rs reaches only with extra settings:
docs/storage.md.) Installed from npm once into ``$EDDYLINE_HOME/azurite-<version>``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import eddyline_home

VERSION = "3.37.0"
ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public, fixed for every Azurite install).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def install(home: Path | None = None) -> Path:
    """The ``azurite-blob`` executable, installed with npm on first use."""
    root = (home or eddyline_home()) / f"azurite-{VERSION}"
    exe = root / "node_modules" / ".bin" / "azurite-blob"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    assert npm, "npm is needed to install Azurite (Node 20 from the distribution)"
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", f"azurite@{VERSION}"],
        cwd=root, check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    return exe


@dataclass
class Azurite:
    """One Azurite blob service on 127.0.0.1, its data in ``root``."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def env(self) -> dict[str, str]:
        """The worker's storage settings for this server (EDDYLINE_STORAGE_*)."""
        return {
            "EDDYLINE_STORAGE_AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
            "EDDYLINE_STORAGE_AZURE_STORAGE_ACCOUNT_KEY": KEY,
            "EDDYLINE_STORAGE_AZURE_STORAGE_ENDPOINT": self.endpoint,
            "EDDYLINE_STORAGE_ALLOW_HTTP": "true",
        }

    def start(self, timeout: float = 60.0) -> None:
        exe = install()
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "azurite.log").open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--location", str(self.root), "--skipApiVersionCheck", "--loose",
             "--disableTelemetry", "--silent"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "azurite.log").read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"Azurite did not listen on {self.port} within {timeout} s")

    def create_container(self, name: str) -> str:
        """A new container; its URI (``az://<name>``)."""
        from azure.storage.blob import BlobServiceClient

        conn = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.endpoint};"
        )
        BlobServiceClient.from_connection_string(conn).create_container(name)
        return f"az://{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
