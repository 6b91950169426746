"""Self-metrics, declared once in METRICS and read from the components' plain counters at scrape
time, so no decision or intake code touches Prometheus. docs/operations.md lists the same table
(a test keeps them in step). The registry also holds prometheus-client's standard process,
platform and garbage-collector collectors (``process_*``, ``python_*``), read at scrape time
too."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from sampler.cluster.link import ClusterLink
from sampler.config.model import MODES
from sampler.export.base import Exporter
from sampler.latency import Histogram
from sampler.pipeline import Pipeline
from sampler.receive.capture import TrafficCapture
from sampler.receive.connections import ConnectionStats, DescriptorShortage
from sampler.receive.intake import ReceiverStats
from sampler.reload import OUTCOMES, ConfigState
from sampler.version import package_version, python_version

Sample = tuple[tuple[str, ...], float]
HistogramSample = tuple[tuple[str, ...], Histogram]


@dataclass(frozen=True, slots=True)
class Sources:
    pipeline: Pipeline
    exporter: Exporter
    receivers: dict[str, ReceiverStats]  # by transport
    capture: TrafficCapture | None = None
    connections: dict[str, ConnectionStats] = field(default_factory=dict)  # by listener
    shortage: DescriptorShortage = field(default_factory=DescriptorShortage)
    # the running config's generation and reloads (reload.Reloader); None: as loaded at start
    config: ConfigState | None = field(default=None, kw_only=True)
    # cluster: verdicts shared through the store; None when off (its metrics read 0)
    cluster: ClusterLink | None = field(default=None, kw_only=True)

    @property
    def config_state(self) -> ConfigState:
        return self.config if self.config is not None else ConfigState.of(self.pipeline.config)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...]
    read: Callable[[Sources], Iterable[Sample | HistogramSample]]


def _one(value: Callable[[Sources], float]) -> Callable[[Sources], Iterable[Sample]]:
    return lambda s: [((), float(value(s)))]


def _requests(s: Sources) -> Iterator[Sample]:
    for transport, st in s.receivers.items():
        yield (transport, "ok"), st.requests_ok
        yield (transport, "invalid"), st.requests_invalid
        yield (transport, "refused"), st.requests_refused
        yield (transport, "too_large"), st.requests_too_large
        yield (transport, "unauthenticated"), st.requests_unauthenticated
        yield (transport, "timed_out"), st.requests_timed_out


def _connections_closed(s: Sources) -> Iterator[Sample]:
    for listener, st in s.connections.items():
        yield (listener, "refused"), st.refused
        yield (listener, "evicted"), st.evicted
        yield (listener, "header_timeout"), st.timed_out


def _decided(field: str) -> Callable[[Sources], Iterator[Sample]]:
    def read(s: Sources) -> Iterator[Sample]:
        for rule, tally in s.pipeline.stats.by_rule.items():
            seen = getattr(tally, f"{field}_seen")
            kept = getattr(tally, f"{field}_kept")
            yield (rule, "keep"), kept
            yield (rule, "drop"), seen - kept

    return read


def _captured(s: Sources) -> Iterator[Sample]:
    if s.capture is None:
        return
    stats = s.capture.snapshot()
    yield ("written",), stats.requests_written
    for reason, count in stats.requests_dropped.items():
        yield (reason,), count


def _refused(s: Sources) -> Iterator[Sample]:
    for reason, count in s.pipeline.stats.requests_refused.items():
        yield (reason,), count


def _cluster_verdicts(s: Sources) -> Iterator[Sample]:
    c, st = s.cluster, s.pipeline.stats
    yield ("published",), c.stats.published if c else 0
    yield ("received",), c.stats.received if c else 0
    yield ("applied",), st.shared_keep_sessions
    yield ("dropped",), c.dropped_keeps if c else 0


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "agent_sampler_build_info",
        "gauge",
        "The running sampler: its version and Python's, as labels; the value is 1.",
        ("version", "python_version"),
        lambda s: [((package_version(), python_version()), 1.0)],
    ),
    MetricSpec(
        "agent_sampler_mode",
        "gauge",
        "The sampler's mode (config key `mode`): 1 for the active one, 0 for the other. In "
        "shadow mode every span is forwarded, would-drop ones too (agent_sampler_shadow_spans).",
        ("mode",),
        lambda s: [((mode,), float(s.pipeline.config.mode == mode)) for mode in MODES],
    ),
    MetricSpec(
        "agent_sampler_config_info",
        "gauge",
        "The running config: the sha256 of its file (16 hex digits, `sha256sum FILE | cut "
        "-c1-16`) as a label; the value is 1.",
        ("hash",),
        lambda s: [((s.config_state.digest,), 1.0)],
    ),
    MetricSpec(
        "agent_sampler_config_generation",
        "gauge",
        "1 at start, one more for each reload that changed the config.",
        (),
        _one(lambda s: s.config_state.generation),
    ),
    MetricSpec(
        "agent_sampler_config_reloads",
        "counter",
        "Config reloads (SIGHUP, or a change of the file with --watch-config), by outcome: "
        "success, failure (the file has problems: the running config stays, each problem is "
        "logged), unchanged (the same file).",
        ("outcome",),
        lambda s: [((o,), s.config_state.reloads[o]) for o in OUTCOMES],
    ),
    MetricSpec(
        "agent_sampler_config_last_reload_successful",
        "gauge",
        "0 when the last reload failed (until one succeeds, or finds the running file again).",
        (),
        _one(lambda s: s.config_state.last_reload_ok),
    ),
    MetricSpec(
        "agent_sampler_config_restart_pending",
        "gauge",
        "Keys the running config's file sets to new values that only a restart applies (named "
        "in the reload's log line); 0 when everything in the file runs.",
        (),
        _one(lambda s: len(s.config_state.need_restart)),
    ),
    MetricSpec(
        "agent_sampler_receiver_requests",
        "counter",
        "Export requests received, by transport and outcome.",
        ("transport", "outcome"),
        _requests,
    ),
    MetricSpec(
        "agent_sampler_receiver_spans",
        "counter",
        "Spans in decoded export requests, by transport (accepted or not).",
        ("transport",),
        lambda s: [((t,), st.spans_received) for t, st in s.receivers.items()],
    ),
    MetricSpec(
        "agent_sampler_connections",
        "gauge",
        "Connections open on the OTLP/HTTP and metrics listeners (gRPC's are grpc core's).",
        ("listener",),
        lambda s: [((name,), st.open) for name, st in s.connections.items()],
    ),
    MetricSpec(
        "agent_sampler_connections_closed",
        "counter",
        "Connections the OTLP/HTTP and metrics listeners closed, by reason: refused (at "
        "max_connections, every connection busy), evicted (closed to make room: no request in "
        "progress), header_timeout (no complete request head in time).",
        ("listener", "reason"),
        _connections_closed,
    ),
    MetricSpec(
        "agent_sampler_accept_failures",
        "counter",
        "Connections that could not be accepted for want of file descriptors (or kernel "
        "memory); accepting pauses briefly each time.",
        (),
        _one(lambda s: s.shortage.failures),
    ),
    MetricSpec(
        "agent_sampler_capture_requests",
        "counter",
        "Accepted requests offered to the traffic capture (capture.path), by outcome: written, "
        "or left out (queue_full: the writer was behind; size_cap, write_error: capturing "
        "had stopped; shutdown: still queued at the end).",
        ("outcome",),
        _captured,
    ),
    MetricSpec(
        "agent_sampler_capture_bytes",
        "counter",
        "Bytes of OTLP/JSON lines written to the traffic capture.",
        (),
        lambda s: [] if s.capture is None else [((), s.capture.snapshot().bytes_written)],
    ),
    MetricSpec(
        "agent_sampler_spans_accepted",
        "counter",
        "Spans accepted into the pipeline.",
        (),
        _one(lambda s: s.pipeline.stats.spans_accepted),
    ),
    MetricSpec(
        "agent_sampler_spans_refused",
        "counter",
        "Spans refused with RESOURCE_EXHAUSTED / 429 (the sender retries them).",
        (),
        _one(lambda s: s.pipeline.stats.spans_refused),
    ),
    MetricSpec(
        "agent_sampler_requests_refused",
        "counter",
        "Requests refused, by reason.",
        ("reason",),
        _refused,
    ),
    MetricSpec(
        "agent_sampler_spans_invalid",
        "counter",
        "Spans rejected for invalid trace or span ids (OTLP partial success).",
        (),
        _one(lambda s: s.pipeline.stats.spans_invalid),
    ),
    MetricSpec(
        "agent_sampler_sessions_decided",
        "counter",
        "Session decisions, by rule and verdict (a second look that keeps a dropped session, "
        "or a reopened session decided again, is another decision).",
        ("rule", "verdict"),
        _decided("sessions"),
    ),
    MetricSpec(
        "agent_sampler_spans_decided",
        "counter",
        "Spans of decided sessions, by rule and verdict.",
        ("rule", "verdict"),
        _decided("spans"),
    ),
    MetricSpec(
        "agent_sampler_spans_kept",
        "counter",
        "Kept spans handed to the downstream exporter, each once, whatever kept it: the sum of "
        'spans_decided{verdict="keep"} and late_spans{verdict="keep"}. In shadow mode, every '
        "span handed to the exporter, would-drop ones included (agent_sampler_shadow_spans).",
        (),
        _one(lambda s: s.pipeline.stats.spans_submitted),
    ),
    MetricSpec(
        "agent_sampler_shadow_spans",
        "counter",
        "Spans forwarded in shadow mode, by the verdict they carry (agent_sampler.verdict): "
        "keep, what live mode would have sent; drop, what it would have dropped. Their sum is "
        "the part of spans_kept sent in shadow mode.",
        ("verdict",),
        lambda s: [
            (("keep",), s.pipeline.stats.shadow_kept_spans),
            (("drop",), s.pipeline.stats.shadow_dropped_spans),
        ],
    ),
    MetricSpec(
        "agent_sampler_decision_delay_seconds",
        "histogram",
        "Time from a session's first span to its verdict, once per session (a reopened or "
        "continued conversation is not counted again).",
        (),
        lambda s: [((), s.pipeline.stats.decision_delay)],
    ),
    MetricSpec(
        "agent_sampler_spans_limited",
        "counter",
        "Spans whose attributes were cut to the receivers' limits (max_attributes_per_span, "
        "max_attribute_value_size, 10,000 values an array, 1,024 links a span).",
        (),
        _one(lambda s: s.pipeline.stats.spans_limited),
    ),
    MetricSpec(
        "agent_sampler_late_spans",
        "counter",
        "Spans that arrived after their session was decided, by the verdict they followed.",
        ("verdict",),
        lambda s: [
            (("keep",), s.pipeline.stats.late_spans_kept),
            (("drop",), s.pipeline.stats.late_spans_dropped),
        ],
    ),
    MetricSpec(
        "agent_sampler_buffer_sessions",
        "gauge",
        "Sessions waiting for a decision.",
        (),
        _one(lambda s: s.pipeline.buffer.session_count),
    ),
    MetricSpec(
        "agent_sampler_buffer_spans",
        "gauge",
        "Spans held in the session buffer.",
        (),
        _one(lambda s: s.pipeline.buffer.span_count),
    ),
    MetricSpec(
        "agent_sampler_buffer_bytes",
        "gauge",
        "Serialized size of the spans held in the session buffer.",
        (),
        _one(lambda s: s.pipeline.buffer.span_bytes),
    ),
    MetricSpec(
        "agent_sampler_buffer_memory_bytes",
        "gauge",
        "Estimated memory of the buffered spans (what sessions.max_buffered_memory limits).",
        (),
        _one(lambda s: s.pipeline.buffer.memory),
    ),
    MetricSpec(
        "agent_sampler_stress_relief_sessions",
        "counter",
        "Sessions decided early because the buffer neared its limits (stress relief).",
        (),
        _one(lambda s: s.pipeline.stats.relief_sessions),
    ),
    MetricSpec(
        "agent_sampler_held_spans",
        "gauge",
        "Spans of dropped sessions held for a second look (sessions.dropped_hold).",
        (),
        _one(lambda s: s.pipeline.buffer.held_spans),
    ),
    MetricSpec(
        "agent_sampler_held_released_early",
        "counter",
        "Held dropped sessions given up before their time to make room.",
        (),
        _one(lambda s: s.pipeline.buffer.released_early),
    ),
    MetricSpec(
        "agent_sampler_reopened_sessions",
        "counter",
        "Held dropped sessions taken back into the buffer by a new turn or late spans.",
        (),
        _one(lambda s: s.pipeline.buffer.reopened),
    ),
    MetricSpec(
        "agent_sampler_second_look_kept_sessions",
        "counter",
        "Sessions dropped while the rarity model was cold and kept when scored again.",
        (),
        _one(lambda s: s.pipeline.stats.second_look_sessions),
    ),
    MetricSpec(
        "agent_sampler_decision_cache_entries",
        "gauge",
        "Decided sessions and traces remembered for late spans.",
        (),
        _one(lambda s: s.pipeline.buffer.cache_entries),
    ),
    MetricSpec(
        "agent_sampler_cluster_verdicts",
        "counter",
        "Keeps of conversations shared through the cluster store, by event: published (this "
        "sampler's, stored and announced), received (peers', heard or looked up), applied "
        "(parts of conversations kept here for a peer's keep), dropped (not published: the "
        "outbox was full while the store was unreachable).",
        ("event",),
        _cluster_verdicts,
    ),
    MetricSpec(
        "agent_sampler_cluster_spans_kept",
        "counter",
        "Spans kept for a peer's keep (cluster): held or buffered parts of its conversations.",
        (),
        _one(lambda s: s.pipeline.stats.shared_keep_spans),
    ),
    MetricSpec(
        "agent_sampler_cluster_errors",
        "counter",
        "Failed round trips and connections to the cluster store, unreadable messages and "
        "refused writes; sampling goes on alone meanwhile.",
        (),
        _one(lambda s: s.cluster.stats.errors if s.cluster else 0),
    ),
    MetricSpec(
        "agent_sampler_cluster_connected",
        "gauge",
        "1 while connected to the cluster store; 0 when it is unreachable or the cluster is off.",
        (),
        _one(lambda s: s.cluster is not None and s.cluster.stats.connected),
    ),
    MetricSpec(
        "agent_sampler_exporter_queue_spans",
        "gauge",
        "Kept spans waiting for the downstream (exporter queue in memory and on disk, plus "
        "pipeline backlog).",
        (),
        _one(lambda s: s.exporter.queued_spans() + s.pipeline.pending_spans),
    ),
    MetricSpec(
        "agent_sampler_exporter_spans_sent",
        "counter",
        "Kept spans the downstream accepted.",
        (),
        _one(lambda s: s.exporter.stats.spans_sent),
    ),
    MetricSpec(
        "agent_sampler_exporter_send_duration_seconds",
        "histogram",
        "Time one attempt to send a batch downstream took, failed attempts included.",
        (),
        lambda s: [((), s.exporter.stats.send_durations)],
    ),
    MetricSpec(
        "agent_sampler_exporter_retries",
        "counter",
        "Export attempts retried after a transient failure.",
        (),
        _one(lambda s: s.exporter.stats.retries),
    ),
    MetricSpec(
        "agent_sampler_exporter_failed_spans",
        "counter",
        "Kept spans given up on (permanent downstream error, retries exhausted, undelivered at "
        "shutdown, or lost to damage in the durable queue).",
        (),
        _one(lambda s: s.exporter.stats.failed_spans),
    ),
    MetricSpec(
        "agent_sampler_exporter_disk_queue_bytes",
        "gauge",
        "Disk space used by the durable queue's files (exporter.queue_dir).",
        (),
        _one(lambda s: s.exporter.stats.disk_bytes),
    ),
    MetricSpec(
        "agent_sampler_exporter_disk_queue_records",
        "gauge",
        "Kept requests in the durable queue not yet acknowledged by the downstream.",
        (),
        _one(lambda s: s.exporter.stats.disk_records),
    ),
    MetricSpec(
        "agent_sampler_exporter_disk_spilled_spans",
        "counter",
        "Kept spans that found the in-memory queue full and waited on disk only.",
        (),
        _one(lambda s: s.exporter.stats.disk_spilled_spans),
    ),
    MetricSpec(
        "agent_sampler_exporter_disk_replayed_spans",
        "counter",
        "Kept spans found in the durable queue at start, delivered from there.",
        (),
        _one(lambda s: s.exporter.stats.disk_replayed_spans),
    ),
    MetricSpec(
        "agent_sampler_exporter_disk_corrupt_records",
        "counter",
        "Records lost to damage in the durable queue (torn or corrupt; a damaged stretch without "
        "a readable record header counts as one); their spans count in failed_spans.",
        (),
        _one(lambda s: s.exporter.stats.disk_corrupt_records),
    ),
    MetricSpec(
        "agent_sampler_exporter_disk_full_refusals",
        "counter",
        "Offers of a kept request the durable queue refused at exporter.queue_max_bytes (or "
        "on a failed write); the request waits in the pipeline's backlog, intake is refused.",
        (),
        _one(lambda s: s.exporter.stats.disk_full_refusals),
    ),
)


class SamplerCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for spec in METRICS:
            family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            elif spec.kind == "gauge":
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            else:
                family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in spec.read(self.sources):
                if isinstance(value, Histogram):
                    assert isinstance(family, HistogramMetricFamily)
                    buckets = [(_le(bound), n) for bound, n in value.cumulative()]
                    family.add_metric(list(labels), buckets, value.sum)
                else:
                    assert not isinstance(family, HistogramMetricFamily)
                    family.add_metric(list(labels), value)
            yield family


def _le(bound: float) -> str:
    """A bucket's bound as Prometheus writes it: 0.5, 30.0, +Inf."""
    return "+Inf" if bound == float("inf") else repr(bound)


def build_registry(sources: Sources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SamplerCollector(sources))
    # resident memory, CPU seconds, open file descriptors; Python's version; collections
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
