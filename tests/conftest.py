"""Shared fixtures. The Kafka broker starts lazily, only for tests that ask for it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from eddyline.streams.kafka.broker import LocalBroker, free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import STREAMS, ensure_topics
from tests.azurite import Azurite

if TYPE_CHECKING:
    from eddyline.streams.kafka.cluster import LocalCluster


@pytest.fixture(autouse=True)
def _private_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test spools into its own folder, never into ~/.eddyline/spool."""
    monkeypatch.setenv("EDDYLINE_SPOOL_DIR", str(tmp_path / "spool"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka: ``EDDYLINE_BOOTSTRAP`` if set, else a local broker for this session."""
    existing = os.environ.get("EDDYLINE_BOOTSTRAP")
    if existing:
        yield existing
        return
    broker = LocalBroker(
        port=free_port(), controller_port=free_port(), root=tmp_path_factory.mktemp("broker")
    )
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Settings with a namespace of its own, so each test has fresh topics."""
    settings = KafkaSettings(bootstrap=kafka_bootstrap, namespace=f"t{uuid.uuid4().hex[:10]}")
    ensure_topics(settings, STREAMS)
    return settings


@pytest.fixture
def worker_env(kafka: KafkaSettings, tmp_path: Path) -> dict[str, str]:
    """Environment for a worker child process on ``kafka``'s namespace."""
    return {
        "EDDYLINE_BOOTSTRAP": kafka.bootstrap,
        "EDDYLINE_NAMESPACE": kafka.namespace,
        "EDDYLINE_LAKE_PATH": str(tmp_path / "lake"),
        "EDDYLINE_STATE_DIR": str(tmp_path / "state"),
        "EDDYLINE_PSEUDONYM_KEY": "test-key-0123456789abcdef",
        "EDDYLINE_SEED": "11",
        "EDDYLINE_DRIFT_WARMUP": "1000",
        "EDDYLINE_LAKE_MAX_WAIT_S": "0.5",
        "EDDYLINE_MAX_ENVELOPE_ROWS": "20000",
        "EDDYLINE_CHECKPOINT_EVERY_S": "1",
    }


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker clients reach over SASL_SSL only (SCRAM-SHA-512), with a certificate from a
    CA made for this session (trustme), and two users: ``admin`` (the broker's own) and
    ``eddyline``."""
    import secrets

    import trustme
    from cryptography.hazmat.primitives import serialization

    from eddyline.streams.kafka.broker import SaslSsl

    root = tmp_path_factory.mktemp("secure-broker")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(  # Kafka reads PEM keys in PKCS#8
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    keystore, truststore = root / "broker.pem", root / "ca.pem"
    keystore.write_bytes(pkcs8 + b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(truststore))
    users = {"admin": secrets.token_hex(12), "eddyline": secrets.token_hex(12)}
    broker = LocalBroker(
        port=free_port(),
        controller_port=free_port(),
        root=root / "broker",
        security=SaslSsl(keystore, truststore, users),
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three local Kafka nodes in one KRaft cluster (replication 3, min.insync.replicas 2)."""
    from eddyline.streams.kafka.cluster import LocalCluster

    cluster = LocalCluster(3, root=tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """The object-store server of the session: Azurite (tests/azurite.py says why)."""
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def object_store(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh container on the session's Azurite, with EDDYLINE_STORAGE_* set for it in
    this process; its URI (``az://<container>``)."""
    for key, value in azurite.env().items():
        monkeypatch.setenv(key, value)
    return azurite.create_container(f"t{uuid.uuid4().hex[:12]}")
