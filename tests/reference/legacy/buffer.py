"""The session buffer: spans wait here, grouped into sessions, until their session is complete.

Grouping rules (why they are this way):
- Spans are held by trace id first. In real instrumentation the session key is often only on
  the agent's root span, and the root ends (so arrives) last; a trace without a known key waits
  in a *provisional* session of its own, and joins its keyed session as soon as any of its spans
  reveals the key.
- A trace's session never changes once keyed: a conflicting key on a later span is ignored.
- A session holding several traces (a multi-turn conversation) is decided once, as a whole.
  Late spans of a decided trace follow its decision (DecisionCache). A *new* trace of a decided
  conversation follows it if it was kept (its new turns arrive with it, annotated alike); if
  it was dropped, the conversation is *reopened* while its spans are still held
  (``sampler.sessions.held``): taken back into the buffer and decided again as a whole, so an
  error in turn five keeps turns one to four with it. Late spans of a dropped, still held
  trace reopen it the same way. Once the hold is over, new traces form a continuation session,
  decided on its own (an error in it is still kept, without the earlier turns).

Completion: a session is due
- while one of its traces has not delivered its root span (the agent is still running: long
  tool and model calls emit nothing until they end), after ``open_trace_wait`` without spans;
- once every trace's root arrived: a session without a key (a lone trace) ``root_end_grace``
  later; a keyed session (a conversation, which may get more turns) after ``decision_wait``
  without spans;
- at the latest ``max_session_duration`` after it began, and at once at ``max_session_spans``.
Deadlines live in a TimerWheel, so finding due sessions never scans the buffer.

Invariants: every buffered session is reachable from ``_traces`` through each of its trace ids,
and keyed ones from ``_keyed`` too; ``span_count``/``span_bytes`` are the sums over buffered
sessions; a session leaves the buffer exactly once (``state`` becomes DECIDED or MERGED).
"""

from __future__ import annotations

import enum
import math
import struct
import weakref
from collections.abc import Iterator

from sampler.config.model import SessionsConfig
from sampler.rules.verdict import Verdict
from tests.reference.legacy.decision_cache import DecisionCache
from tests.reference.legacy.features import SessionFeatures
from tests.reference.legacy.held import DroppedHold
from tests.reference.legacy.memory import memory_of
from tests.reference.legacy.spans import KIND_TOOL, SpanFacts
from tests.reference.legacy.timers import TimerWheel

# Serialized Resource, its schema_url, serialized InstrumentationScope, its schema_url.
BlockKey = tuple[bytes, str, bytes, str]

# A session's spans of one block are kept back to back in one bytearray, each after its size
# (4 bytes, little-endian): a bytes object and a list slot per span would cost about 45 bytes
# each on top of ~220 of span, a fifth of what a buffered span holds.
_SIZE = struct.Struct("<I")
_SIZE_BYTES = _SIZE.size


def spans_of(run: bytearray) -> Iterator[bytes]:
    """The spans of one block's run, in arrival order. (While the view is held the run cannot
    grow: released when the generator ends, however it ends.)"""
    with memoryview(run) as view:
        pos, end = 0, len(run)
        while pos < end:
            (size,) = _SIZE.unpack_from(view, pos)
            pos += _SIZE_BYTES
            yield bytes(view[pos : pos + size])
            pos += size


class SessionState(enum.Enum):
    BUFFERING = "buffering"
    DECIDED = "decided"  # left the buffer to be (or having been) decided
    MERGED = "merged"  # a provisional session absorbed into a keyed one


class Session:
    __slots__ = (
        "__weakref__",  # the timer wheel refers to sessions weakly
        "key",
        "keyed",
        "trace_ids",
        "rootless",
        "blocks",
        "features",
        "span_bytes",
        "created",
        "last_seen",
        "roots_done_at",
        "timer_tick",
        "state",
        "trace_states",
        "decided_before",
        "awaiting_look",
    )

    def __init__(self, key: str, keyed: bool, now: float) -> None:
        self.key = key  # the session key, or the trace id in hex for a provisional session
        self.keyed = keyed
        self.trace_ids: list[bytes] = []
        # traces whose root span has not arrived: a list, as trace_ids (a set costs 216 bytes
        # a session, and holds one or two ids)
        self.rootless: list[bytes] = []
        self.blocks: dict[BlockKey, bytearray] = {}  # serialized spans by block (``spans_of``)
        self.features = SessionFeatures()
        self.span_bytes = 0
        self.created = now
        self.last_seen = now
        self.roots_done_at = math.inf  # when the last missing root arrived
        self.timer_tick = math.inf
        self.state = SessionState.BUFFERING
        self.trace_states: dict[bytes, str] = {}  # non-empty upstream tracestates by trace
        # a conversation decided (and dropped) before: its later traces (a continuation), or
        # the whole of it reopened; its rarity was judged, and learned, the first time
        self.decided_before = False
        # dropped while the rarity model was cold, then reopened: its second look is still due
        self.awaiting_look = False

    def add_trace(self, trace_id: bytes) -> None:
        self.trace_ids.append(trace_id)
        self.rootless.append(trace_id)
        self.roots_done_at = math.inf

    def add_span(self, block: BlockKey, span: bytes, facts: SpanFacts, now: float) -> None:
        run = self.blocks.get(block)
        if run is None:
            run = self.blocks[block] = bytearray()
        size = len(span)
        run += _SIZE.pack(size)
        run += span
        self.span_bytes += size
        self.features.observe(
            facts, self._turn_of(facts.trace_id) if facts.kind == KIND_TOOL else 0
        )
        self.last_seen = now
        if facts.trace_state and facts.trace_id not in self.trace_states:
            self.trace_states[facts.trace_id] = facts.trace_state
        if facts.is_root and facts.trace_id in self.rootless:
            self.rootless.remove(facts.trace_id)
            if not self.rootless:
                self.roots_done_at = now

    def _turn_of(self, trace_id: bytes) -> int:
        """The index of this trace among the session's (usually the newest: tried first)."""
        ids = self.trace_ids
        return len(ids) - 1 if ids[-1] == trace_id else ids.index(trace_id)

    def absorb(self, other: Session) -> None:
        for block, run in other.blocks.items():
            mine = self.blocks.get(block)
            if mine is None:
                self.blocks[block] = run  # ``other`` is merged away: its runs are ours now
            else:
                mine += run
        self.span_bytes += other.span_bytes
        self.features.merge(other.features, turn_offset=len(self.trace_ids))
        self.trace_ids.extend(other.trace_ids)
        for trace_id, state in other.trace_states.items():
            self.trace_states.setdefault(trace_id, state)
        self.rootless.extend(other.rootless)  # a trace is in one session: no duplicates
        self.decided_before = self.decided_before or other.decided_before
        self.created = min(self.created, other.created)
        self.last_seen = max(self.last_seen, other.last_seen)
        self.roots_done_at = (
            math.inf if self.rootless else max(self.roots_done_at, other.roots_done_at)
        )

    @property
    def span_count(self) -> int:
        return self.features.span_count

    def span_blocks(self) -> dict[BlockKey, Iterator[bytes]]:
        """The session's serialized spans by block, as the output writes them."""
        return {block: spans_of(run) for block, run in self.blocks.items()}

    def release(self) -> None:
        """Let go of what a decided (or merged) session holds at once: whatever still refers
        to the session object keeps this small object alive, not its spans and features."""
        self.blocks.clear()
        self.features = _RELEASED
        self.trace_states.clear()
        self.rootless.clear()
        self.trace_ids.clear()


_RELEASED = SessionFeatures()  # shared by every released session: never observed again


class SessionBuffer:
    def __init__(self, settings: SessionsConfig, cache: DecisionCache) -> None:
        self.settings = settings
        self._max_session_spans = settings.max_session_spans  # read per span
        self.cache = cache
        # Weakly: a session decided before its deadline (most are, by activity or stress relief)
        # must not stay alive until its stale entry fires, up to open_trace_wait later. Under a
        # flood that was over a hundred thousand sessions (key, trace ids, ~650 bytes each).
        # A buffering session is held by _traces and _by_age, so no due session is lost.
        self._wheel: TimerWheel[weakref.ref[Session]] = TimerWheel(settings.tick)
        self._traces: dict[bytes, Session] = {}
        self._keyed: dict[str, Session] = {}
        self._due_now: list[Session] = []
        # buffered sessions, oldest first (dicts keep insertion order): stress relief decides
        # the oldest early without scanning
        self._by_age: dict[int, Session] = {}
        self.hold = DroppedHold(settings.dropped_hold, settings.dropped_hold_max_spans)
        # Provisional sessions that joined an already decided session: they follow its verdict.
        self.followed: list[tuple[Session, Verdict]] = []
        self.span_count = 0
        self.span_bytes = 0
        self.session_count = 0
        self.reopened = 0  # dropped sessions taken back from the hold by new spans

    def add(self, facts: SpanFacts, block: BlockKey, span: bytes, now: float) -> Verdict | None:
        """Buffer one span. Returns the verdict it must follow if its session was already decided
        (the caller forwards or drops the span), else None."""
        trace_id = facts.trace_id
        session = self._traces.get(trace_id)
        # Most spans join a buffered session and only push its deadline later, which the
        # timer wheel finds out by itself when the old deadline fires: re-filing is needed only
        # when the deadline may move earlier (a root arrived, a session opened, joined or was
        # reopened) or the session reached its span cap.
        moved = facts.is_root
        if session is None and self.hold.span_count:
            session = self._reopen_trace(trace_id, now)
            moved = True
        if session is None:
            verdict = self.cache.for_trace(trace_id)
            if verdict is not None:
                return verdict
            session = self._open(trace_id, facts.session_key, now)
            if session is None:  # the key names a session already decided
                return self.cache.for_trace(trace_id)
            moved = True
        elif facts.session_key is not None and not session.keyed:
            session = self._join(session, facts.session_key, now)
            if session is None:
                return self.cache.for_trace(trace_id)
            moved = True
        session.add_span(block, span, facts, now)
        self.span_count += 1
        self.span_bytes += len(span)
        if moved or session.features.span_count >= self._max_session_spans:
            self._reschedule(session)
        return None

    def pop_due(self, now: float) -> list[Session]:
        """Remove and return every session whose completion deadline has passed."""
        due = [s for s in self._due_now if s.state is SessionState.BUFFERING]
        self._due_now = []
        current = self._wheel.current_tick(now)
        for tick, ref in self._wheel.pop_due(now):
            session = ref()
            if session is None:
                continue  # decided, and gone
            if session.state is not SessionState.BUFFERING or session.timer_tick != tick:
                continue  # stale entry: decided, merged, or rescheduled earlier
            deadline = self.deadline(session)
            if self._wheel.tick_of(deadline) > current:  # activity moved it later: re-file
                session.timer_tick = self._wheel.schedule(ref, deadline)
                continue
            session.timer_tick = math.inf  # another stale entry of this tick must not match
            due.append(session)
        for session in due:
            self._remove(session)
        return due

    def pop_oldest(self, spans: int, memory: int) -> list[Session]:
        """Remove and return the oldest sessions until at least ``spans`` spans and ``memory``
        bytes (as ``memory_of`` counts them) are freed: stress relief decides them early."""
        out: list[Session] = []
        freed_spans = freed_memory = 0
        while self._by_age and (freed_spans < spans or freed_memory < memory):
            session = next(iter(self._by_age.values()))
            freed_spans += session.span_count
            freed_memory += memory_of(session.span_count, session.span_bytes)
            self._remove(session)
            out.append(session)
        return out

    @property
    def memory(self) -> int:
        """Estimated memory of the buffered spans, in bytes."""
        return memory_of(self.span_count, self.span_bytes)

    def pop_all(self) -> list[Session]:
        """Remove and return every buffered session (shutdown, end of replay)."""
        sessions = {id(s): s for s in self._traces.values()}
        sessions.update((id(s), s) for s in self._keyed.values())
        out = sorted(sessions.values(), key=lambda s: s.created)
        for session in out:
            self._remove(session)
        self._due_now.clear()
        return out

    def record(self, session: Session, verdict: Verdict) -> None:
        """Remember a decided session's verdict for its late spans."""
        self.cache.remember(session.key if session.keyed else None, session.trace_ids, verdict)

    def deadline(self, session: Session) -> float:
        s = self.settings
        if session.rootless:  # a trace is still running: its root ends (and arrives) last
            idle = session.last_seen + s.open_trace_wait
        elif not session.keyed and s.root_end_grace > 0:  # a lone trace, complete
            idle = session.roots_done_at + s.root_end_grace
        else:  # a conversation may get another turn
            idle = session.last_seen + s.decision_wait
        return min(idle, session.created + s.max_session_duration)

    # -- internals ---------------------------------------------------------------------------

    def _open(self, trace_id: bytes, key: str | None, now: float) -> Session | None:
        if key is None:
            session = Session(trace_id.hex(), False, now)
            self._by_age[id(session)] = session
            self.session_count += 1
        else:
            found = self._keyed.get(key) or self._reopen(key, now)
            if found is None:
                verdict = self.cache.for_key(key)
                if verdict is not None and verdict.keep:
                    self.cache.remember(None, (trace_id,), verdict)
                    return None
                found = self._keyed[key] = Session(key, True, now)
                found.decided_before = verdict is not None
                self._by_age[id(found)] = found
                self.session_count += 1
            session = found
        session.add_trace(trace_id)
        self._traces[trace_id] = session
        return session

    def _join(self, provisional: Session, key: str, now: float) -> Session | None:
        target = self._keyed.get(key) or self._reopen(key, now)
        if target is None:
            verdict = self.cache.for_key(key)
            if verdict is not None and verdict.keep:
                self._remove(provisional)
                self.cache.remember(None, provisional.trace_ids, verdict)
                self.followed.append((provisional, verdict))
                return None
            provisional.key, provisional.keyed = key, True  # promote in place: no copy
            provisional.decided_before = verdict is not None
            self._keyed[key] = provisional
            return provisional
        target.absorb(provisional)
        for trace_id in provisional.trace_ids:
            self._traces[trace_id] = target
        provisional.state = SessionState.MERGED
        provisional.release()
        self._by_age.pop(id(provisional), None)
        self.session_count -= 1
        return target

    def _reopen(self, key: str, now: float) -> Session | None:
        """Take a held dropped session back into the buffer, to be decided again."""
        held = self.hold.take(key) if self.hold.span_count else None
        if held is None:
            return None
        session = held.session
        session.decided_before = True
        session.awaiting_look = session.awaiting_look or held.cold
        session.state = SessionState.BUFFERING
        session.timer_tick = math.inf
        session.last_seen = now
        # max_session_duration counts from here: counted from its first span, a conversation
        # longer than the cap would be due again at once, and decided again on every span
        session.created = now
        for trace_id in session.trace_ids:
            self._traces[trace_id] = session
        if session.keyed:
            self._keyed[session.key] = session
        self.span_count += session.span_count
        self.span_bytes += session.span_bytes
        self._by_age[id(session)] = session
        self.session_count += 1
        self.reopened += 1
        return session

    def _reopen_trace(self, trace_id: bytes, now: float) -> Session | None:
        held_key = self.hold.key_of_trace(trace_id)
        return self._reopen(held_key, now) if held_key is not None else None

    def _reschedule(self, session: Session) -> None:
        if session.span_count >= self.settings.max_session_spans:
            if session.timer_tick != -1:
                session.timer_tick = -1  # no wheel entry matches -1: only _due_now holds it
                self._due_now.append(session)
            return
        deadline = self.deadline(session)
        if self._wheel.tick_of(deadline) < session.timer_tick:
            session.timer_tick = self._wheel.schedule(weakref.ref(session), deadline)

    def _remove(self, session: Session) -> None:
        if session.state is not SessionState.BUFFERING:
            return
        session.state = SessionState.DECIDED
        self._by_age.pop(id(session), None)
        for trace_id in session.trace_ids:
            if self._traces.get(trace_id) is session:
                del self._traces[trace_id]
        if session.keyed and self._keyed.get(session.key) is session:
            del self._keyed[session.key]
        self.span_count -= session.span_count
        self.span_bytes -= session.span_bytes
        self.session_count -= 1
