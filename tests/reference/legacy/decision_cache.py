"""Memory of recent decisions, so that spans arriving after their session was decided follow
the same decision. Bounded: the oldest entries are forgotten first (dicts keep insertion order).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sampler.rules.verdict import Verdict


class DecisionCache:
    def __init__(self, max_sessions: int) -> None:
        if max_sessions <= 0:
            raise ValueError("max_sessions must be positive")
        self.max_entries = max_sessions
        self._by_key: dict[str, Verdict] = {}
        self._by_trace: dict[bytes, Verdict] = {}
        self._interned: dict[Verdict, Verdict] = {}  # thousands of sessions share a few verdicts

    def remember(self, key: str | None, trace_ids: Iterable[bytes], verdict: Verdict) -> None:
        verdict = self._intern(verdict)
        if key is not None:
            _put(self._by_key, key, verdict, self.max_entries)
        for trace_id in trace_ids:
            _put(self._by_trace, trace_id, verdict, self.max_entries)

    def for_key(self, key: str) -> Verdict | None:
        return self._by_key.get(key)

    def for_trace(self, trace_id: bytes) -> Verdict | None:
        return self._by_trace.get(trace_id)

    def __len__(self) -> int:
        return len(self._by_key) + len(self._by_trace)

    def _intern(self, verdict: Verdict) -> Verdict:
        if len(self._interned) > 4096:  # adjusted counts of rate limits vary: keep it bounded
            self._interned.clear()
        return self._interned.setdefault(verdict, verdict)


def _put(store: dict[Any, Verdict], key: str | bytes, verdict: Verdict, limit: int) -> None:
    store.pop(key, None)  # re-inserting moves the key to the young end
    store[key] = verdict
    if len(store) > limit:
        del store[next(iter(store))]
