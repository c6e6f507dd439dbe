"""The alert rules in deploy/prometheus: valid, and each fires on what it is for
(``promtool test rules``, Debian's prometheus package; ``make test`` installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make test` installs it (apt-get install prometheus)"
    return subprocess.run(
        [tool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_and_the_config_are_valid() -> None:
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout


def test_every_alert_fires_on_its_case_and_only_there() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"][0]["rules"]
    cases = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    firing = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert firing == {rule["alert"] for rule in rules}  # no alert left untested
