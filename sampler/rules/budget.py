"""The volume budget: how many sessions (or spans) the `budget` action may keep, shared across
strata so that a rare stratum keeps a floor and a busy one cannot take it all.

Rates are exponentially weighted averages over ``window`` of the decided traffic, in sessions or
spans per second of the injected clock. Every keep by another rule (errors, loops, rare
sessions: the must-keeps) is counted against the budget first; what is left is the budget of
the `budget` action, split in two parts:

- a *floor*: ``floor`` of it is divided evenly among the active strata (a stratum that needs less
  than its even part takes only what it needs);
- the rest goes to all strata in proportion to their traffic (the same keep probability).

A session of stratum ``s`` is then kept with probability ``p_s = allocation_s / rate_s``,
decided from the session's deterministic randomness, and carries adjusted count ``1 / p_s``:
summing adjusted counts over kept sessions estimates the number of sessions per stratum
(Horvitz-Thompson). Allocations are recomputed at most once per ``RECOMPUTE_S`` of clock time,
so deciding costs O(1); and, from the first decision on, each time the number of decisions seen
has doubled (1, 2, 4, 8...: O(log n) in all), so that the first second is not decided with a
probability computed from one or two sessions (a must-keep first left nothing for the budget
for a whole second, a budget session first let it keep at the full ratio). The strata tracked
are bounded by ``max_strata`` (the rest share one). Pure: no I/O, time passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config.model imports rules.spec; only the type is needed here
    from sampler.config.model import BudgetConfig

RECOMPUTE_S = 1.0
OTHER_STRATUM = "(other)"
MIN_PROBABILITY = 1e-6


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    unit: str = "sessions"  # "sessions" | "spans"
    ratio: float = 0.05  # target share of all decided traffic kept, when per_second is 0
    per_second: float = 0.0  # absolute target in unit per second (0: use ratio)
    floor: float = 0.5  # share of the budget split evenly across strata
    window_s: float = 60.0
    max_strata: int = 1000

    @classmethod
    def from_config(cls, config: BudgetConfig) -> BudgetSettings:
        return cls(
            unit=config.unit,
            ratio=config.ratio,
            per_second=config.per_second,
            floor=config.floor,
            window_s=config.window,
            max_strata=config.max_strata,
        )


@dataclass(slots=True)
class _Rate:
    """An exponentially decayed event rate per second (time constant window_s)."""

    value: float = 0.0  # decayed sum of weights
    last: float = 0.0

    def add(self, weight: float, now: float, tau: float) -> None:
        self.decay(now, tau)
        self.value += weight

    def decay(self, now: float, tau: float) -> None:
        if now > self.last:
            self.value *= math.exp(-(now - self.last) / tau)
            self.last = now

    def per_second(self, tau: float) -> float:
        return self.value / tau


@dataclass(slots=True)
class BudgetController:
    settings: BudgetSettings
    _offered: _Rate = field(default_factory=_Rate)  # all decided traffic
    _must_keep: _Rate = field(default_factory=_Rate)  # kept by other rules
    _strata: dict[str, _Rate] = field(default_factory=dict)  # budget-eligible traffic
    _probabilities: dict[str, float] = field(default_factory=dict)
    _computed_at: float = -math.inf
    _started: float | None = None
    _decisions: int = 0  # decided sessions seen
    _decisions_at_compute: int = 0

    def reconfigured(self, settings: BudgetSettings, *, same_strata: bool) -> BudgetController:
        """This budget under new settings (a reload), keeping what it learned of the traffic
        where it still means the same: every rate, rescaled to a new window, unless the unit
        changed (they count other things then); the per-stratum rates only if strata are
        divided the same way (``same_strata``). Probabilities are recomputed at the next
        decision."""
        if settings.unit != self.settings.unit:
            return BudgetController(settings)
        scale = settings.window_s / self.settings.window_s

        def rescaled(rate: _Rate) -> _Rate:  # a decayed sum holds about rate x window
            return _Rate(rate.value * scale, rate.last)

        return BudgetController(
            settings,
            _offered=rescaled(self._offered),
            _must_keep=rescaled(self._must_keep),
            _strata={k: rescaled(r) for k, r in self._strata.items()} if same_strata else {},
            _started=self._started,
        )

    def cost(self, span_count: int) -> float:
        return 1.0 if self.settings.unit == "sessions" else float(span_count)

    def observe_decided(self, span_count: int, now: float) -> None:
        """Every decided session, whatever its verdict: the traffic the ratio applies to."""
        if self._started is None:
            self._started = now
        self._decisions += 1
        self._offered.add(self.cost(span_count), now, self.settings.window_s)

    def observe_must_keep(self, span_count: int, now: float) -> None:
        self._must_keep.add(self.cost(span_count), now, self.settings.window_s)

    def probability(self, stratum: str, span_count: int, now: float) -> float:
        """The keep probability of a budget-eligible session of ``stratum``, and count it."""
        tau = self.settings.window_s
        if stratum not in self._strata and len(self._strata) >= self.settings.max_strata:
            stratum = OTHER_STRATUM
        rate = self._strata.get(stratum)
        if rate is None:
            rate = self._strata[stratum] = _Rate(last=now)
        rate.add(self.cost(span_count), now, tau)
        if (
            now - self._computed_at >= RECOMPUTE_S
            or stratum not in self._probabilities
            or self._decisions >= 2 * self._decisions_at_compute
        ):
            self._recompute(now)
        return self._probabilities.get(stratum, 1.0)

    def _recompute(self, now: float) -> None:
        s, tau = self.settings, self.settings.window_s
        # While the window fills, the rates are underestimated by the same factor; scaling
        # them back keeps early decisions close to the steady state.
        elapsed = now - (self._started if self._started is not None else now)
        warm = 1.0 - math.exp(-max(elapsed, RECOMPUTE_S) / tau)
        for rate in (self._offered, self._must_keep, *self._strata.values()):
            rate.decay(now, tau)

        def per_second(rate: _Rate) -> float:
            return rate.per_second(tau) / warm

        offered = per_second(self._offered)
        target = s.per_second if s.per_second > 0 else s.ratio * offered
        available = max(0.0, target - per_second(self._must_keep))
        demand = {name: per_second(r) for name, r in self._strata.items()}
        allocation = allocate(available, demand, s.floor)
        self._probabilities = {
            name: min(1.0, max(MIN_PROBABILITY, allocation[name] / demand[name]))
            if demand[name] > 0
            else 1.0
            for name in demand
        }
        self._computed_at = now
        self._decisions_at_compute = self._decisions


def allocate(available: float, demand: dict[str, float], floor: float) -> dict[str, float]:
    """Split ``available`` among strata: an even floor (capped by each stratum's demand), then
    the rest in proportion to the demand still unmet. Never more than a stratum's demand."""
    active = {name: d for name, d in demand.items() if d > 0}
    if not active:
        return dict.fromkeys(demand, 0.0)
    even = floor * available / len(active)
    given = {name: min(d, even) for name, d in active.items()}
    rest = available - sum(given.values())
    unmet = {name: active[name] - given[name] for name in active}
    total_unmet = sum(unmet.values())
    share = min(1.0, rest / total_unmet) if total_unmet > 0 else 0.0
    out = dict.fromkeys(demand, 0.0)
    for name in active:
        out[name] = given[name] + share * unmet[name]
    return out
