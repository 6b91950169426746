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

from sampler._native import MAX_SPAN_TESTS, Core
from sampler.config.model import SamplerConfig
from sampler.rules.facts import SpanTest

# A session still cold at its second look (its agent is little seen yet) is held for another
# look, this many in all: enough for a young agent to warm up, bounded for one that never does.
MAX_LOOKS = 3


# A position of the native core's span-test table: a test, or free (None).
SpanTestSlot = SpanTest | None


def build_core(config: SamplerConfig, span_tests: Sequence[SpanTestSlot]) -> Core:
    s, r = config.sessions, config.receivers
    return Core(
        session_keys=list(s.key_attributes),
        span_tests=native_specs(span_tests),
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


def native_specs(slots: Sequence[SpanTestSlot]) -> list[tuple[object, ...] | None]:
    return [None if test is None else test.native_spec() for test in slots]


def set_session_settings(core: Core, config: SamplerConfig) -> None:
    """The session settings a reload changes (all but ``tick``, which it keeps)."""
    s = config.sessions
    core.set_session_settings(
        decision_wait=s.decision_wait,
        root_end_grace=s.root_end_grace,
        open_trace_wait=s.open_trace_wait,
        max_session_duration=s.max_session_duration,
        max_session_spans=s.max_session_spans,
        tick=s.tick,
        dropped_hold=s.dropped_hold,
        dropped_hold_max_spans=s.dropped_hold_max_spans,
        decision_cache_max=config.decision_cache.max_sessions,
    )


def place_span_tests(
    running: Sequence[SpanTestSlot], wanted: Sequence[SpanTest]
) -> tuple[list[SpanTestSlot], int]:
    """Positions in the native core's span-test table for the tests new rules want (a reload),
    and the bits to clear in every session.

    A session's bit i says test i matched one of its spans, since it was put at position i.
    So a running test keeps its position (what it found in the buffered and held sessions
    stays true), a test no rule wants frees its position, and a new test takes the first free
    position, or one at the end, whose bit is then cleared everywhere: a new test sees the
    spans that arrive after the reload, never what another test found there. At most
    MAX_SPAN_TESTS in use (ValueError), as at start; free positions are reused, so reloads do
    not run out of them."""
    keep = set(wanted)
    slots: list[SpanTestSlot] = [test if test in keep else None for test in running]
    placed = {test for test in slots if test is not None}
    reset = 0
    for test in wanted:
        if test in placed:
            continue
        position = slots.index(None) if None in slots else len(slots)
        if position == len(slots):
            slots.append(None)
        slots[position] = test
        placed.add(test)
        reset |= 1 << position
    while slots and slots[-1] is None:
        slots.pop()
    if len(slots) > MAX_SPAN_TESTS:
        raise ValueError(
            f"rules use {len(placed)} distinct span tests (attribute and span_name "
            f"conditions); at most {MAX_SPAN_TESTS} are supported"
        )
    return slots, reset


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
