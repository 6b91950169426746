"""deploy/local/run.sh, the local recipe of the deploy kit, end to end: the demo app on the real
OpenTelemetry SDK -> the collector of config/collector-sidecar.yaml -> agent-sampler on
config/sampler-sidecar.yaml as shipped -> a file, and its summary of what was kept. The
script's own checks are read again here from the files it leaves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sampler.otlp.json_codec import iter_json_lines
from tests.e2e.collector.otelcol import ROOT
from tests.e2e.harness import flatten

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPE = ROOT / "deploy" / "local" / "run.sh"
RUN_TIMEOUT_S = 150


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_the_local_recipe_runs_the_sidecar_chain_and_says_what_was_kept(
    otelcol: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "OTELCOL": str(otelcol),
        "PYTHON": sys.executable,
        "WORKDIR": str(tmp_path),
        "CONVERSATIONS": "40",
        "RATE": "20",
        "SEED": "7",
        "TIMEOUT": "60",
    }
    # Neither a backend nor a downstream is named: the shipped configs need none.
    for name in ("BACKEND_ENDPOINT", "SAMPLER_DOWNSTREAM"):
        env.pop(name, None)
    result = subprocess.run(
        ["bash", str(RECIPE)],
        cwd=tmp_path,  # the script finds the repository itself
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    sent = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert len(sent) == 40
    failing = {c["conversation"] for c in sent if c["failure"]}
    looping = {c["conversation"] for c in sent if c["loop"] and not c["failure"]}
    assert failing and looping, "seed 7 sends both: otherwise the test proves less"

    # What the file holds, read with the sampler's own OTLP/JSON reader.
    spans = [
        s
        for request in iter_json_lines(tmp_path / "agent-sampler-kept.jsonl")
        for s in flatten(request)
    ]
    conversation_of_trace = {t: c["conversation"] for c in sent for t in c["trace_ids"]}
    rule_of: dict[str, set[str]] = {}
    spans_of: dict[str, int] = {}
    for span in spans:
        conversation = conversation_of_trace[span.trace_id]
        rule_of.setdefault(conversation, set()).add(str(span.attributes["agent_sampler.rule"]))
        spans_of[conversation] = spans_of.get(conversation, 0) + 1
    assert {c for c, rules in rule_of.items() if rules == {"errors"}} >= failing
    assert all(rule_of.get(c) == {"tool-loops"} for c in looping)
    by_id = {c["conversation"]: c for c in sent}
    assert all(count == by_id[c]["spans"] for c, count in spans_of.items()), "kept whole"

    # The summary says the same, rule by rule.
    table = dict(re.findall(r"^  ([a-z-]+)\s+(\d+)\s+\d+\s", result.stdout, re.MULTILINE))
    kept_by_rule: dict[str, int] = {}
    for rules in rule_of.values():
        (rule,) = rules
        kept_by_rule[rule] = kept_by_rule.get(rule, 0) + 1
    assert {rule: int(n) for rule, n in table.items() if rule != "rule"} == kept_by_rule
    assert f"kept: {len(rule_of)} of 40 sessions" in result.stdout
    assert "PROBLEM" not in result.stdout
    # Both processes were stopped by the script, the sampler cleanly.
    assert "agent-sampler stopped" in (tmp_path / "sampler.log").read_text()
