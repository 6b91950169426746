"""The session buffer is native (``native/src/buffer.rs``): this module builds it from the
config and names what Python reads of it.

Spans never reach Python. The native core groups them by trace and session, keeps their bytes,
tracks each session's completion deadline, holds dropped sessions for a while and remembers
decisions for late spans; Python pops the sessions that are due, one ``SessionView`` each,
decides them and hands each verdict back (docs/architecture.md, "Sessions").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sampler._native import Core
from sampler.config.model import SamplerConfig
from sampler.rules.facts import SpanTest

# A session still cold at its second look (its agent is little seen yet) is held for another
# look, this many in all: enough for a young agent to warm up, bounded for one that never does.
MAX_LOOKS = 3


def build_core(config: SamplerConfig, span_tests: Sequence[SpanTest]) -> Core:
    s, r = config.sessions, config.receivers
    return Core(
        session_keys=list(s.key_attributes),
        span_tests=[test.native_spec() for test in span_tests],
        max_attributes_per_span=r.max_attributes_per_span,
        max_attribute_value_size=r.max_attribute_value_size,
        decision_wait=s.decision_wait,
        root_end_grace=s.root_end_grace,
        open_trace_wait=s.open_trace_wait,
        max_session_duration=s.max_session_duration,
        max_session_spans=s.max_session_spans,
        tick=s.tick,
        dropped_hold=s.dropped_hold,
        dropped_hold_max_spans=s.dropped_hold_max_spans,
        decision_cache_max=config.decision_cache.max_sessions,
        batch_max_spans=config.exporter.batch_max_spans,
        batch_max_bytes=config.exporter.batch_max_size,
        shadow=config.mode == "shadow",
    )


@dataclass(frozen=True, slots=True)
class BufferStats:
    """The native buffer's counters and gauges, read at once (``Core.stats``)."""

    span_count: int = 0  # buffered spans (held ones not included)
    span_bytes: int = 0
    memory: int = 0  # what sessions.max_buffered_memory limits, held spans not included
    session_count: int = 0
    held_spans: int = 0
    held_bytes: int = 0
    held_memory: int = 0
    held_sessions: int = 0
    reopened: int = 0  # held sessions taken back by a new turn or late spans
    released_early: int = 0  # held sessions given up for room before their time
    cache_entries: int = 0  # decided sessions and traces remembered for late spans
    undecided: int = 0  # popped and not yet kept, held or released (0 between calls)

    @classmethod
    def of(cls, core: Core) -> BufferStats:
        return cls(**core.stats())
