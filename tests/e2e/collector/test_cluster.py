"""Samplers sharing verdicts (cluster:) behind a real collector's `load_balancing` exporter
routing by trace id, three samplers, one real redis-server: the key on root spans only, so a
conversation's turns land on different samplers, and the failing turn often on another sampler
than the earlier ones. Without the cluster such conversations arrive in parts
(test_load_balanced.py); with it every kept conversation arrives whole, each span once, and
dropped ones nowhere; also across an outage of the store and a restart of a sampler."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.collector.otelcol import (
    SPANS_PER_TURN,
    AgentApp,
    Turn,
    assert_annotated,
    by_conversation,
    span_ids,
)
from tests.e2e.collector.test_load_balanced import LoadBalanced, load_balanced
from tests.e2e.harness import SamplerProcess
from tests.e2e.harness import wait_until as wait
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRACE_ID_ROUTING = "collector-loadbalancing-traceid.yaml"
OUTAGE_S = 30.0  # the target: the store killed for 30 s under load


def cluster(redis: RedisServer) -> dict[str, object]:
    return {"redis": {"url": redis.url, "timeout": "500ms"}, "key_prefix": "test:"}


def conversations(app: AgentApp, count: int, *, name: str = "conv") -> list[list[Turn]]:
    """Three turns each: the failing turn first, in the middle, last, or none (dropped)."""
    out = []
    for i in range(count):
        failing = i % 4  # 0, 1, 2: that turn fails; 3: none does
        out.append([app.turn(f"{name}-{i}", error=t == failing) for t in range(3)])
    return out


def kept(conversations: list[list[Turn]]) -> list[list[Turn]]:
    return [c for c in conversations if any(t.error for t in c)]


def assert_whole(lb: LoadBalanced, conversations: list[list[Turn]], lone: list[Turn]) -> None:
    """What the sinks hold is exactly the kept conversations, whole, and the failed lone
    traces: each span once, annotated with the rule that kept it."""
    received = lb.received()
    expected = span_ids(t for c in kept(conversations) for t in c) | span_ids(
        t for t in lone if t.error
    )
    got = [s.span_id for s in received]
    assert len(got) == len(set(got)), "each span once"
    missing = expected - set(got)
    extra = set(got) - expected
    assert not missing and not extra, (sorted(missing)[:8], sorted(extra)[:8])
    assert_annotated(received)


def split_failures(lb: LoadBalanced, conversations: list[list[Turn]]) -> int:
    """Kept conversations whose failing turn went to a sampler that got no other turn of it."""
    n = 0
    for c in kept(conversations):
        holders = lb.holders(c)
        failing = next(t for t in c if t.error)
        others = span_ids(t for t in c if t is not failing)
        where = next(i for i, got in holders.items() if failing.span_ids <= got)
        if not holders.get(where, set()) & others:
            n += 1
    return n


def total(lb: LoadBalanced, name: str, **labels: str) -> float:
    return sum(s.metric(name, **labels) for s in lb.samplers)


def test_every_kept_conversation_arrives_whole(
    otelcol: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    with load_balanced(otelcol, tmp_path, TRACE_ID_ROUTING, cluster=cluster(redis_server)) as lb:
        wait(lambda: total(lb, "agent_sampler_cluster_connected") == 3, 10, "connected")
        app = AgentApp(lb.app_port)  # the key on root spans only
        convs = conversations(app, 12)
        lone = [app.turn(None, error=i % 2 == 0) for i in range(4)]
        app.close()
        expected = (3 * len(kept(convs)) + sum(t.error for t in lone)) * SPANS_PER_TURN
        wait(lambda: len(lb.received()) >= expected, 30, f"{expected} kept spans")
        time.sleep(2.5)  # every part decided (1s wait) and nothing more comes

        assert_whole(lb, convs, lone)
        assert split_failures(lb, convs) >= 1, "no failing turn landed apart: nothing tested"
        assert total(lb, "agent_sampler_cluster_verdicts", event="applied") >= 1
        assert total(lb, "agent_sampler_cluster_verdicts", event="dropped") == 0
        assert total(lb, "agent_sampler_spans_refused") == 0


def test_the_store_stopped_for_30s_under_load_loses_nothing_and_conversations_end_whole(
    otelcol: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    with load_balanced(
        otelcol, tmp_path, TRACE_ID_ROUTING, cluster=cluster(redis_server), dropped_hold="90s"
    ) as lb:
        wait(lambda: total(lb, "agent_sampler_cluster_connected") == 3, 10, "connected")
        app = AgentApp(lb.app_port)
        before = conversations(app, 8, name="before")
        redis_server.stop()  # down for 30 s while traffic goes on and sessions are decided
        down_since = time.monotonic()
        during: list[list[Turn]] = []
        while time.monotonic() - down_since < OUTAGE_S:
            during += conversations(app, 4, name=f"during{len(during)}")
        assert total(lb, "agent_sampler_cluster_connected") == 0, "the loss was seen"
        redis_server.start()
        after = conversations(app, 8, name="after")
        app.close()

        convs = before + during + after
        expected = 3 * len(kept(convs)) * SPANS_PER_TURN
        wait(lambda: len(lb.received()) >= expected, 60, f"{expected} kept spans")
        wait(lambda: total(lb, "agent_sampler_cluster_connected") == 3, 10, "reconnected")
        time.sleep(2.5)

        assert_whole(lb, convs, [])  # zero spans lost, conversations decided meanwhile whole
        assert total(lb, "agent_sampler_spans_refused") == 0, "no request refused for it"
        assert total(lb, "agent_sampler_requests_refused") == 0
        assert total(lb, "agent_sampler_cluster_verdicts", event="dropped") == 0
        for sampler in lb.samplers:  # one line as the outage began, one as it ended
            logs = sampler.logs()
            assert logs.count("unreachable") == 1, logs
            assert logs.count("reachable again") == 1, logs


def test_a_restarted_sampler_follows_keeps_made_before_it_started(
    otelcol: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    with load_balanced(otelcol, tmp_path, TRACE_ID_ROUTING, cluster=cluster(redis_server)) as lb:
        wait(lambda: total(lb, "agent_sampler_cluster_connected") == 3, 10, "connected")
        app = AgentApp(lb.app_port)
        # The failing turn first: each conversation is kept by the sampler that got it...
        first = [app.turn(f"conv-{i}", error=True) for i in range(12)]
        wait(lambda: len(lb.received()) >= len(first) * SPANS_PER_TURN, 20, "first turns kept")
        # ...then one sampler restarts, forgetting what it heard...
        victim = lb.samplers[1]
        assert victim.terminate() == 0
        assert re.search(r"decided \d+ buffered session", victim.logs())
        restarted = lb.samplers[1] = SamplerProcess(
            victim.config_path,
            victim.workdir,
            grpc_port=victim.grpc_port,
            http_port=victim.http_port,
            metrics_port=victim.metrics_port,
            downstream=victim.downstream,
        )
        restarted.start()
        # ...and the later, fine turns come: those routed to it are kept all the same, for a
        # keep it never heard (read from the store when it connected)
        later = [app.turn(f"conv-{i}") for i in range(12) for _ in range(2)]
        app.close()
        convs = list(by_conversation(first + later).values())
        expected = len(first + later) * SPANS_PER_TURN
        wait(lambda: len(lb.received()) >= expected, 30, f"{expected} kept spans")
        time.sleep(2.5)

        assert_whole(lb, convs, [])
        # it read the keeps made before it started, and its later turns were kept for them:
        # followed at once, or (arrived before it had read them) kept as parts of a peer's keep
        assert restarted.metric("agent_sampler_cluster_verdicts", event="received") >= 12
        kept_for_peers = restarted.metric(
            "agent_sampler_late_spans", verdict="keep"
        ) + restarted.metric("agent_sampler_cluster_spans_kept")
        assert kept_for_peers >= SPANS_PER_TURN, "no later turn went to it: nothing tested"
