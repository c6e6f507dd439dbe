from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from typer.testing import CliRunner

from eddyline.cli import app, main
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


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``eddyline <args>`` through the real entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["eddyline", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    out, err = capsys.readouterr()
    return int(stopped.value.code or 0), out, err


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """A real Delta table ``interaction``: version 0 holds 2 rows, version 1 adds one."""
    write_deltalake(str(tmp_path / "interaction"), pa.table({"n": [1, 2]}))
    time.sleep(0.05)  # the versions' commit times differ
    write_deltalake(str(tmp_path / "interaction"), pa.table({"n": [3]}), mode="append")
    return tmp_path


def test_query_prints_rows_as_json_and_travels_in_time(monkeypatch, capsys, lake) -> None:
    sql = "SELECT count(*) AS rows FROM interaction"
    code, out, _ = _main(monkeypatch, capsys, "query", sql, "--lake", str(lake), "--json")
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == [{"rows": 3}]
    code, out, _ = _main(
        monkeypatch, capsys, "query", sql, "--lake", str(lake), "--json", "--version", "0"
    )
    assert code == 0 and json.loads(out) == {"rows": 2}
    first = DeltaTable(str(lake / "interaction")).history()[-1]["timestamp"] / 1000
    at = datetime.fromtimestamp(first, UTC).isoformat()
    code, out, _ = _main(
        monkeypatch, capsys, "query", sql, "--lake", str(lake), "--json", "--as-of", at
    )
    assert code == 0 and json.loads(out) == {"rows": 2}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["SELEC nonsense"], "syntax error"),
        (["SELECT * FROM feedback"], "feedback"),
        (['SELECT * FROM "[query]"'], "[query]"),  # brackets survive: no markup
        (["SELECT * FROM interaction", "--version", "7"], "no version 7"),
        (["SELECT 1", "--version", "0", "--as-of", "2026-01-01T00:00Z"], "not both"),
    ],
)
def test_a_user_error_is_one_line_and_exit_code_2(
    monkeypatch, capsys, lake, args, expected
) -> None:
    code, out, err = _main(monkeypatch, capsys, "query", *args[:1], "--lake", str(lake), *args[1:])
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == ""
    assert expected in err
    if "not both" not in expected:  # Typer's own usage errors draw a box
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_report_writes_one_file_and_an_empty_lake_is_a_user_error(
    monkeypatch, capsys, lake, tmp_path
) -> None:
    out_file = tmp_path / "r.html"
    code, _, err = _main(monkeypatch, capsys, "report", "--lake", str(lake), "--out", str(out_file))
    assert code == 0 and "wrote" in err
    page = out_file.read_text()
    assert "Rows per day" in page and "No event rows yet." in page  # no pseudonymous table
    code, out, err = _main(monkeypatch, capsys, "report", "--lake", str(tmp_path / "none"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1 and "no Delta tables" in lines[0], err


def test_a_failure_exits_1_with_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv("EDDYLINE_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nothing listens
    code, _, err = _main(monkeypatch, capsys, "topics", "create")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
