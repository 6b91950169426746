"""The configuration as typed, frozen data.

Each field's metadata (``help``, ``kind``, ``example``) drives validation in ``binder.py`` and the
generated reference in ``docs/configuration.md`` (a test keeps the two in step), so a key is
described in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sampler.rules.spec import RuleSpec


def opt(default: Any, help: str, kind: str = "", **extra: Any) -> Any:
    """A config field: its default, a one-line help text and an optional value kind
    (``duration``, ``size``, ``listen``, ``url``, ``choice``) that selects the parser."""
    return field(default=default, metadata={"help": help, "kind": kind, **extra})


DEFAULT_SESSION_KEYS = (
    "gen_ai.conversation.id",
    "session.id",
    "langfuse.session.id",
    "traceloop.association.properties.session_id",
)


@dataclass(frozen=True, slots=True)
class GrpcReceiverConfig:
    listen: str = opt("0.0.0.0:4317", "OTLP/gRPC listen address; empty disables it.", "listen")


@dataclass(frozen=True, slots=True)
class HttpReceiverConfig:
    listen: str = opt("0.0.0.0:4318", "OTLP/HTTP listen address; empty disables it.", "listen")


@dataclass(frozen=True, slots=True)
class ReceiversConfig:
    grpc: GrpcReceiverConfig = opt(GrpcReceiverConfig(), "OTLP/gRPC receiver.")
    http: HttpReceiverConfig = opt(HttpReceiverConfig(), "OTLP/HTTP receiver (protobuf and JSON).")
    max_message_size: int = opt(
        16 << 20, "Largest accepted request body (after decompression).", "size"
    )


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    key_attributes: tuple[str, ...] = opt(
        DEFAULT_SESSION_KEYS,
        "Attributes naming a span's session, in precedence order; span attributes are looked up "
        "before resource attributes. A trace with none of them is a session of its own.",
    )
    decision_wait: float = opt(
        30.0, "Decide a session once it has received no span for this long.", "duration"
    )
    root_end_grace: float = opt(
        2.0,
        "Decide this long after the root span of every trace of the session has arrived "
        "(0s turns the shortcut off and only decision_wait applies).",
        "duration",
        zero_allowed=True,
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
    tick: float = opt(
        0.1, "Resolution of the completion timer; deadlines fire within one tick.", "duration"
    )


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
        300.0, "Give up on a batch after retrying this long (counted and logged).", "duration"
    )


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    url: str = opt(
        "file://agent-sampler-kept.jsonl",
        "Where kept sessions go: grpc://HOST:PORT (OTLP/gRPC), http://HOST:PORT (OTLP/HTTP "
        "protobuf) or file://PATH (OTLP/JSON lines, as the collector's file exporter writes).",
        "url",
    )
    timeout: float = opt(10.0, "Timeout of one export attempt.", "duration")
    compression: str = opt(
        "none", "Compression of outgoing requests.", "choice", choices=("none", "gzip")
    )
    headers: tuple[tuple[str, str], ...] = opt(
        (), "Extra gRPC metadata / HTTP headers sent with every export (a mapping).", "headers"
    )
    queue_max_spans: int = opt(
        200_000, "Kept spans waiting for the downstream at most; beyond it intake is refused."
    )
    batch_max_spans: int = opt(8192, "Most spans in one outgoing request.")
    batch_max_size: int = opt(
        4 << 20, "Largest outgoing request (the collector's default gRPC limit is 4MiB).", "size"
    )
    batch_timeout: float = opt(0.2, "Longest a partial batch waits before it is sent.", "duration")
    retry: RetryConfig = opt(RetryConfig(), "Retry with exponential backoff and jitter.")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = opt(
        "127.0.0.1:9464",
        "Prometheus /metrics, /healthz and /readyz listen address; empty disables it.",
        "listen",
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = opt("info", "Log level.", "choice", choices=("debug", "info", "warning", "error"))
    format: str = opt("text", "Log line format.", "choice", choices=("text", "json"))


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    receivers: ReceiversConfig = opt(ReceiversConfig(), "Where spans come in.")
    sessions: SessionsConfig = opt(SessionsConfig(), "How spans are grouped and when decided.")
    decision_cache: DecisionCacheConfig = opt(
        DecisionCacheConfig(), "Memory of past decisions for late spans."
    )
    rules: tuple[RuleSpec, ...] = opt(
        (), "Retention rules, in order; the first whose condition matches decides.", "rules"
    )
    exporter: ExporterConfig = opt(ExporterConfig(), "Where kept sessions go.")
    metrics: MetricsConfig = opt(MetricsConfig(), "Self-metrics and health endpoints.")
    logging: LoggingConfig = opt(LoggingConfig(), "Logs.")
    source: str = field(default="<defaults>", metadata={"internal": True})
