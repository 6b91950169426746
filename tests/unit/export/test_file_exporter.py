"""FileExporter: OTLP/JSON lines that read back into the same requests."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sampler.export.file_exporter import FileExporter
from sampler.otlp.json_codec import request_from_json
from tests.unit.export.support import (
    FakeClock,
    expected_names,
    make_request,
    run,
    settings,
    span_names,
)


def read_lines(path: Path) -> list[ExportTraceServiceRequest]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")  # only complete lines
    return [request_from_json(line) for line in text.splitlines()]


def test_each_batch_is_one_line_that_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out" / "nested" / "kept.jsonl"  # parent directories are created
    a, b, c = make_request("a", 2), make_request("b", 3), make_request("c", 1)

    async def scenario() -> FileExporter:
        exporter = FileExporter(str(path), settings(batch_max_spans=5))
        await exporter.start()
        for body, count in ((a, 2), (b, 3), (c, 1)):
            exporter.try_submit(body, count)
        assert await exporter.flush(5.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    lines = read_lines(path)
    assert lines == [
        ExportTraceServiceRequest.FromString(a + b),  # joined batch: 5 spans
        ExportTraceServiceRequest.FromString(c),
    ]
    assert (exporter.stats.requests_sent, exporter.stats.spans_sent) == (2, 6)


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "kept.jsonl"
    earlier = FileExporter(str(path), settings())
    earlier.write_now(make_request("old", 1))
    earlier.close()

    async def scenario() -> None:
        exporter = FileExporter(str(path), settings())
        await exporter.start()
        exporter.try_submit(make_request("new", 2), 2)
        await exporter.stop(5.0)

    run(scenario())
    names = span_names(line.SerializeToString() for line in read_lines(path))
    assert names == expected_names(("old", 1), ("new", 2))


def test_write_now_writes_synchronously(tmp_path: Path) -> None:
    path = tmp_path / "replay" / "out.jsonl"
    exporter = FileExporter(str(path), settings())
    requests = [make_request("x", 2), make_request("y", 1)]
    for request in requests:
        exporter.write_now(request)
    assert read_lines(path) == [ExportTraceServiceRequest.FromString(r) for r in requests]
    exporter.close()


def test_a_failed_write_is_retried_with_backoff(tmp_path: Path) -> None:
    # The output's parent is a plain file, so opening fails until the sleep hook removes it:
    # an OSError like a full disk, recovering while the exporter backs off.
    blocker = tmp_path / "blocker"
    blocker.write_text("in the way")
    path = blocker / "kept.jsonl"
    clock = FakeClock()
    clock.on_sleep = lambda _s: blocker.unlink(missing_ok=True)

    async def scenario() -> FileExporter:
        exporter = FileExporter(str(path), settings(), clock=clock)
        await exporter.start()
        exporter.try_submit(make_request("a", 2), 2)
        assert await exporter.flush(5.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert len(clock.sleeps) == 1
    assert exporter.stats.retries == 1
    assert span_names(r.SerializeToString() for r in read_lines(path)) == ["a-0", "a-1"]


def test_bytes_that_are_not_a_request_fail_permanently(tmp_path: Path) -> None:
    clock = FakeClock()

    async def scenario() -> FileExporter:
        exporter = FileExporter(str(tmp_path / "kept.jsonl"), settings(), clock=clock)
        await exporter.start()
        exporter.try_submit(b"\xff\xff\xff", 1)
        await exporter.stop(5.0)
        return exporter

    exporter = run(scenario())
    assert clock.sleeps == []
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (1, 1)
