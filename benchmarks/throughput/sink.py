"""A downstream OTLP/gRPC server that accepts every Export and does nothing with it.

    python -m benchmarks.throughput.sink [--host 127.0.0.1]

Prints ``{"event": "listening", "port": N}`` once it listens, then serves until its stdin
closes (so it goes away with the harness that started it) or SIGTERM. Requests are not even
parsed: the sink must cost next to nothing, as it shares a core with the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence

import grpc
import grpc.aio

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
EMPTY_RESPONSE = b""  # ExportTraceServiceResponse() serialized


async def _export(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return EMPTY_RESPONSE


async def serve(host: str) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    handler = grpc.unary_unary_rpc_method_handler(
        _export, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
    )
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    sys.stdout.write(json.dumps({"event": "listening", "port": port}) + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 4096):  # end of file: the harness is gone
            stop.set()

    loop.add_reader(stdin, on_stdin)
    await stop.wait()
    loop.remove_reader(stdin)
    await server.stop(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A do-nothing OTLP/gRPC trace sink.")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
