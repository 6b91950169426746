"""Dropped sessions, held a little longer: a drop is final only once the hold is over.

A verdict is final for what it keeps, not for what it drops. Three things can still change a
drop, and all need the dropped spans, so they wait here (bounded) instead of being discarded:

- a later turn of a dropped conversation arrives, or the late spans of a trace that was still
  running when it was decided (a model call silent for longer than open_trace_wait): the
  session is *reopened* (``SessionBuffer`` takes it back) and decided again, as a whole, when
  it is complete; if the new turn fails, the conversation is kept whole;
- the session was decided while the rarity model was cold (too little traffic seen yet, for all
  agents or for its own): when its hold ends, it is scored again against the model as it is
  then (a *second look*), and kept if a rule before the one that dropped it now matches; if
  the model is still cold for it, it may wait for another look (``MAX_LOOKS`` in all).

Held spans are the first to go: the oldest session is released when the hold is over
``max_spans`` or when the buffer needs the room (``release_oldest``); a session also leaves
``hold_s`` after it was dropped. A held session leaves exactly once, through ``take``
(reopened), ``pop_expired``, ``release_oldest`` or ``pop_all``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sampler.rules.verdict import Verdict
from tests.reference.legacy.memory import memory_of

# A session still cold at its second look (its agent is little seen yet) is held for another
# look, this many in all: enough for a young agent to warm up, bounded for one that never does.
MAX_LOOKS = 3

if TYPE_CHECKING:  # buffer.py holds a DroppedHold
    from tests.reference.legacy.buffer import Session


@dataclass(slots=True)
class HeldSession:
    session: Session  # its blocks still hold the spans
    verdict: Verdict  # the drop
    cold: bool  # decided before the rarity model could score it: look again on the way out
    expires: float
    looks: int = 1  # second looks that will have been taken when this hold ends


class DroppedHold:
    def __init__(self, hold_s: float, max_spans: int) -> None:
        self.hold_s = hold_s
        self.max_spans = max_spans
        self._held: OrderedDict[str, HeldSession] = OrderedDict()  # by session key, oldest first
        self._by_trace: dict[bytes, str] = {}  # trace id -> session key
        self.span_count = 0
        self.span_bytes = 0
        self.released_early = 0  # sessions released for room before their time

    @property
    def enabled(self) -> bool:
        return self.hold_s > 0 and self.max_spans > 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(
        self, session: Session, verdict: Verdict, *, cold: bool, now: float, looks: int = 1
    ) -> bool:
        """Hold a dropped session; False (nothing held) when holding is off or it is too big."""
        if not self.enabled or session.span_count > self.max_spans:
            return False
        previous = self._held.pop(session.key, None)
        if previous is not None:  # cannot happen for one decision; keep the sums right anyway
            self._forget(previous)
        self._held[session.key] = HeldSession(session, verdict, cold, now + self.hold_s, looks)
        for trace_id in session.trace_ids:
            self._by_trace[trace_id] = session.key
        self.span_count += session.span_count
        self.span_bytes += session.span_bytes
        return True  # the caller releases the oldest while over_cap (they may need a look)

    @property
    def memory(self) -> int:
        """Estimated memory of the held spans (as the buffer counts its own)."""
        return memory_of(self.span_count, self.span_bytes)

    @property
    def over_cap(self) -> bool:
        return self.span_count > self.max_spans

    def take(self, key: str) -> HeldSession | None:
        """The held session ``key`` (a session key, or a lone trace's id in hex), removed."""
        held = self._held.pop(key, None)
        if held is not None:
            self._forget(held)
        return held

    def key_of_trace(self, trace_id: bytes) -> str | None:
        """The key of the held session holding this trace, if one does."""
        return self._by_trace.get(trace_id)

    def pop_expired(self, now: float) -> list[HeldSession]:
        """Sessions whose hold is over, oldest first (expiry times grow with insertion)."""
        out: list[HeldSession] = []
        while self._held:
            held = next(iter(self._held.values()))
            if held.expires > now:
                break
            self._held.popitem(last=False)
            self._forget(held)
            out.append(held)
        return out

    def release_oldest(self) -> HeldSession | None:
        """The oldest held session, removed early to make room (its second look comes now)."""
        if not self._held:
            return None
        _, held = self._held.popitem(last=False)
        self._forget(held)
        self.released_early += 1
        return held

    def pop_all(self) -> list[HeldSession]:
        out = list(self._held.values())
        self._held.clear()
        self._by_trace.clear()
        self.span_count = self.span_bytes = 0
        return out

    def _forget(self, held: HeldSession) -> None:
        session = held.session
        for trace_id in session.trace_ids:
            if self._by_trace.get(trace_id) == session.key:
                del self._by_trace[trace_id]
        self.span_count -= session.span_count
        self.span_bytes -= session.span_bytes
