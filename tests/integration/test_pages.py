"""Headless Chromium (Debian's package) opens a worker's live page under load and the
``eddyline report`` file made from its lake; every chart must hold data once the browser
has run the page's scripts. Screenshots go to the test's tmp dir (and to docs/ with
EDDYLINE_DOCS_SCREENSHOTS=1, which is how docs/live-page.png and docs/report.png are made).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from eddyline.consumers.lake import Lake
from eddyline.simulate import TrafficSimulator
from eddyline.streams.kafka.broker import free_port
from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.sdk.producer import EventProducer
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration
DOCS = Path(__file__).resolve().parents[2] / "docs"
FIGURE = re.compile(r'<figure class="chart"[^>]*>')


def _chromium(url: str, *, screenshot: Path | None = None, height: int = 2600) -> str:
    """The DOM after the page's scripts ran for 8 s of virtual time (or a screenshot)."""
    browser = shutil.which("chromium")
    assert browser, "Chromium is missing: `make test` installs Debian's chromium package"
    args = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size=1280,{height}",
        "--virtual-time-budget=8000",
        f"--screenshot={screenshot}" if screenshot else "--dump-dom",
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _figures(dom: str) -> dict[str, dict[str, str]]:
    """Each chart's id (or caption) -> its data-* attributes."""
    out = {}
    for match in FIGURE.finditer(dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(0)))
        caption = re.match(r"\s*<figcaption>([^<]*)", dom[match.end() :])
        out[attrs.get("id") or (caption.group(1) if caption else str(len(out)))] = attrs
    return out


class Load(threading.Thread):
    """Interaction and feedback traffic at ~1,500 events/s with a drift, until stopped."""

    def __init__(self, kafka: KafkaSettings) -> None:
        super().__init__(daemon=True)
        self.kafka, self.stop, self.sent = kafka, threading.Event(), 0

    def run(self) -> None:
        sim = TrafficSimulator(users=400, seed=21, drift_at=20_000)
        with EventProducer(kafka=self.kafka, registry=CollectorRegistry()) as sdk:
            while not self.stop.is_set():
                for event in sim.interactions(450):
                    sdk.emit(event)
                for event in sim.feedback(50):
                    sdk.emit(event)
                self.sent += 500
                time.sleep(0.3)
            sdk.flush(60)


def _save(shot: Path, name: str) -> None:
    if os.environ.get("EDDYLINE_DOCS_SCREENSHOTS") == "1":
        shutil.copy(shot, DOCS / name)


def test_the_live_page_under_load_and_the_report_show_data_in_every_chart(
    kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**worker_env, "EDDYLINE_COST_SAMPLE_S": "2"}
    worker = WorkerProcess(env, tmp_path / "worker.log", free_port()).start(timeout=90)
    garbage = Producer(kafka.librdkafka())
    for _ in range(3):  # dead letters for the page's table
        garbage.produce(Topics(kafka.namespace).raw("interaction"), value=b"\x00not arrow")
    garbage.flush(30)
    load = Load(kafka)
    load.start()
    page = f"http://127.0.0.1:{worker.web_port}/"
    try:
        wait_for(lambda: load.sent >= 30_000, 120, "30,000 events sent")
        dom = _chromium(page)
        _chromium(page, screenshot=tmp_path / "live.png")
        lake = Lake(worker_env["EDDYLINE_LAKE_PATH"])
        wait_for(  # under load still: the drift comes at the 20,000th interaction
            lambda: (
                {"drift_events", "worker_costs", "deadletters", "model_metrics"}
                <= set(lake.tables())
            ),
            120,
            "the drift, cost, dead-letter and model tables",
            status=lambda: str(lake.tables()),
        )
    finally:
        load.stop.set()
        load.join(60)
    figures = _figures(dom)
    expected = {"throughput", "lag", "budget"} | {
        f"{kind}-{model}"
        for kind in ("metrics", "calibration", "distribution")
        for model in ("click", "satisfaction")
    }
    assert expected <= set(figures), sorted(figures)
    empty = {name for name, a in figures.items() if int(a["data-points"]) == 0}
    assert not empty, f"charts without data: {sorted(empty)}"
    for moving in ("throughput", "budget", "distribution-click", "distribution-satisfaction"):
        assert int(figures[moving]["data-nonzero"]) > 0, moving
    assert "envelope.content_type" in dom  # dead letters by reason (no content type)
    assert re.search(r"<td>interaction</td><td class=\"n\">\d", dom)  # a lake table's version
    assert "users charged in the current budget window" in dom
    assert (tmp_path / "live.png").stat().st_size > 20_000
    _save(tmp_path / "live.png", "live-page.png")

    # The report, made by the CLI from the worker's lake.
    out = tmp_path / "report.html"
    cli = [sys.executable, "-m", "eddyline", "report", "--lake", lake.root, "--out", str(out)]
    subprocess.run(cli, check=True, timeout=300, env={**os.environ, **worker_env})
    assert "<script src=" not in out.read_text()  # self-contained: plotly.js is inlined
    dom = _chromium(out.as_uri())
    _chromium(out.as_uri(), screenshot=tmp_path / "report.png", height=5200)
    figures = _figures(dom)
    captions = " | ".join(figures)
    for part in (
        "click: error rate over time",
        "click: reliability diagram",
        "click: prediction distribution",
        "Rows per day",
        "Dead-lettered events by reason",
        "Budget use",
        "CPU seconds per 1,000 rows",
    ):
        assert part in captions, (part, captions)
    for name, attrs in figures.items():
        assert int(attrs["data-points"]) > 0 and int(attrs["data-drawn"]) > 0, name
    assert "Cost per active user" in dom
    _save(tmp_path / "report.png", "report.png")
    worker.stop()
