"""A local replicated Kafka cluster in KRaft mode: N nodes, each broker and controller.

Every partition of the topics eddyline creates has 3 copies (``min.insync.replicas`` 2), so
the cluster keeps taking writes with one node down, and loses none of what it acknowledged.
Used by ``eddyline broker start --nodes 3`` and by the failure tests (a node killed with
-9, the active controller killed). See docs/broker.md.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eddyline.schemas.errors import BrokerError
from eddyline.streams.kafka.broker import (
    _JVM_OPTS,
    LocalBroker,
    SaslSsl,
    check_java,
    free_port,
    new_cluster_id,
    resolve_jars,
)
from eddyline.streams.kafka.settings import eddyline_home


@dataclass
class LocalCluster:
    """``nodes`` local Kafka nodes forming one KRaft cluster.

    Args:
        nodes: how many (3: one may fail).
        root: the folder of every node's data and logs (``node-<id>/``).
        ports: (client, controller) per node; default free ports (fixed ones for the CLI).
    """

    nodes: int = 3
    root: Path | None = None
    host: str = "127.0.0.1"
    ports: list[tuple[int, int]] = field(default_factory=list)
    security: SaslSsl | None = None

    def __post_init__(self) -> None:
        self.root = self.root or eddyline_home() / "cluster"
        saved = self._saved()
        self.ports = (
            self.ports
            or saved.get("ports")
            or [(free_port(), free_port()) for _ in range(self.nodes)]
        )
        self.ports = [(int(p[0]), int(p[1])) for p in self.ports]  # JSON gives lists
        cluster_id = str(saved.get("cluster_id") or new_cluster_id())
        voters = ",".join(f"{i}@{self.host}:{c}" for i, (_, c) in enumerate(self.ports, 1))
        self.brokers = [
            LocalBroker(
                port=port,
                controller_port=controller,
                host=self.host,
                root=self.root / f"node-{i}",
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
                replicas=min(3, self.nodes),
                security=self.security,
            )
            for i, (port, controller) in enumerate(self.ports, 1)
        ]
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "cluster.json").write_text(
            json.dumps({"ports": self.ports, "cluster_id": cluster_id})
        )

    def _saved(self) -> dict[str, Any]:
        assert self.root is not None
        try:
            saved: dict[str, Any] = json.loads((self.root / "cluster.json").read_text())
        except (OSError, ValueError):
            return {}
        return saved

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def start(self, timeout: float = 120.0) -> None:
        """Start every node that is not running, then wait until each answers."""
        procs = [(b, b.launch()) for b in self.brokers if b.pid() is None or not b.answers()]
        for broker, proc in procs:
            broker._wait_ready(proc, timeout)

    def stop(self) -> int:
        """Stop every node; how many were running."""
        return sum(b.stop() for b in self.brokers)

    def node(self, node_id: int) -> LocalBroker:
        return self.brokers[node_id - 1]

    def kill(self, node_id: int) -> None:
        """``kill -9`` one node."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        broker = self.node(node_id)
        broker._wait_ready(broker.launch(), timeout)

    def controller(self) -> int:
        """The node id of the active KRaft controller (the metadata quorum's leader)."""
        java, jars = check_java(), resolve_jars()
        alive = [b for b in self.brokers if b.pid() is not None]
        if not alive:
            raise BrokerError("no node of the cluster is running")
        out = subprocess.run(
            [
                java,
                *_JVM_OPTS,
                "-cp",
                f"{jars}/*",
                "org.apache.kafka.tools.MetadataQuorumCommand",
                "--bootstrap-controller",
                ",".join(f"{b.host}:{b.controller_port}" for b in alive),
                "describe",
                "--status",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        found = re.search(r"LeaderId:\s+(\d+)", out.stdout)
        if found is None:
            raise BrokerError(f"the metadata quorum did not name a leader: {out.stderr[-500:]}")
        return int(found.group(1))
