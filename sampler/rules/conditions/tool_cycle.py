"""The session's agent is looping: `repeated_call` (the same tool with the same arguments again
and again), `repeated_tool` (the same tool many times in a row: works when arguments are not
recorded), `tool_pattern` (a short sequence such as A-B-A-B repeating), `agent_recursion`
(agents nested deeper than a bound), `link_cycle` (a cycle among span links). Thresholds are in
`signals.tool_cycles`; the signal written to kept spans is `tool_cycle`.

```yaml
tool_cycle: true
tool_cycle: {kinds: [repeated_call, tool_pattern]}
```
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass

from sampler.config.reader import Node
from sampler.rules.conditions.registry import ParseContext, condition_kind
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import Condition
from sampler.signals.tool_cycles import CycleKind

CYCLE_KINDS: tuple[str, ...] = typing.get_args(CycleKind)  # the detectors' own list


@dataclass(frozen=True, slots=True)
class HasToolCycle:
    kinds: frozenset[str]
    expected: bool = True

    def span_tests(self) -> Iterable[SpanTest]:
        return ()

    def matches(self, facts: DecisionFacts) -> bool:
        return bool(facts.cycle_kinds & self.kinds) == self.expected


@condition_kind("tool_cycle")
def parse_tool_cycle(node: Node, ctx: ParseContext) -> Condition | None:
    if isinstance(node.value, bool):
        return HasToolCycle(frozenset(CYCLE_KINDS), node.value)
    fields = ctx.mapping(node, ("kinds",), required=("kinds",))
    if fields is None:
        return None
    names = ctx.at("kinds").names(fields["kinds"], CYCLE_KINDS, "cycle kind")
    return HasToolCycle(frozenset(names)) if names is not None else None
