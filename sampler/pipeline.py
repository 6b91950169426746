"""The sampler's data flow in one synchronous object, in three steps:

- **intake**: a validated request (``sampler._native.Request``) is admitted, or refused whole,
  then ingested by the native core (limits, extraction, grouping) in chunks; late spans of a
  decided session follow its verdict there;
- **decide**: due sessions (one ``SessionView`` each) are scored and decided by the rules; a
  drop may be held a while, and a session decided while the rarity model was cold gets a
  second look when its hold ends;
- **emit**: kept sessions come back from the core as ready requests, handed to the sink.

In shadow mode (``mode: shadow``) deciding is the same, and every span goes to the sink: a
dropped session's spans when live mode would let go of them (``Core.release``, after the hold:
a later turn that reopens it is decided with it, and it goes out once, with its last verdict),
late spans whatever verdict they follow, each annotated with that verdict.

With a cluster (``cluster:``), keeps of conversations are told to ``sharing`` (never
awaited), and peers' keeps come back through ``adopt``: a part held here after a drop is kept
at once, a buffered part when it is decided (its view carries the keep), later turns follow it
in the native core. Such keeps are tallied under the peer's rule and counted by the budget as
other rules' keeps are, so the samplers together keep what one would.

``reconfigure`` (a reload) swaps rules, budget, signal thresholds, session settings and mode
under what is buffered: sessions, held drops, the budget's rates and the rarity model stay.

The live server (``runtime.py``) and the offline ``replay`` command drive the same Pipeline: the
first with a monotonic clock and an asynchronous exporter as the sink, the second with a clock
taken from span timestamps and a file. Everything here runs on one thread (the event loop's),
so nothing is locked; the native core works without the GIL.

No kept span is lost here: if the sink cannot take a kept request, the request waits in
``_pending`` and intake is refused (RESOURCE_EXHAUSTED / 429) until the sink has room again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sampler._native import HeldSession, Request, SessionView
from sampler.clock import Clock
from sampler.cluster.shared import SharedKeep, VerdictSharing
from sampler.config.model import SamplerConfig
from sampler.latency import Histogram, decision_delays
from sampler.receive.intake import INGEST_CHUNK_SPANS, Admission, Intake
from sampler.rules.budget import BudgetSettings
from sampler.rules.engine import RuleEngine
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import rules_of
from sampler.rules.verdict import Verdict
from sampler.sessions.native import (
    MAX_LOOKS,
    BufferStats,
    SpanTestSlot,
    build_core,
    native_specs,
    place_span_tests,
    set_session_settings,
)
from sampler.signals.scorer import SessionScorer

log = logging.getLogger(__name__)

REFUSAL_RETRY_AFTER_S = 1.0
_NO_TESTS: frozenset[SpanTest] = frozenset()  # the span tests matched by most sessions
# What a span of an incoming request is expected to cost in the buffer beyond its bytes (its
# size prefix, its share of a session and of the trace map): the admission estimate, before
# the request is ingested and the buffer measures it.
SPAN_OVERHEAD_ESTIMATE = 160


def request_memory(spans: int, size: int) -> int:
    """What a request of ``spans`` spans and ``size`` bytes is expected to take in the buffer."""
    return size + SPAN_OVERHEAD_ESTIMATE * spans


class KeptSink(Protocol):
    """Where kept spans go, as ready serialized ExportTraceServiceRequests."""

    def try_submit(self, request: bytes, span_count: int) -> bool: ...


class DecisionObserver(Protocol):
    """Shown every decision (replay's tables); ``second_look``: a held drop kept after all."""

    def decided(
        self, facts: DecisionFacts, verdict: Verdict, now: float, *, second_look: bool
    ) -> None: ...


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
    # Shadow mode: spans handed to the sink by the verdict they carry (their sum is the part
    # of spans_submitted sent in shadow mode; live, both stay 0).
    shadow_kept_spans: int = 0
    shadow_dropped_spans: int = 0
    # Every kept span, once, whatever kept it: a rule's keep (a second look's included) or a
    # late span following a keep. It adds up: the sum of by_rule's spans_kept plus
    # late_spans_kept; and all of it is handed to the sink (or waits in the backlog). In
    # shadow mode, every span handed to the sink: shadow_kept_spans + shadow_dropped_spans.
    spans_submitted: int = 0
    # Decisions by the rule that made them. A session is decided more than once when a later
    # turn reopens a held drop (decided again as a whole) or a second look keeps a drop: then
    # it counts again, as kept by the rule that kept it (its drop stays counted: counters only
    # grow). So kept counts add up to what was sent; seen counts are decisions, not sessions.
    by_rule: dict[str, RuleTally] = field(default_factory=dict)
    # decided early because the buffer neared its limits (stress relief)
    relief_sessions: int = 0
    relief_spans: int = 0
    # dropped while the rarity model was cold, kept after all when scored again (second look)
    second_look_sessions: int = 0
    second_look_spans: int = 0
    # parts of conversations kept for a peer sampler's keep (cluster): held, or buffered
    shared_keep_sessions: int = 0
    shared_keep_spans: int = 0
    # first span to first verdict, once per session (reopened or continued: not again)
    decision_delay: Histogram = field(default_factory=decision_delays)


class Pipeline:
    def __init__(
        self,
        config: SamplerConfig,
        sink: KeptSink,
        clock: Clock,
        observer: DecisionObserver | None = None,
        decide_on_intake: bool = True,
    ) -> None:
        """``decide_on_intake``: decide what is due after each chunk of intake (replay, tests,
        where time moves with the data). The server leaves it to its ticker, which decides in
        slices between calls: deciding in the intake path would add it to an Export call's
        latency."""
        self.config = config
        self.sink = sink
        self.clock = clock
        self.observer = observer
        self._decide_on_intake = decide_on_intake
        self.engine = RuleEngine.build(
            rules_of(config), BudgetSettings.from_config(config.budget), config.budget.strata
        )
        self.scorer = SessionScorer(config.signals)
        # the native core's span tests by position (bit i of a session's test_bits is test i);
        # the engine's own order until a reload moves them (place_span_tests)
        self.span_tests: list[SpanTestSlot] = list(self.engine.span_tests)
        self.core = build_core(config, self.span_tests)
        self.stats = PipelineStats()
        self._pending: deque[tuple[bytes, int]] = deque()
        self._in_flight = 0  # memory of admitted requests not all ingested yet
        self._decoding = 0  # bytes of request bodies being decoded
        self.sharing: VerdictSharing | None = None  # the cluster, when configured

    @property
    def buffer(self) -> BufferStats:
        return BufferStats.of(self.core)

    def reconfigure(self, config: SamplerConfig) -> None:
        """Runs with ``config`` from now on (a reload), keeping what is buffered and learned:
        buffered sessions (decided by the new rules when due), held drops, the budget's rates,
        rate limits' buckets, the rarity model. ``config``'s restart-only settings must be the
        running ones (``config.changes.merge_reload``). Raises ValueError, changing nothing,
        when it cannot be run.

        A rule's new attribute or span_name test sees the spans that arrive from now on: the
        spans of sessions buffered or held now are not read again (place_span_tests)."""
        running = self.config
        if config.sessions.tick != running.sessions.tick:
            raise ValueError("sessions.tick cannot change without a restart")
        engine = self.engine.reconfigured(
            rules_of(config), BudgetSettings.from_config(config.budget), config.budget.strata
        )
        scorer = SessionScorer(config.signals)  # ValueError for thresholds it cannot use
        rarity = self.scorer.rarity
        fixed = rarity.geometry_changes(scorer.rarity.settings)
        if fixed:
            raise ValueError(f"{', '.join(fixed)} of the rarity model need a restart")
        slots, reset = place_span_tests(self.span_tests, engine.span_tests)
        core = self.core
        core.set_span_tests(native_specs(slots), reset)  # the last step that may fail
        set_session_settings(core, config)
        core.shadow = config.mode == "shadow"
        rarity.reconfigure(scorer.rarity.settings)
        scorer.rarity = rarity
        self.engine, self.scorer, self.span_tests, self.config = engine, scorer, slots, config
        self._trim_hold(self.clock.now())  # a smaller dropped_hold_max_spans applies now

    @property
    def shadow(self) -> bool:
        """Shadow mode: every span is forwarded, annotated with its would-be verdict."""
        return self.config.mode == "shadow"

    # -- intake --------------------------------------------------------------------------------

    def reserve(self, size: int) -> bool:
        """Room for a body of ``size`` bytes to be decoded: it counts against
        ``max_buffered_memory`` meanwhile. One body is always let in when nothing else is
        buffered or decoding (refusing it would make the sender retry it for ever)."""
        used = self.core.memory + self._in_flight + self._decoding
        if used and used + size > self.config.sessions.max_buffered_memory:
            return False
        self._decoding += size
        return True

    def unreserve(self, size: int) -> None:
        self._decoding -= size

    def admit(self, request: Request) -> Intake | Admission:
        """Admits a request (an ``Intake`` to ingest), or refuses it whole (the sender retries)."""
        stats = self.stats
        stats.requests += 1
        refusal = self._refusal(request)
        if refusal is not None:
            stats.requests_refused[refusal.reason] = (
                stats.requests_refused.get(refusal.reason, 0) + 1
            )
            stats.spans_refused += request.spans
            return refusal
        intake = Intake(request, request_memory(request.spans, request.size))
        self._in_flight += intake.memory
        return intake

    def ingest(self, intake: Intake, max_spans: int = INGEST_CHUNK_SPANS) -> bool:
        """Ingests the next ``max_spans`` spans of an admitted request (then decides what is
        due, if ``decide_on_intake``); True once the request is all in. Raises
        ``InvalidRequest`` if the native core cannot read it (a bug: it was validated), having
        taken what came before."""
        now = self.clock.now()
        try:
            accepted, invalid, limited, late_kept, late_dropped, requests = self.core.ingest(
                intake.request, now, max_spans
            )
        finally:
            if intake.request.done:
                self._in_flight -= intake.memory
        stats = self.stats
        stats.spans_accepted += accepted
        stats.spans_invalid += invalid
        stats.spans_limited += limited
        stats.late_spans_kept += late_kept
        stats.late_spans_dropped += late_dropped
        intake.invalid += invalid
        if self.shadow:  # late spans go out whatever verdict they follow
            stats.shadow_kept_spans += late_kept
            stats.shadow_dropped_spans += late_dropped
        self._submit_all(requests)
        if self._decide_on_intake:
            self._decide(self.core.pop_due(now), now)
            self._end_holds(now)
        self._relieve(now)
        return intake.request.done

    def consume(self, request: Request) -> Admission:
        """Admits and ingests a whole request at once (replay, tests)."""
        intake = self.admit(request)
        if isinstance(intake, Admission):
            return intake
        while not self.ingest(intake):
            pass
        return intake.admission()

    def _refusal(self, request: Request) -> Admission | None:
        if self._pending and not self._flush_pending():
            return Admission(False, "exporter queue full", REFUSAL_RETRY_AFTER_S)
        spans = request.spans
        if not spans:
            return None
        sessions = self.config.sessions
        max_spans, max_memory = sessions.max_buffered_spans, sessions.max_buffered_memory
        core = self.core
        buffered, memory = core.span_count, core.memory + self._in_flight + self._decoding
        incoming = request_memory(spans, request.size)
        # A request larger than the whole buffer is taken when the buffer is empty: refusing
        # it would make the sender retry it forever.
        if buffered:
            if buffered + spans > max_spans:
                return Admission(False, "session buffer full", REFUSAL_RETRY_AFTER_S)
            if memory + incoming > max_memory:
                return Admission(False, "session buffer memory full", REFUSAL_RETRY_AFTER_S)
        # Held dropped spans are the first to go when the request needs their room.
        now = self.clock.now()
        while core.held_spans and (
            buffered + core.held_spans + spans > max_spans
            or memory + core.held_memory + incoming > max_memory
        ):
            self._release(core.hold_release_oldest(), now)
        return None

    def _relieve(self, now: float) -> None:
        """Stress relief: near the buffer's limits, give up held spans, then decide the oldest
        sessions early (with the normal rules) until 10 points below the threshold."""
        sessions = self.config.sessions
        at = sessions.stress_relief_at
        core = self.core
        max_spans, max_memory = sessions.max_buffered_spans, sessions.max_buffered_memory

        def excess(share: float) -> tuple[int, int]:
            return (
                int(core.span_count + core.held_spans - share * max_spans),
                int(core.memory + core.held_memory - share * max_memory),
            )

        if max(excess(at)) <= 0:
            return
        target = max(0.0, at - 0.1)
        while core.held_spans and max(excess(target)) > 0:
            self._release(core.hold_release_oldest(), now)
        spans, memory = excess(target)
        if spans > 0 or memory > 0:
            early = core.pop_oldest(spans, memory)
            self.stats.relief_sessions += len(early)
            self.stats.relief_spans += sum(view.span_count for view in early)
            self._decide(early, now)
            while core.held_spans and max(excess(target)) > 0:  # what relief itself held
                self._release(core.hold_release_oldest(), now)

    # -- deciding ------------------------------------------------------------------------------

    def decide_due(self, limit: int | None = None, *, new_tick: bool = True) -> int:
        """Decide the sessions whose deadline passed, at most ``limit`` of them; returns how
        many were decided. ``new_tick``: what was decided before now counts in the rarity
        sketches from here on (the ticker's later slices of one tick pass False, so that a
        tick's sessions are scored alike however it is sliced)."""
        if new_tick:
            self._flush_pending()
            self.scorer.flush()
        now = self.clock.now()
        due = self.core.pop_due(now) if limit is None else self.core.pop_due(now, limit)
        decided = self._decide(due, now)
        self._end_holds(now)
        return decided

    def decide_all(self) -> int:
        """Decide every buffered session now, and end every hold (shutdown, end of replay)."""
        self.scorer.flush()
        now = self.clock.now()
        decided = self._decide(self.core.pop_all(), now)
        for held in self.core.hold_pop_all():
            self._release(held, now)
        return decided

    def facts_of(
        self,
        view: SessionView,
        now: float,
        *,
        running_at_cap: bool = False,
        second_look: bool = False,
    ) -> tuple[DecisionFacts, bool]:
        """Summarise and score a session being decided (this also teaches the rarity model, but
        not on a held session's ``second_look``). Also says whether the model was cold for it.
        Each of the view's properties is a call into the native core that builds its value:
        read once each."""
        decided_before = view.decided_before
        scored = self.scorer.score(
            view,
            now,
            # a second look scores the whole session: it is only due for one dropped while cold
            fragment=decided_before and not second_look,
            running_at_cap=running_at_cap,
            learn=not second_look,
        )
        bits = view.test_bits
        matched = (
            frozenset(t for i, t in enumerate(self.span_tests) if bits >> i & 1 and t is not None)
            if bits
            else _NO_TESTS
        )
        # Every field, in order, by position: binding sixteen keywords costs a NamedTuple more
        # than building it (0.8 us of 1.4, once per session decided).
        facts = DecisionFacts(
            view.key,  # session_key
            view.randomness,
            view.span_count,
            view.trace_count,
            view.error_spans,
            view.duration_s,
            matched,  # matched_tests
            view.error_kinds,
            view.tokens,
            view.tool_call_count,  # tool_calls
            view.root_agent,  # agent
            scored.shape,
            scored.signals,
            scored.cycle_kinds,
            scored.rarity,
            decided_before,  # redecision
        )
        return facts, scored.cold

    def _decide(self, views: Iterable[SessionView], now: float) -> int:
        decided = 0
        cap = self.config.sessions.max_session_duration
        core = self.core
        for view in views:
            # the view's properties are calls into the native core: each read once
            handle, keyed, rootless, created = view.handle, view.keyed, view.rootless, view.created
            running_at_cap = rootless and now - created >= cap
            facts, cold = self.facts_of(view, now, running_at_cap=running_at_cap)
            span_count = facts.span_count
            cold = cold or view.awaiting_look
            verdict = self.engine.decide(facts, now)
            shared = view.kept_elsewhere
            if shared is not None and not verdict.keep:
                # a peer kept this conversation while this part was buffered
                rule, adjusted_count, signals = shared
                verdict = Verdict(True, rule, tuple(signals), adjusted_count)
                self._count_shared(span_count, now)
            elif verdict.keep and keyed and shared is None and self.sharing is not None:
                self.sharing.kept(facts.session_key, verdict)
            self._tally(verdict, span_count)
            if not facts.redecision:
                self.stats.decision_delay.observe(now - created)
            if self.observer is not None:
                self.observer.decided(facts, verdict, now, second_look=False)
            decided += 1
            requests = core.decide(
                handle,
                verdict.keep,
                verdict.rule,
                verdict.adjusted_count,
                verdict.signals,
                not keyed,
            )
            if verdict.keep:
                self._submit_kept(requests)
            elif (keyed or rootless or cold) and core.hold(handle, cold, now, 1):
                # more turns or late spans may reopen it, a second look or a peer keep it
                self._trim_hold(now)
            else:
                self._let_go(handle)  # dropped for good
        return decided

    def adopt(self, keeps: Iterable[SharedKeep]) -> int:
        """Peers' keeps (the cluster): each conversation's part held here is kept now, annotated
        with the peer's rule, adjusted count and signals (plus ``shared_keep``); a buffered part
        will be kept when decided, later turns follow. Returns how many held parts were kept."""
        now = self.clock.now()
        kept = 0
        for keep in keeps:
            signals = keep.annotated()
            requests, spans = self.core.adopt_keep(
                keep.key, keep.rule, keep.adjusted_count, signals
            )
            if not spans:
                continue
            kept += 1
            self._tally(Verdict(True, keep.rule, signals, keep.adjusted_count), spans)
            self._count_shared(spans, now)
            self._submit_kept(requests)
        return kept

    def _count_shared(self, spans: int, now: float) -> None:
        """A part kept for a peer's keep: to the budget, a keep by another rule (so the kept
        volume across samplers stays what one sampler would keep)."""
        self.stats.shared_keep_sessions += 1
        self.stats.shared_keep_spans += spans
        self.engine.budget.observe_must_keep(spans, now)

    def _trim_hold(self, now: float) -> None:
        while self.core.hold_over_cap:
            self._release(self.core.hold_release_oldest(), now)

    def _end_holds(self, now: float) -> None:
        for held in self.core.hold_pop_expired(now):
            self._release(held, now, may_wait=True)

    def _release(self, held: HeldSession | None, now: float, *, may_wait: bool = False) -> None:
        """A held session leaves the hold. One decided while the rarity model was cold is
        scored again first, and kept if an earlier rule matches now; if the model is still cold
        for it (its agent is little seen yet) and ``may_wait``, it is held for another look,
        ``MAX_LOOKS`` at most."""
        if held is None:
            return
        core, view = self.core, held.view
        if held.cold and view is not None:
            facts, still_cold = self.facts_of(view, now, second_look=True)
            keep, rule, adjusted_count, signals = held.verdict
            dropped = Verdict(keep, rule, tuple(signals), adjusted_count)
            verdict = self.engine.reconsider(facts, dropped, now)
            if verdict is not None and verdict.keep:
                self._tally(verdict, view.span_count)
                self.stats.second_look_sessions += 1
                self.stats.second_look_spans += view.span_count
                if view.keyed and self.sharing is not None:
                    self.sharing.kept(view.key, verdict)
                if self.observer is not None:
                    self.observer.decided(facts, verdict, now, second_look=True)
                self._submit_kept(
                    core.decide(
                        held.handle,
                        True,
                        verdict.rule,
                        verdict.adjusted_count,
                        verdict.signals,
                        not view.keyed,
                    )
                )
                return
            if still_cold and may_wait and held.looks < MAX_LOOKS:
                if core.hold(held.handle, True, now, held.looks + 1):
                    self._trim_hold(now)
                    return
        self._let_go(held.handle)

    def _let_go(self, handle: int) -> None:
        """A dropped session's spans are given up (in shadow mode: sent, annotated as dropped)."""
        requests = self.core.release(handle)
        if requests:
            self.stats.shadow_dropped_spans += sum(count for _, count in requests)
            self._submit_all(requests)

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

    def _submit_kept(self, requests: list[tuple[bytes, int]]) -> None:
        if self.shadow:
            self.stats.shadow_kept_spans += sum(count for _, count in requests)
        self._submit_all(requests)

    def _submit_all(self, requests: list[tuple[bytes, int]]) -> None:
        for body, count in requests:
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
