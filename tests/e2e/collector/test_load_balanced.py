"""The load-balanced deployment with a real collector: its `load_balancing` exporter (static
resolver) in front of three samplers, as config/collector-loadbalancing.yaml (routing by the
session attribute), config/collector-loadbalancing-traceid.yaml (by trace id) and
config/sampler-loadbalanced.yaml ship them (timings shortened). Each sampler forwards to a sink
of its own, so a test sees which sampler kept what."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.collector.otelcol import (
    COLLECTOR_RETRY,
    RULES,
    SPANS_PER_TURN,
    AgentApp,
    Collector,
    Turn,
    adapt,
    assert_annotated,
    by_conversation,
    sampler_config,
    span_ids,
)
from tests.e2e.harness import LOOPBACK, GrpcSink, Received, SamplerProcess, free_port
from tests.e2e.harness import wait_until as wait

pytestmark = pytest.mark.e2e

SAMPLERS = 3


@dataclass
class LoadBalanced:
    app_port: int
    collector: Collector
    samplers: list[SamplerProcess]
    sinks: list[GrpcSink]

    def decided(self) -> list[float]:
        return [s.metric("agent_sampler_sessions_decided") for s in self.samplers]

    def buffered(self) -> float:
        return sum(s.metric("agent_sampler_buffer_spans") for s in self.samplers)

    def received(self) -> list[Received]:
        return [span for sink in self.sinks for span in sink.spans()]

    def holders(self, turns: list[Turn]) -> dict[int, set[str]]:
        """Which sink (by sampler index) received which of these turns' spans."""
        wanted = span_ids(turns)
        out: dict[int, set[str]] = {}
        for i, sink in enumerate(self.sinks):
            got = {s.span_id for s in sink.spans()} & wanted
            if got:
                out[i] = got
        return out


@contextlib.contextmanager
def load_balanced(
    otelcol: Path,
    workdir: Path,
    collector_config: str,
    rules: list[dict[str, Any]] = RULES,
    cluster: dict[str, Any] | None = None,
    **sessions: object,
) -> Iterator[LoadBalanced]:
    """``cluster``: the samplers' `cluster:` section (none: each decides alone)."""
    sinks = [GrpcSink().start() for _ in range(SAMPLERS)]
    samplers: list[SamplerProcess] = []
    collector: Collector | None = None
    try:
        for i, sink in enumerate(sinks):
            config = workdir / f"sampler{i}.yaml"
            sampler_config("sampler-loadbalanced.yaml", config, rules, **sessions)
            if cluster is not None:
                document = yaml.safe_load(config.read_text())
                document["cluster"] = cluster
                config.write_text(yaml.safe_dump(document, sort_keys=False))
            samplers.append(SamplerProcess(config, workdir, downstream=sink.url))
            samplers[-1].start()

        def edit(config: dict[str, Any]) -> None:
            config["processors"]["batch"] = {"timeout": "50ms"}
            config["exporters"]["load_balancing"]["protocol"]["otlp"]["retry_on_failure"] = (
                COLLECTOR_RETRY
            )

        app_port = free_port()
        endpoints = ", ".join(f"{LOOPBACK}:{s.grpc_port}" for s in samplers)
        collector = Collector(
            otelcol,
            adapt(collector_config, workdir / "collector.yaml", edit),
            workdir,
            env={
                "OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{app_port}",
                "OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{free_port()}",
                "SAMPLER_ENDPOINTS": f"[{endpoints}]",
            },
        )
        collector.start()
        yield LoadBalanced(app_port, collector, samplers, sinks)
    finally:
        if collector is not None:
            collector.stop()
        for sampler in samplers:
            sampler.kill()
        for sink in sinks:
            sink.stop()


def settle(lb: LoadBalanced, sessions: int, kept_spans: int, timeout_s: float = 30) -> None:
    wait(lambda: sum(lb.decided()) >= sessions, timeout_s, f"{sessions} sessions decided")
    wait(lambda: len(lb.received()) >= kept_spans, 10, f"{kept_spans} kept spans downstream")
    time.sleep(0.5)  # and nothing more comes


def test_routing_by_the_session_attribute_keeps_conversations_whole(
    otelcol: Path, tmp_path: Path
) -> None:
    with load_balanced(otelcol, tmp_path, "collector-loadbalancing.yaml") as lb:
        # The key on every span, as routing by attribute requires.
        app = AgentApp(lb.app_port, key_on_every_span=True)
        conversations = [
            [app.turn(f"conv-{i}"), app.turn(f"conv-{i}"), app.turn(f"conv-{i}", error=i % 3 > 0)]
            for i in range(9)
        ]
        keyless = [app.turn(None, error=True) for _ in range(3)]
        app.close()
        kept = [c for c in conversations if c[-1].error]
        sessions = len(conversations) + len(keyless)
        settle(lb, sessions, (3 * len(kept) + len(keyless)) * SPANS_PER_TURN)

        assert sum(lb.decided()) == sessions, "each session decided exactly once"
        received = lb.received()
        assert len({s.span_id for s in received}) == len(received), "no duplicates"
        assert_annotated(received)
        for conversation in kept:
            holders = lb.holders(conversation)
            assert list(holders.values()) == [span_ids(conversation)], "whole, on one sampler"
        dropped = [turn for c in conversations if not c[-1].error for turn in c]
        assert not lb.holders(dropped)
        assert sum(1 for n in lb.decided() if n) >= 2, "the conversations were spread"
        # Spans without the attribute are routed by its empty value: all to one sampler.
        assert len(lb.holders(keyless)) == 1
        assert set().union(*lb.holders(keyless).values()) == span_ids(keyless)


def test_routing_by_trace_id_keeps_traces_whole_but_splits_conversations(
    otelcol: Path, tmp_path: Path
) -> None:
    # Every session is kept here, by `errors` if the sampler saw the failing turn, else by
    # `rest`: the output shows where each trace went and what each sampler decided.
    rules = [RULES[0], {"name": "rest", "action": "keep"}]
    with load_balanced(
        otelcol, tmp_path, "collector-loadbalancing-traceid.yaml", rules=rules
    ) as lb:
        app = AgentApp(lb.app_port)  # the key on root spans only
        conversations = [
            [app.turn(f"conv-{i}"), app.turn(f"conv-{i}"), app.turn(f"conv-{i}", error=True)]
            for i in range(8)
        ]
        lone = [app.turn(None, error=i % 2 == 0) for i in range(6)]
        app.close()
        turns = app.turns
        wait(lambda: len(lb.received()) >= len(turns) * SPANS_PER_TURN, 30, "every span")
        time.sleep(1.5)  # every piece decided; nothing more comes

        received = lb.received()
        assert sorted(s.span_id for s in received) == sorted(span_ids(turns)), "once each"
        for turn in turns:  # every trace whole, on one sampler
            assert list(lb.holders([turn]).values()) == [turn.span_ids]
        pieces = {(c[0].conversation, sampler) for c in conversations for sampler in lb.holders(c)}
        split = {name for name, _ in pieces if sum(1 for n, _ in pieces if n == name) > 1}
        # 8 conversations of 3 traces over 3 samplers: all on one sampler each has a chance
        # of (1/9)^8.
        assert split, "no conversation was split across samplers"
        assert sum(lb.decided()) == len(pieces) + len(lone), "each piece decided on its own"
        # The pieces that did not see the failing turn were not kept for the error: with a
        # drop rule after `errors` (the shipped rules end with a budget) they would be lost.
        for conversation in conversations:
            if conversation[0].conversation in split:
                rules_seen = {
                    s.attributes["agent_sampler.rule"]
                    for s in received
                    if s.span_id in span_ids(conversation)
                }
                assert rules_seen == {"keep-errors", "rest"}


def test_a_sampler_restarted_within_the_retry_window_loses_no_kept_session(
    otelcol: Path, tmp_path: Path
) -> None:
    with load_balanced(otelcol, tmp_path, "collector-loadbalancing.yaml", decision_wait="4s") as lb:
        app = AgentApp(lb.app_port, key_on_every_span=True)
        first = [app.turn(f"conv-{i}") for i in range(24)]  # fine, and still buffered...
        wait(lambda: lb.buffered() == len(first) * SPANS_PER_TURN, 10, "first turns buffered")

        victim = lb.samplers[1]
        assert victim.terminate() == 0  # SIGTERM: it decides what it holds, flushes, exits
        match = re.search(r"decided (\d+) buffered session", victim.logs())
        assert match, victim.logs()
        cut_short = int(match.group(1))  # conversations it decided on their first turn

        # ...the failing turns come while it is down: its share waits in the collector's
        # queue and is retried (UNAVAILABLE), with sessions sent whole meanwhile.
        second = [app.turn(f"conv-{i}", error=True) for i in range(24)]
        singles = [app.turn(f"single-{i}", error=True) for i in range(9)]
        time.sleep(1.5)
        restarted = lb.samplers[1] = SamplerProcess(
            victim.config_path,
            victim.workdir,
            grpc_port=victim.grpc_port,
            http_port=victim.http_port,
            metrics_port=victim.metrics_port,
            downstream=victim.downstream,
        )
        restarted.start()
        app.close()

        kept_turns = second + singles
        wait(lambda: span_ids(kept_turns) <= {s.span_id for s in lb.received()}, 30, "kept")
        time.sleep(0.5)
        received = lb.received()
        assert len({s.span_id for s in received}) == len(received), "no duplicates"
        assert_annotated(received)

        # Nothing kept was lost: every failing turn and every single-turn session arrived
        # whole, including those sent to the victim while it was down.
        for turn in kept_turns:
            assert len(lb.holders([turn])) == 1
        assert restarted.metric("agent_sampler_sessions_decided") >= 1, "nothing was retried"
        # What the restart did: the conversations the victim held were decided at its
        # shutdown on their first, fine turn (dropped); their failing turn, retried to the
        # new process, which does not know them, was kept alone. The others arrived whole.
        turns = by_conversation(first + second)
        partial = {
            name
            for name, conversation in turns.items()
            if lb.holders(conversation) == {1: conversation[1].span_ids}
        }
        whole = {
            name
            for name, conversation in turns.items()
            if set().union(*lb.holders(conversation).values()) == span_ids(conversation)
        }
        assert partial | whole == set(turns) and not partial & whole
        assert len(partial) == cut_short >= 1
