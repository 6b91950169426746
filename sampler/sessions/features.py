"""Session features, kept up to date span by span so that deciding costs O(1) per session."""

from __future__ import annotations

from sampler.sessions.spans import SpanFacts


class SessionFeatures:
    """Aggregates over every span of a session. Merging two gives the features of the union."""

    __slots__ = ("span_count", "error_spans", "first_start_ns", "last_end_ns", "test_bits")

    def __init__(self) -> None:
        self.span_count = 0
        self.error_spans = 0
        self.first_start_ns = 0  # 0: no span yet
        self.last_end_ns = 0
        self.test_bits = 0

    def observe(self, span: SpanFacts) -> None:
        self.span_count += 1
        if span.is_error:
            self.error_spans += 1
        if span.start_ns and (not self.first_start_ns or span.start_ns < self.first_start_ns):
            self.first_start_ns = span.start_ns
        if span.end_ns > self.last_end_ns:
            self.last_end_ns = span.end_ns
        self.test_bits |= span.test_bits

    def merge(self, other: SessionFeatures) -> None:
        self.span_count += other.span_count
        self.error_spans += other.error_spans
        if other.first_start_ns and (
            not self.first_start_ns or other.first_start_ns < self.first_start_ns
        ):
            self.first_start_ns = other.first_start_ns
        self.last_end_ns = max(self.last_end_ns, other.last_end_ns)
        self.test_bits |= other.test_bits

    @property
    def duration_s(self) -> float:
        if not self.first_start_ns or self.last_end_ns < self.first_start_ns:
            return 0.0
        return (self.last_end_ns - self.first_start_ns) / 1e9
