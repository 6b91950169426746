"""The session's agent is looping: `repeated_call` (the same tool with the same arguments again
and again), `repeated_tool` (the same tool many times in a row: works when arguments are not
recorded), `tool_pattern` (a short sequence such as A-B-A-B repeating), `repeated_turn` (whole
turns repeated with the same calls and arguments), `agent_recursion` (agents nested deeper than
a bound), `link_cycle` (a cycle among span links). Thresholds are in `signals.tool_cycles`; the
signal written to kept spans is `tool_cycle`.

A turn is one trace of the session, the answer to one user message. The first three kinds
look within one turn at a time, so a conversation whose every turn runs the same workflow
(lookup, search, reply; and again for the next message) is not a loop. A repetition across
turns is a loop only when nothing tells the turns apart: `same_turn_repeats` turns in a row
whose tool calls are the same, each with recorded arguments, and the same arguments, as when a
client or a user retries a turn, or an instrumentation starts a new trace for every step of a
looping agent. Without recorded arguments a repetition across turns is never a loop by itself.

Legitimate iteration is not a loop either:
- calls made with no model call started between them were made on one model decision (a
  fan-out over a list, in parallel or one after the other; a framework's retry; polling done
  by the tool's code) and count as one step: what must repeat is the model's decision;
- arguments that advance (pagination, fan-out over distinct items) end a run of one tool;
- a failed call retried until it succeeds counts once (calls retried until they fail for good
  count every attempt, and are errors anyway).

A session without any model span has one step per tool call. Limits: with no arguments
recorded, a model that pages through results (or polls a job) one model call at a time
`same_tool_repeats` times looks like a loop; with arguments, a model that polls a job with the
same arguments `same_call_repeats` times in one turn is one, and so is a user who asks the
same thing `same_turn_repeats` times when the agent answers with the very same calls.

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
        return (not self.kinds.isdisjoint(facts.cycle_kinds)) == self.expected


@condition_kind("tool_cycle")
def parse_tool_cycle(node: Node, ctx: ParseContext) -> Condition | None:
    if isinstance(node.value, bool):
        return HasToolCycle(frozenset(CYCLE_KINDS), node.value)
    fields = ctx.mapping(node, ("kinds",), required=("kinds",))
    if fields is None:
        return None
    names = ctx.at("kinds").names(fields["kinds"], CYCLE_KINDS, "cycle kind")
    return HasToolCycle(frozenset(names)) if names is not None else None
