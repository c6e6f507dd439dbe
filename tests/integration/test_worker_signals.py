"""``eddyline worker run`` is quiet and stoppable: an unreachable Kafka is one line and a
non-zero exit (not hundreds of librdkafka lines), and Ctrl-C or SIGTERM stop it within a few
seconds at every stage, start-up included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from eddyline.streams.kafka.broker import free_port

pytestmark = pytest.mark.integration


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "eddyline", "worker", "run"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_unreachable_kafka_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {"EDDYLINE_BOOTSTRAP": f"127.0.0.1:{free_port()}", "EDDYLINE_STATE_DIR": str(tmp_path)}
    started = time.monotonic()
    proc = _start(env)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1 and time.monotonic() - started < 60
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Kafka" in lines[0], err
    assert out == ""
    proc = _start(env)  # and Ctrl-C while it waits for Kafka
    time.sleep(3)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert time.monotonic() - stopped < 5 and proc.returncode != 0


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("when", ["starting", "running"])
def test_a_signal_stops_the_worker_within_seconds(
    worker_env: dict[str, str], sig: signal.Signals, when: str
) -> None:
    port = free_port()
    proc = _start({**worker_env, "EDDYLINE_WEB_PORT": str(port)})
    try:
        if when == "starting":
            time.sleep(4)  # the accountant's search, Faust starting, partitions assigned
        else:
            deadline = time.monotonic() + 60
            while not _serving(port) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert _serving(port)
        stopped = time.monotonic()
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert time.monotonic() - stopped < 10
    finally:
        if proc.poll() is None:
            proc.kill()
