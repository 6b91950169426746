"""End-to-end harness: the sampler as a real subprocess on loopback, a real OTLP/gRPC sink in
the test process, and the real opentelemetry-sdk as the client. Everything stops by itself."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Received:
    """One span as the downstream saw it."""

    trace_id: str
    span_id: str
    name: str
    attributes: dict[str, object]
    resource: dict[str, object]


def _value(any_value: object) -> object:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]  # type: ignore[attr-defined]
    return getattr(any_value, kind) if kind else None


def flatten(request: trace_service_pb2.ExportTraceServiceRequest) -> list[Received]:
    out = []
    for rs in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append(
                    Received(
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.name,
                        {kv.key: _value(kv.value) for kv in span.attributes},
                        resource,
                    )
                )
    return out


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: GrpcSink) -> None:
        self.sink = sink

    def Export(self, request, context):  # noqa: N802 (generated name)
        with self.sink.lock:
            self.sink.requests.append(request)
            self.sink.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


@dataclass
class GrpcSink:
    """A downstream OTLP/gRPC backend that records what it receives (and the metadata sent
    with it); with ``credentials`` it speaks TLS only. ``port`` 0 binds a free port; a given
    port lets a test point the sampler at a downstream that is not up yet."""

    port: int = 0
    requests: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    credentials: grpc.ServerCredentials | None = None
    _server: grpc.Server | None = None

    def start(self) -> GrpcSink:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), self._server)
        if self.credentials is None:
            self.port = self._server.add_insecure_port(f"{LOOPBACK}:{self.port}")
        else:
            self.port = self._server.add_secure_port(f"{LOOPBACK}:{self.port}", self.credentials)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)

    @property
    def url(self) -> str:
        scheme = "grpc" if self.credentials is None else "grpcs"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def spans(self) -> list[Received]:
        with self.lock:
            return [span for request in self.requests for span in flatten(request)]


# Sets a resource limit, then becomes the command given as its arguments.
_EXEC_WITH_LIMIT = "import os, resource, sys; {limit}; os.execv(sys.argv[1], sys.argv[1:])"


def inherited_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP_")}


@dataclass
class SamplerProcess:
    """`agent-sampler run` as a subprocess with its own ports and config file (None: the
    embedded default). It inherits the test's environment but for OTEL_EXPORTER_OTLP_*, which
    set its downstream: only ``env`` gives those."""

    config_path: Path | None
    workdir: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    downstream: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the test's environment
    args: tuple[str, ...] = ()  # more `run` flags
    nofile: int | None = None  # the file-descriptor limit (soft and hard) to run with
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def command(self) -> list[str]:
        script = Path(sys.executable).with_name("agent-sampler")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "sampler"]
        config = ["--config", str(self.config_path)] if self.config_path is not None else []
        cmd = [
            *base,
            "run",
            *config,
            "--listen",
            f"{LOOPBACK}:{self.grpc_port}",
            "--http-listen",
            f"{LOOPBACK}:{self.http_port}",
            "--metrics-listen",
            f"{LOOPBACK}:{self.metrics_port}",
        ]
        if self.downstream:
            cmd += ["--downstream", self.downstream]
        cmd += self.args
        if self.nofile is not None:  # as `prlimit --nofile=N:N`, without needing util-linux
            limit = f"resource.setrlimit(resource.RLIMIT_NOFILE, ({self.nofile}, {self.nofile}))"
            cmd = [sys.executable, "-c", _EXEC_WITH_LIMIT.format(limit=limit), *cmd]
        return cmd

    def start(self) -> SamplerProcess:
        self.log_path = self.workdir / f"sampler-{self.grpc_port}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**inherited_environment(), "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()
        wait_until(self._ready, READY_TIMEOUT_S, f"sampler ready\n{self.logs()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sampler exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            with urllib.request.urlopen(self.url("/readyz"), timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}{path}"

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of one metric whose labels include ``labels``."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric_name = head.split("{", 1)[0]
            if metric_name not in (name, f"{name}_total"):
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"sampler did not stop on SIGTERM:\n{self.logs()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def running_sampler(
    config_text: str,
    workdir: Path,
    downstream: str | None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    nofile: int | None = None,
) -> Iterator[SamplerProcess]:
    config_path = workdir / "sampler.yaml"
    config_path.write_text(config_text)
    sampler = SamplerProcess(
        config_path, workdir, downstream=downstream, env=env or {}, args=args, nofile=nofile
    ).start()
    try:
        yield sampler
    finally:
        sampler.kill()


def raw_export(
    port: int, request: trace_service_pb2.ExportTraceServiceRequest | bytes, timeout_s: float = 5.0
) -> trace_service_pb2.ExportTraceServiceResponse:
    """One Export call with a plain channel (for late spans and malformed bodies)."""
    body = request if isinstance(request, bytes) else request.SerializeToString()
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        return call(body, timeout=timeout_s)  # type: ignore[no-any-return]


def span(
    trace_id: bytes,
    span_id: bytes,
    name: str,
    *,
    parent: bytes = b"",
    start: int,
    end: int,
    attributes: dict[str, str] | None = None,
    error: bool = False,
) -> Span:
    s = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    for key, value in (attributes or {}).items():
        s.attributes.add(key=key).value.string_value = value
    if error:
        s.status.code = s.status.STATUS_CODE_ERROR
    return s
