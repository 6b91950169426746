"""The OTLP/gRPC sink both systems forward to: it counts what it receives and can record it.

    python -m benchmarks.versus_collector.sink

Prints ``{"event": "listening", "port": N}``, then reads one JSON command a line on stdin:

- ``{"op": "record", "path": P}``: from now on append every request to ``P`` (``null``: stop);
  answers ``{"event": "recording"}``;
- ``{"op": "stats"}``: flushes the recording and answers ``{"event": "stats", "requests": R,
  "spans": S}``, counted since the sink started;
- end of stdin: exits.

Every request is parsed to count its spans (the kept traffic is a small share of what the
systems take, so this costs little on the generator's CPU). A recording is the raw request
bodies, each preceded by its length (4 bytes, big-endian): `read_recording` reads them back.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import grpc.aio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class RecordingSink:
    def __init__(self) -> None:
        self.requests = 0
        self.spans = 0
        self.recording: IO[bytes] | None = None

    async def export(self, body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        self.requests += 1
        self.spans += sum(
            len(scope_spans.spans)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
        )
        if self.recording is not None:
            self.recording.write(_LENGTH.pack(len(body)))
            self.recording.write(body)
        return b""  # ExportTraceServiceResponse() serialized

    def command(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "record":
            if self.recording is not None:
                self.recording.close()
            path = message.get("path")
            self.recording = open(path, "ab") if path else None  # closed by the next command
            return {"event": "recording"}
        if op == "stats":
            if self.recording is not None:
                self.recording.flush()
            return {"event": "stats", "requests": self.requests, "spans": self.spans}
        return {"event": "error", "message": f"unknown op {op!r}"}


def read_recording(path: Path) -> Iterator[ExportTraceServiceRequest]:
    with path.open("rb") as recording:
        while header := recording.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(header)
            yield ExportTraceServiceRequest.FromString(recording.read(length))


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(host: str = "127.0.0.1") -> None:
    sink = RecordingSink()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    handler = grpc.unary_unary_rpc_method_handler(
        sink.export, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
    )
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    _say({"event": "listening", "port": port})
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    stdin = sys.stdin.fileno()
    pending = b""

    def on_stdin() -> None:
        nonlocal pending
        chunk = os.read(stdin, 1 << 16)
        if not chunk:  # end of file: the harness is gone
            done.set()
            return
        pending += chunk
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            if line.strip():
                _say(sink.command(json.loads(line)))

    loop.add_reader(stdin, on_stdin)
    await done.wait()
    loop.remove_reader(stdin)
    await server.stop(0.5)
    if sink.recording is not None:
        sink.recording.close()


def main() -> int:
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
