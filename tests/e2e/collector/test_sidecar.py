"""The sidecar deployment with a real collector, as config/collector-sidecar.yaml (with the
return path of config/collector-sidecar-backend.yaml merged in by the collector) and
config/sampler-sidecar.yaml ship it (timings shortened):

    app (SDK) --OTLP/gRPC--> collector `traces` --> agent-sampler --> collector `traces/sampled`
                                                                          --> backend (a sink)
                                                                          --> file exporter
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sampler.otlp.json_codec import iter_json_lines
from tests.e2e.collector.otelcol import (
    COLLECTOR_RETRY,
    SPANS_PER_TURN,
    AgentApp,
    Collector,
    adapt,
    assert_annotated,
    sampler_config,
    span_ids,
)
from tests.e2e.harness import LOOPBACK, GrpcSink, Received, SamplerProcess, flatten, free_port
from tests.e2e.harness import wait_until as wait

pytestmark = pytest.mark.e2e


@dataclass
class Sidecar:
    app_port: int
    collector: Collector
    sampler: SamplerProcess
    backend: GrpcSink
    kept_file: Path

    def decided(self) -> float:
        return self.sampler.metric("agent_sampler_sessions_decided")

    def file_spans(self) -> list[Received]:
        if not self.kept_file.exists():
            return []
        return [s for request in iter_json_lines(self.kept_file) for s in flatten(request)]


@contextlib.contextmanager
def sidecar(
    otelcol: Path, workdir: Path, batch: dict[str, Any], **sessions: object
) -> Iterator[Sidecar]:
    backend = GrpcSink().start()
    app_port, sampled_port, kept_file = free_port(), free_port(), workdir / "kept.jsonl"
    sampler = SamplerProcess(
        sampler_config("sampler-sidecar.yaml", workdir / "sampler.yaml", **sessions),
        workdir,
        downstream=f"grpc://{LOOPBACK}:{sampled_port}",
    )

    def edit(config: dict[str, Any]) -> None:
        config["processors"]["batch"] = batch
        config["exporters"]["otlp_grpc/sampler"]["retry_on_failure"] = COLLECTOR_RETRY

    def edit_backend(config: dict[str, Any]) -> None:
        config["processors"]["batch/sampled"] = {"timeout": "50ms"}
        # The backend pipeline also writes a file: the format of the sampler's file:// output
        # and replay input is defined as this exporter's.
        config["exporters"]["file/kept"] = {"path": str(kept_file), "flush_interval": "50ms"}
        config["service"]["pipelines"]["traces/sampled"]["exporters"].append("file/kept")

    collector = Collector(
        otelcol,
        adapt("collector-sidecar.yaml", workdir / "collector.yaml", edit),
        workdir,
        extra_configs=(
            adapt("collector-sidecar-backend.yaml", workdir / "backend.yaml", edit_backend),
        ),
        env={
            "OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{app_port}",
            "OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{free_port()}",
            "SAMPLER_ENDPOINT": f"{LOOPBACK}:{sampler.grpc_port}",
            "SAMPLED_ENDPOINT": f"{LOOPBACK}:{sampled_port}",
            "BACKEND_ENDPOINT": f"{LOOPBACK}:{backend.port}",
            "BACKEND_INSECURE": "true",
        },
    )
    try:
        sampler.start()
        collector.start()
        yield Sidecar(app_port, collector, sampler, backend, kept_file)
    finally:
        collector.stop()
        sampler.kill()
        backend.stop()


def test_kept_sessions_arrive_whole_with_their_attributes(otelcol: Path, tmp_path: Path) -> None:
    with sidecar(otelcol, tmp_path, batch={"timeout": "50ms"}) as deployment:
        app = AgentApp(deployment.app_port)
        kept = [
            app.turn("conv-kept"),  # the first turn is fine...
            app.turn("conv-kept", error=True),  # ...the second fails: both are kept
            app.turn(None, error=True),  # a lone trace, no session key
        ]
        dropped = [app.turn("conv-ok-1"), app.turn("conv-ok-2"), app.turn("conv-ok-2")]
        dropped.append(app.turn(None))
        app.close()
        sessions = 5

        wait(lambda: deployment.decided() == sessions, 20, f"{sessions} sessions decided")
        wait(lambda: len(deployment.backend.spans()) >= 3 * SPANS_PER_TURN, 10, "kept spans")
        time.sleep(0.5)  # and nothing more comes
        spans = deployment.backend.spans()
        assert sorted(s.span_id for s in spans) == sorted(span_ids(kept)), "whole, once each"
        assert not span_ids(dropped) & {s.span_id for s in spans}
        assert_annotated(spans)
        assert all(s.resource["service.name"] == "agent-app" for s in spans)
        assert deployment.decided() == sessions

        # The collector's file exporter wrote the same spans, which the sampler's reader of
        # file:// output and replay input reads back.
        wait(lambda: len(deployment.file_spans()) == len(spans), 10, "the file exporter")
        assert {(s.span_id, s.name) for s in deployment.file_spans()} == {
            (s.span_id, s.name) for s in spans
        }
        assert_annotated(deployment.file_spans())
        assert deployment.sampler.metric("agent_sampler_requests_refused") == 0
        assert deployment.sampler.terminate() == 0


def test_refusals_are_retried_by_the_collector_and_nothing_is_lost(
    otelcol: Path, tmp_path: Path
) -> None:
    # A buffer of 12 spans (three turns) and requests of 8 spans: the sampler answers
    # RESOURCE_EXHAUSTED + RetryInfo most of the time, and the collector's exporter retries.
    # decision_wait and root_end_grace exceed the 1 s RetryInfo so a session's refused spans
    # come back before it is decided.
    batch = {"timeout": "20ms", "send_batch_size": 8, "send_batch_max_size": 8}
    with sidecar(
        otelcol,
        tmp_path,
        batch=batch,
        max_buffered_spans=12,
        decision_wait="2s",
        root_end_grace="1500ms",
    ) as deployment:
        app = AgentApp(deployment.app_port)
        turns = [app.turn(f"conv-{i}", error=i % 2 == 0) for i in range(12)]
        turns += [app.turn(None, error=True), app.turn(None)]
        app.close()
        kept = [turn for turn in turns if turn.error]

        wait(lambda: deployment.decided() == len(turns), 60, f"{len(turns)} sessions decided")
        wait(
            lambda: len(deployment.backend.spans()) >= len(kept) * SPANS_PER_TURN,
            10,
            "kept spans downstream",
        )
        time.sleep(0.5)
        spans = deployment.backend.spans()
        assert sorted(s.span_id for s in spans) == sorted(span_ids(kept)), "whole, once each"
        assert_annotated(spans)
        refused = deployment.sampler.metric("agent_sampler_requests_refused")
        assert refused >= 1, "the sampler never refused: the test proves nothing"
        assert deployment.sampler.metric("agent_sampler_late_spans") == 0
        # Every span came in once: refused requests were retried, none was given up.
        accepted = deployment.sampler.metric("agent_sampler_spans_accepted")
        assert accepted == len(turns) * SPANS_PER_TURN
        assert deployment.collector.metric("otelcol_exporter_send_failed_spans") == 0
        assert deployment.sampler.terminate() == 0
