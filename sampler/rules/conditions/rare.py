"""The session is unusual compared with recent traffic: its *shape* (agent and tool path) is
rarely seen, or one of its numbers is in the far tail of its agent's recent values. Scores are
in [0, 1] per dimension: `shape` (its rarest part: a tool, a step from one tool to the next, the
first or last tool), `latency` (the longest turn, as the longest of its turns), `model_latency`
and `tool_latency` (the typical model and tool call, also tail when far beyond the usual
spread), `duration` (the whole session), `tokens`, `span_count`, `tool_calls` (per turn).
Settings in `signals.rarity`; until the model has seen `warmup_sessions` sessions nothing is
rare. Signals written to kept spans: `rare_shape`, `tail_latency`, `tail_model_latency`,
`tail_tool_latency`, `tail_duration`, `tail_tokens`, `tail_span_count`, `tail_tool_calls`.

```yaml
rare: true                                   # any dimension at or above signals.rarity.threshold
rare: {dimensions: [shape, latency]}
rare: {dimensions: [tokens, span_count], min_score: 0.9}
```
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sampler.config.reader import Node
from sampler.rules.conditions.registry import ParseContext, condition_kind, hint_parts
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import Condition
from sampler.signals.rarity import DIMENSIONS as RARITY_DIMENSIONS
from sampler.signals.rarity import RARE_SHAPE, TAIL_SIGNALS

DIMENSIONS: tuple[str, ...] = ("shape", *RARITY_DIMENSIONS)
hint_parts(DIMENSIONS, lambda dimension: f"{{rare: {{dimensions: [{dimension}]}}}}")
_SIGNAL_OF = {"shape": RARE_SHAPE, **TAIL_SIGNALS}


@dataclass(frozen=True, slots=True)
class IsRare:
    dimensions: tuple[str, ...]
    min_score: float | None  # None: the configured signals.rarity.threshold (via facts.signals)
    # without min_score: the signals its dimensions fire, found once rather than for every
    # session decided
    _signals: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        signals = self.dimensions if self.min_score is None else ()
        object.__setattr__(self, "_signals", frozenset(_SIGNAL_OF[d] for d in signals))

    def span_tests(self) -> Iterable[SpanTest]:
        return ()

    def matches(self, facts: DecisionFacts) -> bool:
        min_score = self.min_score
        if min_score is None:
            return not self._signals.isdisjoint(facts.signals)
        rarity = facts.rarity
        for dimension in self.dimensions:
            if rarity.get(dimension, 0.0) >= min_score:
                return True
        return False


@condition_kind("rare")
def parse_rare(node: Node, ctx: ParseContext) -> Condition | None:
    if node.value is True:
        return IsRare(DIMENSIONS, None)
    fields = ctx.mapping(node, ("dimensions", "min_score"))
    if fields is None:
        return None
    dimensions = DIMENSIONS
    if "dimensions" in fields:
        names = ctx.at("dimensions").names(fields["dimensions"], DIMENSIONS, "dimension")
        if names is None:
            return None
        dimensions = names
    min_score = None
    if "min_score" in fields:
        min_score = ctx.at("min_score").number(fields["min_score"], minimum=0)
        if min_score is None:
            return None
        if min_score > 1:
            ctx.at("min_score").problem(fields["min_score"], "expected a score from 0 to 1")
            return None
    return IsRare(dimensions, min_score)
