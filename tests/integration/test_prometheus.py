"""The real Prometheus server scrapes a running worker and evaluates eddyline's alert rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "eddyline.json"


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())["data"]["result"]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return json.loads(reply.read())


def test_prometheus_scrapes_a_worker_the_alerts_load_and_the_dashboard_has_data(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    server = shutil.which("prometheus")
    assert server, "the Prometheus server is missing: `make test` installs it"
    worker = WorkerProcess(worker_env, tmp_path / "worker.log", free_port()).start(timeout=90)
    sent = 2_000
    with EventProducer(kafka=kafka, registry=CollectorRegistry()) as producer:
        for event in TrafficSimulator(users=200, seed=5).interactions(sent):
            producer.emit(event)
        assert producer.flush(60) == 0
    shutil.copy(RULES, tmp_path / "alerts.yml")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        "  - job_name: eddyline-worker\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{worker.web_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            server,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:

        def scraped() -> float:
            try:
                found = _query(port, "sum(eddyline_worker_events_in_total)")
            except OSError:  # not listening yet
                return -1.0
            return float(found[0]["value"][1]) if found else -1.0

        wait_for(lambda: scraped() == sent, 90, f"Prometheus to read {sent} events in")
        up = _query(port, 'up{job="eddyline-worker"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
        cpu = _query(port, 'process_cpu_seconds_total{job="eddyline-worker"}')
        assert cpu and float(cpu[0]["value"][1]) > 0
        groups = _get(port, "/api/v1/rules")["data"]["groups"]
        alerts = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert len(alerts) == 9 and all(r["health"] == "ok" for r in alerts.values()), alerts
        assert alerts["EddylineWorkerDown"]["state"] == "inactive"  # it answers

        # Every query of the Grafana dashboard returns data from the live worker.
        board = json.loads(DASHBOARD.read_text())
        exprs = {
            f"{panel['title']} / {target['legendFormat']}": target["expr"].replace(
                "$__rate_interval", "1m"
            )
            for panel in board["panels"]
            for target in panel["targets"]
        }

        def empty() -> list[str]:
            return [name for name, expr in exprs.items() if not _query(port, expr)]

        wait_for(lambda: not empty(), 60, "every dashboard query to return data")
    except AssertionError as exc:
        log = (tmp_path / "prometheus.log").read_text()[-2000:]
        raise AssertionError(f"{exc}\nprometheus log tail:\n{log}\n{worker.dump()}") from exc
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        worker.stop()
