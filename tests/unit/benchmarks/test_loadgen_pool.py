"""The load generator's pools: every round is the same traffic under new trace ids and session
keys, sessions stay whole within a round and within one process, and nothing repeats across
rounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from benchmarks.loadgen.pool import (
    MAX_ROUNDS,
    Pools,
    PoolSpec,
    RequestPool,
    RoundRenderer,
    build_pools,
    rewritten_key,
    rewritten_trace_id,
    route,
)
from benchmarks.quality.generator import SESSION_KEY_ATTRIBUTES

BATCH = 64


@pytest.fixture(scope="module")
def single() -> Pools:
    return build_pools(PoolSpec(sessions=40, seed=5, batch_spans=BATCH, processes=1))


@pytest.fixture(scope="module")
def split() -> Pools:
    return build_pools(PoolSpec(sessions=40, seed=5, batch_spans=BATCH, processes=2))


def spans_of(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(body)
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def session_key(span: Span) -> str | None:
    for kv in span.attributes:
        if kv.key in SESSION_KEY_ATTRIBUTES:
            return kv.value.string_value
    return None


def expected_round(body: bytes, round_number: int) -> bytes:
    """The body as it should read in a round, rewritten message by message."""
    request = ExportTraceServiceRequest.FromString(body)
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.trace_id = rewritten_trace_id(span.trace_id, round_number)
                for kv in span.attributes:
                    if kv.key in SESSION_KEY_ATTRIBUTES:
                        kv.value.string_value = rewritten_key(kv.value.string_value, round_number)
    return request.SerializeToString()


@pytest.mark.parametrize("round_number", [0, 7, MAX_ROUNDS - 1], ids=["first", "7", "last"])
def test_a_round_rewrites_exactly_the_trace_ids_and_session_keys(
    single: Pools, round_number: int
) -> None:
    pool = single.full[0]
    bodies = RoundRenderer(pool).render(round_number)
    assert len(bodies) == pool.request_count
    for index, body in enumerate(bodies):
        assert body == expected_round(pool.body(index), round_number)


def test_bodies_render_one_at_a_time_in_any_order_of_rounds(single: Pools) -> None:
    # the sender renders a body when it sends it: interleaved rounds must not leak into
    # each other, and each body is what the message-level rewrite makes of it
    pool = single.full[0]
    renderer = RoundRenderer(pool)
    for round_number, index in ((5, 0), (2, pool.request_count - 1), (5, 1), (9, 0)):
        body = renderer.body(round_number, index)
        assert body == expected_round(pool.body(index), round_number)
    with pytest.raises(ValueError, match="out of range"):
        renderer.body(MAX_ROUNDS, 0)


def test_rounds_share_no_trace_id_or_session_key(single: Pools) -> None:
    renderer = RoundRenderer(single.full[0])
    seen: list[tuple[set[bytes], set[str]]] = []
    for round_number in (1, 2, 3):
        spans = [s for body in renderer.render(round_number) for s in spans_of(body)]
        assert len(spans) == single.span_count
        keys = {key for s in spans if (key := session_key(s)) is not None}
        seen.append(({s.trace_id for s in spans}, keys))
    for i, (ids, keys) in enumerate(seen):
        for other_ids, other_keys in seen[i + 1 :]:
            assert not ids & other_ids and not keys & other_keys


def test_requests_are_collector_sized(single: Pools, split: Pools) -> None:
    for pool in (*single.full, *single.rootless, *split.full):
        sizes = pool.spans[:-1]  # the last request takes what is left
        # Split between processes, a request's share varies with the sessions in it.
        assert 0.75 * BATCH <= sizes.mean() <= 1.25 * BATCH and sizes.max() <= 2 * BATCH


def test_rootless_traffic_is_the_full_traffic_without_root_spans(single: Pools) -> None:
    def spans(pool: RequestPool) -> list[Span]:
        return [s for i in range(pool.request_count) for s in spans_of(pool.body(i))]

    full, rootless = spans(single.full[0]), spans(single.rootless[0])
    assert all(s.parent_span_id for s in rootless)
    without_roots = [s.SerializeToString() for s in full if s.parent_span_id]
    assert sorted(s.SerializeToString() for s in rootless) == sorted(without_roots)
    assert single.rootless[0].key_offsets.size == 0


def test_each_session_belongs_to_one_process_in_every_round(single: Pools, split: Pools) -> None:
    owners: dict[bytes, int] = {}
    keys: dict[bytes, str] = {}
    for process, pool in enumerate(split.full):
        for body in RoundRenderer(pool).render(9):
            for span in spans_of(body):
                assert owners.setdefault(span.trace_id, process) == process
                if (key := session_key(span)) is not None:
                    keys[span.trace_id] = key
                    assert route(key, 2) == process
    assert set(keys) == set(owners)  # every trace has its root, with the key, in its process
    assert sum(pool.span_count for pool in split.full) == single.span_count
    assert all(pool.span_count > 0 for pool in split.full)


def test_route_ignores_the_rewritten_digits() -> None:
    for key in ("conv_00112233445566778899aabb", "00112233-4455-6677-8899-aabbccddeeff"):
        assert {route(rewritten_key(key, r), 7) for r in range(20)} == {route(key, 7)}


def test_pools_survive_a_file(single: Pools, tmp_path: Path) -> None:
    path = tmp_path / "pools.pickle"
    single.save(path)
    loaded = Pools.load(path)
    assert loaded.spec == single.spec and loaded.span_count == single.span_count
    assert RoundRenderer(loaded.full[0]).render(3) == RoundRenderer(single.full[0]).render(3)
