"""What the attack suite (tests/e2e/test_attacks.py) sends, and how it measures the sampler.

Everything goes to a real `agent-sampler run` subprocess on loopback. For each attack the suite
records, from outside the process:

- every answer (HTTP status or gRPC code) and how long it took;
- the resident memory grown: VmHWM over the attack (reset just before it) minus VmRSS before it;
- how long `/healthz` on the metrics port made a prober wait: a thread opens a new connection
  and asks every 10 ms (as a kubelet probe does, one connection each), for the whole attack.

Bodies are built on the wire (``tests.protowire``) where no SDK would build them, once per
module, before anything is measured.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

import grpc

from tests.e2e.harness import LOOPBACK
from tests.e2e.rss import peak_rss_mib, reset_peak_rss, rss_mib
from tests.protowire import encode_varint, length_delimited

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MIB = 1 << 20
MAX_MESSAGE_SIZE = 16 * MIB  # the default receivers.max_message_size
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PROBE_PERIOD_S = 0.01
PROBE_TIMEOUT_S = 5.0


# -- the health probe ------------------------------------------------------------------------


# The prober, a process of its own (so that the attack's client threads in the test process
# cannot hold it up on the GIL): until its stdin closes, it asks every PERIOD seconds on a new
# connection, then prints one JSON list of [when asked (monotonic), seconds waited, error].
_PROBER = """
import http.client, json, select, sys, time
port, period, timeout = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print("ready", flush=True)
probes, next_at = [], time.monotonic()
while True:
    started = time.monotonic()
    error = ""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                error = "status %d" % response.status
        finally:
            connection.close()
    except OSError as exc:
        error = repr(exc)
    probes.append([started, time.monotonic() - started, error])
    next_at = max(next_at + period, time.monotonic())
    if select.select([sys.stdin], [], [], max(0.0, next_at - time.monotonic()))[0]:
        break
print(json.dumps(probes), flush=True)
"""


@dataclass
class HealthProbe:
    """Asks ``GET /healthz`` every ``period_s`` on a new connection (as a kubelet probe does),
    from a process of its own, while the block runs; records how long each answer took (a
    failure counts as the time it took to fail)."""

    port: int
    period_s: float = PROBE_PERIOD_S
    waits: list[float] = field(default_factory=list)
    asked: list[float] = field(default_factory=list)  # when each probe began (monotonic)
    failures: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> HealthProbe:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _PROBER,
                str(self.port),
                str(self.period_s),
                str(PROBE_TIMEOUT_S),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._proc is not None
        try:  # stdin closed: the prober stops and reports
            out, _err = self._proc.communicate("", timeout=PROBE_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise
        for asked, waited, error in json.loads(out):
            self.asked.append(asked)
            self.waits.append(waited)
            if error:
                self.failures.append(error)

    @property
    def worst_ms(self) -> float:
        return 1000 * max(self.waits, default=0.0)

    def slowest(self, count: int = 5, since: float = 0.0) -> list[tuple[float, float]]:
        """The ``count`` longest waits as (seconds after ``since``, milliseconds)."""
        pairs = sorted(zip(self.waits, self.asked, strict=True), reverse=True)[:count]
        return [(round(at - since, 3), round(1000 * wait, 1)) for wait, at in pairs]


# -- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request's answer: an HTTP status (``"200"``) or a gRPC code name (``"OK"``)."""

    status: str
    seconds: float
    detail: str = ""


def http_post(
    port: int,
    body: bytes,
    content_type: str = PROTOBUF,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Answer:
    started = time.monotonic()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    try:
        connection.request(
            "POST", "/v1/traces", body, {"Content-Type": content_type, **(headers or {})}
        )
        response = connection.getresponse()
        text = response.read()
        return Answer(
            str(response.status), time.monotonic() - started, text[:300].decode("latin-1")
        )
    except OSError as error:
        return Answer(type(error).__name__, time.monotonic() - started, str(error))
    finally:
        connection.close()


def grpc_export(
    port: int,
    body: bytes,
    *,
    metadata: Sequence[tuple[str, str]] = (),
    compression: grpc.Compression | None = None,
    timeout_s: float = 30.0,
) -> Answer:
    options = [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
    ]
    started = time.monotonic()
    with grpc.insecure_channel(f"{LOOPBACK}:{port}", options=options) as channel:
        call = channel.unary_unary(EXPORT, None, None)  # bytes in, bytes out
        try:
            call(body, timeout=timeout_s, metadata=tuple(metadata), compression=compression)
            return Answer("OK", time.monotonic() - started)
        except grpc.RpcError as error:
            return Answer(
                error.code().name,
                time.monotonic() - started,
                str(error.details())[:300],
            )


def concurrently(calls: Sequence[Callable[[], Answer]]) -> list[Answer]:
    """Runs every call at once, each in a thread; their answers in order."""
    answers: list[Answer | None] = [None] * len(calls)

    def run(index: int) -> None:
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [answer for answer in answers if answer is not None]


# -- measuring one attack --------------------------------------------------------------------


@dataclass
class Measured:
    answers: list[Answer]
    rss_before_mib: float
    rss_growth_mib: float  # VmHWM during the attack minus VmRSS before it
    worst_health_ms: float
    health_probes: int
    health_failures: list[str]

    @property
    def slowest_s(self) -> float:
        return max((a.seconds for a in self.answers), default=0.0)

    @property
    def statuses(self) -> list[str]:
        return [a.status for a in self.answers]

    def report(self) -> dict[str, object]:
        return {
            "statuses": sorted(set(self.statuses)),
            "slowest_s": round(self.slowest_s, 3),
            "rss_growth_mib": round(self.rss_growth_mib, 1),
            "worst_health_ms": round(self.worst_health_ms, 1),
            "health_probes": self.health_probes,
            "health_failures": self.health_failures[:3],
            "details": sorted({a.detail[:120] for a in self.answers})[:3],
        }


def settle(pid: int, quiet_mib: float = 0.5, timeout_s: float = 5.0) -> float:
    """Waits until the process's RSS stops moving (start-up, an earlier attack); returns it."""
    deadline = time.monotonic() + timeout_s
    last = rss_mib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_mib(pid)
        if abs(now - last) < quiet_mib:
            return now
        last = now
    return last


def measure(
    pid: int, metrics_port: int, attack: Callable[[], list[Answer]], after_s: float = 0.1
) -> Measured:
    """Runs ``attack`` while probing; the probe goes on ``after_s`` after the last answer (what
    an attack leaves behind, such as sessions to decide, is part of it)."""
    before = settle(pid)
    reset_peak_rss(pid)
    with HealthProbe(metrics_port) as probe:
        time.sleep(0.05)  # a few probes before the attack: the baseline
        answers = attack()
        time.sleep(after_s)
    growth = peak_rss_mib(pid) - before
    return Measured(answers, before, growth, probe.worst_ms, len(probe.waits), probe.failures)


# -- bodies ----------------------------------------------------------------------------------

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")


def _span(trace_id: bytes = TRACE_ID, span_id: bytes = SPAN_ID, extra: bytes = b"") -> bytes:
    return length_delimited(1, trace_id) + length_delimited(2, span_id) + extra


def _request(*spans: bytes) -> bytes:
    scope = b"".join(length_delimited(2, s) for s in spans)
    return length_delimited(1, length_delimited(2, scope))


def _array_attribute(values: int) -> bytes:
    """A span attribute (field 9) whose value is an array of ``values`` empty AnyValues."""
    array = b"\x0a\x00" * values  # ArrayValue.values: empty AnyValue
    value = length_delimited(5, array)  # AnyValue.array_value
    return length_delimited(9, length_delimited(1, b"a") + length_delimited(2, value))


@cache
def json_empty_spans(size: int) -> bytes:
    """OTLP/JSON: one scope holding ``size`` bytes' worth of empty spans (``{}``)."""
    count = (size - 60) // 3
    return b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b",".join([b"{}"] * count) + b"]}]}]}"


@cache
def json_array_of_empty_values(size: int) -> bytes:
    count = (size - 200) // 3
    values = b",".join([b"{}"] * count)
    return (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"' + TRACE_ID.hex().encode()
        + b'","spanId":"' + SPAN_ID.hex().encode() + b'","attributes":[{"key":"a","value":'
        + b'{"arrayValue":{"values":[' + values + b"]}}}]}]}]}]}"
    )  # fmt: skip


@cache
def protobuf_array_of_empty_values(count: int) -> bytes:
    return _request(_span(extra=_array_attribute(count)))


@cache
def protobuf_spans(count: int) -> bytes:
    """``count`` spans of distinct traces (each its own session), ids only: 30 bytes each."""
    spans = (_span(i.to_bytes(4, "big") + TRACE_ID[4:], SPAN_ID) for i in range(1, count + 1))
    return _request(*spans)


@cache
def nested_groups(depth: int = 2000, tail: int = 400_001) -> bytes:
    """``depth`` start-group tags (field 1, wire type 3), never ended, then ``tail`` zeros."""
    return encode_varint(1 << 3 | 3) * depth + bytes(tail)


@cache
def empty_resource_spans(count: int) -> bytes:
    return b"\x0a\x00" * count  # ExportTraceServiceRequest.resource_spans, empty


@cache
def gzipped(body: bytes) -> bytes:
    return gzip.compress(body, 9)


@cache
def one_span_with(field_number: int, limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """One span holding as many empty events (11) or links (13) as fit in ``limit``; field 9
    fills it with one attribute whose array holds as many empty values."""
    room = limit - 64
    if field_number == 9:
        return protobuf_array_of_empty_values(room // 2 - 8)
    tag = encode_varint(field_number << 3 | 2)
    return _request(_span(extra=(tag + b"\x00") * (room // (len(tag) + 1))))


def realistic_json(size: int, seed: int = 0, conversation: str = "") -> bytes:
    """OTLP/JSON of ordinary agent spans (ids, names, a few attributes, about 400 bytes a
    span), ``size`` bytes at most: every span its own trace, or with ``conversation``, every
    span in one trace and that conversation (one session, decided only after
    ``decision_wait``)."""
    parts = []
    total = 100
    i = 0
    while True:
        trace = (seed << 40 | (0 if conversation else i)).to_bytes(16, "big").hex()
        span_id = (i + 1).to_bytes(8, "big").hex()
        key = (
            f'{{"key":"gen_ai.conversation.id","value":{{"stringValue":"{conversation}"}}}},'
            if conversation
            else ""
        )
        span = (
            f'{{"traceId":"{trace}","spanId":"{span_id}",'
            '"name":"execute_tool search_kb","kind":1,'
            '"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000",'
            f'"attributes":[{key}'
            '{"key":"gen_ai.operation.name","value":{"stringValue":"execute_tool"}},'
            '{"key":"gen_ai.tool.name","value":{"stringValue":"search_kb"}},'
            '{"key":"gen_ai.tool.call.arguments","value":{"stringValue":"{\\"q\\":\\"refund '
            f'policy for damaged goods {i}\\"}}"}}}}]}}'
        )
        if total + len(span) + 1 > size:
            break
        parts.append(span)
        total += len(span) + 1
        i += 1
    return ('{"resourceSpans":[{"scopeSpans":[{"spans":[' + ",".join(parts) + "]}]}]}").encode()


@cache
def protobuf_conversation(count: int, key: bytes = b"warm-up") -> bytes:
    """``count`` spans of one trace, each carrying the conversation key ``key``: one session,
    decided only after ``decision_wait`` (so not while an attack is measured)."""
    value = length_delimited(1, key)  # AnyValue.string_value
    attribute = length_delimited(
        9, length_delimited(1, b"gen_ai.conversation.id") + length_delimited(2, value)
    )
    spans = (
        _span(TRACE_ID[:-1] + b"\x07", i.to_bytes(8, "big"), attribute) for i in range(1, count + 1)
    )
    return _request(*spans)


def valid_protobuf() -> bytes:
    """A small valid request: the legitimate call sent beside an attack."""
    return _request(_span(TRACE_ID[:8] + bytes(7) + b"\x01", SPAN_ID))


# -- slow connections ------------------------------------------------------------------------


@contextmanager
def slow_connections(
    port: int, count: int, first_bytes: bytes = b"", connect_timeout_s: float = 2.0
) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` that send ``first_bytes`` and then nothing, held
    until the block ends. Connections the server refuses or closes are just counted out."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(connect_timeout_s)
            try:
                sock.connect((LOOPBACK, port))
                if first_bytes:
                    sock.sendall(first_bytes)
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def still_open(sockets: Sequence[socket.socket]) -> int:
    """How many of ``sockets`` the server has not closed: reading them would block (what the
    server sent, gRPC's SETTINGS, is read and thrown away)."""
    open_ = 0
    for sock in sockets:
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_
