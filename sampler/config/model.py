"""The configuration as typed, frozen data.

Each field's metadata (``help``, ``kind``, ``example``) drives validation in ``binder.py`` and the
generated reference in ``docs/configuration.md`` (a test keeps the two in step), so a key is
described in exactly one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


def opt(default: Any, help: str, kind: str = "", **extra: Any) -> Any:
    """A config field: its default, a one-line help text and an optional value kind
    (``duration``, ``size``, ``listen``, ``url``, ``choice``, ``file``, ...) that selects the
    parser. ``secret=True`` keeps the value out of ``repr()`` and out of error messages.
    ``restart=True``: a reload cannot change it (on a section: any key in it); the running
    value stays until a restart (``config/changes.py``).

    A section may define ``check()`` yielding ``(field, message)`` for problems that involve
    several of its fields; the binder reports them when the fields themselves are valid."""
    secret = bool(extra.get("secret"))
    return field(default=default, repr=not secret, metadata={"help": help, "kind": kind, **extra})


class Rule(Protocol):
    """A retention rule as the config holds it. ``sampler.rules.parse`` makes them (the binder
    is handed that parser by ``sampler.config_file``) and ``sampler.rules.spec.rules_of`` gives
    them back as what they are, ``RuleSpec``s: config is the bottom layer and names nothing
    above it (docs/architecture.md, the map)."""

    @property
    def name(self) -> str: ...

    @property
    def line(self) -> int: ...


# receivers.max_spans_per_request: a bound on the work one request can ask for; any real request
# fits (16 MiB / 200,000 is 84 bytes a span, and the collector batches 8,192 by default).
DEFAULT_MAX_SPANS_PER_REQUEST = 200_000

DEFAULT_SESSION_KEYS = (
    "gen_ai.conversation.id",
    "session.id",
    "langfuse.session.id",
    "traceloop.association.properties.session_id",
)


# Connections one OTLP listener holds at most, before the file-descriptor limit is applied
# (docs/operations.md, File descriptors): far more than the collectors a sampler serves need.
DEFAULT_MAX_CONNECTIONS = 1024

_MAX_CONNECTIONS_HELP = (
    "Connections held at once at most; a connection beyond them is closed as soon as it is "
    "accepted{room}. Lowered at start to fit the file-descriptor limit (docs/operations.md)."
)


@dataclass(frozen=True, slots=True)
class GrpcKeepaliveConfig:
    time: float = opt(
        60.0,
        "Ping a client whose connection has been quiet this long, to find peers that are gone "
        "without closing their connection.",
        "duration",
    )
    timeout: float = opt(
        20.0, "Close the connection when a ping is not answered within this long.", "duration"
    )
    max_connection_idle: float = opt(
        300.0,
        "Close (GOAWAY) a connection without a call for this long; clients reconnect when they "
        "next send. 0s: never.",
        "duration",
        zero_allowed=True,
    )
    min_time: float = opt(
        5.0,
        "Enforcement: a client may ping at most this often (the collector's otlp exporter pings "
        "every 10s while a call is in flight); one pinging faster is sent GOAWAY "
        "(too_many_pings).",
        "duration",
    )
    permit_without_stream: bool = opt(
        True, "Enforcement: let clients ping while they have no call in flight."
    )


@dataclass(frozen=True, slots=True)
class GrpcReceiverConfig:
    listen: str = opt("0.0.0.0:4317", "OTLP/gRPC listen address; empty disables it.", "listen")
    max_connections: int = opt(
        DEFAULT_MAX_CONNECTIONS, _MAX_CONNECTIONS_HELP.format(room=" (by grpc, not counted)")
    )
    max_concurrent_streams: int = opt(
        100,
        "Calls in flight on one connection at most (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a "
        "client's further calls wait for one to end.",
    )
    handshake_timeout: float = opt(
        10.0,
        "A new connection that has not completed its handshake (TLS, then the HTTP/2 preface) "
        "within this long is closed.",
        "duration",
    )
    keepalive: GrpcKeepaliveConfig = opt(
        GrpcKeepaliveConfig(), "Keepalive pings and idle connections (gRPC's own settings)."
    )


@dataclass(frozen=True, slots=True)
class HttpReceiverConfig:
    listen: str = opt("0.0.0.0:4318", "OTLP/HTTP listen address; empty disables it.", "listen")
    read_timeout: float = opt(
        30.0,
        "Longest a request body may take to arrive; a slower one is answered 408 and its "
        "connection closed, so a stalled sender holds no connection for ever. 0s: no limit.",
        "duration",
    )
    read_header_timeout: float = opt(
        10.0,
        "A request's head (request line and headers; on a new connection, its TLS handshake "
        "too) must arrive within this long of the connection opening or of the request's "
        "first byte; otherwise the connection is closed.",
        "duration",
    )
    idle_timeout: float = opt(
        60.0,
        "Close a keep-alive connection that stays idle this long between requests.",
        "duration",
    )
    max_connections: int = opt(
        DEFAULT_MAX_CONNECTIONS,
        _MAX_CONNECTIONS_HELP.format(
            room=", unless one that has no request in progress is closed to make room for it"
        ),
    )


def _pair_problems(cert_file: str, key_file: str) -> Iterator[tuple[str, str]]:
    if cert_file and not key_file:
        yield "cert_file", "cert_file needs its key_file: set both or neither"
    if key_file and not cert_file:
        yield "key_file", "key_file needs its cert_file: set both or neither"


@dataclass(frozen=True, slots=True)
class ServerTlsConfig:
    cert_file: str = opt(
        "",
        "PEM certificate (chain) the receivers present; with key_file, both receivers accept "
        "TLS only (empty: plaintext).",
        "file",
        pem="certificate",
    )
    key_file: str = opt("", "PEM private key of cert_file (unencrypted).", "file", pem="key")
    client_ca_file: str = opt(
        "",
        "PEM CA certificates; when set, clients must present a certificate signed by one of "
        "them (mutual TLS).",
        "file",
        pem="certificate",
    )

    def check(self) -> Iterator[tuple[str, str]]:
        yield from _pair_problems(self.cert_file, self.key_file)
        if self.client_ca_file and not self.cert_file:
            yield "client_ca_file", "mutual TLS needs TLS: set cert_file and key_file too"


@dataclass(frozen=True, slots=True)
class ReceiverAuthConfig:
    bearer_token: str = opt(
        "",
        "When set, every export request must carry `Authorization: Bearer TOKEN` (gRPC: "
        "`authorization` metadata); others get UNAUTHENTICATED / HTTP 401. Best given as "
        "`${env:NAME}`. Empty: no authentication.",
        "token",
        secret=True,
    )


@dataclass(frozen=True, slots=True)
class ReceiversConfig:
    grpc: GrpcReceiverConfig = opt(GrpcReceiverConfig(), "OTLP/gRPC receiver.")
    http: HttpReceiverConfig = opt(HttpReceiverConfig(), "OTLP/HTTP receiver (protobuf and JSON).")
    max_message_size: int = opt(
        16 << 20, "Largest accepted request body (after decompression).", "size"
    )
    max_spans_per_request: int = opt(
        DEFAULT_MAX_SPANS_PER_REQUEST,
        "Spans one request may hold, OTLP/protobuf or JSON; a request with more is refused "
        "as it is validated, before anything of it is kept (RESOURCE_EXHAUSTED / HTTP 413, not "
        "retried). So is a request in which one message holds more than a million fields "
        "(a span's events, links or attributes, an array's values): a fixed limit.",
    )
    max_attributes_per_span: int = opt(
        1024,
        "Attributes kept per span; the rest are removed before the span is buffered (added to "
        "the span's dropped_attributes_count, and counted in agent_sampler_spans_limited).",
    )
    max_attribute_value_size: int = opt(
        256 << 10,
        "Longest string or bytes attribute value kept on a span, top level or in an array; "
        "longer ones are cut to this size (strings at a character boundary), never refused. "
        "Fixed limits beside it: an array keeps its first 10,000 values, a span its first "
        "1,024 links (the rest counted in its dropped_links_count).",
        "size",
    )
    tls: ServerTlsConfig = opt(ServerTlsConfig(), "TLS for both receivers (docs/security.md).")
    auth: ReceiverAuthConfig = opt(ReceiverAuthConfig(), "Authentication of both receivers.")


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    key_attributes: tuple[str, ...] = opt(
        DEFAULT_SESSION_KEYS,
        "Attributes naming a span's session, in precedence order; span attributes are looked up "
        "before resource attributes. A trace with none of them is a session of its own.",
        restart=True,  # buffered spans are grouped by them
    )
    decision_wait: float = opt(
        30.0,
        "Decide a session with a key (a conversation, which may get another turn) once every "
        "trace's root span has arrived and no span came for this long.",
        "duration",
    )
    root_end_grace: float = opt(
        2.0,
        "Decide a session without a key (a lone trace) this long after its root span arrived "
        "(0s: wait decision_wait instead).",
        "duration",
        zero_allowed=True,
    )
    open_trace_wait: float = opt(
        90.0,
        "While a trace of the session has not delivered its root span (the agent is still "
        "running), decide only after this long without spans.",
        "duration",
    )
    max_session_duration: float = opt(
        300.0, "Decide a session at the latest this long after its first span arrived.", "duration"
    )
    max_session_spans: int = opt(10_000, "Decide a session as soon as it holds this many spans.")
    max_buffered_spans: int = opt(
        1_000_000,
        "Spans held in the buffer at most; beyond it requests are refused with "
        "RESOURCE_EXHAUSTED / HTTP 429 so the sender retries.",
    )
    max_buffered_memory: int = opt(
        512 << 20,
        "Memory the buffered spans may hold at most (serialized size plus about 360 bytes of "
        "bookkeeping per span); beyond it requests are refused like at max_buffered_spans.",
        "size",
    )
    stress_relief_at: float = opt(
        0.9,
        "Share of max_buffered_spans or max_buffered_memory from which the oldest sessions are "
        "decided early, with the normal rules, until the buffer is 10 points below it (held "
        "dropped sessions are given up first).",
        "fraction",
    )
    dropped_hold: float = opt(
        300.0,
        "Hold a dropped conversation's spans this long: if a later turn of it is kept (say it "
        "fails), the earlier turns are kept with it, whole. Long enough for a person's think "
        "time and the next turn (whose session key may arrive only with its root span, when "
        "the turn ends); memory is bounded by dropped_hold_max_spans whatever the time. A "
        "session dropped while the rarity model was cold is scored again when its hold ends "
        "(0s: no hold).",
        "duration",
        zero_allowed=True,
    )
    dropped_hold_max_spans: int = opt(
        200_000,
        "Spans held for dropped_hold at most (they count against max_buffered_spans and are the "
        "first given up for room, oldest first).",
    )
    tick: float = opt(
        0.1,
        "Resolution of the completion timer; deadlines fire within one tick.",
        "duration",
        restart=True,  # the timer wheel's buckets are built on it
    )


@dataclass(frozen=True, slots=True)
class ToolCyclesConfig:
    same_call_repeats: int = opt(
        3,
        "A tool called with the same arguments this many times within one turn is a loop (an "
        "attempt that failed and was retried until it succeeded does not count).",
    )
    same_tool_repeats: int = opt(
        6,
        "A tool called this many times in a row within one turn, with no recorded arguments "
        "telling the calls apart (often none are recorded), is a loop.",
    )
    pattern_max_period: int = opt(
        4, "Longest repeating pattern looked for in a turn's tool sequence (A-B-A-B is period 2)."
    )
    pattern_min_repeats: int = opt(
        3, "A pattern repeated this many times in a row within one turn is a loop."
    )
    same_turn_repeats: int = opt(
        4,
        "This many turns in a row that make the same tool calls with the same recorded arguments "
        "are a loop: the turns are retries of one another. Turns that differ in any argument, "
        "or record none, are never a loop by repeating across turns.",
    )
    max_agent_depth: int = opt(4, "Agents nested deeper than this are a recursion.")


@dataclass(frozen=True, slots=True)
class RarityConfig:
    # the ring of windows and the sketches in it are built on window, windows and max_groups
    window: float = opt(300.0, "Length of one window of recent traffic.", "duration", restart=True)
    windows: int = opt(
        6,
        "Windows remembered (at most 1024); older traffic ages out a whole window at a time.",
        restart=True,
    )
    decay: float = opt(
        0.5, "Weight of each older window relative to the next newer one.", "fraction"
    )
    warmup_sessions: int = opt(
        200, "Below this many sessions seen in the live windows nothing is rare yet (cold start)."
    )
    rare_shape_share: float = opt(
        0.02,
        "A tool path is judged by its parts (each tool, each step from one tool to the next, "
        "the first and the last tool): a part seen in at most this share of its agent's recent "
        "sessions, or fewer than 3 times, is rare (scores 0.5 there, 1 at a tenth of it), and "
        "so is the session. An odd path that recurs a few times in the window is still rare.",
        "fraction",
    )
    tail_quantile: float = opt(
        0.99,
        "Values at or above this quantile of the agent's recent values are tail (score 0.5 "
        "there, 1 above everything seen). The longest turn is ranked as the longest of its "
        "turns; a session's typical model call also scores 1 beyond Tukey's outer fence, "
        "however many sessions are there (a degraded model).",
        "fraction",
    )
    threshold: float = opt(
        0.5,
        "Score (0 to 1) from which a rarity signal fires (rare_shape, tail_latency, ...).",
        "fraction",
    )
    max_groups: int = opt(
        256, "Agents tracked with their own quantile sketches at most.", restart=True
    )

    # The ring of windows is held in memory (with 5-minute windows, 1024 is three and a half
    # days); the native model refuses more (native/src/rarity.rs, MAX_WINDOWS).
    MAX_WINDOWS: ClassVar[int] = 1024

    def check(self) -> Iterator[tuple[str, str]]:
        if self.windows > self.MAX_WINDOWS:
            yield "windows", f"at most {self.MAX_WINDOWS} windows are remembered"


@dataclass(frozen=True, slots=True)
class ShapeConfig:
    include_agent: bool = opt(True, "The session's agent is part of its shape.")
    collapse_repeats: bool = opt(
        True, "Consecutive calls of the same tool count once in the shape's tool path."
    )
    max_tools: int = opt(
        12,
        "Tools of the path kept in the shape (the first ones): the shape's name, shown in "
        "replay and used by budget strata; rarity judges the whole path's parts.",
    )


@dataclass(frozen=True, slots=True)
class SignalsConfig:
    tool_cycles: ToolCyclesConfig = opt(ToolCyclesConfig(), "Tool-loop detection thresholds.")
    rarity: RarityConfig = opt(RarityConfig(), "Rarity of shapes and numbers in recent traffic.")
    shape: ShapeConfig = opt(ShapeConfig(), "What a session's shape is made of.")


STRATA = ("agent", "outcome", "shape")


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    unit: str = opt("sessions", "What the budget counts.", "choice", choices=("sessions", "spans"))
    ratio: float = opt(
        0.05,
        "Share of all decided traffic to keep (when per_second is 0). Keeps by other rules "
        "(errors, loops, rare sessions) count against it first; `action: budget` shares the rest.",
        "fraction",
    )
    per_second: float = opt(
        0.0, "Absolute target in unit per second instead of a ratio (0: use ratio)."
    )
    strata: tuple[str, ...] = opt(
        ("agent",),
        "What divides traffic into strata for the budget: agent, outcome (error or ok), shape.",
        "strata",
    )
    floor: float = opt(
        0.5,
        "Share of the budget split evenly across active strata (each stratum's floor).",
        "fraction",
    )
    window: float = opt(
        60.0, "Horizon of the traffic rates the budget is computed from.", "duration"
    )
    max_strata: int = opt(1000, "Strata tracked at most; further ones share one stratum.")


@dataclass(frozen=True, slots=True)
class DecisionCacheConfig:
    max_sessions: int = opt(
        200_000,
        "Decided sessions remembered so that late spans follow their decision, and as many "
        "decided trace ids (oldest forgotten first). Late spans of a forgotten session start a "
        "new session.",
    )


@dataclass(frozen=True, slots=True)
class RetryConfig:
    initial_interval: float = opt(1.0, "First wait before retrying a failed export.", "duration")
    max_interval: float = opt(30.0, "Longest wait between retries.", "duration")
    max_elapsed_time: float = opt(
        300.0,
        "Give up on a batch after retrying this long (counted and logged); 0s: never give up, "
        "retry until the downstream takes it (with a queue_dir, an outage then fills the queue "
        "up to queue_max_bytes, and intake is refused beyond it).",
        "duration",
        zero_allowed=True,
    )


@dataclass(frozen=True, slots=True)
class ClientTlsConfig:
    ca_file: str = opt(
        "",
        "PEM CA certificates that verify the downstream's certificate (empty: the system's "
        "trusted roots).",
        "file",
        pem="certificate",
    )
    cert_file: str = opt(
        "",
        "PEM client certificate (chain), for a downstream that asks for mutual TLS.",
        "file",
        pem="certificate",
    )
    key_file: str = opt("", "PEM private key of cert_file (unencrypted).", "file", pem="key")
    server_name_override: str = opt(
        "", "Name to verify the downstream's certificate against instead of the URL's host."
    )

    @property
    def configured(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file, self.server_name_override))

    def check(self) -> Iterator[tuple[str, str]]:
        yield from _pair_problems(self.cert_file, self.key_file)


@dataclass(frozen=True, slots=True)
class FileRotationConfig:
    max_megabytes: int = opt(
        100,
        "Rotate the file before a line would take it past this many MiB (a longer line gets a "
        "file of its own); 0: never rotate, the file grows without bound.",
        zero_allowed=True,
    )
    max_backups: int = opt(
        10,
        "Rotated files kept, newest first; older ones are deleted. 0: keep them all (max_days "
        "may still delete them).",
        zero_allowed=True,
    )
    max_days: int = opt(
        0,
        "Delete rotated files older than this many days, by the time in their name; 0: no age "
        "limit.",
        zero_allowed=True,
    )
    localtime: bool = opt(False, "Name rotated files by the local time of rotation instead of UTC.")
    compression: str = opt(
        "none",
        "Compress rotated files: gzip (NAME-TIME.jsonl.gz) or none. The file being written is "
        "always plain OTLP/JSON lines.",
        "choice",
        choices=("none", "gzip"),
    )


@dataclass(frozen=True, slots=True)
class FileExporterConfig:
    rotation: FileRotationConfig = opt(
        FileRotationConfig(),
        "Rotation, as the collector's file exporter does it (NAME.jsonl becomes "
        "NAME-2024-05-01T12-00-00.000.jsonl): left running, the file downstream takes at most "
        "(1 + max_backups) x max_megabytes of disk, 1.1 GiB by default.",
    )


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    url: str = opt(
        "file://agent-sampler-kept.jsonl",
        "Where kept sessions go: grpc://HOST:PORT (OTLP/gRPC), grpcs://HOST:PORT (OTLP/gRPC "
        "over TLS), http://HOST:PORT or https://HOST[:PORT] (OTLP/HTTP protobuf) or file://PATH "
        "(OTLP/JSON lines, as the collector's file exporter writes). Left out of the file: "
        "OTEL_EXPORTER_OTLP_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL, if set.",
        "url",
    )
    timeout: float = opt(10.0, "Timeout of one export attempt.", "duration")
    compression: str = opt(
        "gzip",
        "Compression of outgoing gRPC and HTTP requests (gzip, as the collector's OTLP exporters "
        "default to; none for a downstream on loopback, where it only costs CPU).",
        "choice",
        choices=("none", "gzip"),
    )
    headers: tuple[tuple[str, str], ...] = opt(
        (),
        "Extra gRPC metadata / HTTP headers sent with every export (a mapping), e.g. "
        "`authorization: Bearer ${env:TOKEN}`.",
        "headers",
        secret=True,
    )
    tls: ClientTlsConfig = opt(
        ClientTlsConfig(), "TLS to the downstream, for grpcs:// and https:// URLs only."
    )
    queue_max_spans: int = opt(
        200_000,
        "Kept spans waiting for the downstream in memory at most; beyond it intake is refused, "
        "or, with queue_dir, further kept spans wait on disk only.",
    )
    queue_dir: str = opt(
        "",
        "Directory of a durable queue: every kept request is written there before it is "
        "accepted, and what it holds is delivered after a restart (docs/operations.md, Delivery "
        "guarantees). One sampler per directory. Empty: the queue is in memory only.",
        "path",
    )
    queue_max_bytes: int = opt(
        1 << 30,
        "Disk space the queue_dir files may use; when full, intake is refused "
        "(RESOURCE_EXHAUSTED / 429, the sender retries) until the downstream catches up.",
        "size",
    )
    batch_max_spans: int = opt(8192, "Most spans in one outgoing request.")
    batch_max_size: int = opt(
        4 << 20, "Largest outgoing request (the collector's default gRPC limit is 4MiB).", "size"
    )
    batch_timeout: float = opt(0.2, "Longest a partial batch waits before it is sent.", "duration")
    retry: RetryConfig = opt(RetryConfig(), "Retry with exponential backoff and jitter.")
    file: FileExporterConfig = opt(FileExporterConfig(), "The file:// downstream.")

    def check(self) -> Iterator[tuple[str, str]]:
        if self.tls.configured and not self.url.lower().startswith(("grpcs://", "https://")):
            yield "tls", "TLS settings need a grpcs:// or https:// url"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = opt(
        "127.0.0.1:9464",
        "Prometheus /metrics, /healthz and /readyz listen address; empty disables it.",
        "listen",
    )
    max_connections: int = opt(
        32,
        "Connections to the metrics listener at most: a budget of its own, kept apart from the "
        "OTLP listeners', so probes and scrapes are answered while those are full. Beyond it, "
        "the connection waiting longest without a request in progress is closed to make room, "
        "else the new one.",
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = opt("info", "Log level.", "choice", choices=("debug", "info", "warning", "error"))
    format: str = opt("text", "Log line format.", "choice", choices=("text", "json"))


@dataclass(frozen=True, slots=True)
class ClusterRedisConfig:
    url: str = opt(
        "",
        "The Redis (or Valkey) server the samplers share verdicts through: "
        "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], or rediss:// for TLS (verified against the "
        "system's trusted roots). Give the password as `${env:NAME}`. Empty: no cluster, each "
        "sampler decides alone.",
        "redis_url",
        secret=True,  # it may carry the password
    )
    timeout: float = opt(
        1.0,
        "Longest one round trip to the server may take (connecting included) before the "
        "connection is counted as lost and reconnected with backoff.",
        "duration",
    )


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    redis: ClusterRedisConfig = opt(ClusterRedisConfig(), "The shared store.")
    key_prefix: str = opt(
        "agent-sampler:",
        "Prefix of the keys (`PREFIX` + `verdict:` + session key) and of the channel "
        "(`PREFIX` + `verdicts`): samplers sharing a prefix share verdicts.",
    )
    verdict_ttl: float = opt(
        0.0,
        "How long a shared keep is remembered in the store (for samplers that start or "
        "reconnect later). 0s: sessions.dropped_hold + sessions.max_session_duration, the "
        "longest a part of the conversation can wait here for it.",
        "duration",
        zero_allowed=True,
    )
    max_pending: int = opt(
        10_000,
        "Keeps waiting to be published at most (the store is slow or down); beyond it the "
        'oldest are dropped and counted (agent_sampler_cluster_verdicts{event="dropped"}).',
    )

    @property
    def enabled(self) -> bool:
        return bool(self.redis.url)

    def ttl(self, sessions: SessionsConfig) -> float:
        """The verdicts' lifetime in the store."""
        if self.verdict_ttl > 0:
            return self.verdict_ttl
        return sessions.dropped_hold + sessions.max_session_duration


MODES = ("live", "shadow")


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    path: str = opt(
        "",
        "File to which every export request the receivers accept is appended as one OTLP/JSON "
        "line, for `agent-sampler replay` (`run --capture PATH`); requests are left out, and "
        "counted, rather than intake slowed. Empty: no capture.",
        "path",
    )
    max_size: int = opt(
        1 << 30,
        "Size of the capture file at which capturing stops (one log line): the capture stays "
        "one unbroken stretch of traffic.",
        "size",
    )


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    receivers: ReceiversConfig = opt(ReceiversConfig(), "Where spans come in.", restart=True)
    sessions: SessionsConfig = opt(SessionsConfig(), "How spans are grouped and when decided.")
    budget: BudgetConfig = opt(BudgetConfig(), "The volume budget of `action: budget`.")
    signals: SignalsConfig = opt(SignalsConfig(), "Signal detectors (errors need no settings).")
    decision_cache: DecisionCacheConfig = opt(
        DecisionCacheConfig(), "Memory of past decisions for late spans."
    )
    mode: str = opt(
        "live",
        "`live` forwards the kept sessions only. `shadow` decides exactly as live (rules, "
        "budget, holds, signals) but forwards every span, each annotated with the verdict it "
        "would have had (`agent_sampler.verdict`: keep or drop, next to the rule and signals; "
        "no tracestate threshold), so the verdicts can be compared in the backend before "
        "anything is dropped (docs/operations.md, Shadow mode).",
        "choice",
        choices=MODES,
    )
    rules: tuple[Rule, ...] = opt(
        (), "Retention rules, in order; the first whose condition matches decides.", "rules"
    )
    exporter: ExporterConfig = opt(ExporterConfig(), "Where kept sessions go.", restart=True)
    metrics: MetricsConfig = opt(
        MetricsConfig(), "Self-metrics and health endpoints.", restart=True
    )
    logging: LoggingConfig = opt(LoggingConfig(), "Logs.")
    capture: CaptureConfig = opt(
        CaptureConfig(), "Recording of received traffic for replay.", restart=True
    )
    cluster: ClusterConfig = opt(
        ClusterConfig(),
        "Samplers behind a load balancer that routes by trace id share their keeps of "
        "conversations through Redis, so a conversation whose turns landed on several of them "
        "is kept whole (docs/deployment.md). Off by default.",
        restart=True,
    )
    source: str = field(default="<defaults>", metadata={"internal": True})
    # Where values that are not defaults came from, as (key path, origin) pairs in the order
    # they were set: "config file PATH", "flag --downstream", "environment: NAME". Not part of
    # the value: two configs with the same settings are equal wherever they came from.
    origins: tuple[tuple[str, str], ...] = field(
        default=(), compare=False, metadata={"internal": True}
    )
    # sha256 of the file's bytes, 16 hex digits (`sha256sum FILE | cut -c1-16`): which version
    # of the file runs (agent_sampler_config_info); not what the config says, so not compared
    digest: str = field(default="", compare=False, metadata={"internal": True})

    def origin(self, key: str) -> str:
        """Where the value of ``key`` (a path such as ``exporter.url``) came from: the last
        source that set it, or ``default``."""
        for path, where in reversed(self.origins):
            if path == key:
                return where
        return "default"

    def set_by(self, where: str, *keys: str) -> SamplerConfig:
        """This config, with ``keys`` recorded as set by ``where``."""
        return dataclasses.replace(self, origins=self.origins + tuple((k, where) for k in keys))
