"""The kit's alert rules (deploy/monitoring/alerts.yaml) parsed by Prometheus's own rule parser
(tests/kitcheck, as `promtool check rules` does): the expressions, the durations, and the Go
templates of the labels and annotations."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy_kit import ALERTS, alert_rules

pytestmark = pytest.mark.e2e


def test_prometheus_parses_the_alert_rules(kitcheck: Path) -> None:
    result = subprocess.run(
        [str(kitcheck), "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(alert_rules())} rules OK" in result.stdout


def test_a_broken_template_is_caught(kitcheck: Path, tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yaml"
    broken.write_text(
        ALERTS.read_text().replace("{{ $labels.instance }}", "{{ $labels.instance }", 1)
    )
    result = subprocess.run(
        [str(kitcheck), "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "template" in result.stderr
