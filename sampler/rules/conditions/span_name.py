"""Some span's name equals a name, is in a list, or matches a regular expression (`re.search`).

```yaml
span_name: checkout                 # shorthand for {equals: checkout}
span_name: {in: [checkout, refund]}
span_name: {regex: "^execute_tool "}
```
"""

from __future__ import annotations

from dataclasses import dataclass

from sampler.config.reader import Node
from sampler.rules.conditions.attribute import AnySpanMatches, compile_regex
from sampler.rules.conditions.registry import ParseContext, condition_kind
from sampler.rules.spec import Condition


@dataclass(frozen=True, slots=True)
class SpanNameTest:
    names: frozenset[str] = frozenset()
    pattern: str | None = None  # a regular expression, searched

    @property
    def keys(self) -> tuple[str, ...]:
        return ()

    def native_spec(self) -> tuple[object, ...]:
        if self.pattern is not None:
            return ("span_name_regex", self.pattern)
        return ("span_name", sorted(self.names))


@condition_kind("span_name")
def parse_span_name(node: Node, ctx: ParseContext) -> Condition | None:
    if isinstance(node.value, str):  # the shorthand for {equals: NAME}
        op, value, op_ctx = "equals", node, ctx
    else:
        fields = ctx.mapping(node, ("equals", "in", "regex"))
        if fields is None:
            return None
        if len(fields) != 1:
            ctx.problem(node, "expected exactly one of equals, in, regex")
            return None
        ((op, value),) = fields.items()
        op_ctx = ctx.at(op)
    if op == "regex":
        pattern = compile_regex(value, op_ctx)
        return AnySpanMatches(SpanNameTest(pattern=pattern)) if pattern is not None else None
    items = value.value if op == "in" else [value]
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(item.value, str) and item.value for item in items)
    ):
        wanted = "a list of non-empty names" if op == "in" else "a non-empty name"
        op_ctx.problem(value, f"expected {wanted}, got {value.describe()}")
        return None
    return AnySpanMatches(SpanNameTest(names=frozenset(str(item.value) for item in items)))
