"""Combine conditions: `all` (every one matches), `any` (at least one), `not` (negation).

```yaml
when:
  any:
    - error: true
    - all:
        - attribute: {key: gen_ai.agent.name, equals: billing}
        - not: {span_count: {max: 10}}
```
"""

from __future__ import annotations

from sampler.config.reader import Node
from sampler.rules.conditions.registry import ParseContext, condition_kind
from sampler.rules.spec import AllOf, AnyOf, Condition, Not


def _parts(node: Node, ctx: ParseContext) -> tuple[Condition, ...] | None:
    items = ctx.sequence(node)
    if items is None:
        return None
    parts = [ctx.at(f"[{i}]").condition(item) for i, item in enumerate(items)]
    if any(part is None for part in parts):
        return None
    return tuple(part for part in parts if part is not None)


@condition_kind("all")
def parse_all(node: Node, ctx: ParseContext) -> Condition | None:
    parts = _parts(node, ctx)
    return AllOf(parts) if parts is not None else None


@condition_kind("any")
def parse_any(node: Node, ctx: ParseContext) -> Condition | None:
    parts = _parts(node, ctx)
    return AnyOf(parts) if parts is not None else None


@condition_kind("not")
def parse_not(node: Node, ctx: ParseContext) -> Condition | None:
    part = ctx.condition(node)
    return Not(part) if part is not None else None
