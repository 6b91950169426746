"""Pre-serialized agent traffic whose trace ids and session keys are rewritten per round.

The quality generator's sessions (several agents, both conventions, multi-turn conversations,
the session key on root spans only, spans in end order) are generated once, cut into requests
of about `batch_spans` spans as a collector's batch processor would, split by session between
the sampler processes, and serialized. Building messages is far slower than sending bytes, so
it happens only here.

A *round* is one pass over a pool. To make every round new traffic, the first 4 bytes of every
trace id and the first 8 hex digits of every session key are replaced by the round number, at
offsets found once in the serialized bytes. Within a round a trace keeps one id and a session
one key, so traces and sessions stay whole; across rounds nothing repeats (2^32 rounds). The
low bytes of trace ids, which the sampler's randomness reads, do not change.

Sessions go to process `crc32(key without its rewritten digits) % processes`: a hash of the
session key that is the same in every round, as a collector's load-balancing exporter routing
on the session attribute would do.
"""

from __future__ import annotations

import pickle
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.quality.generator import TrafficSpec, generate

TRACE_ID_PREFIX_BYTES = 4
KEY_PREFIX_CHARS = 8
MAX_ROUNDS = 1 << (8 * TRACE_ID_PREFIX_BYTES)
GENAI_KEY_PREFIX = "conv_"  # the generator's GenAI keys; OpenInference keys are UUIDs

Offsets = npt.NDArray[np.int64]

# A Span's trace_id is field 1, 16 bytes: tag 0x0a, length 0x10. Other fields can start with the
# same two bytes (a 16-character attribute key), so a match counts only if a known id follows.
_TRACE_ID_TAG = re.compile(rb"(?=\x0a\x10)")


@dataclass(frozen=True)
class PoolSpec:
    """What the pools are built from; the same spec gives the same bytes."""

    sessions: int = 2000
    seed: int = 1
    batch_spans: int = 512
    processes: int = 1

    def __post_init__(self) -> None:
        if self.sessions < 1 or self.batch_spans < 1 or self.processes < 1:
            raise ValueError("sessions, batch_spans and processes must be positive")


@dataclass(frozen=True)
class RequestPool:
    """One sampler process's share of the traffic, as request bodies back to back.

    Body ``i`` is ``data[bounds[i]:bounds[i + 1]]`` and holds ``spans[i]`` spans. Every
    occurrence of a trace id starts at one of ``trace_id_offsets`` and every occurrence of a
    session key's rewritable digits at one of ``key_offsets`` (absolute offsets in ``data``).
    """

    data: bytes
    bounds: Offsets
    spans: Offsets
    trace_id_offsets: Offsets
    key_offsets: Offsets

    @property
    def request_count(self) -> int:
        return len(self.spans)

    @property
    def span_count(self) -> int:
        return int(self.spans.sum())

    def body(self, index: int) -> bytes:
        return self.data[int(self.bounds[index]) : int(self.bounds[index + 1])]


@dataclass(frozen=True)
class Pools:
    """The traffic of one run: ``full`` sessions, and the same without root spans.

    Traces without their root span never complete (the sampler waits `open_trace_wait` for
    the root), so ``rootless`` rounds fill the buffer and stay there. One pool per process.
    """

    spec: PoolSpec
    full: tuple[RequestPool, ...]
    rootless: tuple[RequestPool, ...]

    def variant(self, name: str) -> tuple[RequestPool, ...]:
        if name not in ("full", "rootless"):
            raise ValueError(f"unknown pool variant {name!r}")
        return self.full if name == "full" else self.rootless

    @property
    def span_count(self) -> int:
        return sum(pool.span_count for pool in self.full)

    @property
    def wire_bytes(self) -> int:
        return sum(len(pool.data) for pool in self.full)

    def save(self, path: Path) -> None:
        path.write_bytes(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def load(path: Path) -> Pools:
        # Only files this package wrote are loaded (a temporary file of the same run).
        pools = pickle.loads(path.read_bytes())
        if not isinstance(pools, Pools):
            raise TypeError(f"{path} does not hold a Pools object")
        return pools


class RoundRenderer:
    """Renders the bodies of one pool for a given round number, one body at a time.

    A body is rendered when it is sent (``body``), not a whole round at once: rewriting a
    round of 57k spans takes about 11 ms, and the sender's event loop, stalled that long twice
    a second, added those milliseconds to the calls in flight (the export latency it reports
    is the sampler's, not the generator's)."""

    def __init__(self, pool: RequestPool) -> None:
        self._data = pool.data
        self._bounds = [int(b) for b in pool.bounds]
        self.spans = [int(n) for n in pool.spans]
        # per body, its occurrences (offsets relative to the body's start), found once
        self._trace_at = _per_body(np.sort(pool.trace_id_offsets), pool.bounds)
        self._key_at = _per_body(np.sort(pool.key_offsets), pool.bounds)
        self._trace_bytes = np.arange(TRACE_ID_PREFIX_BYTES)
        self._key_bytes = np.arange(KEY_PREFIX_CHARS)

    @property
    def request_count(self) -> int:
        return len(self.spans)

    def body(self, round_number: int, index: int) -> bytes:
        """Body ``index`` as it is in round ``round_number``."""
        if not 0 <= round_number < MAX_ROUNDS:
            raise ValueError(f"round number {round_number} out of range")
        body = bytearray(self._data[self._bounds[index] : self._bounds[index + 1]])
        view = np.frombuffer(body, dtype=np.uint8)
        prefix = np.frombuffer(round_number.to_bytes(TRACE_ID_PREFIX_BYTES, "big"), np.uint8)
        view[self._trace_at[index][:, None] + self._trace_bytes] = prefix
        digits = f"{round_number:0{KEY_PREFIX_CHARS}x}".encode()
        view[self._key_at[index][:, None] + self._key_bytes] = np.frombuffer(digits, np.uint8)
        return bytes(body)

    def render(self, round_number: int) -> list[bytes]:
        """Every body of round ``round_number``."""
        return [self.body(round_number, i) for i in range(self.request_count)]


def _per_body(offsets: Offsets, bounds: Offsets) -> list[Offsets]:
    """Sorted absolute ``offsets`` split by body (``bounds``), each relative to its body."""
    cuts = np.searchsorted(offsets, bounds)
    return [offsets[cuts[i] : cuts[i + 1]] - bounds[i] for i in range(len(bounds) - 1)]


def rewritten_key(key: str, round_number: int) -> str:
    """What ``key`` becomes in round ``round_number``."""
    start = _key_prefix_start(key)
    digits = f"{round_number:0{KEY_PREFIX_CHARS}x}"
    return key[:start] + digits + key[start + KEY_PREFIX_CHARS :]


def rewritten_trace_id(trace_id: bytes, round_number: int) -> bytes:
    return round_number.to_bytes(TRACE_ID_PREFIX_BYTES, "big") + trace_id[TRACE_ID_PREFIX_BYTES:]


def route(key: str, processes: int) -> int:
    """The process owning a session: the same in every round."""
    start = _key_prefix_start(key)
    stable = key[:start] + key[start + KEY_PREFIX_CHARS :]
    return zlib.crc32(stable.encode()) % processes


def _key_prefix_start(key: str) -> int:
    return len(GENAI_KEY_PREFIX) if key.startswith(GENAI_KEY_PREFIX) else 0


def build_pools(spec: PoolSpec) -> Pools:
    # A long batch timeout: requests fill up to their size, as under load in a collector. Each
    # is then split between the processes, so that each process's requests have batch_spans.
    corpus = generate(
        TrafficSpec(
            seed=spec.seed,
            sessions=spec.sessions,
            batch_spans=spec.batch_spans * spec.processes,
            batch_timeout_seconds=3600.0,
        )
    )
    sessions = corpus.trace_sessions
    routes = {tid: route(key, spec.processes) for tid, key in sessions.items()}
    variants: dict[str, tuple[RequestPool, ...]] = {}
    for variant, keep_roots in (("full", True), ("rootless", False)):
        builders = [_PoolBuilder(spec.batch_spans, routes) for _ in range(spec.processes)]
        for request in corpus.requests:
            for process, part in _split(request, sessions, routes, spec.processes, keep_roots):
                builders[process].add(part)
        variants[variant] = tuple(builder.finish() for builder in builders)
    return Pools(spec, variants["full"], variants["rootless"])


@dataclass
class _Part:
    body: bytes
    spans: int
    keys: list[str]  # the session key of each root span


def _split(
    request: ExportTraceServiceRequest,
    sessions: dict[bytes, str],
    routes: dict[bytes, int],
    processes: int,
    keep_roots: bool,
) -> list[tuple[int, _Part]]:
    """The request's spans per owning process, in their resource and scope envelopes."""
    if processes == 1 and keep_roots:  # nothing to take out
        spans = 0
        keys = []
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans += len(scope_spans.spans)
                keys += [sessions[s.trace_id] for s in scope_spans.spans if not s.parent_span_id]
        return [(0, _Part(request.SerializeToString(), spans, keys))]
    parts = [ExportTraceServiceRequest() for _ in range(processes)]
    counts = [0] * processes
    roots: list[list[str]] = [[] for _ in range(processes)]
    for resource_spans in request.resource_spans:
        out_resources: dict[int, Any] = {}
        for scope_spans in resource_spans.scope_spans:
            out_scopes: dict[int, Any] = {}
            for span in scope_spans.spans:
                is_root = not span.parent_span_id
                if is_root and not keep_roots:
                    continue
                process = routes[span.trace_id]
                block = out_scopes.get(process)
                if block is None:
                    out_rs = out_resources.get(process)
                    if out_rs is None:
                        out_rs = out_resources[process] = parts[process].resource_spans.add()
                        out_rs.resource.CopyFrom(resource_spans.resource)
                        out_rs.schema_url = resource_spans.schema_url
                    block = out_scopes[process] = out_rs.scope_spans.add()
                    block.scope.CopyFrom(scope_spans.scope)
                    block.schema_url = scope_spans.schema_url
                block.spans.append(span)
                counts[process] += 1
                if is_root:
                    roots[process].append(sessions[span.trace_id])
    return [
        (process, _Part(parts[process].SerializeToString(), counts[process], roots[process]))
        for process in range(processes)
        if counts[process]
    ]


class _PoolBuilder:
    """Joins parts into bodies of about `batch_spans` spans (an ExportTraceServiceRequest is one
    repeated field, so concatenated requests are a request) and finds the ids in them."""

    def __init__(self, batch_spans: int, routes: dict[bytes, int]) -> None:
        self.batch_spans = batch_spans
        self.trace_ids = routes.keys()
        self.pending: list[_Part] = []
        self.data = bytearray()
        self.bounds = [0]
        self.spans: list[int] = []
        self.trace_offsets: list[int] = []
        self.key_offsets: list[int] = []

    def add(self, part: _Part) -> None:
        if self.pending and self._pending_spans() + part.spans > 1.5 * self.batch_spans:
            self._flush()
        self.pending.append(part)
        if self._pending_spans() >= 0.75 * self.batch_spans:
            self._flush()

    def _pending_spans(self) -> int:
        return sum(p.spans for p in self.pending)

    def finish(self) -> RequestPool:
        if self.pending:
            self._flush()
        return RequestPool(
            data=bytes(self.data),
            bounds=np.array(self.bounds, dtype=np.int64),
            spans=np.array(self.spans, dtype=np.int64),
            trace_id_offsets=np.array(self.trace_offsets, dtype=np.int64),
            key_offsets=np.array(self.key_offsets, dtype=np.int64),
        )

    def _flush(self) -> None:
        body = b"".join(p.body for p in self.pending)
        spans = sum(p.spans for p in self.pending)
        roots = [key for p in self.pending for key in p.keys]
        self.pending = []
        base = len(self.data)
        trace_offsets = [
            base + m.start() + 2
            for m in _TRACE_ID_TAG.finditer(body)
            if body[m.start() + 2 : m.start() + 18] in self.trace_ids
        ]
        key_offsets = []
        for key in set(roots):  # a session's turns can share a body
            needle, shift = key.encode(), _key_prefix_start(key)
            at = body.find(needle)
            while at >= 0:
                key_offsets.append(base + at + shift)
                at = body.find(needle, at + 1)
        if len(trace_offsets) != spans or len(key_offsets) != len(roots):
            raise AssertionError(
                f"found {len(trace_offsets)} trace ids for {spans} spans and "
                f"{len(key_offsets)} session keys for {len(roots)} root spans"
            )
        key_offsets.sort()
        self.data += body
        self.bounds.append(len(self.data))
        self.spans.append(spans)
        self.trace_offsets += trace_offsets
        self.key_offsets += key_offsets
