"""The sampler's data flow in one synchronous object: receive -> sessions -> rules -> output.

The live server (``runtime.py``) and the offline ``replay`` command drive the same Pipeline: the
first with a monotonic clock and an asynchronous exporter as the sink, the second with a clock
taken from span timestamps and a file. Everything here runs on one thread (the event loop's),
so nothing is locked.

No kept span is lost here: if the sink cannot take a kept request, the request waits in
``_pending`` and intake is refused (RESOURCE_EXHAUSTED / 429) until the sink has room again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.clock import Clock
from sampler.config.model import SamplerConfig
from sampler.rules.budget import BudgetSettings
from sampler.rules.engine import RuleEngine
from sampler.rules.facts import DecisionFacts
from sampler.rules.randomness import randomness_of_key, randomness_of_trace_id
from sampler.rules.verdict import (
    ADJUSTED_COUNT_ATTRIBUTE,
    ANNOTATION_KEYS,
    RULE_ATTRIBUTE,
    SIGNALS_ATTRIBUTE,
    Verdict,
)
from sampler.signals.scorer import SessionScorer
from tests.reference.legacy.buffer import BlockKey, Session, SessionBuffer
from tests.reference.legacy.consumer import ACCEPTED, Admission
from tests.reference.legacy.decision_cache import DecisionCache
from tests.reference.legacy.held import MAX_LOOKS, HeldSession
from tests.reference.legacy.limits import limit_attribute_values
from tests.reference.legacy.memory import memory_of
from tests.reference.legacy.spans import SpanExtractor
from tests.reference.legacy.tracestate import with_probability
from tests.reference.legacy.wire import (
    ResourceBlock,
    ScopeBlock,
    encode_request,
    span_attribute_double,
    span_attribute_string,
    span_attribute_string_array,
    span_trace_state,
)

log = logging.getLogger(__name__)


# Bytes a length-delimited field adds around its payload at most: a tag and a 5-byte length.
_FIELD_FRAMING = 6
# A (resource, scope) block adds six framed fields: ResourceSpans, resource, its schema_url,
# ScopeSpans, scope, its schema_url.
_BLOCK_FRAMING = 6 * _FIELD_FRAMING

# Serialized spans start with their trace id (field 1, 16 bytes): protobuf writes fields in
# number order, so the first bytes are the tag 0x0a and the length 0x10.
_TRACE_ID_PREFIX = b"\x0a\x10"
# Room for a tracestate rewritten with `ot=th:...` when checking request sizes.
_TRACE_STATE_ALLOWANCE = 512

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
_ZERO_TRACE_ID = bytes(TRACE_ID_BYTES)  # OTLP: a valid id has at least one non-zero byte
_ZERO_SPAN_ID = bytes(SPAN_ID_BYTES)
REFUSAL_RETRY_AFTER_S = 1.0


class KeptSink(Protocol):
    """Where kept spans go, as ready serialized ExportTraceServiceRequests."""

    def try_submit(self, request: bytes, span_count: int) -> bool: ...


@dataclass(slots=True)
class RuleTally:
    sessions_seen: int = 0
    sessions_kept: int = 0
    spans_seen: int = 0
    spans_kept: int = 0


@dataclass(slots=True)
class PipelineStats:
    """Plain counters; ``metrics.py`` exposes them at scrape time."""

    requests: int = 0
    spans_accepted: int = 0  # into the buffer (or straight to a late verdict)
    spans_invalid: int = 0
    requests_refused: dict[str, int] = field(default_factory=dict)  # by reason
    spans_refused: int = 0
    spans_limited: int = 0  # attributes removed or values cut (receivers.max_attribute_*)
    late_spans_kept: int = 0
    late_spans_dropped: int = 0
    spans_submitted: int = 0
    by_rule: dict[str, RuleTally] = field(default_factory=dict)
    # decided early because the buffer neared its limits (stress relief)
    relief_sessions: int = 0
    relief_spans: int = 0
    # dropped while the rarity model was cold, kept after all when scored again (second look)
    second_look_sessions: int = 0
    second_look_spans: int = 0


class Pipeline:
    def __init__(self, config: SamplerConfig, sink: KeptSink, clock: Clock) -> None:
        self.config = config
        self.sink = sink
        self.clock = clock
        self.engine = RuleEngine.build(
            config.rules, BudgetSettings.from_config(config.budget), config.budget.strata
        )
        self.extractor = SpanExtractor(config.sessions.key_attributes, self.engine.span_tests)
        self.scorer = SessionScorer(config.signals)
        self.buffer = SessionBuffer(
            config.sessions, DecisionCache(config.decision_cache.max_sessions)
        )
        self.hold = self.buffer.hold
        self.stats = PipelineStats()
        self._pending: deque[tuple[bytes, int]] = deque()
        self._suffixes: dict[Verdict, bytes] = {}
        self._max_request_spans = config.exporter.batch_max_spans
        self._max_request_bytes = config.exporter.batch_max_size

    # -- intake --------------------------------------------------------------------------------

    def consume(self, request: ExportTraceServiceRequest, *, transport: str = "grpc") -> Admission:
        stats = self.stats
        stats.requests += 1
        span_total = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        refusal = self._refusal(request, span_total)
        if refusal is not None:
            stats.requests_refused[refusal.reason] = (
                stats.requests_refused.get(refusal.reason, 0) + 1
            )
            stats.spans_refused += span_total
            return refusal
        now = self.clock.now()
        extractor, buffer = self.extractor, self.buffer
        max_attributes = self.config.receivers.max_attributes_per_span
        max_value = self.config.receivers.max_attribute_value_size
        late: dict[Verdict, dict[BlockKey, list[bytes]]] = {}
        late_states: dict[bytes, str] = {}
        invalid = 0
        for resource_spans in request.resource_spans:
            resource = resource_spans.resource
            resource_bytes = (
                resource.SerializeToString() if resource_spans.HasField("resource") else b""
            )
            resource_attrs = extractor.resource_attributes(resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                scope_bytes = (
                    scope_spans.scope.SerializeToString() if scope_spans.HasField("scope") else b""
                )
                block = (
                    resource_bytes,
                    resource_spans.schema_url,
                    scope_bytes,
                    scope_spans.schema_url,
                )
                for span in scope_spans.spans:
                    over = len(span.attributes) - max_attributes
                    if over > 0:  # removed attributes are counted in the span, as OTLP asks
                        del span.attributes[max_attributes:]
                        span.dropped_attributes_count += over
                        stats.spans_limited += 1
                    data = span.SerializeToString()
                    # only a span larger than the value limit can hold a value over it
                    if len(data) > max_value and limit_attribute_values(span, max_value):
                        stats.spans_limited += 1
                        data = span.SerializeToString()
                    facts = extractor.extract(span, resource_attrs)
                    if not _valid_ids(facts.trace_id, facts.span_id):
                        invalid += 1
                        continue
                    if facts.annotated:  # decided upstream or replayed output: ours replaces it
                        _strip_annotations(span)
                        data = span.SerializeToString()
                    verdict = buffer.add(facts, block, data, now)
                    if verdict is not None:
                        late.setdefault(verdict, {}).setdefault(block, []).append(data)
                        if facts.trace_state:
                            late_states.setdefault(facts.trace_id, facts.trace_state)
        for verdict, blocks in late.items():
            count = sum(len(spans) for spans in blocks.values())
            if verdict.keep:
                stats.late_spans_kept += count
                self._emit(blocks, verdict, late_states, same_randomness=False)
            else:
                stats.late_spans_dropped += count
        self._drain_followed()
        self._decide(buffer.pop_due(now), now)
        self._end_holds(now)
        self._relieve(now)
        stats.spans_accepted += span_total - invalid
        if invalid:
            stats.spans_invalid += invalid
            return Admission(
                True,
                reason=f"{invalid} span(s) with an invalid trace or span id "
                "(trace ids are 16 bytes, span ids 8, neither all zero)",
                rejected_spans=invalid,
            )
        return ACCEPTED

    def _refusal(self, request: ExportTraceServiceRequest, span_total: int) -> Admission | None:
        if self._pending and not self._flush_pending():
            return Admission(False, "exporter queue full", REFUSAL_RETRY_AFTER_S)
        if not span_total:
            return None
        sessions = self.config.sessions
        buffer, hold = self.buffer, self.hold
        # The request's exact size (a walk over all of it) is needed only near the limit: its
        # body is at most max_message_size, so far from the limit that bound settles it.
        request_memory = memory_of(span_total, self.config.receivers.max_message_size)
        if buffer.memory + hold.memory + request_memory > sessions.max_buffered_memory:
            request_memory = memory_of(span_total, request.ByteSize())
        # A request larger than the whole buffer is taken when the buffer is empty: refusing
        # it would make the sender retry it forever.
        if buffer.span_count:
            if buffer.span_count + span_total > sessions.max_buffered_spans:
                return Admission(False, "session buffer full", REFUSAL_RETRY_AFTER_S)
            if buffer.memory + request_memory > sessions.max_buffered_memory:
                return Admission(False, "session buffer memory full", REFUSAL_RETRY_AFTER_S)
        # Held dropped spans are the first to go when the request needs their room.
        while hold.span_count and (
            buffer.span_count + hold.span_count + span_total > sessions.max_buffered_spans
            or buffer.memory + hold.memory + request_memory > sessions.max_buffered_memory
        ):
            self._release(hold.release_oldest(), self.clock.now())
        return None

    def _relieve(self, now: float) -> None:
        """Stress relief: near the buffer's limits, give up held spans, then decide the oldest
        sessions early (with the normal rules) until 10 points below the threshold."""
        sessions = self.config.sessions
        at = sessions.stress_relief_at
        buffer, hold = self.buffer, self.hold
        max_spans, max_memory = sessions.max_buffered_spans, sessions.max_buffered_memory

        def excess(share: float) -> tuple[int, int]:
            return (
                int(buffer.span_count + hold.span_count - share * max_spans),
                int(buffer.memory + hold.memory - share * max_memory),
            )

        if max(excess(at)) <= 0:
            return
        target = max(0.0, at - 0.1)
        while hold.span_count and max(excess(target)) > 0:
            self._release(hold.release_oldest(), now)
        spans, memory = excess(target)
        if spans > 0 or memory > 0:
            early = buffer.pop_oldest(spans, memory)
            self.stats.relief_sessions += len(early)
            self.stats.relief_spans += sum(session.span_count for session in early)
            self._decide(early, now)
            while hold.span_count and max(excess(target)) > 0:  # what relief itself held
                self._release(hold.release_oldest(), now)

    # -- deciding ------------------------------------------------------------------------------

    def decide_due(self) -> int:
        """Decide every session whose deadline passed; called by the ticker."""
        self._flush_pending()
        self.scorer.flush()  # what was decided since the last tick counts from now on
        now = self.clock.now()
        decided = self._decide(self.buffer.pop_due(now), now)
        self._end_holds(now)
        return decided

    def decide_all(self) -> int:
        """Decide every buffered session now, and end every hold (shutdown, end of replay)."""
        self.scorer.flush()
        now = self.clock.now()
        self._drain_followed()
        decided = self._decide(self.buffer.pop_all(), now)
        for held in self.hold.pop_all():
            self._release(held, now)
        return decided

    def facts_of(
        self,
        session: Session,
        now: float,
        *,
        running_at_cap: bool = False,
        second_look: bool = False,
    ) -> tuple[DecisionFacts, bool]:
        """Summarise and score a session being decided (this also teaches the rarity model, but
        not on a held session's ``second_look``). Also says whether the model was cold for it."""
        features = session.features
        scored = self.scorer.score(
            features,
            now,
            # a second look scores the whole session: it is only due for one dropped while cold
            fragment=session.decided_before and not second_look,
            running_at_cap=running_at_cap,
            learn=not second_look,
        )
        tests = self.engine.span_tests
        bits = features.test_bits
        matched = frozenset(t for i, t in enumerate(tests) if bits >> i & 1)
        randomness = (
            randomness_of_key(session.key)
            if session.keyed
            else randomness_of_trace_id(session.trace_ids[0])
        )
        facts = DecisionFacts(
            session_key=session.key,
            randomness=randomness,
            span_count=features.span_count,
            trace_count=len(session.trace_ids),
            error_spans=features.error_spans,
            duration_s=features.duration_s,
            matched_tests=matched,
            error_kinds=features.error_kinds,
            tokens=features.tokens,
            tool_calls=features.tool_call_count,
            agent=features.root_agent,
            shape=scored.shape,
            signals=scored.signals,
            cycle_kinds=scored.cycle_kinds,
            rarity=scored.rarity,
            redecision=session.decided_before,
        )
        return facts, scored.cold

    def _decide(self, sessions: Iterable[Session], now: float) -> int:
        decided = 0
        cap = self.config.sessions.max_session_duration
        for session in sessions:
            running_at_cap = bool(session.rootless) and now - session.created >= cap
            facts, cold = self.facts_of(session, now, running_at_cap=running_at_cap)
            cold = cold or session.awaiting_look
            verdict = self.engine.decide(facts, now)
            self.buffer.record(session, verdict)
            self._tally(verdict, session.span_count)
            decided += 1
            if verdict.keep:
                self._emit(session.span_blocks(), verdict, session.trace_states, not session.keyed)
            elif session.keyed or session.rootless or cold:
                # more turns or late spans may reopen it, or a second look keep it
                if self.hold.hold(session, verdict, cold=cold, now=now):
                    self._trim_hold(now)
                    continue
            session.release()  # the spans are in a request now, or dropped
        return decided

    def _trim_hold(self, now: float) -> None:
        while self.hold.over_cap:
            self._release(self.hold.release_oldest(), now)

    def _end_holds(self, now: float) -> None:
        for held in self.hold.pop_expired(now):
            self._release(held, now, may_wait=True)

    def _release(self, held: HeldSession | None, now: float, *, may_wait: bool = False) -> None:
        """A held session leaves the hold. One decided while the rarity model was cold is
        scored again first, and kept if an earlier rule matches now; if the model is still cold
        for it (its agent is little seen yet) and ``may_wait``, it is held for another look,
        ``MAX_LOOKS`` at most."""
        if held is None:
            return
        session = held.session
        if held.cold:
            facts, still_cold = self.facts_of(session, now, second_look=True)
            verdict = self.engine.reconsider(facts, held.verdict, now)
            if verdict is not None and verdict.keep:
                self.buffer.record(session, verdict)
                self._revive(session.span_count)
                self._emit(session.span_blocks(), verdict, session.trace_states, not session.keyed)
            elif still_cold and may_wait and held.looks < MAX_LOOKS:
                if self.hold.hold(session, held.verdict, cold=True, now=now, looks=held.looks + 1):
                    self._trim_hold(now)
                    return
        session.release()

    def _drain_followed(self) -> None:
        followed, self.buffer.followed = self.buffer.followed, []
        for session, verdict in followed:
            if verdict.keep:
                self.stats.late_spans_kept += session.span_count
                self._emit(
                    session.span_blocks(), verdict, session.trace_states, same_randomness=False
                )
            else:
                self.stats.late_spans_dropped += session.span_count
            session.release()

    def _revive(self, spans: int) -> None:
        """Count a dropped session kept after all, by a second look. The first decision stays
        counted as it was (the per-rule counters only grow)."""
        self.stats.second_look_sessions += 1
        self.stats.second_look_spans += spans

    def _tally(self, verdict: Verdict, span_count: int) -> None:
        tally = self.stats.by_rule.get(verdict.rule)
        if tally is None:
            tally = self.stats.by_rule[verdict.rule] = RuleTally()
        tally.sessions_seen += 1
        tally.spans_seen += span_count
        if verdict.keep:
            tally.sessions_kept += 1
            tally.spans_kept += span_count

    # -- output --------------------------------------------------------------------------------

    def _emit(
        self,
        blocks: Mapping[BlockKey, Iterable[bytes]],
        verdict: Verdict,
        trace_states: Mapping[bytes, str],
        same_randomness: bool,
    ) -> None:
        """Annotate every span and hand them to the sink, in requests within the size limits.

        Kept with probability p < 1, a span also gets the OpenTelemetry threshold (`ot=th:` in
        its tracestate) combined with any set upstream; kept with p = 1 its tracestate already
        says the right thing and the span bytes are only extended by the three attributes."""
        suffix = self._suffix(verdict)
        probability = 1.0 / verdict.adjusted_count
        per_trace: dict[bytes, bytes] = {}
        span_extra = (
            len(suffix) + _FIELD_FRAMING + (_TRACE_STATE_ALLOWANCE if probability < 1 else 0)
        )
        max_spans, max_bytes = self._max_request_spans, self._max_request_bytes
        request: dict[tuple[bytes, str], dict[tuple[bytes, str], list[bytes]]] = {}
        count = size = 0  # size: an upper bound of the encoded request
        for (resource, resource_url, scope, scope_url), spans in blocks.items():
            block_cost = len(resource) + len(resource_url) + len(scope) + len(scope_url)
            block_cost += _BLOCK_FRAMING
            in_request = False
            for span in spans:
                cost = len(span) + span_extra + (0 if in_request else block_cost)
                if count and (count >= max_spans or size + cost > max_bytes):
                    self._submit(request, count)
                    request, count, size = {}, 0, 0
                    in_request = False
                    cost = len(span) + span_extra + block_cost
                scopes = request.setdefault((resource, resource_url), {})
                if probability < 1.0:
                    trace_id = span[2:18] if span.startswith(_TRACE_ID_PREFIX) else b""
                    span_suffix = per_trace.get(trace_id)
                    if span_suffix is None:
                        state = with_probability(
                            trace_states.get(trace_id, ""), probability, same_randomness
                        )
                        span_suffix = per_trace[trace_id] = suffix + span_trace_state(state)
                    scopes.setdefault((scope, scope_url), []).append(span + span_suffix)
                else:
                    scopes.setdefault((scope, scope_url), []).append(span + suffix)
                in_request = True
                count += 1
                size += cost
        if count:
            self._submit(request, count)

    def _submit(
        self, request: dict[tuple[bytes, str], dict[tuple[bytes, str], list[bytes]]], count: int
    ) -> None:
        body = encode_request(
            ResourceBlock(
                resource,
                resource_url,
                [
                    ScopeBlock(scope, scope_url, spans)
                    for (scope, scope_url), spans in scopes.items()
                ],
            )
            for (resource, resource_url), scopes in request.items()
        )
        self.stats.spans_submitted += count
        if self._pending or not self.sink.try_submit(body, count):
            self._pending.append((body, count))

    def _flush_pending(self) -> bool:
        """Offer waiting kept requests to the sink again; True when none is left waiting."""
        while self._pending:
            body, count = self._pending[0]
            if not self.sink.try_submit(body, count):
                return False
            self._pending.popleft()
        return True

    @property
    def pending_spans(self) -> int:
        return sum(count for _, count in self._pending)

    def _suffix(self, verdict: Verdict) -> bytes:
        suffix = self._suffixes.get(verdict)
        if suffix is None:
            if len(self._suffixes) > 1024:
                self._suffixes.clear()
            suffix = self._suffixes[verdict] = (
                span_attribute_string(RULE_ATTRIBUTE, verdict.rule)
                + span_attribute_double(ADJUSTED_COUNT_ATTRIBUTE, verdict.adjusted_count)
                + span_attribute_string_array(SIGNALS_ATTRIBUTE, verdict.signals)
            )
        return suffix


def _valid_ids(trace_id: bytes, span_id: bytes) -> bool:
    return (
        len(trace_id) == TRACE_ID_BYTES
        and len(span_id) == SPAN_ID_BYTES
        and trace_id != _ZERO_TRACE_ID
        and span_id != _ZERO_SPAN_ID
    )


def _strip_annotations(span: Span) -> None:
    for index in range(len(span.attributes) - 1, -1, -1):
        if span.attributes[index].key in ANNOTATION_KEYS:
            del span.attributes[index]
