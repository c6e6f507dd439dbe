from __future__ import annotations

import json

from typer.testing import CliRunner

from eddyline.cli import app
from streams.broker import free_port

runner = CliRunner()


def test_help_lists_the_nouns() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for noun in ("broker", "worker", "simulate", "demo", "query", "drift", "topics"):
        assert noun in result.output


def test_broker_status_of_a_stopped_broker_exits_1_with_json(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDDYLINE_HOME", str(tmp_path))
    result = runner.invoke(app, ["broker", "status", "--port", str(free_port()), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["answers"] is False
