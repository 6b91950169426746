"""docs/operations.md lists every self-metric of sampler/metrics.py, with its type and labels,
and nothing else: its "Metrics" table is checked against the METRICS table itself."""

from __future__ import annotations

import re
from pathlib import Path

from sampler.metrics import METRICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `(agent_sampler_\w+)` \| (\w+) \|([^|]*)\|")


def metrics_section() -> str:
    text = DOC.read_text()
    start = text.index("\n## Metrics\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = {}
    for line in metrics_section().splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} is listed twice"
            rows[name] = (kind, tuple(re.findall(r"`(\w+)`", labels)))
    return rows


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    declared = {spec.name: (spec.kind, spec.labels) for spec in METRICS}
    rows = documented()
    missing = sorted(declared.keys() - rows.keys())
    assert not missing, f"docs/operations.md, Metrics: add rows for {missing}"
    assert {name: rows[name] for name in declared} == declared


def test_no_metric_is_documented_that_the_sampler_does_not_export() -> None:
    unknown = sorted(documented().keys() - {spec.name for spec in METRICS})
    assert not unknown, f"docs/operations.md, Metrics: {unknown} are not in sampler/metrics.py"


def test_every_documented_metric_says_what_it_means() -> None:
    for line in metrics_section().splitlines():
        if ROW.match(line):
            meaning = line.split("|")[4].strip()
            assert meaning, line
