"""docker-compose.yml cannot run here (no Docker engine), so check it says what the code expects."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from eddyline.streams.kafka.broker import KAFKA_VERSION
from eddyline.streams.kafka.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_are_kafka_worker_collector_prometheus_and_grafana() -> None:
    services = _compose()["services"]
    expected = {"kafka", "kafka-2", "kafka-3", "worker", "collector", "prometheus", "grafana"}
    assert set(services) == expected
    assert services["collector"]["command"] == ["eddyline", "collector", "run"]
    assert {n for n, s in services.items() if "profiles" in s} == {"kafka-2", "kafka-3"}


def _env_file() -> dict[str, str]:
    lines = (ROOT / "deploy" / "cluster.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_cluster_profile_makes_three_brokers_that_survive_one() -> None:
    services, env = _compose()["services"], _env_file()
    nodes = {services[n]["environment"]["KAFKA_NODE_ID"] for n in ("kafka", "kafka-2", "kafka-3")}
    assert nodes == {1, 2, 3}
    assert env["EDDYLINE_KAFKA_VOTERS"].count("@") == 3
    assert (env["EDDYLINE_KAFKA_REPLICAS"], env["EDDYLINE_KAFKA_MIN_ISR"]) == ("3", "2")
    assert (
        "${EDDYLINE_KAFKA_VOTERS"
        in services["kafka"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    )
    assert env["EDDYLINE_KAFKA_BOOTSTRAP"].count(":29092") == 3


def test_kafka_keeps_its_data_and_the_worker_restarts_and_reports_health() -> None:
    services = _compose()["services"]
    for name in ("kafka", "kafka-2", "kafka-3"):
        assert services[name]["volumes"][0].endswith(":/var/lib/kafka/data")
        assert services[name]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    worker = services["worker"]
    assert worker["restart"] == "unless-stopped"
    assert "/status" in " ".join(worker["healthcheck"]["test"])


def test_kafka_is_the_version_the_local_broker_runs_in_kraft_mode() -> None:
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "9092:9092" in kafka["ports"]


def test_worker_serves_metrics_where_prometheus_scrapes() -> None:
    services = _compose()["services"]
    port = services["worker"]["environment"]["EDDYLINE_WEB_PORT"]
    assert port == WorkerSettings().web_port
    assert f"{port}:{port}" in services["worker"]["ports"]
    assert services["worker"]["environment"]["EDDYLINE_BOOTSTRAP"].endswith(":-kafka:29092}")
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [f"worker:{port}"]
    assert scrape["rule_files"] == ["alerts.yml"]
    mount, inside = services["prometheus"]["volumes"][0].split(":")[:2]
    assert (ROOT / mount / "prometheus.yml").is_file() and (ROOT / mount / "alerts.yml").is_file()
    assert inside == "/etc/prometheus"


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = ROOT / next(k for k, v in mounts.items() if v == "/etc/grafana/provisioning")
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "eddyline.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    dashboards = ROOT / next(k for k, v in mounts.items() if v == folder)
    board = json.loads((dashboards / "eddyline.json").read_text())
    uids = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    assert uids == {source["datasources"][0]["uid"]}  # every panel reads that source


def test_the_worker_image_installs_the_worker_extra() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "'.[worker,query,collector]'" in dockerfile
    for package in ("schemas", "streams", "privacy", "online_learning", "consumers", "eddyline"):
        assert f"COPY {package} {package}" in dockerfile
