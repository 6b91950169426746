"""Self-metrics, declared once in METRICS and read from the components' plain counters at scrape
time, so no decision or intake code touches Prometheus. docs/operations.md lists the same table
(a test keeps them in step)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sampler.export.base import Exporter
from sampler.pipeline import Pipeline
from sampler.receive.connections import ConnectionStats, DescriptorShortage
from sampler.receive.intake import ReceiverStats

Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True, slots=True)
class Sources:
    pipeline: Pipeline
    exporter: Exporter
    receivers: dict[str, ReceiverStats]  # by transport
    connections: dict[str, ConnectionStats] = field(default_factory=dict)  # by listener
    shortage: DescriptorShortage = field(default_factory=DescriptorShortage)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    labels: tuple[str, ...]
    read: Callable[[Sources], Iterable[Sample]]


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


def _refused(s: Sources) -> Iterator[Sample]:
    for reason, count in s.pipeline.stats.requests_refused.items():
        yield (reason,), count


METRICS: tuple[MetricSpec, ...] = (
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
        "Sessions decided, by rule and verdict.",
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
        "agent_sampler_spans_limited",
        "counter",
        "Spans whose attributes were cut to the receivers' limits (max_attributes_per_span, "
        "max_attribute_value_size).",
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
            family: CounterMetricFamily | GaugeMetricFamily
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in spec.read(self.sources):
                family.add_metric(list(labels), value)
            yield family


def build_registry(sources: Sources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SamplerCollector(sources))
    return registry
