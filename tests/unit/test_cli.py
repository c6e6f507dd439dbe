from __future__ import annotations

import json

from typer.testing import CliRunner

from eddyline.cli import app
from eddyline.streams.kafka.broker import free_port

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


def test_learners_check_lists_good_specs_and_names_the_problem_in_a_bad_one(tmp_path) -> None:
    result = runner.invoke(app, ["learners", "check", "click", "satisfaction"])
    assert result.exit_code == 0, result.output
    assert "satisfaction" in result.output and "item_id (hashed)" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nstream: feedback\nfeatures: [{column: comment, kind: hashed}]\n"
        "target: [{column: label, is_in: [true]}]\n"
        "pipeline: [{linear_model.LogisticRegression: {}}]\n"
    )
    result = runner.invoke(app, ["learners", "check", str(bad)])
    assert result.exit_code == 1
    assert "'comment' is redacted" in str(result.exception)
