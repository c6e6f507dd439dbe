"""A local Apache Kafka broker in KRaft mode, without Docker.

The broker's jars come from Maven Central: ``mvn dependency:copy-dependencies`` on the
small pom in ``streams/kafka/pom.xml``, into a cache folder, once. One node then runs as
broker and controller on 127.0.0.1 with Java 17+. See docs/broker.md.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from eddyline.schemas.errors import BrokerError
from eddyline.streams.kafka.settings import eddyline_home

# The newest Kafka with which Faust (aiokafka 0.14) and confluent-kafka pass the suite.
KAFKA_VERSION = "4.4.0"
_JVM_OPTS = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool} not found on PATH: {hint}")
    return path


def check_java() -> str:
    """The java executable, if it is 17 or newer."""
    java = _need("java", "install a JDK 17+ (e.g. apt-get install openjdk-17-jre-headless)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < 17:
        raise BrokerError(f"Kafka {KAFKA_VERSION} needs Java 17+, found: {out.splitlines()[:1]}")
    return java


def resolve_jars(version: str = KAFKA_VERSION, home: Path | None = None) -> Path:
    """The folder of the broker's jars, fetched with Maven on first use (file-locked)."""
    pom_text = resources.files("eddyline.streams.kafka").joinpath("pom.xml").read_bytes()
    cache = (home or eddyline_home()) / f"kafka-{version}"
    # a new pom (another jar needed) resolves again, into the same folder
    digest = hashlib.sha256(pom_text).hexdigest()[:12]
    jars, done = cache / "jars", cache / "jars" / f".complete-{digest}"
    if done.exists():
        return jars
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return jars
        mvn = _need("mvn", "install Maven 3 (e.g. apt-get install maven)")
        pom = cache / "pom.xml"
        pom.write_bytes(pom_text)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={jars}",
            f"-Dkafka.version={version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"mvn could not fetch Kafka {version}:\n{proc.stdout[-2000:]}")
        done.touch()
    return jars


_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
controller.listener.names=CONTROLLER
log.dirs={data}
num.partitions=3
# eddyline creates its topics with explicit partition counts; a typo must not make a new one.
auto.create.topics.enable=false
offsets.topic.num.partitions=10
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
default.replication.factor={replicas}
min.insync.replicas={min_isr}
# A local cluster starts all at once: do not wait for more members before a rebalance.
group.initial.rebalance.delay.ms=0
message.max.bytes=16777216
num.network.threads=2
num.io.threads=4
"""

_PLAINTEXT = """\
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
"""

# Clients (and the brokers among themselves) reach it over SASL_SSL only: SCRAM-SHA-512 over
# TLS, the broker's key and certificate and the CA in PEM files.
_SASL_SSL = """\
listeners=SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=SASL_SSL://{host}:{port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="{admin}" password="{admin_password}";
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
"""


@dataclass(frozen=True)
class SaslSsl:
    """A broker that clients reach over SASL_SSL (SCRAM-SHA-512) only.

    Args:
        keystore: a PEM file with the broker's private key (PKCS#8) and certificate chain.
        truststore: a PEM file with the CA that signed it (the brokers verify each other).
        users: SCRAM users, name -> password; ``admin`` is the one the brokers use.
    """

    keystore: Path
    truststore: Path
    users: dict[str, str]


_LOG4J = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
"""


@dataclass(frozen=True)
class LocalBroker:
    """One local Kafka node (broker and controller). ``start`` and ``stop`` are idempotent.

    Args:
        port: the client listener on ``host``.
        controller_port: the KRaft controller listener.
        root: the folder for data, logs and the pid file.
        node_id, voters, cluster_id, replicas: a node of a ``LocalCluster`` (by default
            a cluster of one).
        security: clients reach it over SASL_SSL only (by default PLAINTEXT).
    """

    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    root: Path | None = None
    version: str = KAFKA_VERSION
    node_id: int = 1
    voters: str = ""  # "1@host:port,2@host:port,...": default this node alone
    cluster_id: str = ""  # one id for every node of a cluster: default a new one
    replicas: int = 1
    security: SaslSsl | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def dir(self) -> Path:
        return self.root or eddyline_home() / f"broker-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "broker.log"

    def client_config(self, user: str = "admin") -> dict[str, object]:
        """librdkafka settings that reach this node (as ``user``, when it is secured)."""
        conf: dict[str, object] = {"bootstrap.servers": self.bootstrap}
        if self.security is not None:
            conf |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": user,
                "sasl.password": self.security.users[user],
                "ssl.ca.location": str(self.security.truststore),
            }
        return conf

    def pid(self) -> int | None:
        """The broker's pid if it is running."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the broker answers a metadata request."""
        quiet = {**self.client_config(), "log_level": 0, "logger": _quiet_logger()}
        admin = AdminClient(quiet)  # type: ignore[arg-type]  # librdkafka takes a Logger here
        try:
            admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    def start(self, timeout: float = 90.0) -> None:
        """Fetch the jars if needed, format the storage once, start, and wait until it answers."""
        if self.pid() is not None and self.answers():
            return
        self._wait_ready(self.launch(), timeout)

    def launch(self) -> subprocess.Popen[bytes]:
        """Format the storage once and start the process, without waiting for it (the nodes
        of a cluster answer only once a quorum of them runs)."""
        java, jars = check_java(), resolve_jars(self.version)
        self.dir.mkdir(parents=True, exist_ok=True)
        props, data = self.dir / "server.properties", self.dir / "data"
        props.write_text(self._properties(data))
        (self.dir / "log4j2.properties").write_text(_LOG4J)
        classpath = [java, *_JVM_OPTS, "-cp", f"{jars}/*"]
        if not (data / "meta.properties").exists():
            self._format(classpath, props)
        log4j = f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}"
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                [*classpath, log4j, "kafka.Kafka", str(props)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def _properties(self, data: Path) -> str:
        voters = self.voters or f"{self.node_id}@{self.host}:{self.controller_port}"
        text = _PROPERTIES.format(
            node_id=self.node_id,
            voters=voters,
            data=data,
            replicas=self.replicas,
            min_isr=min(2, self.replicas),
        )
        listen = dict(host=self.host, port=self.port, controller_port=self.controller_port)
        if self.security is None:
            return text + _PLAINTEXT.format(**listen)
        sec = self.security
        return text + _SASL_SSL.format(
            **listen,
            admin="admin",
            admin_password=sec.users["admin"],
            keystore=sec.keystore,
            truststore=sec.truststore,
        )

    def _format(self, classpath: list[str], props: Path) -> None:
        cluster_id = self.cluster_id or new_cluster_id()
        scram = [
            f"--add-scram=SCRAM-SHA-512=[name={user},password={password}]"
            for user, password in (self.security.users.items() if self.security else ())
        ]
        fmt = subprocess.run(
            [
                *classpath,
                "kafka.tools.StorageTool",
                "format",
                # one argument: a random id may begin with "-", which argparse would
                # take for an option
                f"--cluster-id={cluster_id}",
                "-c",
                str(props),
                *scram,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting the broker storage failed:\n{fmt.stdout}{fmt.stderr}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise BrokerError(f"Kafka exited with {proc.returncode}; log tail:\n{tail}")
            if self.answers(timeout=1.0):
                return
            time.sleep(0.5)
        self.stop()
        raise BrokerError(
            f"Kafka did not answer on {self.bootstrap} within {timeout:.0f}s; see {self.log_file}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """``kill -9``: no flush, no goodbye to the cluster. False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True


def new_cluster_id() -> str:
    """A random KRaft cluster id (16 bytes, URL-safe base64)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range: one from ``bind(0)``
    can become an outgoing connection's local port before the server binds it (a test
    cluster's node failed to start so). Falls back to the kernel's pick."""
    low = _ephemeral_low()
    for _ in range(200):
        port = 10_000 + secrets.randbelow(max(1, low - 10_000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    try:  # the first port of the kernel's ephemeral range (Linux; 32768 where unknown)
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768
    return low if low > 11_000 else 32_768


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _quiet_logger() -> logging.Logger:
    quiet = logging.getLogger("eddyline.broker.probe")
    quiet.setLevel(logging.CRITICAL)
    return quiet
