"""Kafka behind SASL_SSL (SCRAM-SHA-512 over TLS, a CA made for the session): every client
eddyline has connects through the documented settings; a wrong password, an untrusted CA or
no credentials at all get one clear line and a non-zero exit, not a retry storm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from eddyline.consumers.drift import DriftSubscriber
from eddyline.schemas.errors import BrokerError
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import LocalBroker, free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import ensure_topics
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import delta_ids, wait_for

pytestmark = pytest.mark.integration


def _env(broker: LocalBroker, namespace: str, **change: str) -> dict[str, str]:
    """The documented settings of a client of ``broker`` (as the ``eddyline`` user)."""
    assert broker.security is not None
    env = {
        "EDDYLINE_BOOTSTRAP": broker.bootstrap,
        "EDDYLINE_NAMESPACE": namespace,
        "EDDYLINE_SECURITY_PROTOCOL": "SASL_SSL",
        "EDDYLINE_SASL_MECHANISM": "SCRAM-SHA-512",
        "EDDYLINE_SASL_USERNAME": "eddyline",
        "EDDYLINE_SASL_PASSWORD": broker.security.users["eddyline"],
        "EDDYLINE_SSL_CA_LOCATION": str(broker.security.truststore),
    }
    return {**env, **change}


def _settings(env: dict[str, str]) -> KafkaSettings:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return KafkaSettings()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eddyline", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_client_connects_over_sasl_ssl(
    secure_broker: LocalBroker, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(secure_broker, "secure")
    created = _cli(env, "topics", "create")
    assert created.returncode == 0, created.stderr
    kafka = _settings(env)
    events = list(TrafficSimulator(users=50, seed=3).interactions(1_000))
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        for e in events:
            producer.emit(e)
        assert producer.flush(30) == 0
    worker_settings = {k: v for k, v in worker_env.items() if "BOOTSTRAP" not in k}
    worker = WorkerProcess({**worker_settings, **env}, tmp_path / "w.log", free_port()).start()
    try:
        lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
        wait_for(lambda: len(delta_ids(lake, "interaction")) == 1_000, 90, "events over TLS")
    finally:
        worker.stop()
    with DriftSubscriber(group_id="secure-test", kafka=kafka) as drift:
        assert drift.poll(2.0) is None  # connected, subscribed, nothing to say yet
    retrain = subprocess.Popen(
        [sys.executable, "-m", "eddyline", "retrain", "run", "--lake", str(tmp_path / "lake")],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(12)  # subscribes and polls through the secured listener
    retrain.send_signal(signal.SIGTERM)
    _, err = retrain.communicate(timeout=60)
    assert retrain.returncode == 0 and "error" not in err.lower(), err


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"EDDYLINE_SASL_PASSWORD": "not-the-password"}, "authentication failed"),
        ({"EDDYLINE_SSL_CA_LOCATION": "<another CA>"}, "TLS handshake failed"),
    ],
)
def test_a_wrong_password_or_ca_is_one_clear_line(
    secure_broker: LocalBroker, tmp_path: Path, change: dict[str, str], words: str
) -> None:
    if change.get("EDDYLINE_SSL_CA_LOCATION") == "<another CA>":
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        change = {"EDDYLINE_SSL_CA_LOCATION": str(other)}
    env = _env(secure_broker, "refused", **change)
    for args in (("topics", "create"), ("worker", "run")):
        started = time.monotonic()
        done = _cli(env, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and words in lines[0], done.stderr
        assert time.monotonic() - started < 25  # at once, not after every retry
    with pytest.raises(BrokerError, match=words):
        with EventProducer(kafka=_settings(env), registry=CollectorRegistry()) as producer:
            producer.emit(next(TrafficSimulator(users=1, seed=1).interactions(1)))


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_a_client_without_credentials_is_refused(secure_broker: LocalBroker, protocol: str) -> None:
    env = _env(secure_broker, "anonymous", EDDYLINE_SECURITY_PROTOCOL=protocol)
    with pytest.raises(BrokerError):
        ensure_topics(_settings(env), ["interaction"], timeout=10)
