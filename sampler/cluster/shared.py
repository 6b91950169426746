"""What samplers share, and the rules for sharing it, without I/O: the keep as it travels (its
encoding in the store and on the channel), the bounded outbox of keeps waiting to be
published, the reconnection backoff and the catch-up after a (re)connection. Randomness is
passed in.

A keep is shared by its session key only, with what a peer needs to annotate its own part of
the conversation as kept by the same rule: the rule, the adjusted count (so the kept parts
together count as one session, as the rule's keep would) and the signals. Spans never travel.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sampler.rules.verdict import Verdict

# Added to the signals of a part kept for a peer's verdict (agent_sampler.signals).
SHARED_KEEP_SIGNAL = "shared_keep"
# Bounds on what is read from the store: anything larger is not a verdict we wrote.
MAX_KEY_CHARS = 4096
MAX_SIGNALS = 64


@dataclass(frozen=True, slots=True)
class SharedKeep:
    """A sampler kept the conversation ``key`` with this rule (``origin``: which sampler)."""

    key: str
    rule: str
    adjusted_count: float
    signals: tuple[str, ...]
    origin: str

    @classmethod
    def of(cls, key: str, verdict: Verdict, origin: str) -> SharedKeep:
        return cls(key, verdict.rule, verdict.adjusted_count, verdict.signals, origin)

    def annotated(self) -> tuple[str, ...]:
        """The signals a part kept for this keep carries: the peer's, and that it was shared."""
        if SHARED_KEEP_SIGNAL in self.signals:
            return self.signals
        return (*self.signals, SHARED_KEEP_SIGNAL)


def _fields(keep: SharedKeep) -> list[object]:
    return [keep.rule, keep.adjusted_count, list(keep.signals), keep.origin]


def encode_value(keep: SharedKeep) -> bytes:
    """The value stored under the keep's key: ``[rule, adjusted_count, signals, origin]``."""
    return json.dumps(_fields(keep), separators=(",", ":")).encode()


def encode_batch(origin: str, keeps: Iterable[SharedKeep]) -> bytes:
    """One channel message for a tick's keeps, all of ``origin``: ``ORIGIN [[key, rule,
    adjusted_count, signals], ...]``; the origin first, so that a sampler passes over its own
    messages without parsing them (``batch_origin``)."""
    rows = [[k.key, k.rule, k.adjusted_count, list(k.signals)] for k in keeps]
    return origin.encode() + b" " + json.dumps(rows, separators=(",", ":")).encode()


def batch_origin(data: bytes) -> bytes:
    """The sampler a channel message comes from."""
    return data.partition(b" ")[0]


def _keep(key: object, fields: object) -> SharedKeep:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise ValueError("a shared keep's key must be a non-empty string")
    if not isinstance(fields, list) or len(fields) != 4:
        raise ValueError("a shared keep has four fields")
    rule, adjusted, signals, origin = fields
    if not isinstance(rule, str) or not isinstance(origin, str):
        raise ValueError("a shared keep's rule and origin are strings")
    if (
        isinstance(adjusted, bool)
        or not isinstance(adjusted, int | float)
        or not 1 <= adjusted < math.inf
    ):
        raise ValueError("a shared keep's adjusted count is a finite number, 1 or more")
    if (
        not isinstance(signals, list)
        or len(signals) > MAX_SIGNALS
        or not all(isinstance(s, str) for s in signals)
    ):
        raise ValueError("a shared keep's signals are a list of strings")
    return SharedKeep(key, rule, float(adjusted), tuple(signals), origin)


def decode_value(key: str, data: bytes) -> SharedKeep:
    """The keep stored for ``key``; ValueError when it is not one."""
    return _keep(key, json.loads(data))


def decode_batch(data: bytes) -> list[SharedKeep]:
    """A channel message's keeps; ValueError when it is not a batch of them."""
    origin, space, body = data.partition(b" ")
    if not space:
        raise ValueError("a batch of shared keeps starts with its origin")
    rows = json.loads(body)
    if not isinstance(rows, list):
        raise ValueError("a batch of shared keeps is a list")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 4:
            raise ValueError("a shared keep is a list of four")
        out.append(_keep(row[0], [*row[1:], origin.decode(errors="replace")]))
    return out


class VerdictSharing(Protocol):
    """What the pipeline tells the cluster (synchronous and O(1): it never waits on the store)."""

    def kept(self, key: str, verdict: Verdict) -> None:
        """A conversation was kept here by a rule: announce it."""


@dataclass(slots=True)
class Outbox:
    """Keeps waiting to be published, oldest first, at most ``limit``: beyond it the oldest are
    dropped and counted (a store down for long loses announcements, never spans)."""

    limit: int
    dropped: int = 0
    _keeps: deque[SharedKeep] = field(default_factory=deque)

    def offer(self, keep: SharedKeep) -> None:
        if len(self._keeps) >= self.limit:
            self._keeps.popleft()
            self.dropped += 1
        self._keeps.append(keep)

    def take(self, most: int) -> list[SharedKeep]:
        n = min(most, len(self._keeps))
        return [self._keeps.popleft() for _ in range(n)]

    def put_back(self, keeps: list[SharedKeep]) -> None:
        """A batch that could not be published goes back in front, the bound still holding
        (what no longer fits is the oldest: dropped, counted)."""
        room = self.limit - len(self._keeps)
        if room < len(keeps):
            self.dropped += len(keeps) - max(room, 0)
            keeps = keeps[len(keeps) - max(room, 0) :]
        self._keeps.extendleft(reversed(keeps))

    def __len__(self) -> int:
        return len(self._keeps)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between reconnection attempts: exponential, capped, with full jitter on the upper
    half (so samplers that lost the store together do not come back in step)."""

    initial_s: float = 0.1
    max_s: float = 2.0
    multiplier: float = 2.0

    def wait(self, attempt: int, rng: random.Random) -> float:
        """The wait before attempt ``attempt`` (1 for the first retry)."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(slots=True)
class CatchUp:
    """After a (re)connection, the keeps announced while this sampler was not listening are
    still in the store (each for ``verdict_ttl``): it reads them all once, a batch a tick (a
    ``SCAN`` step, then a ``MGET`` of the keys it found), and takes them as if heard. Then the
    channel tells it everything, and nothing more is read: no look-up per session, ever."""

    scanning: bool = False
    cursor: int = 0
    found: list[str] = field(default_factory=list)  # keys scanned, not yet read

    def begin(self) -> None:
        self.scanning, self.cursor, self.found = True, 0, []

    def next_scan(self) -> int | None:
        """The cursor of the next SCAN step, or None when the scan is over."""
        return self.cursor if self.scanning else None

    def scanned(self, cursor: int, keys: Iterable[str]) -> None:
        self.found.extend(keys)
        self.cursor = cursor
        if cursor == 0:  # SCAN's way of saying it went round
            self.scanning = False

    def take(self, most: int) -> list[str]:
        taken, self.found = self.found[:most], self.found[most:]
        return taken

    @property
    def done(self) -> bool:
        return not self.scanning and not self.found


@dataclass(slots=True)
class ClusterStats:
    """Plain counters; ``metrics.py`` exposes them at scrape time."""

    published: int = 0  # keeps announced (stored and published)
    received: int = 0  # keeps of peers heard on the channel or read when catching up
    caught_up: int = 0  # keeps read from the store after a (re)connection (own ones included)
    errors: int = 0  # failed round trips and connections, unreadable messages, refused writes
    outages: int = 0
    connected: bool = False
