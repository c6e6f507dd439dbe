"""The package as users get it: the wheel, installed into a fresh virtualenv beside an app
that has its own ``schemas`` and ``streams`` packages (the usual FastAPI layout).

The base install must give a working SDK (and a CLI that names the extra it lacks); the
[worker] extra a worker that runs. The wheel must install one top-level name: ``eddyline``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from eddyline.streams.kafka.settings import KafkaSettings
from eddyline.streams.kafka.topics import Topics
from eddyline.streams.worker.process import WorkerProcess
from tests.integration.helpers import delta_ids, topic_event_ids, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

APP = """
import schemas.events, streams  # the app's own packages, imported first
from eddyline import EventProducer, InteractionEvent

assert schemas.events.APP_MODEL == "mine" and streams.MINE
with EventProducer() as producer:
    for i in range(100):
        producer.emit(InteractionEvent(user_id=f"u{i}", app_id="app", item_id="sku",
                                       item_category="news", action="click", dwell_time_s=1.0))
    assert producer.flush(30) == 0
print("sent", producer.delivered)
"""


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)]
    )
    assert built.returncode == 0, built.stderr
    [found] = out.glob("eddyline-*.whl")
    return found


def test_the_wheel_installs_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        record = next(n for n in whl.namelist() if n.endswith(".dist-info/RECORD"))
        names = {
            line.split(",")[0].split("/")[0] for line in whl.read(record).decode().splitlines()
        }
        files = whl.namelist()
    assert {n for n in names if not n.endswith(".dist-info")} == {"eddyline"}
    for expected in (
        "eddyline/py.typed",
        "eddyline/schemas/events.py",
        "eddyline/streams/sdk/producer.py",
        "eddyline/streams/kafka/pom.xml",
        "eddyline/online_learning/specs/click.yaml",
        "eddyline/schemas/contracts/interaction.v1.json",
        "eddyline/streams/worker/page/index.html",  # the live page, with its vendored uPlot
        "eddyline/streams/worker/page/vendor/uPlot.iife.min.js",
    ):
        assert expected in files


def test_an_app_with_its_own_schemas_and_streams_emits_and_runs_a_worker(
    wheel: Path, kafka: KafkaSettings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    installed = _run([python, "-m", "pip", "install", "-q", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    app = tmp_path / "app"
    (app / "schemas").mkdir(parents=True)
    (app / "schemas" / "__init__.py").write_text("")
    (app / "schemas" / "events.py").write_text('APP_MODEL = "mine"\n')
    (app / "streams").mkdir()
    (app / "streams" / "__init__.py").write_text("MINE = True\n")
    (app / "app.py").write_text(textwrap.dedent(APP))
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **worker_env}
    env["EDDYLINE_SPOOL_DIR"] = str(tmp_path / "spool")

    sent = _run([python, "app.py"], cwd=app, env=env)
    assert sent.returncode == 0 and "sent 100" in sent.stdout, sent.stderr
    assert len(topic_event_ids(kafka, Topics(kafka.namespace).raw("interaction"))) == 100

    cli = str(env_dir / "bin" / "eddyline")
    assert _run([cli, "--help"], env=env).returncode == 0
    missing = _run([cli, "worker", "run"], env=env)
    assert missing.returncode == 2  # a missing extra: the user fixes it (UserError)
    assert missing.stderr.strip().splitlines() == [
        "error: the eddyline worker needs the [worker] extra: pip install 'eddyline[worker]'"
    ]

    extra = _run([python, "-m", "pip", "install", "-q", f"{wheel}[worker]"])
    assert extra.returncode == 0, extra.stderr
    worker = WorkerProcess(env, tmp_path / "worker.log", _free_port(), python=python)
    worker.start(timeout=120)
    try:
        lake = Path(worker_env["EDDYLINE_LAKE_PATH"])
        wait_for(lambda: len(delta_ids(lake, "interaction")) == 100, 90, "the app's events")
    finally:
        worker.stop()


def _free_port() -> int:
    from eddyline.streams.kafka.broker import free_port

    return free_port()
