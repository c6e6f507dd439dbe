"""Run a worker as a child process (the demo and the integration tests do this)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from eddyline.schemas.errors import EddylineError


@dataclass
class WorkerProcess:
    """``eddyline worker run`` in a child process with ``env`` added to ours."""

    env: dict[str, str]
    log_path: Path
    web_port: int
    python: str = sys.executable  # another environment's interpreter, to run its install
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        env = {**os.environ, **self.env, "EDDYLINE_WEB_PORT": str(self.web_port)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "eddyline", "worker", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EddylineError(
                    f"worker exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text()[-3000:]}"
                )
            if self.metrics() is not None:
                return self
            time.sleep(0.5)
        self.stop()
        raise EddylineError(f"worker did not serve /metrics within {timeout}s; see {self.log_path}")

    def metrics(self) -> str | None:
        """The worker's /metrics text, or None if it does not answer."""
        return self.get("/metrics")

    def get(self, path: str) -> str | None:
        """The body of GET ``path`` on the worker's web port, or None if it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.web_port}{path}"
            with urllib.request.urlopen(url, timeout=2) as resp:
                text: str = resp.read().decode()
                return text
        except OSError:
            return None

    def status(self) -> str | None:
        """The worker's /status JSON (partitions, flow, agent queues), or None."""
        return self.get("/status")

    def dump(self) -> str:
        """What a stuck worker is doing: its /status, and (SIGUSR1: mode's handler writes
        every task's stack to the log) its stacks. For a test that timed out."""
        state = self.status()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(2)  # the handler runs on the worker's event loop
        return f"worker status: {state}; task stacks in {self.log_path}"

    def kill(self) -> None:
        """``kill -9``: no flush, no commit, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Faust's graceful shutdown), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode
