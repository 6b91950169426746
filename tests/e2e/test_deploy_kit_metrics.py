"""Every metric and label that the deploy kit's alert rules and Grafana dashboard query exists on
a running sampler's /metrics after traffic (so that labelled series exist): the demo app's
conversations, decided, and a request refused for a full buffer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy_kit import DEPLOY, PROMETHEUS_SERIES, SCRAPE_LABELS, kit_queries, selectors
from tests.e2e.harness import (
    GrpcSink,
    SamplerProcess,
    raw_export,
    running_sampler,
    span,
    wait_until,
)

pytestmark = pytest.mark.e2e

CONVERSATIONS = 12
BUFFER_CAP = 1000

CONFIG = f"""
sessions:
  decision_wait: 1s
  root_end_grace: 200ms
  open_trace_wait: 5m
  tick: 50ms
  max_buffered_spans: {BUFFER_CAP}
rules:
  - name: errors
    when: {{error: true}}
    action: keep
  - name: tool-loops
    when: {{tool_cycle: true}}
    action: keep
  - name: baseline
    action: budget
exporter:
  batch_timeout: 20ms
  retry: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 30s}}
"""


def scrape(sampler: SamplerProcess) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets of its series."""
    with urllib.request.urlopen(sampler.url("/metrics"), timeout=5) as response:
        text = response.read().decode()
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, []).append(dict(sample.labels))
    return series


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[dict[str, str]]]]:
    workdir = tmp_path_factory.mktemp("metrics")
    sink = GrpcSink().start()
    try:
        with running_sampler(CONFIG, workdir, sink.url) as sampler:
            app = subprocess.run(
                [
                    sys.executable,
                    str(DEPLOY / "demo" / "agent_app.py"),
                    f"--endpoint=http://127.0.0.1:{sampler.grpc_port}",
                    f"--conversations={CONVERSATIONS}",
                    "--rate=50",
                    "--think-time=0.2",
                    "--failure-rate=0.5",
                    "--loop-rate=0.5",
                    "--seed=3",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "100"},
                check=False,
            )
            assert app.returncode == 0, app.stderr
            wait_until(
                lambda: sampler.metric("agent_sampler_sessions_decided") >= CONVERSATIONS,
                30,
                "the demo app's sessions decided",
            )
            wait_until(lambda: sampler.metric("agent_sampler_exporter_spans_sent") > 0, 10, "sent")
            # Two requests of open traces (no root: they wait), the second past the cap.
            now = time.time_ns()
            refused = 0
            for _ in range(2):
                request = ExportTraceServiceRequest()
                scope = request.resource_spans.add().scope_spans.add()
                trace_id = os.urandom(16)
                for _ in range(BUFFER_CAP * 6 // 10):
                    scope.spans.append(
                        span(trace_id, os.urandom(8), "s", parent=b"p" * 8, start=now, end=now)
                    )
                try:
                    raw_export(sampler.grpc_port, request)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    refused += 1
            assert refused == 1
            yield scrape(sampler)
    finally:
        sink.stop()


QUERIES = kit_queries()


def test_the_kit_has_queries() -> None:
    assert len(QUERIES) >= 30


def regex_alternatives(value: str) -> list[str]:
    """The literal alternatives of a plain alternation (a|b|c), else []."""
    return value.split("|") if re.fullmatch(r"[\w .|-]+", value) else []


@pytest.mark.parametrize("where, expression", QUERIES, ids=[where for where, _ in QUERIES])
def test_every_series_a_query_reads_exists(
    exposed: dict[str, list[dict[str, str]]], where: str, expression: str
) -> None:
    for selector in selectors(expression):
        if selector.metric in PROMETHEUS_SERIES:
            continue
        assert selector.metric in exposed, f"{where}: {selector.metric} is not on /metrics"
        label_sets = exposed[selector.metric]
        labels = {name for label_set in label_sets for name in label_set}
        missing = selector.grouped_by - labels - SCRAPE_LABELS
        assert not missing, f"{where}: {selector.metric} has no label {sorted(missing)}"
        for name, op, value in selector.matchers:
            if name in SCRAPE_LABELS:
                continue
            assert name in labels, f"{where}: {selector.metric} has no label {name!r}"
            values = {label_set[name] for label_set in label_sets if name in label_set}
            wanted = [value] if op == "Equal" else regex_alternatives(value) if op == "Re" else []
            for one in wanted:
                assert one in values, f"{where}: no {selector.metric}{{{name}={one!r}}} series"
