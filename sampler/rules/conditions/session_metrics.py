"""Session-level numbers, each with `min` and/or `max` (inclusive): `duration`, from the first
span's start to the last span's end (span timestamps); `span_count`; `tokens`, input plus output
tokens of the session's LLM calls (GenAI `gen_ai.usage.*` or OpenInference `llm.token_count.*`);
`tool_calls`, the number of tool spans.

```yaml
duration: {min: 2m}
span_count: {min: 500}
tokens: {min: 200000}
tool_calls: {max: 0}
```
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sampler.config.reader import Node
from sampler.rules.conditions.registry import ParseContext, condition_kind
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import Condition


@dataclass(frozen=True, slots=True)
class SessionNumberBetween:
    """A number of the session's facts (``DecisionFacts.<fact>``) within inclusive bounds."""

    fact: str
    low: float | None
    high: float | None

    def span_tests(self) -> Iterable[SpanTest]:
        return ()

    def matches(self, facts: DecisionFacts) -> bool:
        value: float = getattr(facts, self.fact)
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


def _bounds(node: Node, ctx: ParseContext, *, durations: bool) -> tuple[float | None, ...] | None:
    fields = ctx.mapping(node, ("min", "max"))
    if fields is None:
        return None
    if not fields:
        ctx.problem(node, "expected min and/or max")
        return None
    out: list[float | None] = []
    for bound in ("min", "max"):
        if bound not in fields:
            out.append(None)
            continue
        sub = ctx.at(bound)
        value = sub.duration(fields[bound]) if durations else sub.number(fields[bound], minimum=0)
        if value is None:
            return None
        out.append(value)
    low, high = out
    if low is not None and high is not None and low > high:
        ctx.problem(node, f"min ({low:g}) is greater than max ({high:g})")
        return None
    return tuple(out)


@condition_kind("duration")
def parse_duration_condition(node: Node, ctx: ParseContext) -> Condition | None:
    bounds = _bounds(node, ctx, durations=True)
    return SessionNumberBetween("duration_s", *bounds) if bounds is not None else None


@condition_kind("span_count")
def parse_span_count(node: Node, ctx: ParseContext) -> Condition | None:
    bounds = _bounds(node, ctx, durations=False)
    return SessionNumberBetween("span_count", *bounds) if bounds is not None else None


@condition_kind("tokens")
def parse_tokens(node: Node, ctx: ParseContext) -> Condition | None:
    bounds = _bounds(node, ctx, durations=False)
    return SessionNumberBetween("tokens", *bounds) if bounds is not None else None


@condition_kind("tool_calls")
def parse_tool_calls(node: Node, ctx: ParseContext) -> Condition | None:
    bounds = _bounds(node, ctx, durations=False)
    return SessionNumberBetween("tool_calls", *bounds) if bounds is not None else None
