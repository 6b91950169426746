"""The throughput benchmark end to end with tiny parameters: sink, sampler(s) and load generator
really run on loopback and the JSON has every figure (its shape is checked, not its speed);
and the load generator's driver against a server that refuses."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable

import grpc
import grpc.aio
import pytest

from benchmarks.loadgen.driver import Command, RoundFeed, WindowResult, run
from benchmarks.loadgen.pool import PoolSpec, build_pools
from benchmarks.throughput.harness import main
from benchmarks.throughput.sink import SERVICE

pytestmark = pytest.mark.e2e

TINY = [
    "--json",
    "--sessions", "100",
    "--batch-spans", "128",
    "--warmup", "0.3",
    "--window", "0.7",
    "--latency-warmup", "0.2",
    "--latency-window", "0.6",
    "--capacity-window", "0.4",
    "--parse-seconds", "0.2",
    "--scaling-points", "2000,10000,40000",
    "--scaling-warmup", "0.2",
    "--scaling-window", "0.5",
]  # fmt: skip

POSITIVE = (
    "spans_per_second",
    "parse_only_spans_per_second",
    "p50_export_ms",
    "p99_export_ms",
    "peak_rss_mb",
    "wire_bytes_per_span",
    "bytes_per_buffered_span",
    "cpu_seconds_per_million_spans",
    "loadgen_offered_spans_per_second",
)


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("processes", [1, 2], ids=["one-sampler", "two-samplers"])
def test_harness_prints_one_json_object_with_every_figure(
    processes: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY, "--processes", str(processes)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # --json: the JSON object alone
    result = json.loads(lines[0])

    shown = json.dumps(result, indent=1)  # in the message of any failed assertion
    for key in POSITIVE:
        assert isinstance(result[key], int | float) and result[key] > 0, f"{key}: {shown}"
    assert result["processes"] == processes
    assert result["p50_export_ms"] <= result["p99_export_ms"]
    assert result["sustained"] and result["sustained"][-1]["failed_requests"] == 0, shown
    assert set(result["scaling"]) == {"2000", "10000", "40000"}
    for point, figures in result["scaling"].items():
        assert figures["spans_per_second"] > 0, shown
        # the fill stops once the generator has sent the point's spans; what the samplers had
        # counted as accepted by then can be short by the requests still in flight
        assert figures["parked_spans"] >= 0.9 * int(point), shown
        assert figures["buffered_spans"] >= int(point), shown
    assert result["scaling_largest_over_smallest"] > 0


class _RefuseEveryOther:
    """An OTLP/gRPC server refusing every other Export as the sampler does when full."""

    def __init__(self) -> None:
        self.calls = 0

    async def export(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.calls += 1
        if self.calls % 2 == 0:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")
        return b""


async def _drive(command_for: Callable[[str], Command]) -> tuple[WindowResult, int]:
    pools = build_pools(PoolSpec(sessions=30, batch_spans=64))
    servicer = _RefuseEveryOther()
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(servicer.export)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        feeds = [RoundFeed(pool, itertools.count()) for pool in pools.full]
        result = await run(command_for(f"127.0.0.1:{port}"), feeds)
    finally:
        await server.stop(None)
    return result, servicer.calls


@pytest.mark.timeout(30)
def test_the_driver_counts_refusals_and_keeps_its_pace() -> None:
    def command(target: str) -> Command:
        return Command(
            targets=(target,), streams=2, rate=20_000.0, window_s=1.0, refused_backoff_s=0.0
        )

    result, calls = asyncio.run(_drive(command))
    assert result.requests_failed == 0 and result.errors == []
    assert result.requests_ok > 0 and result.requests_refused > 0
    assert abs(result.requests_ok - result.requests_refused) <= 2
    assert result.requests_ok + result.requests_refused <= calls
    assert 14_000 <= result.offered_spans_per_second <= 26_000
